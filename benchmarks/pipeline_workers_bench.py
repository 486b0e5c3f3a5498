"""How fast `TrainPipeline.batch_at` feeds a training loop with W threads or W processes, as JSON.

A training loop (`train.fit`) asks for batch s, s + 1, ... in order; the pipeline prepares the
next `lookahead` batches in its workers meanwhile. This benchmark asks for batches the same way,
with nothing else to do in between, so it measures the most the pipeline can deliver:
* baseline: the synchronous pipeline (lookahead 0), one batch at a time in the caller;
* pipe: one batch's round trip to a spawned process, with float32 images (the baseline) and
  with the uint8 images worker processes send (the parent converts them);
* `thread_W` / `process_W`: W workers of that kind, lookahead 2 W, after their start-up
  (`startup_s`: until the first prepared batch is ready; spawned processes import the
  pipeline's modules first).
Every case reads the same batches (seed 0, the paper's augmentation), and the first batch of
each is checked against the baseline's.

With --train_steps N each case then feeds `train.fit` itself: the `tiny` detector's 2D step
(the `pretrain2d` stage's update, batch 32) for N steps on this machine's devices, and
`train_images_per_s` is the loop's rate after its first 20 steps (compilation excluded), which
is what a training stage gets: the slower of the pipeline and the step, and whatever the
workers take from the loop's own thread.

    python benchmarks/pipeline_workers_bench.py --config small_styled_wide --split pretrain2d \
        [--data_dir DIR] [--cases thread:1,thread:8,process:8] [--batches 60] [--batch 32] \
        [--train_steps 300]

The dataset must be built (`python -m hourglass_jax.data.mocap_render --config ...`); only the
named split is opened, so a copy of the data directory holding that split's file suffices.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import sys
import tempfile
import time

import jax
import numpy as np
import tensorflow_datasets as tfds

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from hourglass_jax.data import mocap_render as mr  # noqa: E402
from hourglass_jax.data import pipeline as pl  # noqa: E402
from hourglass_jax import train  # noqa: E402
from hourglass_jax.model import Detector2D, model_config  # noqa: E402
from hourglass_jax.predictor import volume_spec  # noqa: E402
from hourglass_jax.targets import heatmap_loss, heatmaps_from_crop_px  # noqa: E402

TRAIN_WARMUP = 20  # steps left out of the training rate (compilation, the workers' start)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _rate(pipe: pl.TrainPipeline, n: int) -> tuple[float, float, dict]:
    """(batches/s over steps 1..n, start-up seconds, batch 0)."""
    t0 = time.perf_counter()
    first = pipe.batch_at(0)  # starts the workers and queues steps 1..lookahead
    if pipe._ahead:
        pipe._ahead[1].result()
    startup = time.perf_counter() - t0
    t0 = time.perf_counter()
    for s in range(1, n + 1):
        pipe.batch_at(s)
    return n / (time.perf_counter() - t0), startup, first


def _echo(batch: dict) -> dict:
    return batch


def _pipe_ms(batches: dict[str, dict], trips: int) -> dict[str, float]:
    """Milliseconds per round trip of each batch to a spawned process and back (pickled both
    ways: twice what a worker's result costs), best of two rounds of `trips`."""
    with concurrent.futures.ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(_echo, {}).result()  # the worker's start-up, not timed
        best = {name: float("inf") for name in batches}
        for _ in range(2):
            for name, batch in batches.items():
                t0 = time.perf_counter()
                for _ in range(trips):
                    pool.submit(_echo, batch).result()
                best[name] = min(best[name], (time.perf_counter() - t0) / trips * 1e3)
    return best


def _train_rate(pipe: pl.TrainPipeline, steps: int) -> float:
    """Images/s of `train.fit` on the tiny detector's 2D step fed by `pipe`, after warm-up."""
    cfg = model_config("tiny")
    spec = volume_spec(cfg)
    model = Detector2D(cfg)
    tx = train.make_optimizer(train.SUPERVISED_LR)
    init = train.create_train_state(model, tx, 0, np.zeros((1, cfg.input_size, cfg.input_size,
                                                             3), np.float32), train=False)

    def loss_fn(outputs, batch):
        target = heatmaps_from_crop_px(batch["pose2d"], spec)
        return heatmap_loss({"heatmaps2d": outputs[0]}, {"heatmaps2d": target}), {}

    asked: dict[int, float] = {}

    def batch_at(step: int) -> dict:
        asked[step] = time.perf_counter()
        b = pipe.batch_at(step)
        return {"image": b["image"], "pose2d": b["pose2d"]}

    with tempfile.TemporaryDirectory() as work:
        train.fit(model, loss_fn, tx, init, batch_at, workdir=work, total_steps=steps,
                  checkpoint_every=steps, log_every=steps, best_metric=None,
                  async_checkpoints=False, stream=sys.stderr, stop_on_sigterm=False)
    last = steps - 1
    return (last - TRAIN_WARMUP) * pipe.global_batch_size / (asked[last] - asked[TRAIN_WARMUP])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="small", help="mocap_render builder config")
    ap.add_argument("--split", default="train")
    ap.add_argument("--data_dir", default=None, help="TFDS data_dir (default: the cache)")
    ap.add_argument("--cases", default="thread:1,thread:4,process:1,process:4",
                    help="comma-separated KIND:WORKERS, KIND thread or process")
    ap.add_argument("--batches", type=int, default=60, help="timed batches per case")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--pipe_trips", type=int, default=20,
                    help="round trips of one batch through a process pipe, float32 against "
                         "uint8 images (0: skip)")
    ap.add_argument("--train_steps", type=int, default=0,
                    help="also time train.fit of the tiny detector for this many steps per case")
    a = ap.parse_args(argv)
    if a.train_steps and a.train_steps <= TRAIN_WARMUP + 1:
        raise ValueError(f"--train_steps must exceed {TRAIN_WARMUP + 1}, got {a.train_steps}")
    data_dir = a.data_dir or mr.cached_data_dir(a.config)
    builder = tfds.builder(f"mocap_render/{a.config}", data_dir=data_dir)
    source = builder.as_data_source(split=a.split)
    result = {"benchmark": "pipeline_workers", "config": a.config, "split": a.split,
              "batch": a.batch, "timed_batches": a.batches, "cores": pl.available_cores(),
              "jax": jax.__version__, "backend": jax.default_backend()}

    def make(**kw) -> pl.TrainPipeline:
        return pl.TrainPipeline(source, global_batch_size=a.batch, seed=0, **kw)

    sync = make(lookahead=0)
    base, _, ref = _rate(sync, a.batches)
    _log(f"synchronous: {base * a.batch:.0f} images/s")
    result["baseline"] = {"what": "synchronous batch_at (lookahead 0)",
                          "images_per_s": round(base * a.batch, 1)}
    if a.train_steps:
        base_train = _train_rate(make(lookahead=0), a.train_steps)
        _log(f"synchronous, training: {base_train:.0f} images/s")
        result["baseline"]["train_images_per_s"] = round(base_train, 1)
    if a.pipe_trips:
        # What a worker process sends: uint8 images (`TrainPipeline._uint8_dataset`), converted
        # in the parent, against the float32 batch the caller gets.
        ms = _pipe_ms({"float32": ref, "uint8": sync._uint8_dataset[0]}, a.pipe_trips)
        _log(f"pipe round trip: float32 images {ms['float32']:.2f} ms, uint8 {ms['uint8']:.2f} ms")
        result["pipe"] = {"what": "one batch to a spawned process and back, ms",
                          "float32_ms": round(ms["float32"], 2), "uint8_ms": round(ms["uint8"], 2),
                          "ratio": round(ms["uint8"] / ms["float32"], 3)}
    for case in a.cases.split(","):
        kind, w = case.split(":")
        pipe = make(workers=int(w), worker_kind=kind)
        try:
            rate, startup, first = _rate(pipe, a.batches)
        finally:
            pipe.close()
        same = all(np.array_equal(first[k], ref[k]) for k in ref)
        _log(f"{kind} x{w}: {rate * a.batch:.0f} images/s ({rate / base:.2f}x), "
             f"start-up {startup:.1f} s, same batches: {same}")
        row = {"images_per_s": round(rate * a.batch, 1), "ratio": round(rate / base, 2),
               "startup_s": round(startup, 2), "same_batches": same}
        if a.train_steps:
            pipe = make(workers=int(w), worker_kind=kind)
            try:
                rate = _train_rate(pipe, a.train_steps)
            finally:
                pipe.close()
            _log(f"{kind} x{w}, training: {rate:.0f} images/s ({rate / base_train:.2f}x)")
            row.update(train_images_per_s=round(rate, 1),
                       train_ratio=round(rate / base_train, 2))
        result[f"{kind}_{w}"] = row
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
