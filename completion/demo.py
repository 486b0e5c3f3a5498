"""Completion demo on real motion capture: `python -m completion.demo [--out DIR]`.

Takes a few real mocap clips (hourglass_jax.data.mocap, imported lazily so that the
`completion` package itself never depends on hourglass_jax), corrupts them like occluded,
noisy network predictions (`corrupt`), completes them in one batched call and reports the
error of the noisy input, of linear interpolation and of the completion, as a markdown table,
JSON and a PNG of one joint's trajectory.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def corrupt(joints: np.ndarray, rng: np.random.Generator, noise_mm: float = 15.0,
            hide_frac: float = 0.2, burst_len: tuple[int, int] = (3, 12),
            burst_err_mm: float = 150.0, outlier_frac: float = 0.02,
            outlier_mm: float = 300.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Simulate network predictions of a clip: noise, occlusion bursts, gross outliers.

    Every entry gets Gaussian noise (noise_mm per coordinate). Each joint is hidden
    (low confidence) in bursts of burst_len frames (inclusive range) covering about hide_frac of
    its frames; a hidden joint's prediction is additionally off by a random burst_err_mm offset,
    constant over the burst. A fraction outlier_frac of the *confident* entries get a gross
    outlier_mm error in a random direction and stay confident.

    Args:
      joints: (F, P, 3) ground truth in mm.
    Returns:
      (predictions (F, P, 3) mm, observed (F, P) bool, outlier (F, P) bool).
    """
    f, p, _ = joints.shape
    pred = joints + rng.normal(scale=noise_mm, size=joints.shape)
    observed = np.ones((f, p), bool)
    mean_len = 0.5 * (burst_len[0] + burst_len[1])
    p_start = hide_frac / (mean_len * (1.0 - hide_frac))
    for j in range(p):
        t = 0
        while t < f:
            if rng.random() < p_start:
                n = int(rng.integers(burst_len[0], burst_len[1] + 1))
                direction = rng.normal(size=3)
                pred[t:t + n, j] += burst_err_mm * direction / np.linalg.norm(direction)
                observed[t:t + n, j] = False
                t += n
            t += 1
    outlier = observed & (rng.random((f, p)) < outlier_frac)
    k = int(outlier.sum())
    direction = rng.normal(size=(k, 3))
    pred[outlier] += outlier_mm * direction / np.linalg.norm(direction, axis=1, keepdims=True)
    return pred, observed, outlier


def mpjpe(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    """Mean Euclidean joint error (mm) between (F, P, 3) arrays, over the (F, P) entries `where`."""
    err = np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64), axis=-1)
    return float(err.mean() if where is None else err[where].mean())


DEFAULT_CLIPS = ("walk", "punch", "dance_a", "kick", "jump", "cartwheel")


def evaluate(truth: np.ndarray, pred: np.ndarray, observed: np.ndarray, outlier: np.ndarray,
             completed: np.ndarray) -> dict[str, float]:
    """MPJPE (mm) of the input, of interpolation and of the completion, on three entry sets.

    hidden: the unobserved joints; corrupted: hidden plus the confident gross outliers (which
    Eq. 1 holds exactly, like every observed entry); all: every joint of every frame.
    All arrays (F, P, 3) mm except observed, outlier (F, P) bool.
    """
    from completion.interp import interpolate

    hidden = ~observed
    bad = hidden | outlier
    interp = interpolate(pred, observed)
    out = {"hidden_frac": float(hidden.mean())}
    for name, where in (("hidden", hidden), ("corrupted", bad), ("all", None)):
        out[f"input_{name}"] = mpjpe(pred, truth, where)
        out[f"interp_{name}"] = mpjpe(interp, truth, where)
        out[f"completion_{name}"] = mpjpe(completed, truth, where)
    return out


def _markdown(rows: list[dict], elapsed: float, config) -> str:
    head = ("| clip | frames | hidden | input (hidden) | interp. (hidden) | completion (hidden) "
            "| input (all) | interp. (all) | completion (all) | iters | converged |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = [f"| {r['clip']} | {r['frames']} | {r['hidden_frac']:.0%} | {r['input_hidden']:.1f} "
             f"| {r['interp_hidden']:.1f} | {r['completion_hidden']:.1f} | {r['input_all']:.1f} "
             f"| {r['interp_all']:.1f} | {r['completion_all']:.1f} | {r['iterations']} "
             f"| {r['converged']} |" for r in rows]
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if isinstance(rows[0][k], float)}
    lines.append(f"| **mean** | | {mean['hidden_frac']:.0%} | {mean['input_hidden']:.1f} "
                 f"| {mean['interp_hidden']:.1f} | {mean['completion_hidden']:.1f} "
                 f"| {mean['input_all']:.1f} | {mean['interp_all']:.1f} "
                 f"| {mean['completion_all']:.1f} | | |")
    return (f"MPJPE in mm against the mocap ground truth. Solver: one batched call for all clips, "
            f"{elapsed:.1f} s including compilation. Config: {config}\n\n" + head
            + "\n".join(lines) + "\n")


