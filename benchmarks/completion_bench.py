"""Speed of the jitted Eq. 1 solver against the NumPy reference, same dtype and iteration count.

    python benchmarks/completion_bench.py [--iters 10] [--batch-iters 5] [--ref-windows 8]
                                          [--threads 1] [--sizes 100,300,1000] [--no-batch]

Prints one JSON object: for F in {100, 300, 1000} one sequence, and a batch of 64 windows of
256 frames (vmapped, one call), the time of the JAX solver (compiled beforehand, best of
--repeats) and of `completion.reference` (float32 like JAX, also best of --repeats for the
single sequences; for the batch, one loop over --ref-windows windows scaled to 64: stated in
the output), frames/s at that iteration count and extrapolated to 300 iterations, and the
ratio reference / JAX. Stop tests are off (tol = 0), so both run exactly the same number of
iterations.

Each case has the wall-clock time (`*_s`, its ratio `ratio`) and the process CPU time over all
threads (`*_cpu_s`, `cpu_ratio`). The machine's load average before and after is recorded: on
a shared machine wall times (of the multi-threaded BLAS under the reference most) depend on it.
`--threads 1` sets one BLAS/OpenMP thread and turns XLA's multi-threaded Eigen off before
NumPy and JAX are imported (XLA may still run independent ops side by side: compare the CPU
times). On a machine shared with other jobs this is the stable measurement: with the default
thread pools both sides were measured from normal to 100x slower from one run to the next
(threads spinning for cores other processes hold).

Accuracy: each case also has the error of the JAX result against `completion.reference` in
float64 after the same iterations (`err_vs_float64_max` / `_rms`, in the data's units, mm-like
random walks around 1000), and for F = 300 the iterations the solver needs to reach its default
tolerance (`iterations_to_tol`, at most 500). `--matmul-precision highest,default` runs every
case for each CompletionConfig.matmul_precision: on a GPU "default" is TensorFloat32 products.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time


def _single_thread_env() -> None:
    """Must run before NumPy / JAX are imported: their thread pools read these at start."""
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"
    flags = " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + flags).strip()


def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=10, help="ALM iterations per single-sequence run")
    ap.add_argument("--batch-iters", type=int, default=5, help="ALM iterations for the batch")
    ap.add_argument("--ref-windows", type=int, default=8, help="reference windows timed (of 64)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", default="100,300,1000")
    ap.add_argument("--no-batch", action="store_true", help="skip the 64-window batch")
    ap.add_argument("--matmul-precision", default="highest",
                    help="comma list of CompletionConfig.matmul_precision values to compare")
    ap.add_argument("--threads", type=int, default=0, choices=(0, 1),
                    help="1: one thread for both sides; 0: the libraries' defaults")
    return ap.parse_args()


def _problem(rng, f, p=16):
    poses = rng.normal(size=(f, p, 3)).cumsum(0) * 20.0 + 1000.0
    observed = rng.random((f, p)) > 0.3
    return poses.astype(np.float32), observed


def _best(fn, repeats):
    """(best wall s, best process CPU s) over `repeats` calls."""
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn())
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return min(wall), min(cpu)


def _entry(frames, iters, t_jax, t_ref, **extra):
    (w_jax, c_jax), (w_ref, c_ref) = t_jax, t_ref
    return dict(frames=frames, iterations=iters, jax_s=round(w_jax, 4), reference_s=round(w_ref, 4),
                jax_cpu_s=round(c_jax, 4), reference_cpu_s=round(c_ref, 4),
                jax_frames_per_s=round(frames / w_jax, 1),
                jax_frames_per_s_at_300_iters=round(frames / w_jax * iters / 300, 1),
                reference_frames_per_s=round(frames / w_ref, 1),
                ratio=round(w_ref / w_jax, 2), cpu_ratio=round(c_ref / c_jax, 2), **extra)


def _errors(got, want) -> dict:
    """Max and RMS difference of completed poses against the float64 reference (data units)."""
    diff = np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))
    return dict(err_vs_float64_max=float(f"{diff.max():.3g}"),
                err_vs_float64_rms=float(f"{np.sqrt(np.mean(diff ** 2)):.3g}"))


def _single_cases(args, rng, precisions) -> list[dict]:
    entries = []
    for f in [int(s) for s in args.sizes.split(",")]:
        poses, observed = _problem(rng, f)
        for svt in ("eigh", "svd"):
            if svt == "svd" and f != 300:
                continue  # the SVD variant only at the target size
            base = CompletionConfig(tol=0.0, max_iters=args.iters, svt=svt)
            t_ref = _best(lambda: reference.complete(poses, observed, base, dtype=np.float32),
                          args.repeats)
            exact = reference.complete(poses, observed, base, dtype=np.float64).X
            for precision in precisions:
                cfg = base.replace(matmul_precision=precision)
                got = jax.block_until_ready(complete(poses, observed, cfg))  # compile
                t_jax = _best(lambda: complete(poses, observed, cfg), args.repeats)
                extra = _errors(got.X, exact)
                if f == 300:  # how far the products' rounding lets the residuals fall
                    to_tol = complete(poses, observed, CompletionConfig(
                        svt=svt, matmul_precision=precision))
                    extra.update(iterations_to_tol=int(to_tol.iterations),
                                 converged=bool(to_tol.converged))
                entries.append(_entry(f, args.iters, t_jax, t_ref, svt=svt,
                                      matmul_precision=precision, **extra))
                print(f"F={f} svt={svt} {precision}: jax {t_jax[0]:.3f}s reference "
                      f"{t_ref[0]:.3f}s (ratio {t_ref[0] / t_jax[0]:.2f}, load "
                      f"{os.getloadavg()[0]:.1f}), error {extra['err_vs_float64_max']}",
                      file=sys.stderr, flush=True)
    return entries


def _batch_cases(args, rng, precisions) -> list[dict]:
    n, w = 64, 256
    base = CompletionConfig(tol=0.0, max_iters=args.batch_iters)
    data = [_problem(rng, w) for _ in range(n)]
    poses = np.stack([d[0] for d in data])
    obs = np.stack([np.broadcast_to(d[1][..., None], d[0].shape) for d in data])
    valid = np.ones((n, w), bool)
    k = min(args.ref_windows, n)
    t_ref = _best(lambda: [reference.complete(poses[i], data[i][1], base, dtype=np.float32)
                           for i in range(k)], 1)
    t_ref = (t_ref[0] * n / k, t_ref[1] * n / k)
    exact = [reference.complete(poses[i], data[i][1], base, dtype=np.float64).X
             for i in range(k)]
    entries = []
    for precision in precisions:
        cfg = base.replace(matmul_precision=precision)
        got = run_padded(poses, obs, valid, cfg)  # compile
        t_jax = _best(lambda: run_padded(poses, obs, valid, cfg), args.repeats)
        entries.append(_entry(n * w, args.batch_iters, t_jax, t_ref, windows=n,
                              window_frames=w, reference_timed_windows=k,
                              matmul_precision=precision, **_errors(got.X[:k], exact)))
        print(f"batch {n}x{w} {precision}: jax {t_jax[0]:.3f}s reference {t_ref[0]:.3f}s",
              file=sys.stderr, flush=True)
    return entries


def main(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    precisions = args.matmul_precision.split(",")
    for precision in precisions:
        CompletionConfig(matmul_precision=precision).validate()  # fail before any timing
    out = {"machine": {"platform": jax.devices()[0].platform,
                       "device": jax.devices()[0].device_kind, "cpus": os.cpu_count(),
                       "processor": platform.processor() or platform.machine(),
                       "jax": jax.__version__, "numpy": np.__version__},
           "dtype": "float32", "threads": args.threads or "default",
           "load_average_1min_before": round(os.getloadavg()[0], 2), "batch": None}
    out["single"] = _single_cases(args, rng, precisions)
    if not args.no_batch:
        batch = _batch_cases(args, rng, precisions)
        out["batch"] = batch[0] if len(batch) == 1 else batch
    out["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    ARGS = _parse()
    if ARGS.threads == 1:
        _single_thread_env()
    import jax  # noqa: E402  (after the thread settings)
    import numpy as np  # noqa: E402

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from completion import CompletionConfig, complete  # noqa: E402
    from completion import reference  # noqa: E402
    from completion.windows import run_padded  # noqa: E402
    main(ARGS)
