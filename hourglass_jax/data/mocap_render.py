"""TFDS builder `mocap_render`: the embedded default dataset, rendered from real motion capture.

A small Human3.6M: subjects S1, S5-S8 (split `train`) and S9, S11 (`validation`) perform the 15
mocap actions, two sub-actions each, seen by four fixed cameras at 10 fps; `pretrain2d` holds
single frames of separate subjects P1-P6 seen from random viewpoints (the MPII stand-in for
pretraining the 2D stacks). Every frame is rendered by `render.render_batch` into a crop in
Newell's center/scale convention around the person (box side 1.3 x the larger side of the
joints' image bounding box).

Written as array_record with no TensorFlow (images as PNG bytes through pillow); read with
`tfds.data_source` or `load`. Configs: `small` (64 px crops, the CPU default), `full` (256 px),
`tiny` (32 px, three actions, three frames per sequence: for tests), `small_styled` (each subject
in a motion style of its own), `small_styled_wide` (styles twice as strong), `small_styled_xwide`
(three times as strong) and `small_25fps` (`small` at 25 fps instead of 10).

Each example: image (R, R, 3) uint8 PNG; pose3d (16, 3) float32 mm camera frame (absolute);
pose2d (16, 2) float32 crop px; visible (16,) bool; intrinsics (4,) float32 [fx, fy, cx, cy]
image px of the nominal 1000 x 1000 video; center (2,) float32 image px; scale float32 (box side
/ 200 px); root_depth float32 mm (camera z of the pelvis); subject, action, camera, sequence
(text); subaction, frame (int32). The sequence id is "subject/action/subaction/camera"; frame is
the index in that video (TFDS stores examples in hashed order, so use these to rebuild videos).
"""
from __future__ import annotations

import dataclasses
import io
import os
import sys
import time
import zlib
from typing import Iterator

import jax
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from hourglass_jax import geometry
from hourglass_jax.data import render as rnd
from hourglass_jax.data import schema
from hourglass_jax.data import subjects as subj
from hourglass_jax.skeleton import ROOT

NAME = "mocap_render"
SPLITS: dict[str, tuple[str, ...]] = {
    "train": subj.TRAIN_SUBJECTS,
    "validation": subj.VALIDATION_SUBJECTS,
    "pretrain2d": subj.PRETRAIN_SUBJECTS,
}
CROP_MARGIN = 1.3  # crop box side / larger side of the joints' image bounding box
# Frames per jitted render call (fixed, so it compiles once per config). Small batches keep the
# working set in cache: on 2 CPU cores 8 frames per call render ~2x faster than 64.
RENDER_BATCH = 8
FRAME_CHUNK = 64  # frames assembled, rendered and written per step of the builder
PROGRESS_EVERY_S = 10.0  # seconds between progress lines of a build


@dataclasses.dataclass(eq=False)
class MocapRenderConfig(tfds.core.BuilderConfig):
    """One size of the dataset.

    res: crop side in px (render.SUPPORTED_SIZES). fps: video frame rate. actions: the actions
    rendered. max_frames: first frames kept per video (None: all). pretrain_frames: frames per
    pretraining subject. occluder_prob: chance that a sequence has an occluder (a pole or a bar
    between camera and subject). supersample: rays per pixel side (2 -> 4 rays, averaged).
    motion_style: strength of each subject's own style of moving (`subjects.motion_style`): its
    constant bone turns are drawn within STYLE_RANGE_DEG times this; 0, every subject performs
    the very same poses, only retargeted to its proportions.
    """

    res: int = 64
    fps: float = 10.0
    actions: tuple[str, ...] = subj.ACTIONS
    max_frames: int | None = None
    pretrain_frames: int = 600
    occluder_prob: float = 0.3
    supersample: int = 1
    motion_style: float = 0.0


