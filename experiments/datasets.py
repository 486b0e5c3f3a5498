"""Which videos a stage reads, from which dataset: the unlabelled and validation selections of a
protocol, and the scenes of the per-scene table (paper Table 7).

Config fields read (all optional except the experiment's `data.dataset`):

  data.unlabelled_dataset    dataset of the unlabelled videos (predict, complete, finetune);
                             empty: data.dataset (e.g. "mpi_inf_3dhp" for H36M -> 3DHP)
  data.unlabelled_split      its split; empty: "train"
  data.unlabelled_sequences  sequence ids ("subject/action/subaction/camera", the builders'
                             `sequence` feature) of the chosen videos; empty: every video
  data.unlabelled_subjects / data.unlabelled_actions    filters (empty: all)
  data.validation_dataset / _split (default "validation") / _sequences / _subjects / _actions
                             the same for the evaluate stage
  evaluate.scenes            {scene: (validation subject, ...)}: per-scene errors in evaluate

When sequences are listed, the stages read a `SequenceSubset` of the split: only the records of
those videos (and of the subjects/actions filters, when set), renumbered 0..n-1. Its record
numbers are the `index` column of the stage outputs, so predict and finetune, which build the
same subset, agree on them.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from experiments import common
from experiments.workdir import UPSTREAM_STAGES
from hourglass_jax import metrics
from hourglass_jax.data import pipeline

ROLES: dict[str, str] = {"unlabelled": "train", "validation": "validation"}  # role -> split
# Fields whose values are tuples of names (a bare string there is a config mistake).
_TUPLE_FIELDS = ("subjects", "actions", "sequences")
_SHOWN_IDS = 8  # valid sequence ids quoted in an error message (a split may hold hundreds)


@dataclasses.dataclass(frozen=True)
class Selection:
    """The videos one stage reads.

    Attributes:
      dataset, split: where they come from ("mpi_inf_3dhp", "train").
      source: a random-access data source: the split itself, or a `SequenceSubset` of it.
      subjects, actions: the filters still to apply to `source`, as in the config (empty: all;
        a subset has them applied already).
      sequences: the listed sequence ids, or None (every video that passes the filters).
    """

    dataset: str
    split: str
    source: Any
    subjects: tuple[str, ...]
    actions: tuple[str, ...]
    sequences: tuple[str, ...] | None


def _field(config: ml_collections.ConfigDict, role: str, name: str) -> Any:
    return config.data.get(f"{role}_{name}", "" if name in ("dataset", "split") else ())


def _names(config: ml_collections.ConfigDict, role: str, name: str) -> tuple[str, ...] | None:
    value = _field(config, role, name)
    if isinstance(value, (str, bytes)):
        raise ValueError(f"data.{role}_{name} must be a tuple of names, got the string "
                         f"{value!r} (write ({value!r},) for one)")
    return common.tuple_or_none(str(v) for v in value)


def check_config(config: ml_collections.ConfigDict) -> None:
    """ValueError naming a malformed selection or scene field (before any stage runs)."""
    for role in ROLES:
        for name in _TUPLE_FIELDS:
            _names(config, role, name)
        sequences = _names(config, role, "sequences") or ()
        repeated = sorted({s for s in sequences if sequences.count(s) > 1})
        if repeated:
            raise ValueError(f"data.{role}_sequences lists {repeated} more than once")
    scenes(config)


def scenes(config: ml_collections.ConfigDict) -> dict[str, tuple[str, ...]]:
    """evaluate.scenes as {scene: validation subjects} ({} when unset); ValueError if a scene is
    empty, or names a subject outside data.validation_subjects (when that filter is set)."""
    raw = config.get("evaluate", {}).get("scenes", None) or {}
    validation = _names(config, "validation", "subjects")
    out: dict[str, tuple[str, ...]] = {}
    for scene, members in dict(raw).items():
        if isinstance(members, (str, bytes)) or not members:
            raise ValueError(f"evaluate.scenes[{scene!r}] must be a non-empty tuple of "
                             f"validation subjects, got {members!r}")
        members = tuple(str(m) for m in members)
        if validation is not None:
            outside = [m for m in members if m not in validation]
            if outside:
                raise ValueError(f"evaluate.scenes[{scene!r}] names {outside}, which are not in "
                                 f"data.validation_subjects {list(validation)}")
        out[str(scene)] = members
    return out


def _dataset_of(config: ml_collections.ConfigDict, role: str) -> str:
    """The dataset of a role's videos: data.<role>_dataset, else the experiment's."""
    return str(_field(config, role, "dataset") or config.data.dataset)


# Which dataset each stage reads: a role of `selection`, "labelled" (data.dataset) or "pretrain"
# (data.pretrain_dataset, else data.dataset).
_STAGE_READS: dict[str, tuple[str, ...]] = {
    "pretrain2d": ("pretrain",), "train3d": ("labelled",), "predict": ("unlabelled",),
    "finetune": ("unlabelled",), "evaluate": ("validation",)}


def required_datasets(config: ml_collections.ConfigDict, stages: Sequence[str]) -> list[str]:
    """The datasets `stages` will read, in stage order, each once."""
    names: list[str] = []
    for stage in stages:
        if config.finetune.get("from_workdir", "") and stage in UPSTREAM_STAGES:
            continue  # copied from another run's work directory: no data read
        for role in _STAGE_READS.get(stage, ()):
            if role == "pretrain":
                if (config.pretrain2d.get("import_checkpoint", "")
                        or config.pretrain2d.get("from_workdir", "")):
                    continue  # the detector is imported or copied: no 2D set is read
                name = config.data.get("pretrain_dataset", "") or config.data.dataset
            elif role == "labelled":
                name = config.data.dataset
            else:
                name = _dataset_of(config, role)
            if str(name) not in names:
                names.append(str(name))
    return names


def check_prepared(config: ml_collections.ConfigDict, stages: Sequence[str]) -> None:
    """ValueError (saying how to prepare it) for the first real dataset that `stages` will read
    and that is not prepared: a run stops before its first stage, not hours into it."""
    from hourglass_jax.data import realdata
    for name in required_datasets(config, stages):
        realdata.require_prepared(name, common.data_dir(config), config.data.builder_config)


def selection(config: ml_collections.ConfigDict, role: str) -> Selection:
    """The videos of `role` ("unlabelled" or "validation"; module docstring for the fields).

    Raises ValueError naming an unknown role, dataset, split, subject, action or sequence id, or
    a listed sequence that the subjects/actions filters exclude.
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; valid: {', '.join(ROLES)}")
    dataset = _dataset_of(config, role)
    split = str(_field(config, role, "split") or ROLES[role])
    subjects = _names(config, role, "subjects")
    actions = _names(config, role, "actions")
    sequences = _names(config, role, "sequences")
    splits = common.sources(config, dataset)
    if split not in splits:
        raise ValueError(f"data.{role}_split: dataset {dataset!r} has no split {split!r}; "
                         f"splits: {', '.join(sorted(splits))}")
    source = splits[split]
    if sequences is None:
        return Selection(dataset, split, source, subjects or (), actions or (), None)
    meta = pipeline.read_metadata(source)
    indices = sequence_records(meta, sequences, subjects, actions,
                               where=f"data.{role}_sequences ({dataset}/{split})")
    return Selection(dataset, split, SequenceSubset(source, indices, meta), (), (), sequences)


