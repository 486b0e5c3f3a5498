"""3D poses from an image, a folder of images or a video: loading, crops, prediction, completion.

The library side of `python -m experiments.predict` (the CLI only parses flags and calls `run`).

In-the-wild input has no calibrated camera, so the back-projection of the network's (x, y) heatmap
positions uses a nominal camera: focal length f from an assumed horizontal field of view
(`fov_deg`, default 47 deg, that of Human3.6M's cameras: f ~ 1146 px at 1000 px width) and the
principal point at the image centre. The pelvis depth is then unknown too. By default it is set
per frame so that the crop box spans `box_mm` (default 2200 mm: the training crops are 1.3 x a
~1.7 m person's extent) at that depth, Z = f * box_mm / box_px, which makes the x / y scale
independent of the image's resolution and of the field of view; `root_depth_mm` fixes it
instead (e.g. 5000 mm, H36M-like). The outputs are root-relative mm: the nominal camera only
changes the scale of x / y against the network's depth (z) estimate, never the 2D projection.

Crops are Newell's center/scale boxes (side 200 * scale px): from per-frame boxes
(x0, y0, x1, y1) px, the square of side max(width, height) about the box centre; without boxes,
a centred square of side max(H, W) covering the whole frame (the person is assumed centred and
filling the frame, as c2f-vol's demo assumes of its input images).
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import sys
import time
import warnings
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, UnidentifiedImageError

from hourglass_jax import geometry, skeleton

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
DEFAULT_FOV_DEG = 47.0       # H36M cameras: 2 atan(500 / 1146) ~ 47 deg horizontal
DEFAULT_BOX_MM = 2200.0      # mocap_render / H36M-like crops: 1.3 x a ~1.7 m person
DEFAULT_K = 3                # experiments/configs/base.py model.softargmax_k


# ------------------------------------------------------------------------------------ frame input
@dataclasses.dataclass(frozen=True)
class FrameSource:
    """Where frames come from: one image, a folder of images (sorted by name) or a video.

    Attributes:
      kind: "image", "folder" or "video".
      path: the input path.
      files: the image files (image / folder), empty for a video.
      num_frames: F, frames the source yields.
      fps: frames per second of a video; None for images.
    """

    kind: str
    path: str
    files: tuple[str, ...]
    num_frames: int
    fps: float | None

    @property
    def names(self) -> list[str]:
        """Per-frame names: the image file names, or frame_000000... for a video."""
        if self.kind == "video":
            return [f"frame_{i:06d}" for i in range(self.num_frames)]
        return [os.path.basename(f) for f in self.files]

    def frames(self) -> Iterator[np.ndarray]:
        """Yields the F frames in order, each (H, W, 3) uint8 RGB."""
        if self.kind == "video":
            yield from _video_frames(self.path, self.num_frames)
        else:
            for f in self.files:
                yield read_image(f)


def read_image(path: str) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB; ValueError naming the file if it cannot be read."""
    if not os.path.isfile(path):
        raise ValueError(f"image file {path} does not exist")
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e


def _ffmpeg_error(err: Exception) -> str:
    """The last two lines of an ffmpeg error (its banner and build flags come first)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return " / ".join(lines[-2:])


@contextlib.contextmanager
def quiet_fork() -> Iterator[None]:
    """Hides Python's warning about fork() in a multithreaded (JAX) process while imageio-ffmpeg
    starts ffmpeg: subprocess forks and execs at once, so no JAX code runs in the child."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called")
        yield


def _video_frames(path: str, num_frames: int) -> Iterator[np.ndarray]:
    import imageio_ffmpeg
    gen = imageio_ffmpeg.read_frames(path)
    try:
        with quiet_fork():
            meta = next(gen)
        w, h = meta["size"]
        for n in range(num_frames):
            buf = next(gen, None)
            if buf is None:
                raise ValueError(f"video {path} ended after {n} frames, expected {num_frames}")
            yield np.frombuffer(buf, np.uint8).reshape(h, w, 3)
    except (RuntimeError, OSError, StopIteration) as e:
        raise ValueError(f"cannot decode video {path}: {_ffmpeg_error(e)}") from e
    finally:
        gen.close()


