"""Pictures of predictions: each frame with its 2D skeleton beside a 3D view, as PNGs, GIF or MP4.

Raw predictions are drawn in red, completed poses in blue (the colours of viz.STYLES and of the
HTML viewer). The 3D view shows root-relative poses with camera y (down) drawn as up, like
`viz.draw_skeleton_3d`, in one fixed box for the whole sequence so that motion is visible.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Iterable, Iterator, Sequence

import matplotlib

matplotlib.use("Agg")
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from hourglass_jax import skeleton, viz  # noqa: E402
from hourglass_jax.inference import quiet_fork  # noqa: E402

RAW = viz.STYLES["prediction"]["color"]
COMPLETED = viz.STYLES["optimisation"]["color"]


def _check(name: str, a: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    if a is None:
        return None
    a = np.asarray(a, np.float64)
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    return a


def box_radius(*pose_sets: np.ndarray | None) -> float:
    """Half side (mm) of a cube about the root holding every joint of the given (F, 16, 3) sets."""
    vals = [np.abs(np.asarray(p)).max() for p in pose_sets if p is not None and np.size(p)]
    return max(max(vals, default=0.0), 1.0) * 1.05


def render_frame(frame: np.ndarray, pose2d: np.ndarray, pose3d: np.ndarray,
                 pose2d_completed: np.ndarray | None = None,
                 pose3d_completed: np.ndarray | None = None, radius: float | None = None,
                 title: str = "", height_px: int = 320) -> np.ndarray:
    """One picture: the frame with its 2D skeleton(s) (left) beside the 3D view (right).

    Args:
      frame: (H, W, 3) uint8. pose2d: (16, 2) px in the frame. pose3d: (16, 3) mm root-relative.
      pose2d_completed, pose3d_completed: optional completed poses, same shapes.
      radius: half side of the 3D box, mm (default: from these poses). title: above the frame.
      height_px: height of the picture.
    Returns:
      (height_px, width, 3) uint8 RGB.
    """
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be (H, W, 3), got shape {frame.shape}")
    j = skeleton.NUM_JOINTS
    pose2d, pose3d = _check("pose2d", pose2d, (j, 2)), _check("pose3d", pose3d, (j, 3))
    p2c = _check("pose2d_completed", pose2d_completed, (j, 2))
    p3c = _check("pose3d_completed", pose3d_completed, (j, 3))
    h, w = frame.shape[:2]
    dpi = 100
    fig_h = height_px / dpi
    fig = Figure(figsize=(fig_h * (w / h) + fig_h, fig_h), dpi=dpi)
    FigureCanvasAgg(fig)
    left = fig.add_axes((0.0, 0.0, (w / h) / (w / h + 1), 0.92))
    left.imshow(frame)
    left.set_axis_off()
    left.set_title(title, fontsize=8)
    for pose, colour in ((pose2d, RAW), (p2c, COMPLETED)):
        if pose is None:
            continue
        for a, b in skeleton.EDGES:
            left.plot(*zip(pose[a], pose[b]), color=colour, linewidth=1.5)
    left.set_xlim(-0.5, w - 0.5)
    left.set_ylim(h - 0.5, -0.5)
    right = fig.add_axes(((w / h) / (w / h + 1), 0.0, 1 / (w / h + 1), 1.0), projection="3d")
    for pose, colour, name in ((pose3d, RAW, "raw"), (p3c, COMPLETED, "completed")):
        if pose is not None:
            viz.draw_skeleton_3d(right, pose, label=name, color=colour)
    r = radius if radius is not None else box_radius(pose3d[None], None if p3c is None
                                                     else p3c[None])
    right.set_xlim(-r, r)
    right.set_ylim(-r, r)
    right.set_zlim(-r, r)
    right.set_xticklabels([])
    right.set_yticklabels([])
    right.set_zticklabels([])
    right.view_init(elev=10, azim=-70)
    right.set_box_aspect(None, zoom=1.3)  # the default leaves a wide empty margin
    right.legend(loc="upper right", fontsize=7)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def render_sequence(frames: Iterable[np.ndarray], pose2d: np.ndarray, pose3d: np.ndarray,
                    pose2d_completed: np.ndarray | None = None,
                    pose3d_completed: np.ndarray | None = None, names: Sequence[str] | None = None,
                    height_px: int = 320, log: bool = True) -> Iterator[np.ndarray]:
    """Yields `render_frame` for each of F frames (poses (F, 16, 2) px and (F, 16, 3) mm),
    with one 3D box for the whole sequence; prints progress lines when `log`."""
    f = len(pose3d)
    radius = box_radius(pose3d, pose3d_completed)
    start = time.time()
    i = -1
    for i, frame in enumerate(frames):
        if i >= f:
            raise ValueError(f"more frames than the {f} poses")
        yield render_frame(frame, pose2d[i], pose3d[i],
                           None if pose2d_completed is None else pose2d_completed[i],
                           None if pose3d_completed is None else pose3d_completed[i],
                           radius, names[i] if names is not None else f"frame {i}", height_px)
        if log and ((i + 1) % 25 == 0 or i + 1 == f):
            rate = (i + 1) / max(time.time() - start, 1e-9)
            print(f"  rendered {i + 1}/{f} pictures, {rate:.1f}/s, ETA "
                  f"{(f - i - 1) / rate:.0f}s", file=sys.stderr, flush=True)
    if i + 1 != f:
        raise ValueError(f"{i + 1} frames for {f} poses")


def write_pngs(pictures: Iterable[np.ndarray], out_dir: str) -> list[str]:
    """Writes pictures as out_dir/frame_000000.png, ...; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for i, pic in enumerate(pictures):
        paths.append(os.path.join(out_dir, f"frame_{i:06d}.png"))
        Image.fromarray(pic).save(paths[-1])
    return paths