def sequence_records(meta: pipeline.Metadata, sequences: Sequence[str],
                     subjects: Sequence[str] | None = None, actions: Sequence[str] | None = None,
                     where: str = "sequences") -> np.ndarray:
    """Record numbers (sorted) of the listed videos that pass the subjects/actions filters.

    Raises ValueError for a sequence id the split does not hold (quoting some valid ones), or
    one that the filters leave without records.
    """
    present = set(meta.sequence.tolist())
    unknown = [s for s in sequences if s not in present]
    if unknown:
        shown = ", ".join(sorted(present)[:_SHOWN_IDS])
        raise ValueError(f"{where}: unknown sequence id(s) {unknown}; this split holds "
                         f"{len(present)} videos, e.g. {shown}")
    kept = pipeline.select(meta, subjects, actions)
    chosen = kept[np.isin(meta.sequence[kept], list(sequences))]
    left = set(meta.sequence[chosen].tolist())
    excluded = [s for s in sequences if s not in left]
    if excluded:
        raise ValueError(f"{where}: sequence(s) {excluded} have no record left after the "
                         f"subjects {subjects} / actions {actions} filters")
    return chosen


class _Record(Mapping):
    """One record of a SequenceSubset. Its metadata fields come from the split's metadata; the
    first other field asked (image, poses...) reads the whole record from the base source. So
    `pipeline.read_metadata` lists a subset without decoding a single image."""

    def __init__(self, base, index: int, meta: dict[str, Any]):
        self._base, self._index, self._meta = base, index, meta
        self._full: Mapping | None = None

    def _load(self) -> Mapping:
        if self._full is None:
            self._full = self._base[self._index]
        return self._full

    def __getitem__(self, key: str) -> Any:
        if key in self._meta:
            return self._meta[key]
        return self._load()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