CONFIGS: tuple[MocapRenderConfig, ...] = (
    MocapRenderConfig(name="small", description="64 px crops, all frames at 10 fps (CPU default)",
                      res=64),
    MocapRenderConfig(name="full", description="256 px crops, all frames at 10 fps", res=256,
                      pretrain_frames=2000, supersample=1),
    MocapRenderConfig(name="tiny", description="32 px, 3 actions, 3 frames per video (tests)",
                      res=32, actions=("walk", "jump", "punch"), max_frames=3, pretrain_frames=8),
    MocapRenderConfig(name="small_styled", description="small, each subject moving in a style of "
                      "its own (harder: unseen postures on validation)", res=64, motion_style=1.0),
    # Styles twice as strong (upper arms turned up to 60 degrees, elbows bent up to 70 more or
    # less): the S1 baseline sees a narrower share of the postures the other subjects use.
    MocapRenderConfig(name="small_styled_wide", description="small_styled with styles twice as "
                      "strong (harder still)", res=64, motion_style=2.0),
    # Three times as strong (upper arms up to 90 degrees, elbows up to 105): a wider gap still
    # between S1 and the other subjects, to ask whether the fine-tuning gain grows with it.
    MocapRenderConfig(name="small_styled_xwide", description="small_styled with styles three "
                      "times as strong (hardest)", res=64, motion_style=3.0),
    # The same motions sampled 2.5x as densely: poses change less from frame to frame and every
    # video has 2.5x the frames, so the completion's temporal prior has more to work with.
    MocapRenderConfig(name="small_25fps", description="small, all frames at 25 fps (slower motion "
                      "per frame, longer videos)", res=64, fps=25.0),
)


def _seed(*parts) -> int:
    """A stable 32-bit seed from strings/ints (Python's hash() is salted per process)."""
    return zlib.crc32("/".join(str(p) for p in parts).encode())


# ------------------------------------------------------------------------------ frame assembly
@dataclasses.dataclass
class Frames:
    """A batch of frames to render, all arrays with a leading axis N."""

    joints_cam: np.ndarray   # (N, 16, 3) mm
    intrinsics: np.ndarray   # (N, 4) image px
    cam_r: np.ndarray        # (N, 3, 3)
    cam_t: np.ndarray        # (N, 3) mm
    subject: list[str]
    action: list[str]
    subaction: np.ndarray    # (N,)
    camera: list[str]
    sequence: list[str]
    frame: np.ndarray        # (N,)
    scene_seed: np.ndarray   # (N,) uint32: background, light and occluder of the sequence


