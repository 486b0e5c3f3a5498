"""Speed of the jitted Eq. 1 solver against the NumPy reference, same dtype and iteration count.

    python benchmarks/completion_bench.py [--iters 10] [--batch-iters 5] [--ref-windows 8]

Prints one JSON object: for F in {100, 300, 1000} one sequence, and a batch of 64 windows of
256 frames (vmapped, one call), the wall time of the JAX solver (compiled beforehand, best of
--repeats) and of `completion.reference` (float32 like JAX; for the batch, a loop over
--ref-windows windows scaled to 64: stated in the output), frames/s at that iteration count
and extrapolated to 300 iterations, and the ratio reference / JAX. Stop tests are off
(tol = 0), so both run exactly the same number of iterations.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from completion import CompletionConfig, complete  # noqa: E402
from completion import reference  # noqa: E402
from completion.windows import run_padded  # noqa: E402


def _problem(rng, f, p=16):
    poses = rng.normal(size=(f, p, 3)).cumsum(0) * 20.0 + 1000.0
    observed = rng.random((f, p)) > 0.3
    return poses.astype(np.float32), observed


def _best(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return min(times)


def _entry(frames, iters, t_jax, t_ref, **extra):
    return dict(frames=frames, iterations=iters, jax_s=round(t_jax, 4), reference_s=round(t_ref, 4),
                jax_frames_per_s=round(frames / t_jax, 1),
                jax_frames_per_s_at_300_iters=round(frames / t_jax * iters / 300, 1),
                reference_frames_per_s=round(frames / t_ref, 1),
                ratio=round(t_ref / t_jax, 2), **extra)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--iters", type=int, default=10, help="ALM iterations per single-sequence run")
    ap.add_argument("--batch-iters", type=int, default=5, help="ALM iterations for the batch")
    ap.add_argument("--ref-windows", type=int, default=8, help="reference windows timed (of 64)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", default="100,300,1000")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    out = {"machine": {"platform": jax.devices()[0].platform,
                       "device": jax.devices()[0].device_kind, "cpus": os.cpu_count(),
                       "processor": platform.processor() or platform.machine(),
                       "jax": jax.__version__, "numpy": np.__version__},
           "dtype": "float32", "single": [], "batch": None}
    for f in [int(s) for s in args.sizes.split(",")]:
        poses, observed = _problem(rng, f)
        for svt in ("eigh", "svd"):
            if svt == "svd" and f != 300:
                continue  # the SVD variant only at the target size
            cfg = CompletionConfig(tol=0.0, max_iters=args.iters, svt=svt)
            jax.block_until_ready(complete(poses, observed, cfg))  # compile
            t_jax = _best(lambda: complete(poses, observed, cfg), args.repeats)
            t0 = time.perf_counter()
            reference.complete(poses, observed, cfg, dtype=np.float32)
            t_ref = time.perf_counter() - t0
            out["single"].append(_entry(f, args.iters, t_jax, t_ref, svt=svt))
            print(f"F={f} svt={svt}: jax {t_jax:.3f}s reference {t_ref:.3f}s", file=sys.stderr)
    n, w = 64, 256
    cfg = CompletionConfig(tol=0.0, max_iters=args.batch_iters)
    data = [_problem(rng, w) for _ in range(n)]
    poses = np.stack([d[0] for d in data])
    obs = np.stack([np.broadcast_to(d[1][..., None], d[0].shape) for d in data])
    valid = np.ones((n, w), bool)
    jax.block_until_ready(run_padded(poses, obs, valid, cfg))  # compile
    t_jax = _best(lambda: run_padded(poses, obs, valid, cfg), args.repeats)
    k = min(args.ref_windows, n)
    t0 = time.perf_counter()
    for i in range(k):
        reference.complete(poses[i], data[i][1], cfg, dtype=np.float32)
    t_ref = (time.perf_counter() - t0) * n / k
    out["batch"] = _entry(n * w, args.batch_iters, t_jax, t_ref, windows=n, window_frames=w,
                          reference_timed_windows=k)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