def _probe_video(path: str) -> tuple[int, float]:
    """(frame count, fps) of a video; ValueError if ffmpeg cannot read it or it has no frames."""
    import imageio_ffmpeg
    try:
        with quiet_fork():
            count, _ = imageio_ffmpeg.count_frames_and_secs(path)
            gen = imageio_ffmpeg.read_frames(path)
            try:
                meta = next(gen)
            finally:
                gen.close()
    except (RuntimeError, OSError, StopIteration) as e:
        raise ValueError(f"cannot decode video {path}: it has no decodable frames or is not a "
                         f"video (ffmpeg: {_ffmpeg_error(e)})") from e
    if count <= 0:
        raise ValueError(f"video {path} has no frames")
    fps = float(meta.get("fps") or 0.0)
    return int(count), fps if fps > 0 else 25.0


def open_input(path: str | os.PathLike) -> FrameSource:
    """A FrameSource for an image file, a folder of images or a video (by extension).

    Raises ValueError: missing path, unknown extension, a folder without images, a video that
    ffmpeg cannot decode or that has no frames.
    """
    path = os.path.abspath(os.fspath(path))
    if not os.path.exists(path):
        raise ValueError(f"input {path} does not exist (expected an image, a folder of images "
                         f"or a video)")
    if os.path.isdir(path):
        files = tuple(sorted(os.path.join(path, f) for f in os.listdir(path)
                             if f.lower().endswith(IMAGE_EXTENSIONS)
                             and os.path.isfile(os.path.join(path, f))))
        if not files:
            raise ValueError(f"folder {path} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        return FrameSource("folder", path, files, len(files), None)
    ext = os.path.splitext(path)[1].lower()
    if ext in IMAGE_EXTENSIONS:
        return FrameSource("image", path, (path,), 1, None)
    if ext in VIDEO_EXTENSIONS:
        count, fps = _probe_video(path)
        return FrameSource("video", path, (), count, fps)
    raise ValueError(f"input {path}: unknown extension {ext!r}; expected an image "
                     f"({', '.join(IMAGE_EXTENSIONS)}), a video ({', '.join(VIDEO_EXTENSIONS)}) "
                     f"or a folder")


# ------------------------------------------------------------------------------------------ boxes
def load_boxes(path: str | os.PathLike, num_frames: int) -> np.ndarray:
    """Per-frame person boxes (F, 4) [x0, y0, x1, y1] px from JSON or CSV.

    JSON: a list of F boxes, or {"boxes": [...]}. CSV: F rows of 4 numbers (a header row of
    non-numbers is skipped). Raises ValueError: missing/unreadable file, a count other than
    `num_frames`, non-finite values or x1 <= x0 / y1 <= y0.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"boxes file {path} does not exist")
    try:
        if path.lower().endswith(".json"):
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            if isinstance(data, dict):
                data = data.get("boxes")
            boxes = np.asarray(data, np.float64)
        else:
            with open(path, newline="", encoding="utf-8") as f:
                rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
            if rows and not _numeric(rows[0]):
                rows = rows[1:]
            boxes = np.asarray([[float(c) for c in r] for r in rows], np.float64)
    except (ValueError, TypeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read boxes from {path} (expected JSON or CSV of per-frame "
                         f"x0,y0,x1,y1): {e}") from e
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes in {path} must be (F, 4) x0,y0,x1,y1, got shape {boxes.shape}")
    if len(boxes) != num_frames:
        raise ValueError(f"boxes file {path} has {len(boxes)} boxes but the input has "
                         f"{num_frames} frames")
    if not np.all(np.isfinite(boxes)):
        raise ValueError(f"boxes in {path} contain NaN or inf")
    bad = np.flatnonzero((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))
    if len(bad):
        raise ValueError(f"boxes in {path}: box {bad[0]} has x1 <= x0 or y1 <= y0: "
                         f"{boxes[bad[0]].tolist()}")
    return boxes


def _numeric(row: Sequence[str]) -> bool:
    try:
        [float(c) for c in row]
        return True
    except ValueError:
        return False


def box_to_center_scale(box: np.ndarray | None, frame_hw: tuple[int, int]
                        ) -> tuple[np.ndarray, float]:
    """Newell center (2,) px and scale (box side / 200) of a box, or of the centred full frame.

    With a box (x0, y0, x1, y1): the square of side max(x1 - x0, y1 - y0) about its centre.
    Without: the square of side max(H, W) centred on the frame (pixel centres at integers, so
    the frame's centre is ((W - 1) / 2, (H - 1) / 2)).
    """
    h, w = frame_hw
    if box is None:
        return np.array([(w - 1) / 2.0, (h - 1) / 2.0]), max(h, w) / geometry.BOX_PX_PER_SCALE
    x0, y0, x1, y1 = (float(v) for v in box)
    # Box edges -> pixel-centre coordinates: the box [x0, x1) spans centres x0 - 0.5 .. x1 - 0.5.
    center = np.array([(x0 + x1) / 2.0 - 0.5, (y0 + y1) / 2.0 - 0.5])
    return center, max(x1 - x0, y1 - y0) / geometry.BOX_PX_PER_SCALE


def nominal_intrinsics(frame_hw: tuple[int, int], fov_deg: float = DEFAULT_FOV_DEG) -> np.ndarray:
    """[fx, fy, cx, cy] px of a nominal pinhole camera: horizontal field of view `fov_deg`,
    square pixels, principal point at the frame centre ((W - 1) / 2, (H - 1) / 2)."""
    if not 0 < fov_deg < 180:
        raise ValueError(f"fov_deg must be in (0, 180), got {fov_deg}")
    h, w = frame_hw
    f = 0.5 * w / math.tan(math.radians(fov_deg) / 2.0)
    return np.array([f, f, (w - 1) / 2.0, (h - 1) / 2.0])


# ------------------------------------------------------------------------------------- checkpoint
def resolve_checkpoint(path: str | os.PathLike) -> tuple[str, str]:
    """An exported network directory from an export dir or an experiment workdir.

    A workdir resolves to finetune/bone/model if it exists, else train3d/model.
    Returns (export dir, a sentence saying which was chosen). Raises ValueError if neither.
    """
    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(path):
        raise ValueError(f"checkpoint {path} does not exist (expected an exported model "
                         f"directory or an experiment workdir)")
    if os.path.isfile(os.path.join(path, "model_config.json")):
        return path, f"using the exported network {path}"
    for sub, what in ((("finetune", "bone", "model"), "the fine-tuned (bone setting) network"),
                      (("train3d", "model"), "the baseline (train3d) network")):
        cand = os.path.join(path, *sub)
        if os.path.isfile(os.path.join(cand, "model_config.json")):
            return cand, f"workdir {path}: using {what} {cand}"
    raise ValueError(f"checkpoint {path} is neither an exported model (model_config.json + "
                     f"variables/) nor a workdir with finetune/bone/model or train3d/model")


def load_volumetric(path: str | os.PathLike) -> tuple[Any, Any, dict, str]:
    """(module, ModelConfig, variables, note) of a VolumetricHourglass export or workdir.

    Raises ValueError for a missing checkpoint or an export of another network (e.g. the 2D
    detector).
    """
    from hourglass_jax import export
    from hourglass_jax.model import VolumetricHourglass
    export_dir, note = resolve_checkpoint(path)
    with open(os.path.join(export_dir, "model_config.json"), encoding="utf-8") as f:
        kind = json.load(f).get("kind")
    if kind != "volumetric":
        raise ValueError(f"checkpoint {export_dir} holds a {kind!r} network; prediction needs a "
                         f"'volumetric' (3D) export such as <workdir>/train3d/model")
    try:
        module, cfg, variables = export.load_model(export_dir)
    except FileNotFoundError as e:
        raise ValueError(str(e)) from e
    if not isinstance(module, VolumetricHourglass):
        raise ValueError(f"checkpoint {export_dir} is not a VolumetricHourglass")
    return module, cfg, variables, note


# ------------------------------------------------------------------------------------- prediction
@dataclasses.dataclass
class Predictions:
    """Per-frame results of `predict` (F frames, 16 joints, MPII order).

    Attributes:
      pose3d: (F, 16, 3) mm, root-relative (pelvis at 0), camera axes (x right, y down, z away).
      pose2d: (F, 16, 2) px in the input frame (pixel centres at integers).
      confidence: (F, 16) in [0, 1].
      root_mm: (F, 3) mm, the nominal camera-frame pelvis.
      root_depth: (F,) mm, the nominal pelvis depth used for the back-projection.
      intrinsics: (F, 4) [fx, fy, cx, cy] px of the nominal camera.
      center: (F, 2) px and scale: (F,) the crops (box side = 200 * scale px).
      frame_size: (F, 2) [W, H] px.
      names: F frame names.
      pose3d_completed, pose2d_completed, observed: with completion, the completed root-relative
        poses (F, 16, 3) mm, their projection (F, 16, 2) px, and the (F, 16) mask held fixed.
    """

    pose3d: np.ndarray
    pose2d: np.ndarray
    confidence: np.ndarray
    root_mm: np.ndarray
    root_depth: np.ndarray
    intrinsics: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    frame_size: np.ndarray
    names: list[str]
    fps: float | None = None
    pose3d_completed: np.ndarray | None = None
    pose2d_completed: np.ndarray | None = None
    observed: np.ndarray | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        """The numeric fields that are set, for npz."""
        out = {k: v for k, v in dataclasses.asdict(self).items()
               if isinstance(v, np.ndarray)}
        out["names"] = np.asarray(self.names)
        return out


_last_progress = [0.0]  # time of the last progress line (lines at most every 2 s)


def _progress(done: int, total: int, start: float, out=sys.stderr) -> None:
    now = time.time()
    if done < total and now - _last_progress[0] < 2.0:
        return
    _last_progress[0] = now
    el = now - start
    rate = done / el if el > 0 else float("nan")
    eta = (total - done) / rate if rate > 0 else float("nan")
    eta_s = f"{eta:.0f}s" if math.isfinite(eta) else "?"
    bar = "#" * int(30 * done / max(total, 1))
    print(f"  [{bar:<30}] {done}/{total} frames, {rate:.1f} frames/s, ETA {eta_s}",
          file=out, flush=True)


def predict(source: FrameSource, cfg: Any, variables: Any, *, boxes: np.ndarray | None = None,
            k: int = DEFAULT_K, fov_deg: float = DEFAULT_FOV_DEG,
            root_depth_mm: float | None = None, box_mm: float = DEFAULT_BOX_MM,
            batch_size: int = 8,
            log: Callable[[int, int, float], None] | None = _progress) -> Predictions:
    """Runs the volumetric network on every frame of `source`.

    Args:
      source: from `open_input`. cfg, variables: a VolumetricHourglass's ModelConfig and
        variables (`load_volumetric`). boxes: optional (F, 4) x0, y0, x1, y1 px (`load_boxes`).
      k: soft-argmax cube side. fov_deg, root_depth_mm, box_mm: the nominal camera and pelvis
        depth (module docstring): root_depth_mm if given, else f * box_mm / (200 * scale).
      batch_size: frames per jitted call (the last batch is padded: one compilation).
      log: called as log(done, total, start_time) after each batch (None: silent).
    Returns:
      Predictions (3D root-relative mm, 2D frame px, confidences).
    """
    from hourglass_jax import predictor as predictor_lib
    from hourglass_jax.data.realdata import crop_image

    if boxes is not None and len(boxes) != source.num_frames:
        raise ValueError(f"{len(boxes)} boxes for {source.num_frames} frames")
    if root_depth_mm is not None and not root_depth_mm > 0:
        raise ValueError(f"root_depth_mm must be > 0, got {root_depth_mm}")
    if not box_mm > 0:
        raise ValueError(f"box_mm must be > 0, got {box_mm}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    predict = predictor_lib.make_predictor(cfg, k)
    variables = jax.tree.map(jnp.asarray, variables)
    res = cfg.input_size
    cols: dict[str, list] = {k_: [] for k_ in ("pose", "conf", "intr", "center", "scale", "size",
                                               "depth")}
    start, n = time.time(), 0
    pending: dict[str, list] = {k_: [] for k_ in ("image", "intrinsics", "center", "scale",
                                                  "root_depth")}

    def flush() -> None:
        nonlocal n
        if not pending["image"]:
            return
        batch = {k_: np.stack(v).astype(np.float32) for k_, v in pending.items()}
        for _, pose, conf in predictor_lib.predict_batches(predict, variables, iter([batch]),
                                                           batch_size):
            cols["pose"].append(np.asarray(pose, np.float64))
            cols["conf"].append(np.asarray(conf, np.float64))
        n += len(batch["image"])
        for v in pending.values():
            v.clear()
        if log is not None:
            log(n, source.num_frames, start)

    for i, frame in enumerate(source.frames()):
        hw = frame.shape[:2]
        center, scale = box_to_center_scale(None if boxes is None else boxes[i], hw)
        intr = nominal_intrinsics(hw, fov_deg)
        depth = root_depth_mm or intr[0] * box_mm / (geometry.BOX_PX_PER_SCALE * scale)
        crop = crop_image(frame, center, scale, res).astype(np.float32) / np.float32(255.0)
        for key, val in (("image", crop), ("intrinsics", intr), ("center", center),
                         ("scale", np.float64(scale)), ("root_depth", np.float64(depth))):
            pending[key].append(val)
        cols["intr"].append(intr)
        cols["center"].append(center)
        cols["scale"].append(scale)
        cols["depth"].append(depth)
        cols["size"].append((hw[1], hw[0]))
        if len(pending["image"]) == batch_size:
            flush()
    flush()
    pose_cam = np.concatenate(cols["pose"])
    intr = np.asarray(cols["intr"])
    root = pose_cam[:, skeleton.ROOT]
    return Predictions(
        pose3d=pose_cam - root[:, None], pose2d=geometry.project(pose_cam, intr),
        confidence=np.concatenate(cols["conf"]), root_mm=root,
        root_depth=np.asarray(cols["depth"], np.float64), intrinsics=intr,
        center=np.asarray(cols["center"]), scale=np.asarray(cols["scale"], np.float64),
        frame_size=np.asarray(cols["size"], np.int64), names=source.names, fps=source.fps)


def complete_predictions(pred: Predictions, tau: float, window: int = 256,
                         overlap: int = 64) -> Predictions:
    """Trajectory completion (Eq. 1) of the root-relative predictions, in place and returned.

    Entries with confidence > tau are observed (held exactly); the others are completed by
    `completion.complete_long` (which is `completion.complete` for F <= window). The completed
    poses are placed at each frame's nominal root and projected for `pose2d_completed`.
    Raises ValueError for fewer than 2 frames or no joint above tau.
    """
    import completion
    f = len(pred.pose3d)
    if f < 2:
        raise ValueError(f"completion needs a sequence of at least 2 frames, the input has {f}")
    observed = pred.confidence > tau
    if not observed.any():
        raise ValueError(f"no joint has confidence > tau = {tau} (max "
                         f"{pred.confidence.max():.3f}); lower --tau")
    res = completion.complete_long(pred.pose3d.astype(np.float32), observed,
                                   window=window, overlap=overlap)
    pred.pose3d_completed = np.asarray(res.X, np.float64)
    pred.observed = observed
    pred.pose2d_completed = geometry.project(pred.pose3d_completed + pred.root_mm[:, None],
                                             pred.intrinsics)
    return pred


def _json_value(a: np.ndarray) -> Any:
    """Floats rounded to 0.001 (mm / px / score), other arrays as they are."""
    a = np.asarray(a)
    return np.round(a, 3).tolist() if np.issubdtype(a.dtype, np.floating) else a.tolist()


def save_predictions(pred: Predictions, out_dir: str, meta: dict[str, Any]) -> dict[str, str]:
    """Writes `predictions.npz` and `predictions.json` to out_dir; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    arrays = pred.arrays()
    npz = os.path.join(out_dir, "predictions.npz")
    np.savez_compressed(npz, **arrays)
    doc = {"units": {"pose3d": "mm, root-relative (pelvis = joint 6 at 0), camera axes "
                               "x right, y down, z away from the camera",
                     "pose2d": "px in the input frame, pixel centres at integers",
                     "confidence": "[0, 1] per joint"},
           "joint_names": list(skeleton.JOINT_NAMES), "fps": pred.fps, **meta,
           "frames": [{"name": name, **{k: _json_value(v[i]) for k, v in arrays.items()
                                        if k != "names"}}
                      for i, name in enumerate(pred.names)]}
    js = os.path.join(out_dir, "predictions.json")
    with open(js, "w", encoding="utf-8") as f:
        json.dump(doc, f)
    return {"npz": npz, "json": js}
