"""Fixture writers for the real-dataset builder tests: frames with joint markers, videos, poses."""
from __future__ import annotations

import imageio_ffmpeg
import numpy as np

# Marker colours of the joints drawn into fixture frames (MPII-16 index -> RGB).
MARKERS: dict[int, tuple[int, int, int]] = {9: (255, 0, 0), 0: (0, 255, 0), 15: (0, 0, 255)}
MARKER_HALF = 20  # px: markers are (2 * half + 1)^2 squares, a few px after cropping
BACKGROUND = (40, 40, 40)


def draw_frame(height: int, width: int, uv: np.ndarray, half: int = MARKER_HALF) -> np.ndarray:
    """(H, W, 3) uint8 grey frame with a coloured square at uv[j] (MPII-16 px) for j in MARKERS."""
    img = np.empty((height, width, 3), np.uint8)
    img[:] = BACKGROUND
    draw_markers(img, uv, half)
    return img


def draw_markers(img: np.ndarray, uv: np.ndarray, half: int,
                 mask: np.ndarray | None = None) -> None:
    """Draw the MARKERS squares of one person (uv (16, 2) px) into img, where mask (16,) allows."""
    for j, colour in MARKERS.items():
        if mask is not None and not mask[j]:
            continue
        x, y = np.round(uv[j]).astype(int)
        img[max(y - half, 0):max(y + half + 1, 0), max(x - half, 0):max(x + half + 1, 0)] = colour


def marker_at(image: np.ndarray, xy: np.ndarray, joint: int, tol: float = 60.0) -> bool:
    """True if image shows joint's marker colour at the rounded crop px xy."""
    x, y = np.round(xy).astype(int)
    if not (0 <= x < image.shape[1] and 0 <= y < image.shape[0]):
        return False
    return bool(np.abs(image[y, x].astype(float) - MARKERS[joint]).max() <= tol)


def write_video(path: str, frames: np.ndarray, fps: float, codec: str = "libx264") -> None:
    """Write (N, H, W, 3) uint8 frames near-losslessly (x264 qp 0 in yuv444p, or ffv1 for avi)."""
    h, w = frames.shape[1:3]
    params = ["-qp", "0"] if codec == "libx264" else []
    writer = imageio_ffmpeg.write_frames(path, (w, h), fps=fps, codec=codec,
                                         pix_fmt_out="yuv444p", output_params=params,
                                         macro_block_size=1, ffmpeg_log_level="error")
    writer.send(None)
    for f in frames:
        writer.send(np.ascontiguousarray(f).tobytes())
    writer.close()


def crop_has_markers(image: np.ndarray, pose2d: np.ndarray, tol: float = 60.0) -> bool:
    """True if the crop shows each marker's colour at the rounded pose2d of its joint."""
    return all(marker_at(image, pose2d[j], j, tol) for j in MARKERS)


def person_mpii16(rng: np.random.Generator, root: np.ndarray) -> np.ndarray:
    """A rough standing person (16, 3) mm in a camera frame (y down), pelvis at `root`."""
    offsets = np.array([  # x right, y down, mm, from the pelvis
        [-120, 850, 0], [-110, 450, 20], [-110, 0, 0], [110, 0, 0], [110, 450, 20],
        [120, 850, 0], [0, 0, 0], [0, -500, 0], [0, -600, 0], [0, -820, 0],
        [-200, 0, -100], [-250, -250, -50], [-180, -500, 0], [180, -500, 0], [250, -250, -50],
        [200, 0, -100]], np.float64)
    return root + offsets + rng.normal(0, 15, offsets.shape)
