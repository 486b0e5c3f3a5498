"""The `complete` stage on a real run's predictions: accelerator against this machine's CPU.

    python benchmarks/complete_stage_bench.py --workdir=runs/styled19200_seed0
        [--repeats 2] [--matmul-precision highest,default]

Runs `experiments.stages.complete_videos` (every unlabelled video of the run, Eq. 1 batched
over videos, the run's own tau / lambda_o / max_iters / max_window from its config.json) on the
default device and, as the baseline measured in the same process, on the CPU backend
(`ratio` = CPU seconds / device seconds; on a CPU-only machine both are the CPU). Each timing
is the best of --repeats after one untimed call that compiles. Accuracy: the MPJPE of the
predictions and of the completed poses against the ground truth, and the largest difference
(mm) of each result from the run's stored pseudo-labels (`complete/pseudo_labels.npz`, written
by the machine that ran the stage). Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import jax
import ml_collections
import numpy as np

# Runnable from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import stages  # noqa: E402
from experiments import workdir as workdir_lib  # noqa: E402
from hourglass_jax import metrics  # noqa: E402


def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True,
                    help="a run with predict/predictions.npz and config.json")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--matmul-precision", default="highest",
                    help="comma list of CompletionConfig.matmul_precision values")
    ap.add_argument("--no-cpu-baseline", action="store_true")
    return ap.parse_args()


def _load(workdir: str):
    config = ml_collections.ConfigDict(workdir_lib.load_stored_config(workdir))
    preds = stages._load_npz(os.path.join(workdir, "predict", "predictions.npz"))
    stored_path = os.path.join(workdir, "complete", "pseudo_labels.npz")
    stored = stages._load_npz(stored_path) if os.path.exists(stored_path) else None
    return config, preds, stored


def _run(device, preds, config, solver, repeats: int) -> dict:
    def once():
        with jax.default_device(device):
            return stages.complete_videos(preds, config.complete.tau, solver,
                                          config.complete.max_window)

    start = time.perf_counter()
    completed, _, _, stats = once()
    first = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        once()
        best = min(best, time.perf_counter() - start)
    return dict(device=device.device_kind, platform=device.platform,
                first_call_s=round(first, 2), seconds=round(best, 2),
                frames_per_s=round(stats["frames"] / best, 1),
                iterations_mean=round(stats["iterations_mean"], 1),
                converged=stats["converged"], videos=stats["videos_solved"],
                completed=completed)


def main(args: argparse.Namespace) -> None:
    config, preds, stored = _load(args.workdir)
    base = stages.solver_config(config)
    out = {"workdir": args.workdir, "frames": int(len(preds["pred"])),
           "machine": {"cpus": os.cpu_count(), "jax": jax.__version__,
                       "processor": platform.processor() or platform.machine(),
                       "default_device": jax.devices()[0].device_kind},
           "solver": {"tau": config.complete.tau, "lambda_o": base.lambda_o,
                      "max_iters": base.max_iters, "max_window": config.complete.max_window},
           "mpjpe_predictions_mm": round(float(np.mean(metrics.mpjpe(preds["pred"],
                                                                     preds["gt"]))), 2),
           "cases": []}
    devices = [jax.devices()[0]]
    if not args.no_cpu_baseline and devices[0].platform != "cpu":
        devices.append(jax.devices("cpu")[0])
    for i, precision in enumerate(args.matmul_precision.split(",")):
        solver = base.replace(matmul_precision=precision).validate()
        # CPUs compute float32 products in float32 whatever the setting: one baseline is enough.
        for device in devices if i == 0 else devices[:1]:
            case = _run(device, preds, config, solver, args.repeats)
            completed = case.pop("completed")
            case.update(matmul_precision=precision, mpjpe_completed_mm=round(float(np.mean(
                metrics.mpjpe(completed, preds["gt"]))), 2))
            if stored is not None:
                diff = np.abs(completed.astype(np.float64) - stored["completed"])
                case.update(max_diff_from_stored_mm=float(f"{diff.max():.3g}"),
                            mean_diff_from_stored_mm=float(f"{diff.mean():.3g}"))
            out["cases"].append(case)
            print(f"{precision} on {case['device']}: {case['seconds']} s "
                  f"(first {case['first_call_s']} s), MPJPE {case['mpjpe_completed_mm']} mm",
                  file=sys.stderr, flush=True)
        if len(devices) == 2 and i == 0:
            out["cases"][-2]["ratio_cpu_over_device"] = round(
                out["cases"][-1]["seconds"] / out["cases"][-2]["seconds"], 2)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(_parse())
