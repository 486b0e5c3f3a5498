"""grain input pipelines over `mocap_render` (or any source with the same features).

* `TrainPipeline`: filter by subjects/actions, shuffle by seed (a new order every epoch),
  augment as the paper does (augment.py), batch, shard per process. Random access:
  `batch_at(step)` is a pure function of (seed, step, process), so a resumed run continues the
  same order; `iterator(start_step)` streams the same batches with prefetching threads.
* `MixedPipeline`: batches joined from fixed-size parts of several `TrainPipeline`s.
* `eval_batches`: fixed order, no augmentation, the last batch padded (`mask` marks real rows).
* `read_sequences`: whole videos in frame order (prediction and completion).

Batches are dicts of numpy arrays: image (B, R, R, 3) float32 in [0, 1]; pose2d (B, 16, 2) crop
px; pose3d (B, 16, 3) mm camera frame (absolute); pose3d_rel (B, 16, 3) mm root-relative;
visible (B, 16) bool; intrinsics (B, 4) image px; center (B, 2) image px; scale (B,);
root_depth (B,) mm; subject, action, camera, sequence (B,) str; subaction, frame, index (B,)
int32 (index = record number in the split); flipped (B,) bool, rotation (B,) deg and
scale_factor (B,) of the augmentation (False / 0 / 1 when not augmented).

Sharding: with P processes of global batch G = P * B, process p's batch k holds the global
elements p, p + P, ... of the global batch k, so the union over processes of batch k is the
single-process batch k, whatever P is.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import multiprocessing
import os
from typing import Callable, Iterator, Sequence

import cloudpickle
import grain
import jax
import numpy as np
import tensorflow_datasets as tfds

from hourglass_jax.data import augment as aug
from hourglass_jax.data import subjects as subj
from hourglass_jax.skeleton import ROOT

_FLOAT_KEYS = ("pose3d", "pose2d", "intrinsics", "center", "scale", "root_depth")
_TEXT_KEYS = ("subject", "action", "camera", "sequence")
_INT_KEYS = ("subaction", "frame")


# Every name the embedded dataset defines, per field: asking a mocap_render split for one of
# these that it does not hold (S9 of `train`) is a different error from a name that does not
# exist at all. Other datasets (H36M, MPII, ...) are checked against the names they hold.
MOCAP_VOCABULARY: dict[str, tuple] = {
    "subject": subj.ALL_SUBJECTS, "action": subj.ACTIONS,
    "camera": subj.CAMERA_NAMES + ("random",), "subaction": subj.SUBACTIONS,
}


@dataclasses.dataclass(frozen=True)
class Metadata:
    """Per-record metadata of a split, all (N,): str arrays subject, action, camera, sequence;
    int arrays subaction, frame. `vocabulary`: all names the dataset defines per field, when
    known (MOCAP_VOCABULARY for mocap_render), else None."""

    subject: np.ndarray
    action: np.ndarray
    camera: np.ndarray
    sequence: np.ndarray
    subaction: np.ndarray
    frame: np.ndarray
    vocabulary: dict[str, tuple] | None = None

    def __len__(self) -> int:
        return len(self.subject)


def _text(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


_METADATA_CACHE: dict[tuple[str, str], Metadata] = {}


def _read_metadata_uncached(source) -> Metadata:
    skip = type(source)(dataset_info=source.dataset_info, split=source.split,
                        decoders={"image": tfds.decode.SkipDecoding()})
    cols = {k: [] for k in _TEXT_KEYS + _INT_KEYS}
    n = len(skip)
    for lo in range(0, n, 1024):
        for rec in skip.__getitems__(list(range(lo, min(lo + 1024, n)))):
            for k in _TEXT_KEYS:
                cols[k].append(_text(rec[k]))
            for k in _INT_KEYS:
                cols[k].append(int(rec[k]))
    vocab = MOCAP_VOCABULARY if source.dataset_info.name == "mocap_render" else None
    return Metadata(**{k: np.asarray(v, dtype=str if k in _TEXT_KEYS else np.int32)
                       for k, v in cols.items()}, vocabulary=vocab)


def read_metadata(source) -> Metadata:
    """Metadata of every record of a tfds data source, read without decoding images (cached)."""
    if not hasattr(source, "dataset_info"):
        # A plain sequence of example dicts (tests, in-memory data).
        recs = [source[i] for i in range(len(source))]
        return Metadata(**{k: np.asarray([_text(r[k]) for r in recs], dtype=str)
                           for k in _TEXT_KEYS},
                        **{k: np.asarray([int(r[k]) for r in recs], np.int32)
                           for k in _INT_KEYS})
    key = (str(source.dataset_info.data_dir), str(source.split))
    if key not in _METADATA_CACHE:
        _METADATA_CACHE[key] = _read_metadata_uncached(source)
    return _METADATA_CACHE[key]


def select(meta: Metadata, subjects: Sequence[str] | None = None,
           actions: Sequence[str] | None = None, cameras: Sequence[str] | None = None,
           subactions: Sequence[int] | None = None) -> np.ndarray:
    """Record indices (sorted) whose subject/action/camera/subaction are in the given lists.

    None keeps all. Raises ValueError for names that do not exist in the dataset (listing the
    valid ones: the dataset's vocabulary when known, else the names the split holds), or that
    exist but have no record in this split (e.g. S9 asked of mocap_render's train split).
    """
    keep = np.ones(len(meta), bool)
    for field, wanted in (("subject", subjects), ("action", actions), ("camera", cameras),
                          ("subaction", subactions)):
        if wanted is None:
            continue
        if isinstance(wanted, (str, int)):
            wanted = [wanted]
        wanted = list(wanted)
        col = getattr(meta, field)
        present = set(col.tolist())
        valid = meta.vocabulary[field] if meta.vocabulary else tuple(sorted(present))
        bad = [w for w in wanted if w not in valid]
        if bad:
            raise ValueError(f"unknown {field}(s) {bad}; valid: {', '.join(map(str, valid))}")
        absent = [w for w in wanted if w not in present]
        if absent:
            raise ValueError(f"{field}(s) {absent} have no records in this split; present: "
                             f"{', '.join(map(str, sorted(present)))}")
        keep &= np.isin(col, np.asarray(wanted, dtype=col.dtype))
    return np.flatnonzero(keep)


def decode(record: dict, index: int) -> dict:
    """A tfds record -> a pipeline sample (image still uint8, text as str, numpy scalars)."""
    out = {"image": np.asarray(record["image"], np.uint8)}
    for k in _FLOAT_KEYS:
        out[k] = np.asarray(record[k], np.float32)
    out["visible"] = np.asarray(record["visible"], bool)
    for k in _TEXT_KEYS:
        out[k] = np.asarray(_text(record[k]))
    for k in _INT_KEYS:
        out[k] = np.asarray(int(record[k]), np.int32)
    out["index"] = np.asarray(index, np.int32)
    out["flipped"] = np.asarray(False)
    out["rotation"] = np.asarray(0.0, np.float32)
    out["scale_factor"] = np.asarray(1.0, np.float32)
    return out


def image_to_float(sample_or_batch: dict) -> dict:
    """The image of a sample (R, R, 3) or a batch (B, R, R, 3) from uint8 to float32 in [0, 1]
    (float images pass unchanged). Elementwise, so per sample or per batch gives the same."""
    out = dict(sample_or_batch)
    if out["image"].dtype == np.uint8:
        out["image"] = out["image"].astype(np.float32) / np.float32(255.0)
    return out


def with_relative_pose(sample: dict) -> dict:
    """The sample with `pose3d_rel`: pose3d minus its root joint, (16, 3) mm."""
    sample = dict(sample)
    sample["pose3d_rel"] = sample["pose3d"] - sample["pose3d"][ROOT:ROOT + 1]
    return sample


def finish(sample: dict) -> dict:
    """The last step of every pipeline, per sample: image to float32 in [0, 1] and the
    root-relative pose."""
    return with_relative_pose(image_to_float(sample))


class _Records:
    """Random-access view of the selected records of a source, decoded."""

    def __init__(self, source, indices: np.ndarray):
        self._source = source
        self._indices = np.asarray(indices, np.int64)

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, i: int) -> dict:
        j = int(self._indices[i])
        return decode(self._source[j], j)


def stack(samples: Sequence[dict]) -> dict:
    """Stack sample dicts into a batch dict of numpy arrays."""
    return {k: np.stack([s[k] for s in samples]) for k in samples[0]}


WORKER_KINDS = ("thread", "process")


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_workers() -> int:
    """Workers a TrainPipeline prepares batches in by default: all but one of the cores this
    process may run on (the training step needs one), at least 1, at most 8 (each worker process
    holds its own imports: about 100 MB of its own, measured on `small_styled_wide`)."""
    return max(1, min(8, available_cores() - 1))


_WORKER_DATASET = None  # in a worker process: the pipeline's grain dataset


def _worker_start(dataset_pickle: bytes) -> None:
    """Initialises a batch worker process: CPU-only JAX (a worker that touched the accelerator
    would take its memory), then the pipeline's dataset."""
    jax.config.update("jax_platforms", "cpu")
    global _WORKER_DATASET
    _WORKER_DATASET = cloudpickle.loads(dataset_pickle)


def _worker_batch(step: int) -> dict:
    """Batch `step` with its images still uint8: a quarter of float32's bytes through the pipe
    (the parent converts them, `image_to_float`)."""
    return _WORKER_DATASET[step]


class TrainPipeline:
    """Shuffled, augmented, batched, per-process training batches (see the module docstring).

    Args:
      source: a tfds data source of a `mocap_render` split (or a sequence of example dicts).
      global_batch_size: G, the batch over all processes; must divide by process_count.
      seed: shuffle and augmentation seed (same seed, same batches).
      subjects, actions: filters (None keeps all); unknown names raise ValueError.
      augment: apply the paper's augmentation.
      relabel: optional `sample -> sample` applied to each decoded record before augmentation
        (the fine-tuning stage swaps in pseudo-labels this way, so they are augmented exactly
        like true labels).
      process_index, process_count: default jax.process_index() / jax.process_count().
      lookahead: batches `batch_at` has its workers prepare ahead (0: none, every batch made
        in the caller; default 2 per worker).
      workers: how many threads or processes prepare those batches, each a whole batch
        (default `default_workers()`: all but one of this process's cores, at most 8).
      worker_kind: "thread" or "process" (default: processes when workers > 1). Threads share
        the GIL: on one H200 host, 15 of them fed the 2D step only about 300 images/s, no more
        than one. Processes (spawned, CPU-only JAX, the pipeline sent once by cloudpickle) scale
        with the cores. The batches never depend on either.
    """

    def __init__(self, source, *, global_batch_size: int, seed: int,
                 subjects: Sequence[str] | None = None, actions: Sequence[str] | None = None,
                 augment: bool = True, process_index: int | None = None,
                 process_count: int | None = None,
                 relabel: Callable[[dict], dict] | None = None, lookahead: int | None = None,
                 workers: int | None = None, worker_kind: str | None = None):
        pc = jax.process_count() if process_count is None else int(process_count)
        pi = jax.process_index() if process_index is None else int(process_index)
        if global_batch_size <= 0 or global_batch_size % pc:
            raise ValueError(f"global_batch_size {global_batch_size} must be a positive "
                             f"multiple of the process count {pc}")
        if not 0 <= pi < pc:
            raise ValueError(f"process_index {pi} not in [0, {pc})")
        if not 0 <= seed < 2**31:
            raise ValueError(f"seed must be in [0, 2**31), got {seed}")
        self.indices = select(read_metadata(source), subjects, actions)
        if len(self.indices) < global_batch_size:
            raise ValueError(f"only {len(self.indices)} records selected, fewer than one "
                             f"global batch of {global_batch_size}")
        workers = default_workers() if workers is None else workers
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        lookahead = 2 * workers if lookahead is None else lookahead
        if lookahead < 0:
            raise ValueError(f"lookahead must be >= 0, got {lookahead}")
        self.lookahead = int(lookahead)
        self.workers = int(workers)
        worker_kind = worker_kind or ("process" if self.workers > 1 else "thread")
        if worker_kind not in WORKER_KINDS:
            raise ValueError(f"worker_kind must be one of {WORKER_KINDS}, got {worker_kind!r}")
        self.worker_kind = worker_kind
        self._ahead: dict[int, concurrent.futures.Future] = {}
        self._pool: concurrent.futures.Executor | None = None
        self.local_batch_size = global_batch_size // pc
        self.global_batch_size = global_batch_size
        self.steps_per_epoch = len(self.indices) // global_batch_size
        ds = grain.MapDataset.source(_Records(source, self.indices))
        ds = ds.shuffle(seed=seed).repeat(None)  # reshuffled every epoch
        if relabel is not None:
            ds = ds.map(relabel)
        if augment:
            ds = ds.random_map(lambda s, rng: aug.random_augment(s, rng), seed=seed + 1)
        ds = ds.map(with_relative_pose)
        ds = ds[pi::pc]
        # Batches with uint8 images: what the workers prepare (a process sends 4x fewer bytes
        # than float32 through its pipe).
        self._uint8_dataset = ds.batch(self.local_batch_size, drop_remainder=True,
                                       batch_fn=stack)
        self.dataset: grain.MapDataset = self._uint8_dataset.map(image_to_float)

    def batch_at(self, step: int) -> dict:
        """This process's batch number `step` (0-based; pure function of seed and step).

        With `lookahead` > 0 the next batches are prepared by `workers` threads or processes
        while the caller trains on this one, so a training loop that asks for step, step + 1,
        ... rarely waits. The result never depends on it.
        """
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        step = int(step)
        fut = self._ahead.pop(step, None)
        # Workers (threads or processes) prepare uint8 batches; the caller converts them.
        batch = self.dataset[step] if fut is None else image_to_float(fut.result())
        if self.lookahead > 0:
            for s in [s for s in self._ahead if not step < s <= step + self.lookahead]:
                self._ahead.pop(s).cancel()  # a jump (resume, eval): drop stale work
            if self._pool is None:
                self._pool = self._start_pool()
            prepare = (self._uint8_dataset.__getitem__ if self.worker_kind == "thread"
                       else _worker_batch)
            for s in range(step + 1, step + 1 + self.lookahead):
                if s not in self._ahead:
                    self._ahead[s] = self._pool.submit(prepare, s)
        return batch

    def _start_pool(self) -> concurrent.futures.Executor:
        if self.worker_kind == "thread":
            return concurrent.futures.ThreadPoolExecutor(
                max_workers=self.workers, thread_name_prefix="batch_lookahead")
        # Spawned, not forked: a fork of a process running JAX's threads can deadlock.
        return concurrent.futures.ProcessPoolExecutor(
            max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_start, initargs=(cloudpickle.dumps(self._uint8_dataset),))

    def close(self) -> None:
        """Stop the look-ahead threads or processes (pending batches are dropped)."""
        for fut in self._ahead.values():
            fut.cancel()
        self._ahead.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def iterator(self, start_step: int = 0, num_threads: int = 2,
                 prefetch: int = 4) -> Iterator[dict]:
        """Batches start_step, start_step + 1, ... forever, decoded in `num_threads` threads."""
        if num_threads <= 0:
            return (self.batch_at(s) for s in itertools.count(start_step))
        ds = self.dataset[int(start_step):]
        opts = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
        return iter(ds.to_iter_dataset(opts))


class MixedPipeline:
    """Training batches joined from fixed-size parts of several `TrainPipeline`s: batch `step`
    is part 0's batch `step`, then part 1's, ... concatenated along the batch axis, so each part
    keeps its own shuffle, relabelling and resumable order.

    Fine-tuning mixes labelled frames into the pseudo-labelled batches this way
    (`finetune.labelled_fraction`). Every part must yield the same fields; each is sharded over
    processes by its own pipeline, so the union over processes is still the global batch.
    """

    def __init__(self, parts: Sequence[TrainPipeline]):
        self.parts = list(parts)
        if len(self.parts) < 2:
            raise ValueError(f"a MixedPipeline joins at least 2 pipelines, got {len(self.parts)}")
        self.global_batch_size = sum(p.global_batch_size for p in self.parts)
        self.local_batch_size = sum(p.local_batch_size for p in self.parts)

    def batch_at(self, step: int) -> dict:
        """Batch number `step`: (sum of the parts' batch sizes, ...) per field."""
        batches = [p.batch_at(step) for p in self.parts]
        fields = set(batches[0])
        for i, b in enumerate(batches[1:], 1):
            if set(b) != fields:
                raise ValueError(
                    f"MixedPipeline part {i} yields other fields than part 0: "
                    f"only in part 0 {sorted(fields - set(b))}, only in part {i} "
                    f"{sorted(set(b) - fields)}")
        return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}

    def close(self) -> None:
        for p in self.parts:
            p.close()


def eval_batches(source, batch_size: int, subjects: Sequence[str] | None = None,
                 actions: Sequence[str] | None = None) -> Iterator[dict]:
    """Every selected record once, in record order, no augmentation. The last batch is padded
    by repeating its last row; `mask` (B,) bool is False on padding rows."""
    idx = select(read_metadata(source), subjects, actions)
    recs = _Records(source, idx)
    for lo in range(0, len(idx), batch_size):
        rows = list(range(lo, min(lo + batch_size, len(idx))))
        n = len(rows)
        rows += [rows[-1]] * (batch_size - n)
        b = stack([finish(recs[i]) for i in rows])
        b["mask"] = np.arange(batch_size) < n
        yield b


def sequence_ids(source, subjects: Sequence[str] | None = None,
                 actions: Sequence[str] | None = None,
                 cameras: Sequence[str] | None = None) -> list[str]:
    """Sorted ids ("subject/action/subaction/camera") of the selected videos."""
    meta = read_metadata(source)
    idx = select(meta, subjects, actions, cameras)
    return sorted(set(meta.sequence[idx].tolist()))


def read_sequences(source, subjects: Sequence[str] | None = None,
                   actions: Sequence[str] | None = None,
                   cameras: Sequence[str] | None = None) -> Iterator[tuple[str, dict]]:
    """Whole videos in frame order: yields (sequence id, batch dict with F rows, frame 0..F-1).

    Raises ValueError if a video has a missing or duplicated frame.
    """
    meta = read_metadata(source)
    idx = select(meta, subjects, actions, cameras)
    by_seq: dict[str, list[int]] = {}
    for i in idx:
        by_seq.setdefault(str(meta.sequence[i]), []).append(int(i))
    for seq in sorted(by_seq):
        rows = sorted(by_seq[seq], key=lambda i: meta.frame[i])
        frames = meta.frame[rows]
        if not np.array_equal(frames, np.arange(len(rows))):
            raise ValueError(f"sequence {seq}: frames are not 0..{len(rows) - 1} "
                             f"(got {frames[:10].tolist()}...)")
        recs = source.__getitems__(rows) if hasattr(source, "__getitems__") else \
            [source[i] for i in rows]
        yield seq, stack([finish(decode(r, i)) for r, i in zip(recs, rows)])
