"""Embedded-dataset throughput, printed as JSON: rendering frames/s and pipeline batches/s.

Measured in one run on one machine:
* render: the jitted, vmapped renderer at RENDER_BATCH frames per call against the same
  renderer called one frame at a time (baseline); also `render_frames` end to end (scene
  assembly, crops, uint8 conversion; PNG encoding excluded).
* pipeline: `TrainPipeline` batches/s with the paper's augmentation (decode PNG, flip, rotate,
  scale, stack), read one batch at a time and with prefetch threads, against the same pipeline
  without augmentation (baseline).
* feed: the pipeline's images/s against the training step of the `tiny` model (volumetric
  stage, the step `benchmarks/train_bench.py` times), when that benchmark is importable:
  feed_ratio > 1 means the input pipeline is faster than training consumes.

    python benchmarks/data_bench.py [--config small] [--batch 32] [--batches 30]

The dataset is built on first use into mocap_render.cached_data_dir (the `small` build takes
about 2 minutes on 2 CPU cores).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from hourglass_jax.data import mocap_render as mr  # noqa: E402
from hourglass_jax.data import pipeline as pl  # noqa: E402
from hourglass_jax.data import render as rnd  # noqa: E402


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _render_rate(inp: mr.RenderInputs, res: int, batch: int, seconds: float) -> float:
    """Frames/s of the jitted renderer alone at a given batch size."""
    n_rows = len(inp.joints)
    jax.block_until_ready(rnd.render_batch(*inp.rows(list(range(batch))), res))  # compile
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        for lo in range(0, n_rows - batch + 1, batch):
            jax.block_until_ready(rnd.render_batch(*inp.rows(list(range(lo, lo + batch))), res))
            n += batch
    return n / (time.perf_counter() - t0)


def bench_render(cfg: mr.MocapRenderConfig, n_batches: int) -> dict:
    it = mr.split_frames(cfg, "train")
    chunks = [next(it) for _ in range(n_batches + 1)]
    mr.render_frames(chunks[0], cfg)  # compile
    t0 = time.perf_counter()
    n = 0
    for i, b in enumerate(chunks[1:]):
        mr.render_frames(b, cfg)
        n += len(b.sequence)
        el = time.perf_counter() - t0
        _log(f"render {i + 1}/{n_batches}: {n / el:.0f} frames/s, "
             f"ETA {el / (i + 1) * (n_batches - i - 1):.0f} s")
    end_to_end = n / (time.perf_counter() - t0)
    inp = mr.render_inputs(chunks[1], cfg)
    res = cfg.res * cfg.supersample
    batched = _render_rate(inp, res, mr.RENDER_BATCH, 3.0)
    base = _render_rate(inp, res, 1, 3.0)
    _log(f"render: {batched:.0f} frames/s at batch {mr.RENDER_BATCH}, {base:.0f} one at a time")
    return {"res": cfg.res, "frames_per_s_end_to_end": round(end_to_end, 1),
            "render_batch": mr.RENDER_BATCH, "frames_per_s": round(batched, 1),
            "baseline": "same jitted renderer, one frame per call",
            "baseline_frames_per_s": round(base, 1), "ratio": round(batched / base, 2)}


def _pipe_rate(p: pl.TrainPipeline, n: int, threads: int) -> float:
    if threads:
        it = p.iterator(start_step=1, num_threads=threads, prefetch=8)
        next(it)  # start the threads
        t0 = time.perf_counter()
        for _ in range(n):
            next(it)
    else:
        p.batch_at(0)
        t0 = time.perf_counter()
        for s in range(1, n + 1):
            p.batch_at(s)
    return n / (time.perf_counter() - t0)


def bench_pipeline(source, batch: int, n: int) -> dict:
    aug = pl.TrainPipeline(source, global_batch_size=batch, seed=0, augment=True)
    plain = pl.TrainPipeline(source, global_batch_size=batch, seed=0, augment=False)
    out = {"batch": batch}
    for threads in (0, 2):
        r_aug = _pipe_rate(aug, n, threads)
        r_plain = _pipe_rate(plain, n, threads)
        _log(f"pipeline threads={threads}: {r_aug:.1f} batches/s augmented, "
             f"{r_plain:.1f} without")
        out[f"threads_{threads}"] = {
            "batches_per_s": round(r_aug, 2), "images_per_s": round(r_aug * batch, 1),
            "baseline": "no augmentation", "baseline_batches_per_s": round(r_plain, 2),
            "ratio": round(r_aug / r_plain, 3)}
    return out


def bench_train(batch: int) -> dict | None:
    try:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import train_bench  # noqa: PLC0415
    except ImportError as e:
        _log(f"train_bench not importable ({e}); no feed comparison")
        return None
    return train_bench.run_case("tiny", "volumetric", batch, "float32", steps=5, warmup=1,
                                peak_tflops=None, baseline=False)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="small", help="mocap_render config: tiny, small, full")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=30, help="timed pipeline batches")
    ap.add_argument("--render_batches", type=int, default=8, help="timed render batches")
    ap.add_argument("--no_train", action="store_true", help="skip the training comparison")
    ap.add_argument("--data_dir", default=None,
                    help="TFDS data_dir holding the dataset (default: build into the cache)")
    a = ap.parse_args(argv)
    cfg = next((c for c in mr.CONFIGS if c.name == a.config), None)
    if cfg is None:
        raise ValueError(f"unknown config {a.config!r}; valid: {[c.name for c in mr.CONFIGS]}")
    result = {"benchmark": "data", "config": cfg.name, "jax": jax.__version__,
              "backend": jax.default_backend(), "cpu_count": os.cpu_count()}
    _log("rendering ...")
    result["render"] = bench_render(cfg, a.render_batches)
    _log("dataset ...")
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # TFDS prints build notes on stdout
        data_dir = a.data_dir or mr.cached_data_dir(cfg.name)
    result["dataset_ready_s"] = round(time.perf_counter() - t0, 1)
    src = mr.load(cfg.name, data_dir, build=False)["train"]
    result["pipeline"] = bench_pipeline(src, a.batch, a.batches)
    if not a.no_train and cfg.res == 64:
        tr = bench_train(a.batch)
        if tr is not None:
            best = max(v["images_per_s"] for k, v in result["pipeline"].items()
                       if k.startswith("threads"))
            result["train_tiny"] = {"images_per_s": tr["images_per_s"], "batch": a.batch,
                                    "devices": tr["devices"]}
            result["feed_ratio"] = round(best / tr["images_per_s"], 2)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