def _plot(path: str, truth, pred, observed, interp, completed, clip: str, fps: float) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hidden = ~observed
    joint = int(np.argmax(hidden.sum(0)))  # the joint hidden most often
    axis = int(np.argmax(truth[:, joint].std(0)))  # its most moving coordinate
    t = np.arange(truth.shape[0]) / fps
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.plot(t, truth[:, joint, axis], "k-", lw=2, label="truth")
    ax.plot(t[~hidden[:, joint]], pred[~hidden[:, joint], joint, axis], "o", ms=3, color="gray",
            label="input (confident)")
    ax.plot(t[hidden[:, joint]], pred[hidden[:, joint], joint, axis], "x", ms=4, color="red",
            label="input (hidden)")
    ax.plot(t, interp[:, joint, axis], "--", color="tab:orange", label="interpolation")
    ax.plot(t, completed[:, joint, axis], "-", color="tab:blue", label="completion (Eq. 1)")
    ax.set_xlabel("time (s)")
    ax.set_ylabel(f"joint {joint}, axis {'xyz'[axis]} (mm)")
    ax.set_title(f"{clip}: one joint's trajectory")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(clips=DEFAULT_CLIPS, seed: int = 1, fps: float = 30.0, config=None,
        out_dir: str | None = None) -> dict:
    """Corrupt the clips, complete them in one batched call, return (and write) the table."""
    from hourglass_jax.data.mocap import load_clip  # the demo's data; not a package dependency

    from completion.config import CompletionConfig
    from completion.interp import interpolate
    from completion.windows import complete_batch

    config = config or CompletionConfig()
    rng = np.random.default_rng(seed)
    truths, preds, masks, outliers = [], [], [], []
    for name in clips:
        joints = load_clip(name, fps=fps).joints
        pred, observed, outlier = corrupt(joints, rng)
        truths.append(joints), preds.append(pred), masks.append(observed), outliers.append(outlier)
    print(f"completing {len(clips)} clips ({sum(len(t) for t in truths)} frames) in one "
          f"batched call ...", flush=True)
    t0 = time.perf_counter()
    results = complete_batch(preds, masks, config)
    completed = [np.asarray(r.X, np.float64) for r in results]
    elapsed = time.perf_counter() - t0
    rows = []
    for name, truth, pred, obs, bad, x, r in zip(clips, truths, preds, masks, outliers, completed,
                                                 results):
        row = {"clip": name, "frames": int(len(truth))}
        row.update(evaluate(truth, pred, obs, bad, x))
        row.update(iterations=int(r.iterations), converged=bool(r.converged))
        rows.append(row)
    table = _markdown(rows, elapsed, config)
    print(table)
    summary = {"clips": rows, "solver_seconds_incl_compile": elapsed, "seed": seed, "fps": fps,
               "config": str(config)}
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "completion_demo.json"), "w") as fh:
            json.dump(summary, fh, indent=1)
        with open(os.path.join(out_dir, "completion_demo.md"), "w") as fh:
            fh.write(table)
        _plot(os.path.join(out_dir, "trajectory.png"), truths[0], preds[0], masks[0],
              interpolate(preds[0], masks[0]), completed[0], clips[0], fps)
        print(f"wrote {out_dir}/completion_demo.json, .md and trajectory.png")
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m completion.demo", description=__doc__)
    ap.add_argument("--out", default="runs/completion_demo", help="output directory")
    ap.add_argument("--clips", default=",".join(DEFAULT_CLIPS))
    ap.add_argument("--seed", type=int, default=1,
                    help="corruption seed (the default lambdas were chosen on seed 0)")
    ap.add_argument("--fps", type=float, default=30.0)
    args = ap.parse_args(argv)
    run(tuple(args.clips.split(",")), args.seed, args.fps, out_dir=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
