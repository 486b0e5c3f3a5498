"""The work directory of one experiment: its config fingerprint and each stage's outputs.

Every stage reads its inputs from and writes its outputs to the work directory, and marks itself
done with `<stage>/DONE.json` only after its outputs are complete, so a rerun skips what is done and
a killed run resumes at the stage it lost (stages that train resume from their own checkpoints).
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Mapping

import ml_collections

STAGES: tuple[str, ...] = (
    "pretrain2d", "train3d", "predict", "complete", "finetune", "evaluate", "report",
)

# The stages before fine-tuning: what `finetune.from_workdir` copies from a finished run.
UPSTREAM_STAGES: tuple[str, ...] = STAGES[:4]


def effective_finetune_seed(seed: Any, finetune_seed: Any) -> Any:
    """The seed fine-tuning ran with: `finetune.seed`, or the run's `seed` where that is -1 or
    absent (configs written before the field)."""
    return seed if finetune_seed in (-1, None) else finetune_seed


# Fields that may change between runs of one work directory without invalidating its outputs.
FREE_FIELDS = ("log_every", "finetune.settings", "evaluate.batch_size", "predict.batch_size",
                # a copied detector is checked against this config's detector fields
                "pretrain2d.from_workdir",
                # copied stages are checked against this config's fields (stages.reuse_stage)
                "finetune.from_workdir")
# Config fields added after work directories were written, with the value that reproduces what
# those directories hold: a stored config without one of them counts as having this value.
_ADDED_FIELDS: dict[str, Any] = {"finetune.loss": "eq2", "finetune.labelled_fraction": 0.0,
                                 "predict.average_views": False, "predict.teacher_workdirs": [],
                                 "model.channels": 0, "finetune.augment_unlabelled": True,
                                 "finetune.freeze_batchnorm": False,
                                 "finetune.max_normalised_step": 0.0,
                                 "complete.bone_lengths_from": "completed",
                                 "complete.rescale_to_predictions": False,
                                 "finetune.normalise_weights": False,
                                 "finetune.seed": -1, "finetune.from_workdir": ""}


def with_added_fields(config: Mapping[str, Any]) -> dict[str, Any]:
    """A stored config (nested dicts, as in config.json) with every `_ADDED_FIELDS` entry it
    lacks set to the value its work directory holds. Only sections the config has get one, so
    readers of older work directories need no defaults of their own."""
    out = json.loads(json.dumps(config))  # a deep copy of plain JSON data
    for dotted, default in _ADDED_FIELDS.items():
        *sections, name = dotted.split(".")
        node = out
        for section in sections:
            node = node.get(section) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.setdefault(name, default)
    return out


def load_stored_config(path: str) -> dict[str, Any]:
    """The config.json of the work directory at `path`, `with_added_fields`."""
    with open(os.path.join(path, "config.json")) as f:
        return with_added_fields(json.load(f))


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config dict as {"a.b.c": value}, sequences as lists (for comparing configs)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = list(v) if isinstance(v, (tuple, list)) else v
    return out


def differing_fields(a: Mapping[str, Any], b: Mapping[str, Any],
                     ignore: tuple[str, ...] = ()) -> list[str]:
    """Sorted keys of two flattened configs whose values differ, except those in `ignore`."""
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k not in ignore)


def describe_differences(keys: list[str], a: Mapping[str, Any], b: Mapping[str, Any],
                         a_name: str, b_name: str, limit: int = 6) -> str:
    """'key: a (a_name) vs b (b_name), ...' for the first `limit` keys, for error messages."""
    return ", ".join(f"{k}: {a.get(k)!r} ({a_name}) vs {b.get(k)!r} ({b_name})"
                     for k in keys[:limit])


def write_atomic(path: str, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename: a reader (another run) or a
    kill never sees the file half written."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def stage_done(path: str, stage: str) -> bool:
    """Whether the work directory at `path` holds `stage`'s DONE.json marker (without binding a
    Workdir to a config, which would create the directory)."""
    return os.path.exists(os.path.join(path, stage, "DONE.json"))


def read_done_info(path: str, stage: str) -> dict[str, Any] | None:
    """The info `stage` recorded in its DONE.json in the work directory at `path`; None if it
    has not finished."""
    if not stage_done(path, stage):
        return None
    with open(os.path.join(path, stage, "DONE.json")) as f:
        return json.load(f)


class Workdir:
    """A work directory bound to one config; refuses to mix outputs of different configs."""

    def __init__(self, path: str, config: ml_collections.ConfigDict):
        self.path = os.path.abspath(path)
        self.config = config
        os.makedirs(self.path, exist_ok=True)
        self._check_config()

    def _check_config(self) -> None:
        stored_path = os.path.join(self.path, "config.json")
        current = flatten(json.loads(self.config.to_json()))
        if os.path.exists(stored_path):
            stored = flatten(load_stored_config(self.path))
            differing = differing_fields(stored, current, FREE_FIELDS)
            if differing:
                details = describe_differences(differing, stored, current, "workdir", "now")
                raise ValueError(
                    f"work directory {self.path} holds outputs of another config "
                    f"(protocol {stored.get('protocol')!r}); differing fields: {details}. "
                    "Use a new --workdir, or delete this one.")
        # Another run may be reading it (pretrain2d.from_workdir).
        write_atomic(stored_path, self.config.to_json(indent=2))

    def stage_dir(self, stage: str) -> str:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
        d = os.path.join(self.path, stage)
        os.makedirs(d, exist_ok=True)
        return d

    def file(self, stage: str, name: str) -> str:
        return os.path.join(self.stage_dir(stage), name)

    def is_done(self, stage: str) -> bool:
        return stage_done(self.path, stage)

    def mark_done(self, stage: str, info: Mapping[str, Any] | None = None) -> None:
        write_atomic(self.file(stage, "DONE.json"),  # a kill never leaves half a marker
                     json.dumps({"finished_at": time.time(), **(info or {})}, indent=2,
                                default=str))

    def done_info(self, stage: str) -> dict[str, Any]:
        info = read_done_info(self.path, stage)
        if info is None:
            raise FileNotFoundError(f"stage {stage!r} has not completed in {self.path}")
        return info

    def require(self, stage: str, name: str) -> str:
        """Path of an output of an earlier stage; a clear error if that stage has not produced it."""
        path = os.path.join(self.path, stage, name)
        if not self.is_done(stage) or not os.path.exists(path):
            raise FileNotFoundError(
                f"missing stage output {path}: stage {stage!r} has not completed in this work "
                f"directory; run it first (--stages={stage}) or run all stages (--stages=all)")
        return path


def parse_stages(spec: str) -> tuple[str, ...]:
    """'all' or a comma list of stage names -> the stages in pipeline order."""
    if spec.strip() == "all":
        return STAGES
    asked = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [s for s in asked if s not in STAGES]
    if unknown or not asked:
        raise ValueError(f"unknown stage(s) {unknown or spec!r}; choose 'all' or from {', '.join(STAGES)}")
    return tuple(s for s in STAGES if s in asked)
