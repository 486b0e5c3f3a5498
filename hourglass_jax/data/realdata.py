"""What the manual-download builders (h36m, mpi_inf_3dhp, mpii) share.

They turn a user's copy of a licence-restricted dataset into the same examples as the embedded
default `mocap_render` (same feature names, shapes and units), so every protocol runs on them
unchanged:

  image (R, R, 3) uint8 PNG, the Newell crop of the frame; pose3d (16, 3) float32 mm camera frame
  (absolute); pose2d (16, 2) float32 crop px; visible (16,) bool; intrinsics (4,) float32
  [fx, fy, cx, cy] px of the full frame; center (2,) float32 frame px; scale float32 (box side /
  200 px); root_depth float32 mm; subject, action, camera, sequence (text); subaction, frame
  (int32).

`visible` on the 3D datasets means "projects inside the frame" (no occlusion is known for real
footage). Builders add `has_pose3d` (bool): False only for MPII, whose pose3d, intrinsics and
root_depth are zeros (MPII has 2D labels only).

Also here: crop extraction from a full frame, the layout error type, and `require_prepared`, which
the experiment stages call before reading a real dataset.
"""
from __future__ import annotations

import dataclasses
import io
import os
import sys

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from hourglass_jax import geometry
from hourglass_jax.data import schema
from hourglass_jax.skeleton import NUM_JOINTS, ROOT

CROP_MARGIN = 1.3  # box side / larger side of the joints' bounding box, as mocap_render uses

# The names experiment configs use in `data.dataset`, and the module that builds each.
REAL_DATASETS: dict[str, str] = {
    "h36m": "hourglass_jax.data.h36m",
    "mpi_inf_3dhp": "hourglass_jax.data.mpi_inf_3dhp",
    "mpii": "hourglass_jax.data.mpii",
}


class LayoutError(ValueError):
    """A dataset directory does not hold the files or arrays a builder expects (says which)."""


@dataclasses.dataclass(eq=False)
class RealConfig(tfds.core.BuilderConfig):
    """Crop size of a real-dataset build: `res` px square crops (64 small, 256 full)."""

    res: int = 64


def features(res: int) -> tfds.features.FeaturesDict:
    """The shared feature schema (module docstring) for crops of `res` px, plus `has_pose3d`
    (False for 2D-only datasets such as MPII, whose pose3d is zeros)."""
    return tfds.features.FeaturesDict({**schema.pose_features(res),
                                       "has_pose3d": tfds.features.Scalar(dtype=np.bool_)})


class RealBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """What the real-dataset builders share: version, the shared schema at the config's crop
    size, a homepage, and `workers` processes for decoding (1: in this process)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    HOMEPAGE = ""

    def __init__(self, *, workers: int = 1, **kwargs):
        self._workers = int(workers)
        super().__init__(**kwargs)

    @classmethod
    def make(cls, config="small", data_dir: str | os.PathLike | None = None,
             workers: int = 1) -> "RealBuilder":
        """The array_record builder of `config` (a config name or object) in `data_dir`."""
        names = [c.name for c in cls.BUILDER_CONFIGS]
        if isinstance(config, str) and config not in names:
            raise ValueError(f"unknown {cls.name} config {config!r}; valid: {', '.join(names)}")
        return cls(config=config, data_dir=None if data_dir is None else os.fspath(data_dir),
                   file_format=tfds.core.FileFormat.ARRAY_RECORD, workers=workers)

    @classmethod
    def prepare_from(cls, manual_dir: str | os.PathLike, config="small",
                     data_dir: str | os.PathLike | None = None,
                     workers: int = 1) -> "RealBuilder":
        """Build the dataset from the user's copy in `manual_dir`; returns the builder."""
        require_dir(manual_dir, f"{cls.name} manual download directory")
        b = cls.make(config, data_dir, workers)
        b.download_and_prepare(download_config=tfds.download.DownloadConfig(
            manual_dir=os.fspath(manual_dir)))
        return b

    def _info(self) -> tfds.core.DatasetInfo:
        module_doc = sys.modules[type(self).__module__].__doc__
        return tfds.core.DatasetInfo(builder=self, description=module_doc,
                                     features=features(self.builder_config.res),
                                     homepage=self.HOMEPAGE)


def require_file(path: str | os.PathLike, what: str) -> str:
    """`path` as str if it is a file; else LayoutError naming what was expected there."""
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise LayoutError(f"missing {what}: expected a file at {p}")
    return p


def require_dir(path: str | os.PathLike, what: str) -> str:
    p = os.fspath(path)
    if not os.path.isdir(p):
        raise LayoutError(f"missing {what}: expected a directory at {p}")
    return p


def crop_box(uv: np.ndarray, margin: float = CROP_MARGIN) -> tuple[np.ndarray, np.ndarray]:
    """Newell box around 2D joints: (..., J, 2) px -> center (..., 2) px, scale (...,).

    The box is centred on the joints' bounding box, side `margin` x its larger side.
    """
    lo, hi = uv.min(axis=-2), uv.max(axis=-2)
    side = np.max(hi - lo, axis=-1) * margin
    return 0.5 * (lo + hi), np.maximum(side, 1.0) / geometry.BOX_PX_PER_SCALE


