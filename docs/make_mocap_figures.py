"""Draw the mocap clips as MPII-16 skeletons: docs/mocap_clips.png and docs/mocap_rest.png.

Run: ``.venv/bin/python docs/make_mocap_figures.py [--out docs] [--frames 4]``. Takes a few seconds.
Right side red, left side blue, centre black; y (up in the data) is drawn up.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

# Runnable from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from hourglass_jax.data import mocap  # noqa: E402
from hourglass_jax.skeleton import EDGES, JOINT_NAMES, ROOT, SIDE  # noqa: E402

COLOURS = {-1: "tab:red", 1: "tab:blue", 0: "black"}


def _to_plot(p: np.ndarray) -> np.ndarray:
    """Data (x, y up, z) -> matplotlib (X, Y, Z up) as the proper rotation (x, -z, y): no mirroring."""
    return np.stack([p[..., 0], -p[..., 2], p[..., 1]], axis=-1)


def _edge_colour(a: int, b: int) -> str:
    side = SIDE[a] if SIDE[a] == SIDE[b] else 0
    return COLOURS[side]


def draw_skeleton(ax, pose_mm: np.ndarray, lw: float = 1.5) -> None:
    """Draw one (16, 3) mm pose on a 3D axis."""
    q = _to_plot(pose_mm)
    for a, b in EDGES:
        ax.plot(*q[[a, b]].T, color=_edge_colour(a, b), lw=lw)
    ax.scatter(*q.T, c=[COLOURS[s] for s in SIDE], s=4, depthshade=False)


def clips_figure(out_path: str, frames_per_clip: int) -> None:
    clips = mocap.load_all_clips()
    cols = 5
    rows = -(-len(clips) // cols)
    fig = plt.figure(figsize=(3.6 * cols, 2.6 * rows), dpi=100)
    spacing = 1100.0   # mm between the drawn frames
    t0 = time.time()
    for k, (name, clip) in enumerate(clips.items()):
        ax = fig.add_subplot(rows, cols, k + 1, projection="3d")
        idx = np.linspace(0, clip.num_frames - 1, frames_per_clip).round().astype(int)
        for i, f in enumerate(idx):
            pose = clip.joints[f].copy()
            # Keep height and orientation; place the frames side by side along x.
            pose[:, [0, 2]] -= pose[ROOT, [0, 2]]
            pose[:, 0] += i * spacing
            draw_skeleton(ax, pose)
        width = spacing * (frames_per_clip - 1)
        ax.plot([-600, width + 600], [0, 0], [0, 0], color="0.6", lw=0.8)      # floor line
        ax.set_xlim(-600, width + 600)
        ax.set_ylim(-800, 800)
        ax.set_zlim(0, 1900)
        ax.set_box_aspect((width + 1200, 1600, 1900), zoom=1.2)
        ax.view_init(elev=12, azim=-75)
        ax.set_title(f"{name} ({clip.num_frames} fr @ {clip.fps:g} fps)", fontsize=9)
        ax.set_xticks([]), ax.set_yticks([]), ax.set_zticks([])
        print(f"[{k + 1}/{len(clips)}] {name}: frames {idx.tolist()} ({time.time() - t0:.1f}s)", flush=True)
    fig.suptitle("DeepMimic clips as MPII-16 (right red, left blue); frames spread along x, "
                 "root motion removed horizontally for display", fontsize=10)
    fig.subplots_adjust(left=0.0, right=1.0, bottom=0.0, top=0.93, wspace=0.0, hspace=0.08)
    fig.savefig(out_path)
    plt.close(fig)


def rest_figure(out_path: str) -> None:
    """Front view (as seen by someone facing the subject) of the rest pose with joint labels."""
    rest = mocap.rest_pose()
    rest[:, 1] -= rest[:, 1].min() - 50.0   # ankles about 50 mm above the floor
    h, v = -rest[:, 2], rest[:, 1]          # the subject's right (+z) is on the viewer's left
    fig, ax = plt.subplots(figsize=(5, 6.5), dpi=100)
    for a, b in EDGES:
        ax.plot(h[[a, b]], v[[a, b]], color=_edge_colour(a, b), lw=2)
    ax.scatter(h, v, c=[COLOURS[s] for s in SIDE], s=12, zorder=3)
    centre_offsets = {"pelvis": (0, -11), "thorax": (8, -9), "upper_neck": (-6, 0), "head_top": (6, 0)}
    for j, name in enumerate(JOINT_NAMES):
        dx, dy = centre_offsets.get(name, (6 if SIDE[j] > 0 else -6, 0))
        ax.annotate(f"{j} {name}", (h[j], v[j]), xytext=(dx, dy), textcoords="offset points",
                    ha="left" if dx > 0 else ("center" if dx == 0 else "right"), va="center",
                    fontsize=7, color=COLOURS[SIDE[j]])
    ax.axhline(0.0, color="0.6", lw=0.8)
    ax.set_aspect("equal")
    ax.set_xlim(-500, 500), ax.set_ylim(-50, 1750)
    ax.set_xlabel("-z (mm): subject's left ->"), ax.set_ylabel("y (mm), up")
    ax.set_title("Rest pose, front view (subject faces +x, towards the viewer)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--frames", type=int, default=4)
    args = parser.parse_args()
    if args.frames < 1:
        raise ValueError(f"--frames must be >= 1, got {args.frames}")
    os.makedirs(args.out, exist_ok=True)
    clips_figure(os.path.join(args.out, "mocap_clips.png"), args.frames)
    rest_figure(os.path.join(args.out, "mocap_rest.png"))
    print(f"wrote {args.out}/mocap_clips.png and mocap_rest.png")


if __name__ == "__main__":
    main()
