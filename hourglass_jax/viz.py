"""Skeleton pictures and training curves (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

import json
import os
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from hourglass_jax import skeleton  # noqa: E402

# Colours and line styles of the paper's Fig. 3: ground truth green dashed, prediction red,
# optimisation blue.
STYLES: dict[str, dict] = {
    "ground truth": dict(color="tab:green", linestyle="--"),
    "prediction": dict(color="tab:red", linestyle="-"),
    "optimisation": dict(color="tab:blue", linestyle="-"),
    "baseline": dict(color="tab:red", linestyle="-"),
    "fine-tuned": dict(color="tab:blue", linestyle="-"),
}


def draw_skeleton_3d(ax, pose: np.ndarray, label: str | None = None, **style) -> None:
    """Draws one (16, 3) mm camera-frame pose on a 3D axes, camera y (down) shown as up."""
    pose = np.asarray(pose, dtype=np.float64)
    if pose.shape != (skeleton.NUM_JOINTS, 3):
        raise ValueError(f"pose must be (16, 3) mm, got {pose.shape}")
    # Camera frame (x right, y down, z forward) -> plot frame (x, z depth, -y up).
    p = np.stack([pose[:, 0], pose[:, 2], -pose[:, 1]], axis=1)
    for n, (a, b) in enumerate(skeleton.EDGES):
        ax.plot(*zip(p[a], p[b]), linewidth=2, label=label if n == 0 else None, **style)


def _set_equal_box(ax, poses: Sequence[np.ndarray]) -> None:
    pts = np.concatenate([np.asarray(p).reshape(-1, 3) for p in poses])
    pts = np.stack([pts[:, 0], pts[:, 2], -pts[:, 1]], axis=1)
    centre = pts.mean(axis=0)
    radius = max(np.abs(pts - centre).max(), 1.0)
    ax.set_xlim(centre[0] - radius, centre[0] + radius)
    ax.set_ylim(centre[1] - radius, centre[1] + radius)
    ax.set_zlim(centre[2] - radius, centre[2] + radius)
    ax.set_xticklabels([])
    ax.set_yticklabels([])
    ax.set_zticklabels([])


def skeleton_grid(examples: Sequence[Mapping[str, np.ndarray]], path: str,
                  titles: Sequence[str] | None = None, columns: int = 4) -> str:
    """One 3D panel per example, each overlaying its labelled poses (dict label -> (16, 3) mm).

    Labels with an entry in STYLES get the paper's colours. Writes a PNG and returns its path.
    """
    if not examples:
        raise ValueError("skeleton_grid needs at least one example")
    rows = -(-len(examples) // columns)
    cols = min(columns, len(examples))
    fig = plt.figure(figsize=(3.2 * cols, 3.2 * rows))
    for i, ex in enumerate(examples):
        ax = fig.add_subplot(rows, cols, i + 1, projection="3d")
        for label, pose in ex.items():
            pose = np.asarray(pose) - np.asarray(pose)[skeleton.ROOT]  # root-relative
            draw_skeleton_3d(ax, pose, label=label, **STYLES.get(label, {}))
        _set_equal_box(ax, [np.asarray(p) - np.asarray(p)[skeleton.ROOT] for p in ex.values()])
        ax.view_init(elev=10, azim=-70)
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
        if i == 0:
            ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def training_curves(jsonl_paths: Mapping[str, str], path: str, key: str = "loss") -> str:
    """Plots `key` against step for each labelled JSON-lines metrics file; writes a PNG."""
    fig, ax = plt.subplots(figsize=(6, 4))
    plotted = 0
    for label, jpath in jsonl_paths.items():
        if not os.path.exists(jpath):
            continue
        steps, values = [], []
        with open(jpath) as f:
            for line in f:
                rec = json.loads(line)
                if key in rec and "step" in rec:
                    steps.append(rec["step"])
                    values.append(rec[key])
        if steps:
            ax.plot(steps, values, label=label)
            plotted += 1
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.set_yscale("log")
    if plotted:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def error_vs_labelled(points: Mapping[str, Sequence[tuple[int, float]]], path: str,
                      ylabel: str = "MPJPE (mm)") -> str:
    """Figure 5 analogue: error against the number of labelled subjects, one line per series."""
    fig, ax = plt.subplots(figsize=(5, 4))
    for label, pts in points.items():
        pts = sorted(pts)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.set_xlabel("labelled subjects")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def error_panels_vs_labelled(
        panels: Mapping[str, Mapping[str, Sequence[tuple[int, float, float]]]], path: str,
        ylabel: str = "error (mm)") -> str:
    """Figure 5 analogue with one panel per metric and error bars for the spread over seeds.

    Args:
      panels: {panel title (e.g. "MPJPE"): {series label: [(labelled subjects, mean mm,
        spread mm), ...]}}; labels with an entry in STYLES ("baseline", "fine-tuned") get the
        paper's colours.
      path: the PNG to write (its directory is created).
    Returns:
      path.
    """
    if not panels:
        raise ValueError("error_panels_vs_labelled needs at least one panel")
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False)
    for ax, (title, series) in zip(axes[0], panels.items()):
        xs: set[int] = set()
        for label, pts in series.items():
            pts = sorted(pts)
            style = {k: v for k, v in STYLES.get(label, {}).items() if k == "color"}
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts],
                        marker="o", capsize=3, label=label, **style)
            xs.update(int(p[0]) for p in pts)
        ax.set_xticks(sorted(xs))  # subject counts are integers
        ax.set_title(title)
        ax.set_xlabel("labelled subjects")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
