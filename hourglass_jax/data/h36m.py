"""TFDS builder `h36m`: Human3.6M (manual download) as examples of the shared schema (realdata.py).

Two layouts are read, detected from what `manual_dir` holds:

* The original release (http://vision.imar.ro/human3.6m), one directory per subject:
    S1/MyPoseFeatures/D3_Positions_mono/<Action>[ <take>].<camera>.cdf   poses, camera frame, mm
    S1/Videos/<Action>[ <take>].<camera>.mp4                             50 fps videos
  The CDF variable `Pose` holds (N, 96) = 32 joints x 3 (read with cdflib); the usual 32 -> 17
  selection (skeleton.H36M_32_TO_17) then skeleton.h36m17_to_mpii16 gives MPII-16. Videos are
  decoded (video.py) and every `step`-th frame kept (50 -> 10 fps for step 5). Intrinsics are the
  published ones per camera (CAMERA_INTRINSICS; radial distortion is ignored, so pose2d is the
  pinhole projection of pose3d).
* The widely used preprocessed layout (c2f-vol style):
    annot/train.h5, annot/valid.h5   S (N, 17, 3) mm camera frame, part (N, 17, 2) px,
                                     center (N, 2) px, scale (N,), imgname (N,) bytes
    annot/{train,valid}_images.txt   the image names, one per row, where the h5 has no imgname
                                     (as c2f-vol ships them)
    images/<imgname>                 extracted frames, named S9_Directions_1.54138969_000006.jpg
  Its frames are already subsampled; `frame` counts the stored frames of a video in order.

Subjects S1, S5-S8 go to split `train`, S9 and S11 to `validation`. Actions get the 15 canonical
names (ACTIONS: "TakingPhoto" -> "Photo", "WalkingDog" -> "WalkDog"); the takes of an action are
subactions 1 and 2 in file-name order. S11 "Directions" seen by camera 54138969 is a broken video
in the release and is skipped (BROKEN_VIDEOS), and so are the "_ALL" pose files some subjects
have (all takes concatenated, no video).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
from typing import Iterator

import h5py
import numpy as np
from PIL import Image

from hourglass_jax import geometry
from hourglass_jax.data import realdata, video
from hourglass_jax.data.realdata import LayoutError
from hourglass_jax.skeleton import H36M_32_TO_17, h36m17_to_mpii16

log = logging.getLogger(__name__)

TRAIN_SUBJECTS: tuple[str, ...] = ("S1", "S5", "S6", "S7", "S8")
VALIDATION_SUBJECTS: tuple[str, ...] = ("S9", "S11")
ACTIONS: tuple[str, ...] = (
    "Directions", "Discussion", "Eating", "Greeting", "Phoning", "Photo", "Posing", "Purchases",
    "Sitting", "SittingDown", "Smoking", "Waiting", "WalkDog", "Walking", "WalkTogether",
)
_ALIASES = {"TakingPhoto": "Photo", "WalkingDog": "WalkDog"}
# [fx, fy, cx, cy] px per camera id, from the dataset's metadata (the values VideoPose3D's
# h36m_dataset.py lists).
CAMERA_INTRINSICS: dict[str, tuple[float, float, float, float]] = {
    "54138969": (1145.0494384765625, 1143.7811279296875, 512.54150390625, 515.4514770507812),
    "55011271": (1149.6756591796875, 1147.5916748046875, 508.8486328125, 508.0649108886719),
    "58860488": (1149.1407470703125, 1148.7989501953125, 519.8158569335938, 501.40264892578125),
    "60457274": (1145.5113525390625, 1144.77392578125, 514.9682006835938, 501.88201904296875),
}
CAMERAS: tuple[str, ...] = tuple(CAMERA_INTRINSICS)
# (subject, file base name, camera) of videos that are broken in the release.
BROKEN_VIDEOS: frozenset[tuple[str, str, str]] = frozenset({("S11", "Directions", "54138969")})
FPS = 50.0
PREPARE_HINT = ("put the Human3.6M release (S1, S5-S9, S11 with MyPoseFeatures/D3_Positions_mono "
                "and Videos) or the preprocessed annot/ + images/ layout in MANUAL_DIR")


@dataclasses.dataclass(eq=False)
class H36MConfig(realdata.RealConfig):
    """res: crop px. step: keep every step-th video frame (5: 50 -> 10 fps). Subjects per split."""

    step: int = 5
    train_subjects: tuple[str, ...] = TRAIN_SUBJECTS
    validation_subjects: tuple[str, ...] = VALIDATION_SUBJECTS


CONFIGS: tuple[H36MConfig, ...] = (
    H36MConfig(name="small", description="64 px crops at 10 fps", res=64),
    H36MConfig(name="full", description="256 px crops at 10 fps", res=256),
)


def canonical_action(base: str) -> tuple[str, str]:
    """File base name ("Directions 1", "TakingPhoto") -> (canonical action, take suffix)."""
    m = re.fullmatch(r"([A-Za-z]+)(?:\s+(\d+))?", base.strip())
    if not m:
        raise LayoutError(f"unexpected Human3.6M file name {base!r}: expected '<Action>[ <n>]'")
    name = _ALIASES.get(m.group(1), m.group(1))
    if name not in ACTIONS:
        raise LayoutError(f"unknown Human3.6M action {m.group(1)!r} in {base!r}; known: "
                          f"{', '.join(ACTIONS)}")
    return name, m.group(2) or ""


@dataclasses.dataclass(frozen=True)
class Take:
    """One video of the original release and its pose file."""

    subject: str
    base: str        # file base name, e.g. "Directions 1"
    action: str      # canonical name
    subaction: int   # 1 or 2
    camera: str
    cdf: str
    video: str


def scan_original(manual_dir: str, subjects: tuple[str, ...]) -> list[Take]:
    """Every (pose file, video) pair of `subjects`, checked to exist; LayoutError otherwise."""
    takes = []
    for s in subjects:
        pose_dir = realdata.require_dir(os.path.join(manual_dir, s, "MyPoseFeatures",
                                                     "D3_Positions_mono"),
                                        f"Human3.6M {s} pose directory")
        # "_ALL*" files (in some subjects) concatenate all takes and have no video: not used.
        files = sorted(f for f in os.listdir(pose_dir)
                       if f.endswith(".cdf") and not f.startswith("_ALL"))
        if not files:
            raise LayoutError(f"no <Action>.<camera>.cdf files in {pose_dir}")
        parsed = []
        for f in files:
            base, _, cam = f[:-4].rpartition(".")
            if cam not in CAMERA_INTRINSICS:
                raise LayoutError(f"{os.path.join(pose_dir, f)}: unknown camera id {cam!r}; "
                                  f"expected one of {', '.join(CAMERAS)}")
            parsed.append((base, cam) + canonical_action(base))
        for action in sorted({p[2] for p in parsed}):
            bases = sorted({p[0] for p in parsed if p[2] == action})
            if len(bases) > 2:
                raise LayoutError(f"{s} {action}: expected at most 2 takes, found {bases}")
            for base, cam, act, _ in parsed:
                if act != action:
                    continue
                if (s, base, cam) in BROKEN_VIDEOS:
                    log.warning("h36m: skipping %s %s.%s (broken video in the release)", s, base,
                                cam)
                    continue
                vid = os.path.join(manual_dir, s, "Videos", f"{base}.{cam}.mp4")
                realdata.require_file(vid, f"Human3.6M video for {s} {base} camera {cam}")
                takes.append(Take(s, base, action, bases.index(base) + 1, cam,
                                  os.path.join(pose_dir, f"{base}.{cam}.cdf"), vid))
    return takes


def read_cdf_poses(path: str) -> np.ndarray:
    """D3_Positions_mono CDF -> (N, 16, 3) float64 mm, camera frame, MPII-16 order."""
    import cdflib
    realdata.require_file(path, "Human3.6M pose CDF")
    try:
        cdf = cdflib.CDF(path)
        pose = np.asarray(cdf.varget("Pose"), np.float64)
    except Exception as e:  # cdflib raises assorted errors on non-CDF input / missing variables
        raise LayoutError(f"{path}: cannot read CDF variable 'Pose' ({e}); expected a "
                          "D3_Positions_mono file with Pose of shape (1, N, 96)") from e
    if pose.ndim == 3 and pose.shape[0] == 1:
        pose = pose[0]
    if pose.ndim != 2 or pose.shape[1] != 96:
        raise LayoutError(f"{path}: Pose has shape {pose.shape}, expected (1, N, 96) or (N, 96) "
                          "(32 joints x 3, mm)")
    if not np.all(np.isfinite(pose)):
        raise LayoutError(f"{path}: Pose contains non-finite values")
    j17 = pose.reshape(-1, 32, 3)[:, list(H36M_32_TO_17)]
    return h36m17_to_mpii16(j17)


def original_examples(take: Take, res: int, step: int) -> Iterator[tuple[str, dict]]:
    """(key, example) for every kept frame of one video of the original release."""
    poses = read_cdf_poses(take.cdf)
    k = np.asarray(CAMERA_INTRINSICS[take.camera], np.float64)
    for idx, frame in video.iter_frames(take.video, len(poses), step,
                                        what=f"Human3.6M video ({len(poses)} poses in {take.cdf})"):
        pose = poses[idx]
        ex = realdata.make_example(frame, pose, geometry.project(pose, k), k, res,
                                   subject=take.subject, action=take.action,
                                   subaction=take.subaction, camera=take.camera,
                                   frame_index=idx // step)
        yield f"{ex['sequence']}/{idx // step:05d}", ex


_IMGNAME = re.compile(r"(S\d+)_(.+)\.(\d{8})_(\d+)\.\w+")


def read_preprocessed(manual_dir: str, split: str) -> dict[str, np.ndarray]:
    """annot/{train,valid}.h5 of the preprocessed layout, checked; keys S, part, center, scale,
    imgname (str). Image names come from the h5's `imgname` or, as c2f-vol stores them, from
    annot/{train,valid}_images.txt (one per line, in row order)."""
    name = {"train": "train", "validation": "valid"}[split]
    path = realdata.require_file(os.path.join(manual_dir, "annot", f"{name}.h5"),
                                 "Human3.6M preprocessed annotation")
    want = {"S": (17, 3), "part": (17, 2), "center": (2,), "scale": ()}
    with h5py.File(path, "r") as f:
        missing = [k for k in want if k not in f]
        if missing:
            raise LayoutError(f"{path}: missing datasets {missing}; expected {sorted(want)} "
                              "(S: 3D joints in mm, camera frame)")
        out = {k: f[k][()] for k in want}
        names = f["imgname"][()] if "imgname" in f else None
    if names is None:
        txt = realdata.require_file(os.path.join(manual_dir, "annot", f"{name}_images.txt"),
                                    f"image names (no 'imgname' in {path})")
        with open(txt) as fh:
            names = [ln.strip() for ln in fh if ln.strip()]
    out["imgname"] = np.asarray(names)
    want["imgname"] = ()
    n = len(out["S"])
    for k, shape in want.items():
        if out[k].shape != (n,) + shape:
            raise LayoutError(f"{path}: {k} has shape {out[k].shape}, expected {(n,) + shape}")
    out["imgname"] = np.asarray([x.decode() if isinstance(x, bytes) else str(x)
                                 for x in out["imgname"]])
    return out


def preprocessed_examples(manual_dir: str, split: str, subjects: tuple[str, ...],
                          res: int) -> Iterator[tuple[str, dict]]:
    """(key, example) for the frames of `subjects` in the preprocessed layout."""
    a = read_preprocessed(manual_dir, split)
    rows = []
    for i, name in enumerate(a["imgname"]):
        m = _IMGNAME.fullmatch(os.path.basename(name))
        if not m:
            raise LayoutError(f"image name {name!r} does not match "
                              "'S9_Directions_1.54138969_000006.jpg'")
        subject, base, cam = m.group(1), m.group(2).replace("_", " "), m.group(3)
        num = int(m.group(4))
        if subject not in subjects:
            continue
        if cam not in CAMERA_INTRINSICS:
            raise LayoutError(f"image {name!r}: unknown camera id {cam}")
        rows.append((subject, base, cam, num, i))
    # Subactions by take order per (subject, action); frames by number per video.
    takes: dict[tuple[str, str], list[str]] = {}
    for subject, base, *_ in rows:
        action, _ = canonical_action(base)
        takes.setdefault((subject, action), [])
        if base not in takes[(subject, action)]:
            takes[(subject, action)].append(base)
    rows.sort()
    counter: dict[tuple[str, str, str], int] = {}
    for subject, base, cam, num, i in rows:
        action, _ = canonical_action(base)
        sub = sorted(takes[(subject, action)]).index(base) + 1
        frame_index = counter.get((subject, base, cam), 0)
        counter[(subject, base, cam)] = frame_index + 1
        img_path = realdata.require_file(os.path.join(manual_dir, "images", a["imgname"][i]),
                                         "Human3.6M extracted frame")
        frame = np.asarray(Image.open(img_path).convert("RGB"))
        pose = h36m17_to_mpii16(a["S"][i])
        part = h36m17_to_mpii16(a["part"][i])
        ex = realdata.make_example(frame, pose, part, np.asarray(CAMERA_INTRINSICS[cam]), res,
                                   subject=subject, action=action, subaction=sub, camera=cam,
                                   frame_index=frame_index, center=a["center"][i],
                                   scale=float(a["scale"][i]))
        yield f"{ex['sequence']}/{frame_index:05d}", ex


def _take_examples(args: tuple[Take, int, int]) -> list[tuple[str, dict]]:
    """All examples of one take (a module-level function, so worker processes can run it)."""
    return list(original_examples(*args))


def detect_layout(manual_dir: str) -> str:
    """"original" or "preprocessed"; LayoutError describing both when neither is there."""
    if os.path.isfile(os.path.join(manual_dir, "annot", "train.h5")):
        return "preprocessed"
    if os.path.isdir(os.path.join(manual_dir, "S1", "MyPoseFeatures")):
        return "original"
    raise LayoutError(f"{manual_dir} holds neither Human3.6M layout: expected "
                      "S1/MyPoseFeatures/D3_Positions_mono/*.cdf + S1/Videos/*.mp4 (original "
                      "release) or annot/train.h5 + images/ (preprocessed)")


class H36M(realdata.RealBuilder):
    """Human3.6M in the shared schema (see the module docstring)."""

    name = "h36m"
    HOMEPAGE = "http://vision.imar.ro/human3.6m"
    BUILDER_CONFIGS = list(CONFIGS)
    MANUAL_DOWNLOAD_INSTRUCTIONS = (PREPARE_HINT + "; then run python -m "
                                    "hourglass_jax.data.prepare h36m --manual_dir=MANUAL_DIR")

    def _split_generators(self, dl_manager):
        manual = os.fspath(dl_manager.manual_dir)
        cfg = self.builder_config
        layout = detect_layout(manual)
        splits = {"train": cfg.train_subjects, "validation": cfg.validation_subjects}
        if layout == "original":  # check every file before the long decode starts
            takes = {k: scan_original(manual, v) for k, v in splits.items()}
            return {k: self._generate_examples(takes=takes[k]) for k in splits}
        return {k: self._generate_examples(manual=manual, split=k, subjects=v)
                for k, v in splits.items()}

    def _generate_examples(self, takes: list[Take] | None = None, manual: str = "",
                           split: str = "", subjects: tuple[str, ...] = ()):
        cfg = self.builder_config
        if takes is None:  # preprocessed layout
            yield from preprocessed_examples(manual, split, subjects, cfg.res)
            return
        start = time.time()
        jobs = [(take, cfg.res, cfg.step) for take in takes]
        for i, (take, examples) in enumerate(zip(takes, realdata.ordered_map(
                _take_examples, jobs, self._workers))):
            yield from examples
            rate = (i + 1) / (time.time() - start)
            log.info("h36m: %d/%d videos (%s %s.%s), %.2f videos/s, ETA %.0f s", i + 1,
                     len(takes), take.subject, take.base, take.camera, rate,
                     (len(takes) - i - 1) / rate)


def builder(config: str | H36MConfig = "small", data_dir: str | os.PathLike | None = None,
            workers: int = 1) -> H36M:
    """The array_record builder of `config` in `data_dir`; `workers` processes decode videos when it builds."""
    return H36M.make(config, data_dir, workers)


def prepare(manual_dir: str | os.PathLike, config: str | H36MConfig = "small",
            data_dir: str | os.PathLike | None = None, workers: int = 1) -> H36M:
    """Build the dataset from the user's copy in `manual_dir`; returns the prepared builder."""
    return H36M.prepare_from(manual_dir, config, data_dir, workers)
