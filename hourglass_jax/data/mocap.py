"""Real motion capture: the 15 DeepMimic humanoid clips shipped with `pybullet`, as MPII-16 joints in mm.

Source files: ``pybullet_data/data/motions/humanoid3d_<name>.txt`` (JSON, key "Frames"), one row of 44
numbers per frame: duration (s), root position (3, m), root rotation (w, x, y, z), then the local rotations
of chest (4), neck (4), right hip (4), right knee (1 angle, rad), right ankle (4), right shoulder (4), right
elbow (1), left hip (4), left knee (1), left ankle (4), left shoulder (4), left elbow (1). The world is y up
with the floor at y = 0.

Skeleton: the joint origins of ``pybullet_data/humanoid/humanoid.urdf`` (parsed, not hard-coded). The URDF
is written at 4x metric size: pybullet's own DeepMimic environment loads it with ``globalScaling=0.25``
(pybullet_envs/deep_mimic/env/humanoid_stable_pd.py), while the clips' root positions are in metres
(a walking pelvis at 0.85 m; hip-to-ankle is 3.33 URDF units = 0.83 m at 0.25). So offsets are scaled by
``URDF_SCALE = 0.25`` to metres, then everything by 1000 to millimetres. The subject is about 1.62 m tall.

MPII-16 points taken from the humanoid (see docs/mocap.md):
  pelvis = root link origin (midway between the hip joints); hips, knees, ankles, shoulders, elbows, wrists
  = the URDF joints of those names; thorax = midpoint of the shoulder joints (as for H36M in skeleton.py);
  upper neck / head top = bottom / top of the head sphere (the ``neck`` link's collision sphere), along the
  head's local up axis.

Frames of a clip are uniform in time: where a file's durations are not uniform (``roll`` has one double
frame) the clip is resampled at its nominal rate by slerp of the joint rotations followed by forward
kinematics, so bone lengths stay exact.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import xml.etree.ElementTree as ET

import numpy as np

from hourglass_jax.skeleton import JOINT_INDEX, NUM_JOINTS

CLIP_NAMES: tuple[str, ...] = (
    "backflip", "cartwheel", "crawl", "dance_a", "dance_b", "getup_facedown", "getup_faceup",
    "jump", "kick", "punch", "roll", "run", "spin", "spinkick", "walk",
)

URDF_SCALE: float = 0.25   # URDF units -> metres (pybullet DeepMimic's globalScaling).
M_TO_MM: float = 1000.0

# Frame layout: (joint name, number of values); quaternions are (w, x, y, z), 1 value = angle about the
# URDF joint axis.
_FRAME_LAYOUT: tuple[tuple[str, int], ...] = (
    ("root", 4), ("chest", 4), ("neck", 4),
    ("right_hip", 4), ("right_knee", 1), ("right_ankle", 4), ("right_shoulder", 4), ("right_elbow", 1),
    ("left_hip", 4), ("left_knee", 1), ("left_ankle", 4), ("left_shoulder", 4), ("left_elbow", 1),
)
_FRAME_WIDTH: int = 1 + 3 + sum(n for _, n in _FRAME_LAYOUT)  # 44

# MPII joint -> URDF joint whose world origin it is.
_JOINT_FROM_URDF: dict[str, str] = {
    "r_ankle": "right_ankle", "r_knee": "right_knee", "r_hip": "right_hip",
    "l_hip": "left_hip", "l_knee": "left_knee", "l_ankle": "left_ankle",
    "r_wrist": "right_wrist", "r_elbow": "right_elbow", "r_shoulder": "right_shoulder",
    "l_shoulder": "left_shoulder", "l_elbow": "left_elbow", "l_wrist": "left_wrist",
}
_HEAD_LINK: str = "neck"  # In the DeepMimic humanoid the "neck" link is the head sphere.


@dataclasses.dataclass(frozen=True, eq=False)
class MocapClip:
    """One motion clip as MPII-16 joints.

    Attributes:
      name: clip name, one of CLIP_NAMES (or derived, e.g. after resampling).
      fps: frames per second of ``joints`` (uniform in time).
      joints: (F, 16, 3) float64 mm, world frame, y up, floor at y = 0, root motion kept. Read-only.
    """

    name: str
    fps: float
    joints: np.ndarray

    @property
    def num_frames(self) -> int:
        """F, the number of frames."""
        return int(self.joints.shape[0])

    @property
    def duration_s(self) -> float:
        """Time from the first to the last frame in seconds: (F - 1) / fps."""
        return (self.num_frames - 1) / self.fps


@dataclasses.dataclass(frozen=True)
class _UrdfJoint:
    name: str
    parent: str           # parent link
    child: str            # child link
    origin_m: np.ndarray  # (3,) offset in the parent link frame, metres
    axis: np.ndarray      # (3,) rotation axis (revolute joints)
    kind: str             # "fixed", "spherical", "revolute"


@dataclasses.dataclass(frozen=True)
class _Humanoid:
    joints: tuple[_UrdfJoint, ...]      # topological order (parents first)
    head_center_m: np.ndarray           # (3,) head sphere centre in the head link frame
    head_radius_m: float


MOCAP_DIR_ENV = "HOURGLASS_MOCAP_DIR"


def data_dir() -> str:
    """The directory holding ``data/motions/humanoid3d_*.txt`` and ``humanoid/humanoid.urdf``.

    ``$HOURGLASS_MOCAP_DIR`` when set (a copy of those two folders of ``pybullet_data``, 1.5 MB,
    for machines without the 100 MB ``pybullet`` wheel), else the installed ``pybullet_data``.
    Read per call, but parsed clips and the skeleton are cached per process.
    """
    custom = os.environ.get(MOCAP_DIR_ENV)
    if custom:
        missing = [p for p in (os.path.join("data", "motions"), os.path.join("humanoid", "humanoid.urdf"))
                   if not os.path.exists(os.path.join(custom, p))]
        if missing:
            raise ValueError(f"${MOCAP_DIR_ENV}={custom} lacks {', '.join(missing)}: it must hold "
                             f"pybullet_data's data/motions/ and humanoid/humanoid.urdf")
        return custom
    try:
        import pybullet_data  # local import: only needed here, pulls no simulator
    except ImportError as e:
        raise ValueError(f"the mocap clips ship with pybullet: pip install pybullet, or set "
                         f"${MOCAP_DIR_ENV} to a copy of pybullet_data's data/motions/ and "
                         f"humanoid/ folders") from e
    return pybullet_data.getDataPath()


def clip_path(name: str) -> str:
    """Path of the motion file of clip ``name``; ValueError for an unknown name."""
    if name not in CLIP_NAMES:
        raise ValueError(f"unknown mocap clip {name!r}; valid names: {', '.join(CLIP_NAMES)}")
    return os.path.join(data_dir(), "data", "motions", f"humanoid3d_{name}.txt")


def _floats(text: str | None, what: str) -> np.ndarray:
    if text is None:
        raise ValueError(f"humanoid URDF: missing {what}")
    return np.array([float(v) for v in text.split()], dtype=np.float64)


@functools.lru_cache(maxsize=None)
def _load_humanoid() -> _Humanoid:
    path = os.path.join(data_dir(), "humanoid", "humanoid.urdf")
    if not os.path.isfile(path):
        raise ValueError(f"humanoid URDF not found: {path} (is pybullet installed?)")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        # The shipped file ends in a stray NUL byte, which XML parsers reject.
        root = ET.fromstring(text.rstrip("\x00 \r\n\t"))
    except ET.ParseError as e:
        raise ValueError(f"humanoid URDF {path} is not valid XML: {e}") from e
    parsed = []
    for j in root.findall("joint"):
        origin = j.find("origin")
        axis = j.find("axis")
        parsed.append(_UrdfJoint(
            name=j.attrib["name"],
            parent=j.find("parent").attrib["link"],
            child=j.find("child").attrib["link"],
            origin_m=URDF_SCALE * _floats(origin.attrib.get("xyz") if origin is not None else "0 0 0",
                                          f"origin of joint {j.attrib['name']}"),
            axis=_floats(axis.attrib["xyz"], "axis") if axis is not None else np.array([0.0, 0.0, 1.0]),
            kind=j.attrib["type"],
        ))
    # Topological order from the base link.
    ordered, known = [], {"base"}
    pending = list(parsed)
    while pending:
        ready = [j for j in pending if j.parent in known]
        if not ready:
            raise ValueError(f"humanoid URDF {path}: joints not connected to 'base': "
                             f"{[j.name for j in pending]}")
        for j in ready:
            ordered.append(j)
            known.add(j.child)
            pending.remove(j)
    names = {j.name for j in ordered}
    needed = {n for n, _ in _FRAME_LAYOUT} | set(_JOINT_FROM_URDF.values())
    if not needed <= names:
        raise ValueError(f"humanoid URDF {path}: missing joints {sorted(needed - names)}")
    head = next((lk for lk in root.findall("link") if lk.attrib["name"] == _HEAD_LINK), None)
    sphere = head.find("collision/geometry/sphere") if head is not None else None
    if sphere is None:
        raise ValueError(f"humanoid URDF {path}: link {_HEAD_LINK!r} has no collision sphere")
    return _Humanoid(
        joints=tuple(ordered),
        head_center_m=URDF_SCALE * _floats(head.find("collision/origin").attrib["xyz"], "head origin"),
        head_radius_m=URDF_SCALE * float(sphere.attrib["radius"]),
    )


def _quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """(..., 4) unit quaternions (w, x, y, z) -> (..., 3, 3) rotation matrices."""
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def _axis_angle_quat(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Quaternions (..., 4) (w, x, y, z) of rotations by ``angle`` (...) rad about the unit ``axis`` (3,)."""
    axis = axis / np.linalg.norm(axis)
    half = 0.5 * np.asarray(angle)[..., None]
    return np.concatenate([np.cos(half), np.sin(half) * axis], axis=-1)


