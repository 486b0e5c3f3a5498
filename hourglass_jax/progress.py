"""Progress lines with rate and ETA; metrics to JSON lines and TensorBoard event files.

Only process 0 of a multi-process job writes files and prints; the others call the same
methods, which then do nothing.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from typing import Any, Iterator, Mapping, Sequence, TextIO

import jax


def format_duration(seconds: float) -> str:
    """`h:mm:ss` for a duration in seconds ('?' when unknown or infinite)."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _parsed_lines(path: str | os.PathLike) -> Iterator[tuple[str, dict]]:
    """(line, record) for every non-empty line of a JSON-lines file that parses; a line cut
    short by a kill does not."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                yield line, json.loads(line)
            except json.JSONDecodeError:
                continue


def truncate_jsonl(path: str | os.PathLike, max_step: int) -> int:
    """Drop records with "step" > max_step from a JSON-lines file (a resumed run rewrites
    what the killed run logged after its last checkpoint). Returns the number kept."""
    path = os.fspath(path)
    if not os.path.exists(path):
        return 0
    kept = [line for line, rec in _parsed_lines(path) if int(rec.get("step", 0)) <= max_step]
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(k + "\n" for k in kept)
    os.replace(tmp, path)
    return len(kept)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The records of a JSON-lines file such as metrics.jsonl, skipping a line cut short by a
    kill."""
    return [rec for _, rec in _parsed_lines(path)]


def logged_losses(path: str | os.PathLike) -> list[float]:
    """The training losses a ProgressLogger wrote to `path` (metrics.jsonl), in step order."""
    recs = [r for r in read_jsonl(path) if r.get("kind", "train") == "train"
            and "loss" in r and "step" in r]
    return [float(r["loss"]) for r in sorted(recs, key=lambda r: r["step"])]


# A run whose loss ends at least this many times where it began has diverged. Across the 145
# fine-tuning logs of docs/experiments.md's runs the largest healthy value was 1.45; the two
# diverged logs (the same deterministic failure, docs/experiments.md "Denser videos, other
# postures") had 3.5 and 5.8.
DIVERGED_LOSS_GROWTH = 2.0


def loss_growth(losses: Sequence[float], window: float = 0.2) -> float | None:
    """How far a training loss rose: the median of its last `window` share of logged values
    over the median of its first (below 1: it fell). None with fewer than 5 values (too short
    to tell); inf when a value is not finite or the loss rose from a first median of zero;
    1.0 when it began and ended at zero (a network trained on its own predictions, frozen
    BatchNorm, no augmentation: nothing to learn, not a divergence). Compare with
    DIVERGED_LOSS_GROWTH."""
    if not 0.0 < window <= 0.5:
        raise ValueError(f"window must be in (0, 0.5], got {window}")
    values = [float(v) for v in losses]
    if len(values) < 5:
        return None
    if not all(math.isfinite(v) for v in values):
        return math.inf
    n = max(1, int(len(values) * window))
    first, last = statistics.median(values[:n]), statistics.median(values[-n:])
    if first > 0:
        return last / first
    return 1.0 if last == 0 else math.inf


class ProgressLogger:
    """Logs training progress every `every` steps.

    Args:
      workdir: where `metrics.jsonl` and the TensorBoard directory `tb/` go (None: print only).
      total_steps: the run's last step, for the ETA.
      start_step: the step the run (re)starts from; records after it are dropped from an
        existing metrics.jsonl.
      images_per_step: global batch size, for images/s.
      every: print/write every this many steps.
      stream: where progress lines go (default stdout).
    """

    def __init__(self, workdir: str | os.PathLike | None, total_steps: int, *, start_step: int = 0,
                 images_per_step: int = 1, every: int = 10, stream: TextIO | None = None,
                 tensorboard: bool = True):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.total_steps = int(total_steps)
        self.images_per_step = int(images_per_step)
        self.every = int(every)
        self.stream = stream or sys.stdout
        self.active = jax.process_index() == 0
        self._last_step = int(start_step)
        self._last_time = time.perf_counter()
        self._rate: float | None = None  # steps/s, exponential moving average
        self._jsonl = None
        self._tb = None
        if self.active and workdir is not None:
            os.makedirs(workdir, exist_ok=True)
            path = os.path.join(os.fspath(workdir), "metrics.jsonl")
            truncate_jsonl(path, start_step)
            self._jsonl = open(path, "a", encoding="utf-8")
            if tensorboard:
                from tensorboardX import SummaryWriter  # imported lazily: slow to import
                self._tb = SummaryWriter(os.path.join(os.fspath(workdir), "tb"),
                                         purge_step=start_step + 1 if start_step else None)

    def due(self, step: int) -> bool:
        """Whether `step` (steps done so far) is a logging step."""
        return step % self.every == 0 or step == self.total_steps

    def log_train(self, step: int, metrics: Mapping[str, Any]) -> str | None:
        """Record training metrics after `step` steps; prints a line with images/s and ETA.

        The rate is measured over the steps since the previous call (the first interval
        includes compilation), smoothed to give a stable ETA. Returns the printed line.
        """
        now = time.perf_counter()
        dt, dsteps = now - self._last_time, step - self._last_step
        self._last_time, self._last_step = now, step
        if dsteps > 0 and dt > 0:
            rate = dsteps / dt
            self._rate = rate if self._rate is None else 0.5 * self._rate + 0.5 * rate
        if not self.active:
            return None
        values = {k: float(v) for k, v in metrics.items()}
        ips = (self._rate or 0.0) * self.images_per_step
        eta = (self.total_steps - step) / self._rate if self._rate else float("nan")
        record = {"step": int(step), "time": time.time(), "images_per_s": ips, **values}
        self._write(record, prefix="train")
        parts = " ".join(f"{k} {v:.4g}" for k, v in values.items())
        line = (f"step {step}/{self.total_steps} {parts} | {ips:.1f} img/s "
                f"| ETA {format_duration(eta)}")
        print(line, file=self.stream, flush=True)
        return line

    def log_eval(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Record evaluation metrics (e.g. val_mpjpe in mm) after `step` steps."""
        if not self.active:
            return
        values = {k: float(v) for k, v in metrics.items()}
        self._write({"step": int(step), "time": time.time(), **values}, prefix="eval")
        parts = " ".join(f"{k} {v:.4g}" for k, v in values.items())
        print(f"eval step {step}: {parts}", file=self.stream, flush=True)

    def _write(self, record: dict[str, Any], prefix: str) -> None:
        if self._jsonl is not None:
            self._jsonl.write(json.dumps({"kind": prefix, **record}) + "\n")
            self._jsonl.flush()
        if self._tb is not None:
            for k, v in record.items():
                if k not in ("step", "time"):
                    self._tb.add_scalar(f"{prefix}/{k}", v, record["step"])
            self._tb.flush()

    def close(self) -> None:
        """Flush and close the files."""
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
