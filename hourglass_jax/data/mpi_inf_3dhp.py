"""TFDS builder `mpi_inf_3dhp`: MPI-INF-3DHP (manual download) in the shared schema (realdata.py).

Layout read (as the dataset's download script unpacks it):
  S1..S8/Seq1..Seq2/annot.mat            MATLAB v5 (scipy): annot2 / annot3, one cell per camera
                                         (14) of (N, 56) px / (N, 84) mm camera frame, 28 joints
  S1..S8/Seq1..Seq2/camera.calibration   text: per camera a `name`, `size`, and a 4 x 4 row-major
                                         `intrinsic` [fx 0 cx 0; 0 fy cy 0; ...]
  S1..S8/Seq1..Seq2/imageSequence/video_<camera>.avi
  TS1..TS6/annot_data.mat                MATLAB v7.3 (HDF5, h5py): annot2 (N, 1, 17, 2) px,
                                         annot3 (N, 1, 17, 3) mm camera frame, valid_frame (N, 1),
                                         activity_annotation (N, 1)
  TS1..TS6/imageSequence/img_000001.jpg  test frames (1-based numbering)

Split `train`: the training sequences of the configured cameras (default the 8 chest-height
cameras 0, 1, 2, 4, 5, 6, 7, 8), every `step`-th video frame so that 25 fps video becomes the
paper's 12.5 fps (step = round(video fps / 12.5)). Subject "S1".."S8", action "Seq1"/"Seq2",
subaction 1/2, camera "0".."13".

Split `validation`: the test set, valid frames only (renumbered 0..F-1 per sequence). Subject
"TS1".."TS6", action the frame's activity (ACTIVITIES), sequence "<TS>/video/1/0". The test set
ships no calibration file: intrinsics are fitted to annot2 / annot3 per sequence by least squares
(exact for pinhole data; the residual is logged). The scene of each sequence is in SCENES (green
screen, studio without green screen, outdoor) for the per-scene table (paper Table 7).

Joints: 28 (training) -> the 17 of the test set (TRAIN28_TO_TEST17) -> MPII-16 (head top, neck as
upper neck, thorax = mean of the shoulders, as for Human3.6M).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Iterator

import h5py
import numpy as np
import scipy.io
from PIL import Image

from hourglass_jax.data import realdata, video
from hourglass_jax.data.realdata import LayoutError

log = logging.getLogger(__name__)

TRAIN_SUBJECTS: tuple[str, ...] = tuple(f"S{i}" for i in range(1, 9))
TEST_SEQUENCES: tuple[str, ...] = tuple(f"TS{i}" for i in range(1, 7))
SEQUENCES: tuple[int, ...] = (1, 2)
CHEST_CAMERAS: tuple[int, ...] = (0, 1, 2, 4, 5, 6, 7, 8)
NUM_CAMERAS = 14
TARGET_FPS = 12.5
SCENES: dict[str, str] = {"TS1": "green_screen", "TS2": "green_screen", "TS3": "studio",
                          "TS4": "studio", "TS5": "outdoor", "TS6": "outdoor"}
# activity_annotation values 1..7 (the test set's readme).
ACTIVITIES: tuple[str, ...] = ("StandWalk", "Exercise", "SitChair", "ReachCrouch", "OnFloor",
                               "Sports", "Misc")
# The 17 test joints: head_top, neck, r_shoulder, r_elbow, r_wrist, l_shoulder, l_elbow, l_wrist,
# r_hip, r_knee, r_ankle, l_hip, l_knee, l_ankle, pelvis, spine, head; their rows in the 28
# training joints (0-based; the dataset's mpii_get_joint_set 'relevant' set).
TRAIN28_TO_TEST17: tuple[int, ...] = (7, 5, 14, 15, 16, 9, 10, 11, 23, 24, 25, 18, 19, 20, 4, 3, 6)
# MPII-16 from the test 17 (thorax handled separately).
_TEST17_TO_MPII16 = (10, 9, 8, 11, 12, 13, 14, -1, 1, 0, 4, 3, 2, 5, 6, 7)
PREPARE_HINT = ("put MPI-INF-3DHP's S1-S8/Seq1-2 (annot.mat, camera.calibration, "
                "imageSequence/video_*.avi) and mpi_inf_3dhp_test_set/TS1-TS6 in MANUAL_DIR")


def ts17_to_mpii16(j17: np.ndarray) -> np.ndarray:
    """(..., 17, D) test-set joints -> (..., 16, D) MPII-16; thorax = mean of the shoulders."""
    j = np.asarray(j17, np.float64)
    if j.shape[-2] != 17:
        raise ValueError(f"expected (..., 17, D) MPI-INF-3DHP test joints, got {j.shape}")
    out = j[..., list(max(i, 0) for i in _TEST17_TO_MPII16), :].copy()
    out[..., 7, :] = 0.5 * (j[..., 2, :] + j[..., 5, :])
    return out


@dataclasses.dataclass(eq=False)
class Mpi3dhpConfig(realdata.RealConfig):
    """res: crop px. Training subjects, cameras and the target frame rate; test sequences."""

    train_subjects: tuple[str, ...] = TRAIN_SUBJECTS
    cameras: tuple[int, ...] = CHEST_CAMERAS
    test_sequences: tuple[str, ...] = TEST_SEQUENCES
    target_fps: float = TARGET_FPS


CONFIGS: tuple[Mpi3dhpConfig, ...] = (
    Mpi3dhpConfig(name="small", description="64 px crops, 12.5 fps, 8 cameras", res=64),
    Mpi3dhpConfig(name="full", description="256 px crops, 12.5 fps, 8 cameras", res=256),
)


# ------------------------------------------------------------------------------ training set
def read_calibration(path: str) -> dict[int, np.ndarray]:
    """camera.calibration -> {camera: [fx, fy, cx, cy] px}; LayoutError if malformed."""
    p = realdata.require_file(path, "MPI-INF-3DHP camera.calibration")
    cams: dict[int, np.ndarray] = {}
    current = None
    with open(p) as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "name":
                current = int(parts[1])
            elif parts[0] == "intrinsic":
                vals = np.asarray(parts[1:], np.float64)
                if current is None or vals.size != 16:
                    raise LayoutError(f"{p}: 'intrinsic' must follow a 'name' line and hold 16 "
                                      f"numbers (a 4 x 4 matrix), got {vals.size}")
                m = vals.reshape(4, 4)
                cams[current] = np.array([m[0, 0], m[1, 1], m[0, 2], m[1, 2]])
    if not cams:
        raise LayoutError(f"{p}: no 'name' / 'intrinsic' camera blocks found")
    return cams


def read_train_annot(path: str, cameras: tuple[int, ...]) -> dict[int, np.ndarray]:
    """annot.mat -> {camera: (N, 16, 3) mm camera frame, MPII-16} for the asked cameras."""
    p = realdata.require_file(path, "MPI-INF-3DHP annot.mat")
    try:
        m = scipy.io.loadmat(p)
    except (ValueError, NotImplementedError, OSError) as e:
        raise LayoutError(f"{p}: not a MATLAB v5 annot.mat ({e})") from e
    if "annot3" not in m:
        raise LayoutError(f"{p}: no variable 'annot3'; expected annot2/annot3 cells of 14 cameras")
    cells = np.asarray(m["annot3"]).reshape(-1)
    out = {}
    for c in cameras:
        if c >= len(cells):
            raise LayoutError(f"{p}: annot3 has {len(cells)} camera cells, camera {c} asked")
        a = np.asarray(cells[c], np.float64)
        if a.ndim != 2 or a.shape[1] != 84:
            raise LayoutError(f"{p}: annot3{{{c}}} has shape {a.shape}, expected (N, 84) "
                              "(28 joints x 3, mm)")
        out[c] = ts17_to_mpii16(a.reshape(-1, 28, 3)[:, list(TRAIN28_TO_TEST17)])
    return out


def train_examples(manual_dir: str, subject: str, seq: int, cfg: Mpi3dhpConfig,
                   cameras: tuple[int, ...] | None = None) -> Iterator[tuple[str, dict]]:
    """(key, example) for the kept frames of one training sequence, for `cameras` (default:
    the configured ones)."""
    from hourglass_jax import geometry
    cameras = cfg.cameras if cameras is None else cameras
    d = realdata.require_dir(os.path.join(manual_dir, subject, f"Seq{seq}"),
                             f"MPI-INF-3DHP {subject}/Seq{seq}")
    calib = read_calibration(os.path.join(d, "camera.calibration"))
    poses = read_train_annot(os.path.join(d, "annot.mat"), cameras)
    for cam in cameras:
        if cam not in calib:
            raise LayoutError(f"{d}/camera.calibration has no camera {cam}")
        path = os.path.join(d, "imageSequence", f"video_{cam}.avi")
        fps, _ = video.probe(path, f"MPI-INF-3DHP video {subject}/Seq{seq} camera {cam}")
        step = max(1, int(round(fps / cfg.target_fps)))
        k = calib[cam]
        what = f"MPI-INF-3DHP video ({len(poses[cam])} frames in annot.mat)"
        for idx, frame in video.iter_frames(path, len(poses[cam]), step, what):
            pose = poses[cam][idx]
            ex = realdata.make_example(frame, pose, geometry.project(pose, k), k, cfg.res,
                                       subject=subject, action=f"Seq{seq}", subaction=seq,
                                       camera=str(cam), frame_index=idx // step)
            yield f"{ex['sequence']}/{idx // step:06d}", ex


def _train_unit(args: tuple[str, str, int, int, Mpi3dhpConfig]) -> list[tuple[str, dict]]:
    """All examples of one training video (module level, so worker processes can run it)."""
    manual_dir, subject, seq, cam, cfg = args
    return list(train_examples(manual_dir, subject, seq, cfg, cameras=(cam,)))


# ---------------------------------------------------------------------------------- test set
def _joints_array(f: h5py.File, key: str, dim: int, path: str) -> np.ndarray:
    """A v7.3 joint array as (N, 17, dim), whichever way MATLAB's column-major order left it."""
    if key not in f:
        raise LayoutError(f"{path}: no dataset '{key}'; expected annot2, annot3, valid_frame, "
                          "activity_annotation (MATLAB v7.3)")
    a = np.asarray(f[key][()], np.float64)
    # Decide by the 4-D shape, not after squeezing: with N == dim a squeezed array is ambiguous.
    if a.ndim == 4 and a.shape[1:] == (1, 17, dim):
        return a[:, 0]
    if a.ndim == 4 and a.shape[:3] == (dim, 17, 1):
        return a[:, :, 0].transpose(2, 1, 0)
    if a.ndim == 3 and a.shape[1:] == (17, dim):
        return a
    raise LayoutError(f"{path}: {key} has shape {f[key].shape}, expected (N, 1, 17, {dim})")


