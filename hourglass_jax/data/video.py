"""Video frame decoding for the dataset builders, with the ffmpeg that imageio-ffmpeg ships.

Frames are decoded in order and every `step`-th one kept (H36M: 50 fps -> 10 fps is step 5;
MPI-INF-3DHP: 25 fps -> 12.5 fps is step 2). A video that ends before the frames its annotation
promises (a truncated or broken download) is an error that names the file and both counts.
"""
from __future__ import annotations

import os
from typing import Iterator

import imageio_ffmpeg
import numpy as np

from hourglass_jax.data.realdata import LayoutError, require_file


def iter_frames(path: str | os.PathLike, num_frames: int, step: int = 1,
                what: str = "video") -> Iterator[tuple[int, np.ndarray]]:
    """Yield (index, frame) for index = 0, step, 2 step, ... < num_frames.

    Args:
      path: a video file ffmpeg can read (mp4, avi, ...).
      num_frames: frames the annotation has; the video must hold at least this many (extra
        trailing frames, common in Human3.6M, are ignored).
      step: keep every step-th frame.
      what: how error messages name the file.
    Yields:
      (index in the original video, (H, W, 3) uint8 RGB frame).
    Raises:
      LayoutError (a ValueError): missing file, undecodable file, or fewer than num_frames frames.
    """
    if step < 1 or num_frames < 0:
        raise ValueError(f"step must be >= 1 and num_frames >= 0, got {step}, {num_frames}")
    p = require_file(path, what)
    try:
        gen = imageio_ffmpeg.read_frames(p)
        meta = next(gen)
    except (RuntimeError, OSError, StopIteration) as e:
        raise LayoutError(f"cannot decode {what} {p} (expected a video with {num_frames} frames): "
                          f"{_last_lines(e)}") from e
    w, h = meta["size"]
    n = 0  # frames decoded so far
    try:
        while n < num_frames:
            buf = next(gen, None)
            if buf is None:
                break
            if n % step == 0:
                yield n, np.frombuffer(buf, np.uint8).reshape(h, w, 3)
            n += 1
    except RuntimeError as e:
        raise LayoutError(f"{what} {p} stopped decoding after {n} frames ({_last_lines(e)}); "
                          f"its annotation has {num_frames} frames") from e
    finally:
        gen.close()
    if n < num_frames:
        raise LayoutError(f"{what} {p} is truncated: it holds {n} decodable frames, the annotation "
                          f"expects at least {num_frames}; download it again")


def probe(path: str | os.PathLike, what: str = "video") -> tuple[float, tuple[int, int]]:
    """(frames per second, (width, height) px) of a video, from ffmpeg's header read."""
    p = require_file(path, what)
    gen = imageio_ffmpeg.read_frames(p)
    try:
        meta = next(gen)
    except (RuntimeError, OSError, StopIteration) as e:
        raise LayoutError(f"cannot decode {what} {p}: {_last_lines(e)}") from e
    finally:
        gen.close()
    fps = float(meta.get("fps") or 0.0)
    if not fps > 0:
        raise LayoutError(f"{what} {p}: ffmpeg reports no frame rate")
    return fps, tuple(meta["size"])


def _last_lines(err: Exception, n: int = 2) -> str:
    """The last lines of an ffmpeg error (its banner and build flags come first)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return " / ".join(lines[-n:])


def read_frames(path: str | os.PathLike, num_frames: int, step: int = 1,
                what: str = "video") -> tuple[np.ndarray, np.ndarray]:
    """All kept frames at once: indices (K,), frames (K, H, W, 3) uint8 (see iter_frames)."""
    pairs = list(iter_frames(path, num_frames, step, what))
    if not pairs:
        return np.zeros(0, np.int64), np.zeros((0, 0, 0, 3), np.uint8)
    idx, frames = zip(*pairs)
    return np.asarray(idx), np.stack(frames)