class SequenceSubset:
    """The records `indices` of a random-access data source, as a data source of their own
    (records renumbered 0..n-1, in the order of `indices`).

    Args:
      base: a tfds data source (or any sequence of example dicts).
      indices: (n,) record numbers in `base`.
      meta: `pipeline.read_metadata(base)` (read without images, cached per split).
    """

    def __init__(self, base, indices: np.ndarray, meta: pipeline.Metadata):
        self.base = base
        self.indices = np.asarray(indices, np.int64)
        if self.indices.ndim != 1 or len(self.indices) == 0:
            raise ValueError(f"indices must be a non-empty (n,) array, got shape "
                             f"{self.indices.shape}")
        self._meta = meta

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> _Record:
        j = int(self.indices[i])  # IndexError past the end, as a sequence should
        m = self._meta
        return _Record(self.base, j, {
            "subject": m.subject[j], "action": m.action[j], "camera": m.camera[j],
            "sequence": m.sequence[j], "subaction": int(m.subaction[j]), "frame": int(m.frame[j])})

    def __getitems__(self, rows: Sequence[int]) -> list:
        """Whole records (images decoded), read from the base in one call where it can."""
        js = [int(self.indices[i]) for i in rows]
        if hasattr(self.base, "__getitems__"):
            return list(self.base.__getitems__(js))
        return [self.base[j] for j in js]


def scene_errors(out: Mapping[str, np.ndarray], scene_subjects: Mapping[str, Sequence[str]],
                 errors: Mapping[str, np.ndarray] | None = None) -> dict[str, dict[str, Any]]:
    """Errors of one network's validation predictions per scene (paper Table 7).

    Args:
      out: pred, gt (N, 16, 3) mm root-relative; subject (N,) str.
      scene_subjects: {scene: the validation subjects recorded there}.
      errors: `metrics.pose_errors(out["pred"], out["gt"])` when the caller has it already.
    Returns:
      {scene: {"mpjpe", "nmpjpe", "pmpjpe": mm averaged over the scene's frames, "frames": int}}.
    Raises ValueError if a scene has no validation frame.
    """
    subject = np.asarray(out["subject"]).astype(str)
    if errors is None:
        errors = metrics.pose_errors(out["pred"], out["gt"])
    result: dict[str, dict[str, Any]] = {}
    for scene, members in scene_subjects.items():
        rows = np.isin(subject, list(members))
        if not rows.any():
            raise ValueError(f"scene {scene!r}: no validation frame of subjects {list(members)}; "
                             f"the validation subjects are {sorted(set(subject.tolist()))}")
        result[scene] = {**{m: float(e[rows].mean()) for m, e in errors.items()},
                         "frames": int(rows.sum())}
    return result