def read_test_annot(path: str) -> dict[str, np.ndarray]:
    """annot_data.mat (v7.3) -> annot2 (N, 17, 2), annot3 (N, 17, 3), valid (N,) bool,
    activity (N,) int."""
    p = realdata.require_file(path, "MPI-INF-3DHP test annot_data.mat")
    try:
        f = h5py.File(p, "r")
    except OSError as e:
        raise LayoutError(f"{p}: not a MATLAB v7.3 (HDF5) file ({e})") from e
    with f:
        out = {"annot2": _joints_array(f, "annot2", 2, p),
               "annot3": _joints_array(f, "annot3", 3, p)}
        for key in ("valid_frame", "activity_annotation"):
            if key not in f:
                raise LayoutError(f"{p}: no dataset '{key}'")
            out[key] = np.asarray(f[key][()]).reshape(-1)
    n = len(out["annot3"])
    for key in ("annot2", "valid_frame", "activity_annotation"):
        if len(out[key]) != n:
            raise LayoutError(f"{p}: {key} has {len(out[key])} frames, annot3 has {n}")
    return {"annot2": out["annot2"], "annot3": out["annot3"],
            "valid": out["valid_frame"] > 0, "activity": out["activity_annotation"].astype(int)}


def fit_intrinsics(uv: np.ndarray, xyz: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares pinhole [fx, fy, cx, cy] from 2D px (..., 2) and 3D mm (..., 3) points;
    also the RMS reprojection residual px."""
    x = (xyz[..., 0] / xyz[..., 2]).ravel()
    y = (xyz[..., 1] / xyz[..., 2]).ravel()
    ax = np.stack([x, np.ones_like(x)], 1)
    ay = np.stack([y, np.ones_like(y)], 1)
    (fx, cx), *_ = np.linalg.lstsq(ax, uv[..., 0].ravel(), rcond=None)
    (fy, cy), *_ = np.linalg.lstsq(ay, uv[..., 1].ravel(), rcond=None)
    k = np.array([fx, fy, cx, cy])
    res = np.concatenate([ax @ [fx, cx] - uv[..., 0].ravel(), ay @ [fy, cy] - uv[..., 1].ravel()])
    return k, float(np.sqrt(np.mean(res ** 2)))


def testset_examples(manual_dir: str, ts: str, res: int) -> Iterator[tuple[str, dict]]:
    """(key, example) for the valid frames of one test sequence."""
    from hourglass_jax import geometry
    d = realdata.require_dir(os.path.join(manual_dir, ts), f"MPI-INF-3DHP test sequence {ts}")
    a = read_test_annot(os.path.join(d, "annot_data.mat"))
    valid = np.flatnonzero(a["valid"])
    if valid.size == 0:
        raise LayoutError(f"{d}/annot_data.mat: no valid frames")
    k, rms = fit_intrinsics(a["annot2"][valid], a["annot3"][valid])
    log.info("mpi_inf_3dhp %s: intrinsics %s fitted to annot2/annot3, RMS %.3f px", ts,
             np.round(k, 2), rms)
    for j, i in enumerate(valid):
        img_path = realdata.require_file(os.path.join(d, "imageSequence", f"img_{i + 1:06d}.jpg"),
                                         f"{ts} test frame {i + 1} (valid_frame is set)")
        frame = np.asarray(Image.open(img_path).convert("RGB"))
        pose = ts17_to_mpii16(a["annot3"][i])
        act = int(a["activity"][i])
        action = ACTIVITIES[act - 1] if 1 <= act <= len(ACTIVITIES) else "Unknown"
        ex = realdata.make_example(frame, pose, geometry.project(pose, k), k, res, subject=ts,
                                   action=action, subaction=1, camera="0", frame_index=j,
                                   sequence=f"{ts}/video/1/0")
        yield f"{ts}/{j:06d}", ex


def check_layout(manual_dir: str, cfg: Mpi3dhpConfig) -> None:
    """Every file the build needs exists (before any decoding); LayoutError names the first gap."""
    for s in cfg.train_subjects:
        for seq in SEQUENCES:
            d = os.path.join(manual_dir, s, f"Seq{seq}")
            realdata.require_file(os.path.join(d, "annot.mat"), f"{s}/Seq{seq} annot.mat")
            realdata.require_file(os.path.join(d, "camera.calibration"),
                                  f"{s}/Seq{seq} camera.calibration")
            for c in cfg.cameras:
                realdata.require_file(os.path.join(d, "imageSequence", f"video_{c}.avi"),
                                      f"{s}/Seq{seq} camera {c} video")
    for ts in cfg.test_sequences:
        realdata.require_file(os.path.join(manual_dir, ts, "annot_data.mat"),
                              f"test sequence {ts} annot_data.mat")


class Mpi3dhp(realdata.RealBuilder):
    """MPI-INF-3DHP in the shared schema (see the module docstring)."""

    name = "mpi_inf_3dhp"
    HOMEPAGE = "https://vcai.mpi-inf.mpg.de/3dhp-dataset/"
    BUILDER_CONFIGS = list(CONFIGS)
    MANUAL_DOWNLOAD_INSTRUCTIONS = (PREPARE_HINT + "; then run python -m hourglass_jax.data."
                                    "prepare mpi_inf_3dhp --manual_dir=MANUAL_DIR")

    def _split_generators(self, dl_manager):
        manual = os.fspath(dl_manager.manual_dir)
        check_layout(manual, self.builder_config)
        return {"train": self._generate_examples(manual, "train"),
                "validation": self._generate_examples(manual, "validation")}

    def _generate_examples(self, manual: str, split: str):
        cfg = self.builder_config
        if split == "train":  # one unit per video; a unit's examples are held until written
            units = [(manual, s, q, c, cfg) for s in cfg.train_subjects for q in SEQUENCES
                     for c in cfg.cameras]
            results = realdata.ordered_map(_train_unit, units, self._workers,
                                           window=self._workers + 1)
        else:
            units = list(cfg.test_sequences)
            results = (testset_examples(manual, ts, cfg.res) for ts in units)
        start = time.time()
        for i, examples in enumerate(results):
            yield from examples
            rate = (i + 1) / (time.time() - start)
            log.info("mpi_inf_3dhp %s: %d/%d videos, %.3f/s, ETA %.0f s", split, i + 1,
                     len(units), rate, (len(units) - i - 1) / rate)


def builder(config: str | Mpi3dhpConfig = "small", data_dir: str | os.PathLike | None = None,
            workers: int = 1) -> Mpi3dhp:
    """The array_record builder of `config` in `data_dir`; `workers` processes decode training videos when it builds."""
    return Mpi3dhp.make(config, data_dir, workers)


def prepare(manual_dir: str | os.PathLike, config: str | Mpi3dhpConfig = "small",
            data_dir: str | os.PathLike | None = None, workers: int = 1) -> Mpi3dhp:
    """Build the dataset from the user's copy in `manual_dir`; returns the prepared builder."""
    return Mpi3dhp.prepare_from(manual_dir, config, data_dir, workers)