def _slerp(q0: np.ndarray, q1: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Shortest-arc spherical interpolation of unit quaternions (..., 4) with weights w (...) in [0, 1]."""
    dot = np.sum(q0 * q1, axis=-1, keepdims=True)
    q1 = np.where(dot < 0, -q1, q1)   # q and -q are the same rotation: take the short way
    dot = np.clip(np.abs(dot), -1.0, 1.0)
    theta = np.arccos(dot)
    w = np.asarray(w)[..., None]
    small = theta < 1e-6
    safe = np.where(small, 1.0, np.sin(theta))
    a = np.where(small, 1 - w, np.sin((1 - w) * theta) / safe)
    b = np.where(small, w, np.sin(w * theta) / safe)
    out = a * q0 + b * q1
    return out / np.linalg.norm(out, axis=-1, keepdims=True)


def _parse_frames(frames: np.ndarray, humanoid: _Humanoid) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(F, 44) rows -> root position (F, 3) m and unit quaternions (F, 4) per moving joint name."""
    pos = frames[:, 1:4]
    axes = {j.name: j.axis for j in humanoid.joints}
    quats, k = {}, 4
    for name, n in _FRAME_LAYOUT:
        vals = frames[:, k:k + n]
        k += n
        if n == 1:
            quats[name] = _axis_angle_quat(axes[name], vals[:, 0])
        else:
            norm = np.linalg.norm(vals, axis=-1, keepdims=True)
            if np.any(norm < 1e-6):
                raise ValueError(f"zero-length quaternion for joint {name!r}")
            quats[name] = vals / norm
    return pos, quats


def _forward_kinematics(root_pos_m: np.ndarray, quats: dict[str, np.ndarray],
                        humanoid: _Humanoid) -> np.ndarray:
    """World MPII-16 joints (F, 16, 3) mm from root position (F, 3) m and local rotations (F, 4)."""
    n = root_pos_m.shape[0]
    eye = np.broadcast_to(np.eye(3), (n, 3, 3))
    # Pose of each link: (world position of its origin, world rotation).
    links = {"base": (root_pos_m, eye)}
    joint_pos = {}
    for j in humanoid.joints:
        p_pos, p_rot = links[j.parent]
        pos = p_pos + np.einsum("fij,j->fi", p_rot, j.origin_m)
        rot = p_rot @ _quat_to_matrix(quats[j.name]) if j.name in quats else p_rot
        links[j.child] = (pos, rot)
        joint_pos[j.name] = pos
    out = np.empty((n, NUM_JOINTS, 3))
    for mpii, urdf in _JOINT_FROM_URDF.items():
        out[:, JOINT_INDEX[mpii]] = joint_pos[urdf]
    out[:, JOINT_INDEX["pelvis"]] = links["root"][0]
    out[:, JOINT_INDEX["thorax"]] = 0.5 * (joint_pos["right_shoulder"] + joint_pos["left_shoulder"])
    h_pos, h_rot = links[_HEAD_LINK]
    up = np.array([0.0, humanoid.head_radius_m, 0.0])
    out[:, JOINT_INDEX["upper_neck"]] = h_pos + np.einsum("fij,j->fi", h_rot, humanoid.head_center_m - up)
    out[:, JOINT_INDEX["head_top"]] = h_pos + np.einsum("fij,j->fi", h_rot, humanoid.head_center_m + up)
    return out * M_TO_MM


def rest_pose() -> np.ndarray:
    """The humanoid with every rotation the identity and the root at the origin: (16, 3) mm, y up.

    In this pose the subject stands straight, facing +x, arms hanging; its right side is +z.
    """
    humanoid = _load_humanoid()
    quats = {name: np.array([[1.0, 0.0, 0.0, 0.0]]) for name, _ in _FRAME_LAYOUT}
    return _forward_kinematics(np.zeros((1, 3)), quats, humanoid)[0]


def _read_frames(name: str) -> np.ndarray:
    path = clip_path(name)
    if not os.path.isfile(path):
        raise ValueError(f"mocap file not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            frames = np.asarray(json.load(f)["Frames"], dtype=np.float64)
        except (json.JSONDecodeError, KeyError, ValueError) as e:
            raise ValueError(f"mocap file {path} is not a DeepMimic motion (JSON with 'Frames'): {e}") from e
    if frames.ndim != 2 or frames.shape[1] != _FRAME_WIDTH or frames.shape[0] < 2:
        raise ValueError(f"mocap file {path}: expected (F >= 2, {_FRAME_WIDTH}) frames, got {frames.shape}")
    if not np.all(np.isfinite(frames)):
        raise ValueError(f"mocap file {path}: non-finite values")
    return frames


def _nominal_fps(durations: np.ndarray) -> float:
    """The clip's frame rate: 1 / the most common positive duration, rounded to 0.01 fps.

    The files store 1/60 s as 0.016666 etc.; rounding gives the intended 60.0.
    """
    d = np.round(durations[durations > 0], 6)
    values, counts = np.unique(d, return_counts=True)
    return float(np.round(1.0 / values[np.argmax(counts)], 2))


@functools.lru_cache(maxsize=None)
def load_clip(name: str, fps: float | None = None) -> MocapClip:
    """Load one clip as MPII-16 joints by forward kinematics.

    Args:
      name: one of CLIP_NAMES, e.g. "walk".
      fps: output frame rate; None keeps the file's nominal rate (30, 60, 24 or 16 fps). Other rates are
        sampled by slerp of the joint rotations (bone lengths stay exact), unlike ``resample``.
    Returns:
      MocapClip with joints (F, 16, 3) float64 mm, world frame, y up, floor at y = 0. Cached: the
      array is read-only.
    Raises:
      ValueError: unknown name (the message lists the valid ones), missing or malformed file, fps <= 0.
    """
    frames = _read_frames(name)
    humanoid = _load_humanoid()
    root_pos, quats = _parse_frames(frames, humanoid)
    durations = frames[:, 0]
    times = np.concatenate([[0.0], np.cumsum(durations[:-1])])  # frame i starts after i durations
    native = _nominal_fps(durations)
    out_fps = native if fps is None else float(fps)
    if not np.isfinite(out_fps) or out_fps <= 0:
        raise ValueError(f"fps must be a positive finite number, got {fps!r}")
    uniform = np.allclose(np.diff(times), 1.0 / native, rtol=1e-3, atol=0)
    if not (uniform and out_fps == native):
        root_pos, quats = _sample(times, root_pos, quats, out_fps)
    joints = _forward_kinematics(root_pos, quats, humanoid)
    joints.setflags(write=False)
    return MocapClip(name=name, fps=out_fps, joints=joints)


def _sample(times: np.ndarray, root_pos: np.ndarray, quats: dict[str, np.ndarray],
            fps: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Sample root position (lerp) and rotations (slerp) at t = k / fps over [times[0], times[-1]]."""
    n_out = int(np.floor((times[-1] - times[0]) * fps + 1e-6)) + 1
    t = times[0] + np.arange(n_out) / fps
    i = np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(times) - 2)
    w = np.clip((t - times[i]) / (times[i + 1] - times[i]), 0.0, 1.0)
    pos = root_pos[i] + w[:, None] * (root_pos[i + 1] - root_pos[i])
    return pos, {k: _slerp(q[i], q[i + 1], w) for k, q in quats.items()}


def load_all_clips() -> dict[str, MocapClip]:
    """All 15 clips at their nominal rates, keyed by name in CLIP_NAMES order."""
    return {name: load_clip(name) for name in CLIP_NAMES}


def resample(clip: MocapClip, fps: float) -> MocapClip:
    """Resample a clip to ``fps`` by linear interpolation of the joint positions in time.

    Output frame k is at time k / fps, for every such time within the clip's duration; frames that fall
    on an input frame are copied exactly. Linear interpolation of positions shortens bones slightly
    between frames (by about L * (w * dt)^2 / 8 for angular speed w); for bone-exact resampling of the
    original clips use ``load_clip(name, fps=...)``.

    Args:
      clip: MocapClip with joints (F, 16, 3) mm.
      fps: target frame rate, > 0.
    Returns:
      A new MocapClip with the same name, the new fps and joints (F', 16, 3) float64 mm.
    """
    if not np.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive finite number, got {fps!r}")
    j = np.asarray(clip.joints, dtype=np.float64)
    if j.ndim != 3 or j.shape[1:] != (NUM_JOINTS, 3) or j.shape[0] < 1:
        raise ValueError(f"clip joints must be (F, {NUM_JOINTS}, 3), got {j.shape}")
    src = np.arange(j.shape[0]) * (1.0 / clip.fps)
    # Small epsilon so that a last frame at exactly the clip's end is not lost to rounding.
    n_out = int(np.floor(src[-1] * fps + 1e-6)) + 1
    t = np.arange(n_out) / fps
    pos = t * clip.fps                     # fractional input frame index
    i = np.clip(np.floor(pos + 1e-9).astype(int), 0, max(j.shape[0] - 2, 0))
    w = np.clip(pos - i, 0.0, 1.0)[:, None, None]
    if j.shape[0] == 1:
        out = np.repeat(j, n_out, axis=0)
    else:
        out = (1 - w) * j[i] + w * j[i + 1]
        exact = np.abs(pos - np.round(pos)) < 1e-9   # sample times on input frames: copy, no rounding
        out[exact] = j[np.round(pos[exact]).astype(int)]
    out.setflags(write=False)
    return MocapClip(name=clip.name, fps=float(fps), joints=out)