def _same_size(pictures: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Resizes every picture to the first one's size (frames of a folder may differ in shape)."""
    size = None
    for pic in pictures:
        if size is None:
            size = pic.shape[:2]
        elif pic.shape[:2] != size:
            pic = np.asarray(Image.fromarray(pic).resize((size[1], size[0]),
                                                         Image.Resampling.BILINEAR))
        yield pic


def write_gif(pictures: Iterable[np.ndarray], path: str, fps: float) -> str:
    """Writes an animated GIF (looping) at `fps` frames per second; returns the path.
    Pictures of other sizes than the first are resized to it."""
    imgs = [Image.fromarray(p) for p in _same_size(pictures)]
    if not imgs:
        raise ValueError("no pictures to write")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    # GIF frame delays are in 10 ms units; PIL rounds duration (ms) to them.
    imgs[0].save(path, save_all=True, append_images=imgs[1:], loop=0,
                 duration=max(20, int(round(1000.0 / fps))), optimize=True)
    return path


def write_mp4(pictures: Iterable[np.ndarray], path: str, fps: float) -> str:
    """Writes an H.264 MP4 with imageio-ffmpeg's bundled ffmpeg; returns the path.
    Pictures of other sizes than the first are resized to it."""
    import imageio_ffmpeg
    writer = None
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        for pic in _same_size(pictures):
            if writer is None:
                # yuv420p needs even sides: pad by at most one pixel.
                size = (pic.shape[1] + pic.shape[1] % 2, pic.shape[0] + pic.shape[0] % 2)
                writer = imageio_ffmpeg.write_frames(path, size, fps=fps, macro_block_size=1)
                with quiet_fork():
                    writer.send(None)
            pad = np.zeros((size[1], size[0], 3), np.uint8)
            pad[:pic.shape[0], :pic.shape[1]] = pic
            writer.send(np.ascontiguousarray(pad))
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise ValueError("no pictures to write")
    return path
