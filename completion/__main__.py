"""`python -m completion IN.npz OUT.npz [--tau 0.7] [...]`: complete a pose sequence file.

IN.npz holds `poses` (F, P, 3) in mm (NaN allowed) and `scores` (F, P) confidences; entries
with score > tau are observed (held exactly). OUT.npz receives `poses` (the completed
sequence), `E` (the sparse error term), `observed` (F, P) and the solver's `iterations`,
`converged`, `residuals`, `objective`. Before/after statistics are printed.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from completion.config import CompletionConfig


def _parser() -> argparse.ArgumentParser:
    d = CompletionConfig()
    ap = argparse.ArgumentParser(prog="python -m completion", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", help="npz with poses (F, P, 3) mm and scores (F, P)")
    ap.add_argument("output", help="npz to write")
    ap.add_argument("--tau", type=float, default=0.7, help="confidence threshold (paper: 0.7)")
    ap.add_argument("--poses-key", default="poses")
    ap.add_argument("--scores-key", default="scores")
    ap.add_argument("--lambda-d", type=float, default=d.lambda_d)
    ap.add_argument("--lambda-c", type=float, default=d.lambda_c)
    ap.add_argument("--lambda-e", type=float, default=d.lambda_e)
    ap.add_argument("--max-iters", type=int, default=d.max_iters)
    ap.add_argument("--tol", type=float, default=d.tol)
    ap.add_argument("--svt", choices=("eigh", "svd"), default=d.svt)
    ap.add_argument("--window", type=int, default=256,
                    help="longer sequences are solved as overlapping windows of this many frames")
    ap.add_argument("--overlap", type=int, default=64)
    return ap


def _load(path: str, poses_key: str, scores_key: str) -> tuple[np.ndarray, np.ndarray]:
    if not os.path.isfile(path):
        raise ValueError(f"input file not found: {path}")
    with np.load(path) as data:
        missing = [k for k in (poses_key, scores_key) if k not in data.files]
        if missing:
            raise ValueError(f"{path} lacks array(s) {missing}; it has {data.files}")
        poses, scores = np.asarray(data[poses_key]), np.asarray(data[scores_key])
    if poses.ndim != 3 or poses.shape[-1] != 3:
        raise ValueError(f"{poses_key} must be (F, P, 3), got {poses.shape}")
    if scores.shape != poses.shape[:2]:
        raise ValueError(f"{scores_key} must be (F, P) = {poses.shape[:2]}, got {scores.shape}")
    if np.isnan(scores).any():
        raise ValueError(f"{scores_key} contains NaN")
    return poses, scores


def _speed(x: np.ndarray) -> float:
    """Mean joint displacement between consecutive frames (mm/frame), ignoring NaN."""
    return float(np.nanmean(np.linalg.norm(np.diff(x, axis=0), axis=-1)))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from completion.windows import complete_long  # imports JAX: after argument parsing

    poses, scores = _load(args.input, args.poses_key, args.scores_key)
    observed = (scores > args.tau) & np.isfinite(poses).all(axis=-1)
    cfg = CompletionConfig(lambda_d=args.lambda_d, lambda_c=args.lambda_c,
                           lambda_e=args.lambda_e, max_iters=args.max_iters, tol=args.tol,
                           svt=args.svt)
    t0 = time.perf_counter()
    res = complete_long(poses, observed, cfg, window=args.window, overlap=args.overlap)
    x = np.asarray(res.X)
    elapsed = time.perf_counter() - t0
    hidden = ~observed
    change = np.linalg.norm(x - poses, axis=-1)[hidden & np.isfinite(poses).all(-1)]
    f, p = observed.shape
    print(f"frames {f}, joints {p}, observed (score > {args.tau}) {observed.mean():.1%}, "
          f"missing (NaN) entries {int(np.isnan(poses).any(-1).sum())} -> "
          f"{int(np.isnan(x).any(-1).sum())}")
    print(f"mean joint speed {_speed(poses):.2f} -> {_speed(x):.2f} mm/frame; unobserved joints "
          f"moved by {change.mean() if change.size else 0.0:.2f} mm on average")
    print(f"ALM: {int(res.iterations)} iterations, converged={bool(res.converged)}, residuals "
          f"{np.asarray(res.residuals).round(6).tolist()}, {elapsed:.2f} s "
          f"({f / elapsed:.0f} frames/s incl. compilation)")
    np.savez(args.output, poses=x, E=np.asarray(res.E), observed=observed,
             iterations=np.asarray(res.iterations), converged=np.asarray(res.converged),
             residuals=np.asarray(res.residuals), objective=np.asarray(res.objective))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