def crop_box(uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Newell crop around projected joints.

    Args:
      uv: (N, 16, 2) image px.
    Returns:
      center (N, 2) image px (bounding-box centre), scale (N,) = CROP_MARGIN * larger box side / 200.
    """
    lo, hi = uv.min(axis=1), uv.max(axis=1)
    center = 0.5 * (lo + hi)
    side = np.max(hi - lo, axis=-1) * CROP_MARGIN
    return center, side / geometry.BOX_PX_PER_SCALE


def crop_intrinsics(intrinsics: np.ndarray, center: np.ndarray, scale: np.ndarray,
                    res: int) -> np.ndarray:
    """Intrinsics (N, 4) of the crop camera: the pinhole of `intrinsics` followed by the
    (unrotated) crop map of geometry.crop_affine, in crop px."""
    a = geometry.crop_affine(np.asarray(center, np.float64), np.asarray(scale, np.float64), res)
    k = np.asarray(intrinsics, np.float64)
    pp = geometry.apply_affine(a, k[:, 2:4])
    return np.concatenate([a[:, 0, 0:1] * k[:, 0:1], a[:, 1, 1:2] * k[:, 1:2], pp], axis=-1)


def video_frames(cfg: MocapRenderConfig, subjects: tuple[str, ...]) -> Iterator[Frames]:
    """One Frames per (subject, action, subaction, camera) video."""
    for s in subjects:
        for action in cfg.actions:
            for sub in subj.SUBACTIONS:
                world = subj.sequence_motion(s, action, sub, cfg.fps, cfg.motion_style)
                if cfg.max_frames is not None:
                    world = world[:cfg.max_frames]
                n = world.shape[0]
                for cam in subj.CAMERAS:
                    r, t = geometry.look_at_camera(subj.camera_position(cam),
                                                   np.array(subj.LOOK_AT_MM), np.array([0., 1, 0]))
                    seq = f"{s}/{action}/{sub}/{cam.name}"
                    yield Frames(
                        joints_cam=geometry.world_to_camera(world, r, t),
                        intrinsics=np.tile(subj.camera_intrinsics(cam), (n, 1)),
                        cam_r=np.tile(r, (n, 1, 1)), cam_t=np.tile(t, (n, 1)),
                        subject=[s] * n, action=[action] * n, subaction=np.full(n, sub),
                        camera=[cam.name] * n, sequence=[seq] * n, frame=np.arange(n),
                        scene_seed=np.full(n, _seed(seq), np.uint32))


def pretrain_frames(cfg: MocapRenderConfig, subject: str) -> Iterator[Frames]:
    """Single frames of a pretraining subject from random viewpoints (like MPII photos)."""
    rng = np.random.default_rng(_seed("pretrain", subject))
    for i in range(cfg.pretrain_frames):
        action = cfg.actions[rng.integers(len(cfg.actions))]
        sub = int(rng.choice(subj.SUBACTIONS))
        world = subj.sequence_motion(subject, action, sub, cfg.fps, cfg.motion_style)
        pose = world[rng.integers(world.shape[0])]
        az = rng.uniform(0, 2 * np.pi)
        dist = rng.uniform(3000, 7000)
        pos = pose[ROOT] + np.array([dist * np.sin(az), 0.0, dist * np.cos(az)])
        pos[1] = rng.uniform(300, 2500)
        target = pose[ROOT] + rng.normal(0, 150, 3)
        r, t = geometry.look_at_camera(pos, target, np.array([0.0, 1, 0]))
        f = rng.uniform(900, 1500)
        k = np.array([f, f, 500.0 + rng.normal(0, 10), 500.0 + rng.normal(0, 10)])
        seq = f"{subject}/pretrain/{i}"
        yield Frames(
            joints_cam=geometry.world_to_camera(pose[None], r, t), intrinsics=k[None],
            cam_r=r[None], cam_t=t[None], subject=[subject], action=[action],
            subaction=np.array([sub]), camera=["random"], sequence=[seq], frame=np.zeros(1, int),
            scene_seed=np.array([_seed(seq)], np.uint32))


def _scene_inputs(cam_r: np.ndarray, cam_t: np.ndarray, seeds: np.ndarray,
                  occluder_prob: float) -> tuple[np.ndarray, ...]:
    """Light, background parameters and occluders per frame, fixed per sequence by its seed.

    Returns light (N, 3), bg (N, BG_PARAMS), occluder ends (N, 1, 2, 3) mm camera frame,
    radii (N, 1) mm (0 = none), colours (N, 1, 3).
    """
    n = len(seeds)
    light = np.empty((n, 3))
    bg = np.empty((n, rnd.BG_PARAMS))
    ends = np.zeros((n, 1, 2, 3))
    radii = np.zeros((n, 1))
    colors = np.zeros((n, 1, 3))
    for i, s in enumerate(seeds):
        rng = np.random.default_rng(int(s))
        light_i = np.array([rng.uniform(-0.6, 0.6), -rng.uniform(0.3, 1.0), -rng.uniform(0.4, 1.0)])
        light[i] = light_i / np.linalg.norm(light_i)
        bg[i] = rng.uniform(size=rnd.BG_PARAMS)
        has = rng.uniform() < occluder_prob
        # Placed relative to the camera and the area centre (not the moving person) so the
        # occluder stands still in the video while the person passes behind it.
        centre_world = np.array(subj.LOOK_AT_MM)
        cam_centre = -cam_r[i].T @ cam_t[i]
        frac = rng.uniform(0.45, 0.75)
        base = cam_centre + frac * (centre_world - cam_centre)
        side = np.cross(centre_world - cam_centre, [0.0, 1, 0])
        side /= np.linalg.norm(side)
        base = base + side * rng.uniform(-700, 700)
        if rng.uniform() < 0.5:   # vertical pole from the floor
            a = np.array([base[0], 0.0, base[2]])
            b = a + np.array([0.0, rng.uniform(1000, 2200), 0.0])
        else:                     # horizontal bar across the view
            h = rng.uniform(400, 1300)
            half = rng.uniform(400, 1000)
            a = np.array([base[0], h, base[2]]) - side * half
            b = np.array([base[0], h, base[2]]) + side * half
        ends[i, 0] = np.stack([cam_r[i] @ a + cam_t[i], cam_r[i] @ b + cam_t[i]])
        radii[i, 0] = rng.uniform(50, 120) if has else 0.0
        colors[i, 0] = rng.uniform(0.1, 0.9, 3)
    return light, bg, ends, radii, colors


def _encode_png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


@dataclasses.dataclass
class RenderInputs:
    """Everything `render.render_batch` needs for N frames, plus the crop of each frame.

    joints (N, 16, 3) mm camera frame; k_render (N, 4) crop-camera intrinsics at the rendered
    (supersampled) size; appearance, scene, occluders with a leading N axis; center (N, 2)
    image px and scale (N,) of the Newell crop; uv (N, 16, 2) image px.
    """

    joints: np.ndarray
    k_render: np.ndarray
    appearance: rnd.Appearance
    scene: rnd.Scene
    occluders: rnd.Occluders
    center: np.ndarray
    scale: np.ndarray
    uv: np.ndarray

    def rows(self, idx) -> tuple:
        """(joints, k_render, appearance, scene, occluders) of rows idx, float32."""
        f = lambda tree: jax.tree.map(lambda x: np.asarray(x, np.float32)[idx], tree)  # noqa: E731
        return (f(self.joints), f(self.k_render), f(self.appearance), f(self.scene),
                f(self.occluders))


def render_inputs(fr: Frames, cfg: MocapRenderConfig) -> RenderInputs:
    """Crops, crop cameras, appearance, scene and occluders of a batch of frames."""
    res = rnd.check_size(cfg.res)
    uv = geometry.project(fr.joints_cam, fr.intrinsics)
    center, scale = crop_box(uv)
    k_crop = crop_intrinsics(fr.intrinsics, center, scale, res)
    light, bg, ends, radii, colors = _scene_inputs(fr.cam_r, fr.cam_t, fr.scene_seed,
                                                   cfg.occluder_prob)
    app = [subj.appearance_arrays(s) for s in fr.subject]
    appearance = rnd.Appearance(np.stack([a[0] for a in app]), np.stack([a[1] for a in app]),
                                np.stack([a[2] for a in app]))
    ss = int(cfg.supersample)
    # Supersampling: render at ss x the size with the crop camera scaled to match, then average.
    k_render = k_crop.copy()
    k_render[:, :2] *= ss
    k_render[:, 2:] = (k_render[:, 2:] + 0.5) * ss - 0.5
    return RenderInputs(fr.joints_cam, k_render, appearance, rnd.Scene(fr.cam_r, fr.cam_t, light, bg),
                        rnd.Occluders(ends, radii, colors), center, scale, uv)


def render_frames(fr: Frames, cfg: MocapRenderConfig) -> dict[str, np.ndarray]:
    """Render a batch of frames (any N; rendered in calls of RENDER_BATCH, the last padded).

    Returns arrays with a leading N axis: image uint8 (N, R, R, 3), pose3d, pose2d, visible,
    intrinsics, center, scale, root_depth (see the module docstring).
    """
    res = rnd.check_size(cfg.res)
    ss = int(cfg.supersample)
    n = fr.joints_cam.shape[0]
    inp = render_inputs(fr, cfg)
    images, visible = [], []
    for lo in range(0, n, RENDER_BATCH):
        idx = np.minimum(np.arange(lo, lo + RENDER_BATCH), n - 1)  # pad with the last frame
        out = rnd.render_batch(*inp.rows(idx), res * ss)
        m = min(RENDER_BATCH, n - lo)
        img = np.asarray(out.image[:m])
        if ss > 1:
            img = img.reshape(m, res, ss, res, ss, 3).mean(axis=(2, 4))
        images.append(rnd.to_uint8(img))
        # The supersampled crop is the same box, so its visibility is the crop's.
        visible.append(np.asarray(out.visible[:m]))
    pose2d = geometry.image_to_crop(inp.uv, inp.center, inp.scale, res)
    return {
        "image": np.concatenate(images), "pose3d": fr.joints_cam.astype(np.float32),
        "pose2d": pose2d.astype(np.float32), "visible": np.concatenate(visible),
        "intrinsics": fr.intrinsics.astype(np.float32), "center": inp.center.astype(np.float32),
        "scale": inp.scale.astype(np.float32),
        "root_depth": fr.joints_cam[:, ROOT, 2].astype(np.float32),
    }


def concat_frames(frames: list[Frames]) -> Frames:
    out = {}
    for f in dataclasses.fields(Frames):
        vals = [getattr(x, f.name) for x in frames]
        out[f.name] = sum(vals, []) if isinstance(vals[0], list) else np.concatenate(vals)
    return Frames(**out)


def split_frames(cfg: MocapRenderConfig, split: str) -> Iterator[Frames]:
    """Frames of a split in order, in render batches of FRAME_CHUNK (the last one smaller)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if split == "pretrain2d":
        source = (f for s in SPLITS[split] for f in pretrain_frames(cfg, s))
    else:
        source = video_frames(cfg, SPLITS[split])
    pending, count = [], 0
    for f in source:
        pending.append(f)
        count += f.joints_cam.shape[0]
        while count >= FRAME_CHUNK:  # exact batches: no padded render calls mid-split
            merged = concat_frames(pending)
            yield take_frames(merged, slice(0, FRAME_CHUNK))
            pending = [take_frames(merged, slice(FRAME_CHUNK, None))]
            count -= FRAME_CHUNK
    if count:
        yield concat_frames(pending)


def take_frames(fr: Frames, sl: slice) -> Frames:
    """Rows `sl` of every field of a Frames batch."""
    return Frames(**{f.name: getattr(fr, f.name)[sl] for f in dataclasses.fields(Frames)})


def count_frames(cfg: MocapRenderConfig, split: str) -> int:
    """Number of examples `split` will hold (cheap: no rendering)."""
    return sum(f.joints_cam.shape[0] for f in split_frames(cfg, split))


# ------------------------------------------------------------------------------------- builder
class MocapRender(tfds.core.GeneratorBasedBuilder):
    """The embedded default dataset (see the module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = list(CONFIGS)

    def _info(self) -> tfds.core.DatasetInfo:
        res = self.builder_config.res
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(schema.pose_features(res)),
            homepage="https://github.com/bulletphysics/bullet3 (pybullet_data DeepMimic clips)",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download: the clips ship with pybullet
        return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split: str):
        cfg = self.builder_config
        total = count_frames(cfg, split)
        done, start, last = 0, time.time(), 0.0
        for fr in split_frames(cfg, split):
            out = render_frames(fr, cfg)
            for i in range(len(fr.sequence)):
                key = f"{fr.sequence[i]}/{int(fr.frame[i]):05d}"
                yield key, {
                    "image": _encode_png(out["image"][i]),
                    **{k: out[k][i] for k in ("pose3d", "pose2d", "visible", "intrinsics",
                                              "center", "scale", "root_depth")},
                    "subject": fr.subject[i], "action": fr.action[i],
                    "subaction": int(fr.subaction[i]), "camera": fr.camera[i],
                    "sequence": fr.sequence[i], "frame": int(fr.frame[i]),
                }
            done += len(fr.sequence)
            now = time.time()
            if now - last >= PROGRESS_EVERY_S or done == total:
                # stderr, not logging: visible without any logging set-up, throttled.
                rate = done / max(now - start, 1e-9)
                print(f"mocap_render/{cfg.name} {split}: {done}/{total} frames, "
                      f"{rate:.0f} frames/s, ETA {(total - done) / rate:.0f} s",
                      file=sys.stderr, flush=True)
                last = now


def builder(config: str = "small", data_dir: str | os.PathLike | None = None) -> MocapRender:
    """The array_record builder of `config` (see CONFIGS) in `data_dir`."""
    names = [c.name for c in CONFIGS]
    if config not in names:
        raise ValueError(f"unknown mocap_render config {config!r}; valid: {', '.join(names)}")
    return MocapRender(config=config, data_dir=None if data_dir is None else os.fspath(data_dir),
                       file_format=tfds.core.FileFormat.ARRAY_RECORD)


def load(config: str = "small", data_dir: str | os.PathLike | None = None,
         build: bool = True) -> dict[str, object]:
    """TFDS data sources {split: ArrayRecordDataSource} of the dataset, building it if missing.

    Args:
      config: "small", "full" or "tiny".
      data_dir: TFDS data directory (default: TFDS's, ~/tensorflow_datasets).
      build: build the dataset if it is not there; if False a missing dataset is an error.
    Raises:
      ValueError: unknown config; data_dir is a file; dataset missing and build=False;
        dataset directory corrupt (unreadable metadata or records) -- delete it to rebuild.
    """
    if data_dir is not None and os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise ValueError(f"data_dir {os.fspath(data_dir)!r} is a file, not a directory")
    names = [c.name for c in CONFIGS]
    if config not in names:
        raise ValueError(f"unknown mocap_render config {config!r}; valid: {', '.join(names)}")
    try:
        b = builder(config, data_dir)
    except Exception as e:  # tfds raises assorted errors on broken dataset_info.json
        raise ValueError(f"corrupt mocap_render dataset metadata under {data_dir!r}: {e}; "
                         "delete the directory to rebuild") from e
    if not b.is_prepared():
        if not build:
            raise ValueError(f"no mocap_render/{config} dataset in {b.data_dir!r} "
                             "(call load(..., build=True) to render it)")
        print(f"building mocap_render/{config} into {b.data_dir}", file=sys.stderr, flush=True)
        b.download_and_prepare()
    try:
        sources = b.as_data_source()
        for split, src in sources.items():
            n = len(src)
            if n != b.info.splits[split].num_examples:
                raise ValueError(f"split {split} holds {n} records, metadata says "
                                 f"{b.info.splits[split].num_examples}")
            if n:
                src[0], src[n - 1]  # noqa: B018 -- reads (and decodes) both ends
    except Exception as e:
        raise ValueError(f"corrupt mocap_render/{config} dataset in {b.data_dir!r}: {e}; "
                         "delete the directory to rebuild") from e
    return dict(sources)


def code_version() -> str:
    """Hash of the sources that determine the rendered examples (12 hex digits)."""
    import hashlib

    from hourglass_jax import skeleton
    from hourglass_jax.data import mocap

    h = hashlib.sha256()
    for mod in (geometry, rnd, subj, mocap, skeleton):
        with open(mod.__file__, "rb") as f:
            h.update(f.read())
    with open(__file__, "rb") as f:
        h.update(f.read())
    return h.hexdigest()[:12]


def cached_data_dir(config: str = "tiny", root: str | os.PathLike | None = None) -> str:
    """Build `config` once per code version under `root` and return its TFDS data_dir.

    For tests and demos that should not rebuild in every process: the directory is
    root/<code_version()>, built under a file lock (safe with parallel test workers).
    Default root: $TMPDIR/hourglass_jax_mocap_render.
    """
    import fcntl
    import tempfile

    root = os.fspath(root) if root is not None else os.path.join(
        tempfile.gettempdir(), "hourglass_jax_mocap_render")
    data_dir = os.path.join(root, code_version())
    os.makedirs(data_dir, exist_ok=True)
    with open(os.path.join(data_dir, f".{config}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            load(config, data_dir, build=True)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return data_dir


def main(argv: list[str] | None = None) -> None:
    """`python -m hourglass_jax.data.mocap_render --config small --data_dir DIR`: build and
    print the split sizes."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--config", default="small", help="small, full or tiny")
    ap.add_argument("--data_dir", default=None, help="TFDS data_dir (default: TFDS's)")
    a = ap.parse_args(argv)
    t0 = time.time()
    sources = load(a.config, a.data_dir, build=True)
    print({k: len(v) for k, v in sources.items()}, f"ready in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
