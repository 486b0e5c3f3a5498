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

# Fields that may change between runs of one work directory without invalidating its outputs.
_FREE_FIELDS = ("log_every", "finetune.settings", "evaluate.batch_size", "predict.batch_size",
                # a copied detector is checked against this config's detector fields
                "pretrain2d.from_workdir")


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


def stage_done(path: str, stage: str) -> bool:
    """Whether the work directory at `path` holds `stage`'s DONE.json marker (without binding a
    Workdir to a config, which would create the directory)."""
    return os.path.exists(os.path.join(path, stage, "DONE.json"))


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
            with open(stored_path) as f:
                stored = flatten(json.load(f))
            differing = sorted(
                k for k in set(stored) | set(current)
                if stored.get(k) != current.get(k) and k not in _FREE_FIELDS)
            if differing:
                details = ", ".join(
                    f"{k}: {stored.get(k)!r} (workdir) vs {current.get(k)!r} (now)" for k in differing[:6])
                raise ValueError(
                    f"work directory {self.path} holds outputs of another config "
                    f"(protocol {stored.get('protocol')!r}); differing fields: {details}. "
                    "Use a new --workdir, or delete this one.")
        # Atomic: a run reading this file while another starts here (pretrain2d.from_workdir)
        # never sees it half written.
        tmp = f"{stored_path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(self.config.to_json(indent=2))
        os.replace(tmp, stored_path)

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
        tmp = self.file(stage, "DONE.json.tmp")
        with open(tmp, "w") as f:
            json.dump({"finished_at": time.time(), **(info or {})}, f, indent=2, default=str)
        os.replace(tmp, self.file(stage, "DONE.json"))  # atomic: a kill never leaves half a marker

    def done_info(self, stage: str) -> dict[str, Any]:
        with open(os.path.join(self.path, stage, "DONE.json")) as f:
            return json.load(f)

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