def crop_image(frame: np.ndarray, center, scale: float, res: int) -> np.ndarray:
    """The Newell box of `frame` resampled to (res, res, 3) uint8 (antialiased; black outside).

    Uses geometry's convention (pixel centres at integers, box edge to crop edge), so image px
    `uv` land at `geometry.image_to_crop(uv, center, scale, res)`.

    Args:
      frame: (H, W, 3) uint8 full frame.
      center: (2,) box centre, frame px. scale: box side / 200 px. res: crop side px.
    """
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be (H, W, 3), got shape {frame.shape}")
    half = 0.5 * geometry.BOX_PX_PER_SCALE * float(scale)
    cx, cy = float(center[0]), float(center[1])
    # Box edges in PIL's edge coordinates (pixel k spans [k, k + 1) there, so add 0.5).
    x0, y0, x1, y1 = cx - half + 0.5, cy - half + 0.5, cx + half + 0.5, cy + half + 0.5
    h, w = frame.shape[:2]
    pad_l = int(max(0, np.ceil(-x0)))
    pad_t = int(max(0, np.ceil(-y0)))
    pad_r = int(max(0, np.ceil(x1 - w)))
    pad_b = int(max(0, np.ceil(y1 - h)))
    if pad_l or pad_t or pad_r or pad_b:
        frame = np.pad(frame, ((pad_t, pad_b), (pad_l, pad_r), (0, 0)))
    img = Image.fromarray(frame)
    out = img.resize((res, res), Image.Resampling.BILINEAR,
                     box=(x0 + pad_l, y0 + pad_t, x1 + pad_l, y1 + pad_t))
    return np.asarray(out, np.uint8)


def encode_png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def make_example(frame: np.ndarray, pose3d: np.ndarray | None, pose2d_img: np.ndarray,
                 intrinsics: np.ndarray | None, res: int, *, subject: str, action: str,
                 subaction: int, camera: str, frame_index: int, visible: np.ndarray | None = None,
                 center: np.ndarray | None = None, scale: float | None = None,
                 sequence: str | None = None) -> dict:
    """One example in the shared schema.

    Args:
      frame: (H, W, 3) uint8 full frame.
      pose3d: (16, 3) mm camera frame, or None (2D-only data: stored as zeros, has_pose3d False).
      pose2d_img: (16, 2) frame px (for 3D data: the projection of pose3d).
      intrinsics: (4,) [fx, fy, cx, cy] px, or None with pose3d None.
      res: crop side px.
      visible: (16,) bool; default: the joint projects inside the frame (real footage has no
        depth test, so occlusion is not known).
      center, scale: the crop; default: `crop_box(pose2d_img)`.
      sequence: the video id; default "subject/action/subaction/camera".
    """
    p2 = np.asarray(pose2d_img, np.float64)
    if center is None or scale is None:
        center, scale = crop_box(p2)
    center = np.asarray(center, np.float64)
    has3d = pose3d is not None
    p3 = np.zeros((NUM_JOINTS, 3)) if pose3d is None else np.asarray(pose3d, np.float64)
    k = np.zeros(4) if intrinsics is None else np.asarray(intrinsics, np.float64)
    if visible is None:
        h, w = np.shape(frame)[:2]
        vis = ((p2[:, 0] > -0.5) & (p2[:, 0] < w - 0.5) & (p2[:, 1] > -0.5)
               & (p2[:, 1] < h - 0.5))
    else:
        vis = np.asarray(visible, bool)
    return {
        "image": encode_png(crop_image(frame, center, float(scale), res)),
        "pose3d": p3.astype(np.float32),
        "pose2d": geometry.image_to_crop(p2, center, float(scale), res).astype(np.float32),
        "visible": vis,
        "intrinsics": k.astype(np.float32),
        "center": center.astype(np.float32),
        "scale": np.float32(scale),
        "root_depth": np.float32(p3[ROOT, 2]),
        "subject": subject, "action": action, "subaction": int(subaction),
        "camera": camera,
        "sequence": sequence or f"{subject}/{action}/{subaction}/{camera}",
        "frame": int(frame_index), "has_pose3d": has3d,
    }


def require_prepared(dataset: str, data_dir: str | os.PathLike | None,
                     builder_config: str | tfds.core.BuilderConfig = "small") -> None:
    """Raise ValueError, saying how to prepare it, unless `dataset`/`builder_config` is built.

    Args:
      dataset: "h36m", "mpi_inf_3dhp" or "mpii" (REAL_DATASETS); other names (the embedded
        default) are not checked here.
      data_dir: the TFDS data directory the experiment reads.
      builder_config: "small", "full" or a builder's config object.
    Raises:
      ValueError: the dataset is not built in data_dir (the message says how to build it).
    """
    if dataset not in REAL_DATASETS:
        return
    import importlib
    mod = importlib.import_module(REAL_DATASETS[dataset])
    b = mod.builder(builder_config, data_dir)
    if not b.is_prepared():
        name = b.builder_config.name
        where = "" if data_dir is None else f" --data_dir={os.fspath(data_dir)}"
        raise ValueError(
            f"dataset {dataset}/{name} is not prepared in {b.data_dir!r}. It is a manual "
            f"download: {mod.PREPARE_HINT}, then run `python -m hourglass_jax.data.prepare "
            f"{dataset} --manual_dir=MANUAL_DIR --config={name}{where}` (see docs/datasets.md)")


def ordered_map(fn, items, workers: int = 1, window: int | None = None):
    """Yield fn(item) for each item, in order, computed in `workers` processes.

    The slow part of a build (video decoding, cropping) runs in parallel while the TFDS writer
    consumes results in order. At most `window` (default 2 * workers) results are pending, so
    memory stays bounded. Workers are spawned (not forked: the parent has JAX loaded), so `fn`
    must be a module-level function and its arguments picklable. workers <= 1 runs in-process.
    """
    items = list(items)
    if workers <= 1:
        for it in items:
            yield fn(it)
        return
    import collections
    import concurrent.futures
    import multiprocessing

    window = window or 2 * workers
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        pending: collections.deque = collections.deque()
        todo = collections.deque(items)
        while todo or pending:
            while todo and len(pending) < window:
                pending.append(pool.submit(fn, todo.popleft()))
            yield pending.popleft().result()
