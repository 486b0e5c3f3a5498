"""Subjects, actions, sub-actions and cameras of the embedded default dataset (a small H36M).

Subjects S1, S5, S6, S7, S8 (train) and S9, S11 (validation) are the mocap skeleton with bones
rescaled along the kinematic tree (each bone group within +-10%), their own limb widths, tempo,
clothing colours, and (in the `small_styled` dataset) a motion style of their own: constant turns
of the arms, legs, torso and head. P1..P6 are separate subjects for the 2D pretraining set (the MPII
stand-in). Actions are the 15 mocap clips; sub-action 1 is the clip as is, sub-action 2 the
clip mirrored left-right and played 20% slower. Four cameras stand around the capture area at
H36M-like distances (4.5-5.5 m) and heights (1.4-1.9 m) with H36M-like focal lengths.

World frame: y up, floor at y = 0, mm (as `mocap.load_clip`).
"""
from __future__ import annotations

import dataclasses
import zlib

import numpy as np

from hourglass_jax import geometry
from hourglass_jax.data import mocap
from hourglass_jax.data.render import BODY_PARTS, MATERIALS, NUM_PARTS, PART_MATERIAL
from hourglass_jax.skeleton import JOINT_INDEX, NUM_JOINTS, ROOT, flip_joints

TRAIN_SUBJECTS: tuple[str, ...] = ("S1", "S5", "S6", "S7", "S8")
VALIDATION_SUBJECTS: tuple[str, ...] = ("S9", "S11")
PRETRAIN_SUBJECTS: tuple[str, ...] = ("P1", "P2", "P3", "P4", "P5", "P6")
VIDEO_SUBJECTS: tuple[str, ...] = TRAIN_SUBJECTS + VALIDATION_SUBJECTS
ALL_SUBJECTS: tuple[str, ...] = VIDEO_SUBJECTS + PRETRAIN_SUBJECTS
ACTIONS: tuple[str, ...] = mocap.CLIP_NAMES
SUBACTIONS: tuple[int, ...] = (1, 2)
SUBACTION_DESCRIPTION: dict[int, str] = {1: "as captured", 2: "mirrored left-right, 20% slower"}
SLOW_SUBACTION_TEMPO: float = 0.8

# Kinematic tree of MPII-16 (child -> parent) and the bone group that scales each bone.
PARENT: dict[int, int] = {
    2: 6, 3: 6, 7: 6,            # hips and thorax hang off the pelvis
    1: 2, 0: 1, 4: 3, 5: 4,      # legs
    8: 7, 9: 8,                  # neck, head
    12: 7, 11: 12, 10: 11,       # right arm
    13: 7, 14: 13, 15: 14,       # left arm
}
BONE_GROUP: dict[int, str] = {
    2: "hip", 3: "hip", 7: "spine", 1: "thigh", 4: "thigh", 0: "shin", 5: "shin",
    8: "neck", 9: "head", 12: "shoulder", 13: "shoulder", 11: "upper_arm", 14: "upper_arm",
    10: "forearm", 15: "forearm",
}
BONE_GROUPS: tuple[str, ...] = ("hip", "spine", "thigh", "shin", "neck", "head", "shoulder",
                                "upper_arm", "forearm")
# Parents before children, for walking the tree.
_TREE_ORDER: tuple[int, ...] = (2, 3, 7, 1, 4, 0, 5, 8, 9, 12, 13, 11, 14, 10, 15)

# Capsule radii (mm) of the mocap skeleton (1.62 m tall), in render.BODY_PARTS order.
BASE_RADII_MM: dict[str, float] = {
    "r_shin": 50, "r_thigh": 68, "l_thigh": 68, "l_shin": 50, "pelvis": 100, "trunk": 118,
    "shoulders": 68, "neck": 45, "head": 98, "r_upper_arm": 45, "r_forearm": 38,
    "l_upper_arm": 45, "l_forearm": 38, "r_hand": 42, "l_hand": 42, "r_foot": 48, "l_foot": 48,
}


@dataclasses.dataclass(frozen=True)
class Subject:
    """One subject: proportions, widths, tempo and colours.

    bones: scale of each of BONE_GROUPS against the mocap skeleton, each in [0.9, 1.1].
    width: factor on all capsule radii.
    tempo: playback speed factor of every clip (also shifts which instants the 10 fps frames
      sample, so subjects never share frames).
    skin, top, bottom, shoes, hair: RGB in [0, 1] of the materials of render.MATERIALS
      (skin: neck, forearms, hands, face; top: trunk, shoulders, upper arms; bottom: pelvis,
      legs) and of the hair.
    """

    name: str
    bones: dict[str, float]
    width: float
    tempo: float
    skin: tuple[float, float, float]
    top: tuple[float, float, float]
    bottom: tuple[float, float, float]
    shoes: tuple[float, float, float]
    hair: tuple[float, float, float]


def _rgb(hex_code: str) -> tuple[float, float, float]:
    return tuple(int(hex_code[i:i + 2], 16) / 255.0 for i in (0, 2, 4))  # type: ignore[return-value]


def _bones(hip, spine, thigh, shin, neck, head, shoulder, upper_arm, forearm) -> dict[str, float]:
    return dict(zip(BONE_GROUPS, (hip, spine, thigh, shin, neck, head, shoulder, upper_arm,
                                  forearm)))


# Hand-chosen so that subjects differ visibly; H36M's S1, S5, S7 are women (smaller, narrower).
SUBJECTS: dict[str, Subject] = {s.name: s for s in (
    Subject("S1", _bones(0.95, 0.93, 0.94, 0.95, 0.95, 0.96, 0.92, 0.93, 0.94), 0.90, 1.00,
            _rgb("e0ac8a"), _rgb("b03a48"), _rgb("2f3e66"), _rgb("202020"), _rgb("3b2414")),
    Subject("S5", _bones(0.97, 0.95, 0.97, 0.96, 0.94, 0.95, 0.93, 0.95, 0.95), 0.88, 1.04,
            _rgb("c68e6a"), _rgb("e8e2d0"), _rgb("1e1e24"), _rgb("6b4a2f"), _rgb("1a1410")),
    Subject("S6", _bones(1.06, 1.08, 1.05, 1.04, 1.05, 1.02, 1.07, 1.05, 1.04), 1.15, 0.95,
            _rgb("d9a07c"), _rgb("3a6e3a"), _rgb("6a5a4a"), _rgb("4a3020"), _rgb("2a2a2a")),
    Subject("S7", _bones(0.96, 0.97, 0.99, 1.00, 0.97, 0.97, 0.94, 0.97, 0.98), 0.92, 1.07,
            _rgb("8d5a3c"), _rgb("e0c040"), _rgb("2a2a60"), _rgb("d0d0d0"), _rgb("100c08")),
    Subject("S8", _bones(1.03, 1.04, 1.08, 1.09, 1.02, 1.04, 1.05, 1.08, 1.07), 1.05, 0.97,
            _rgb("f0c8a8"), _rgb("3060b0"), _rgb("5c5c5c"), _rgb("903020"), _rgb("c09050")),
    Subject("S9", _bones(1.05, 1.02, 1.03, 1.05, 1.06, 1.05, 1.04, 1.02, 1.03), 1.12, 1.02,
            _rgb("b87a56"), _rgb("603080"), _rgb("303030"), _rgb("f0f0f0"), _rgb("202020")),
    Subject("S11", _bones(1.01, 1.06, 1.02, 1.01, 1.03, 1.00, 1.06, 1.04, 1.01), 1.08, 0.93,
            _rgb("e8b898"), _rgb("d07020"), _rgb("40506a"), _rgb("302820"), _rgb("8a6a40")),
    Subject("P1", _bones(0.92, 0.91, 0.92, 0.93, 0.91, 0.93, 0.91, 0.92, 0.92), 0.85, 1.00,
            _rgb("f2d0b8"), _rgb("e060a0"), _rgb("5070c0"), _rgb("ffffff"), _rgb("d0a050")),
    Subject("P2", _bones(1.09, 1.09, 1.08, 1.07, 1.08, 1.06, 1.09, 1.08, 1.09), 1.20, 1.00,
            _rgb("6a4028"), _rgb("202020"), _rgb("a08060"), _rgb("101010"), _rgb("0a0a0a")),
    Subject("P3", _bones(1.00, 0.98, 1.04, 0.97, 1.00, 1.08, 0.98, 1.03, 0.96), 1.00, 1.00,
            _rgb("d8a888"), _rgb("40a0a0"), _rgb("803030"), _rgb("404040"), _rgb("5a3a20")),
    Subject("P4", _bones(0.94, 1.05, 0.95, 1.06, 0.96, 0.94, 1.02, 0.96, 1.05), 0.95, 1.00,
            _rgb("a06848"), _rgb("f0f0e0"), _rgb("60a040"), _rgb("804020"), _rgb("3a2010")),
    Subject("P5", _bones(1.04, 0.94, 1.07, 0.95, 1.04, 0.97, 1.06, 0.94, 1.07), 1.10, 1.00,
            _rgb("e6b48e"), _rgb("8080f0"), _rgb("202040"), _rgb("c0a080"), _rgb("b0b0b0")),
    Subject("P6", _bones(0.98, 1.02, 0.97, 1.03, 1.02, 1.01, 0.97, 1.05, 0.99), 1.02, 1.00,
            _rgb("c89070"), _rgb("a0a020"), _rgb("404080"), _rgb("602020"), _rgb("302010")),
)}


@dataclasses.dataclass(frozen=True)
class Camera:
    """A fixed camera of the capture area.

    azimuth_deg: direction from the area centre to the camera, about the world y axis.
    distance_mm: horizontal distance to the area centre; height_mm: camera height.
    focal_px / principal_px: pinhole intrinsics of the nominal VIDEO_SIZE video, square pixels.
    """

    name: str
    azimuth_deg: float
    distance_mm: float
    height_mm: float
    focal_px: float
    principal_px: tuple[float, float]


VIDEO_SIZE: tuple[int, int] = (1000, 1000)  # nominal video (width, height) in pixels
LOOK_AT_MM: tuple[float, float, float] = (0.0, 900.0, 0.0)  # cameras aim at pelvis height
# Focal lengths and principal points close to Human3.6M's four cameras (about 1145-1150 px for
# its 1000 x 1002 videos; public calibration as used by e.g. VideoPose3D), made square-pixel.
CAMERAS: tuple[Camera, ...] = (
    Camera("C1", 45.0, 5200.0, 1650.0, 1145.0, (512.5, 515.5)),
    Camera("C2", 135.0, 4700.0, 1450.0, 1149.7, (508.8, 508.1)),
    Camera("C3", 225.0, 5500.0, 1900.0, 1149.1, (519.8, 501.4)),
    Camera("C4", 315.0, 4500.0, 1700.0, 1145.5, (514.9, 501.9)),
)
CAMERA_NAMES: tuple[str, ...] = tuple(c.name for c in CAMERAS)


def check_subjects(names) -> tuple[str, ...]:
    """Return names as a tuple; ValueError naming the valid subjects for an unknown one."""
    names = tuple(names)
    bad = [n for n in names if n not in SUBJECTS]
    if bad:
        raise ValueError(f"unknown subject(s) {bad}; valid subjects: {', '.join(ALL_SUBJECTS)}")
    return names


def check_actions(names) -> tuple[str, ...]:
    """Return names as a tuple; ValueError naming the valid actions for an unknown one."""
    names = tuple(names)
    bad = [n for n in names if n not in ACTIONS]
    if bad:
        raise ValueError(f"unknown action(s) {bad}; valid actions: {', '.join(ACTIONS)}")
    return names


def _motion(joints: np.ndarray) -> np.ndarray:
    """joints as a float64 (F, 16, 3) array; ValueError naming the shape otherwise."""
    j = np.asarray(joints, np.float64)
    if j.ndim != 3 or j.shape[1:] != (NUM_JOINTS, 3):
        raise ValueError(f"joints must be (F, 16, 3) mm, got shape {j.shape}")
    return j


def _keep_floor_contact(out: np.ndarray, src: np.ndarray) -> np.ndarray:
    """out shifted vertically, frame by frame, so that its lowest joint is as high as src's
    (feet stay on the floor; jumps keep their height). Both (F, 16, 3) mm, y up; out in place."""
    out[..., 1] += (src[..., 1].min(axis=1) - out[..., 1].min(axis=1))[:, None]
    return out


def retarget(joints: np.ndarray, bones: dict[str, float]) -> np.ndarray:
    """Rescale the bones of a motion along the kinematic tree, keeping floor contact.

    Each joint is placed at its (new) parent plus the scaled original parent-to-child vector,
    so joint angles are unchanged and every bone of a group is scaled by the same factor. The
    root's horizontal travel is scaled by the mean leg factor (longer legs, longer strides),
    and each frame is shifted vertically so that its lowest joint keeps its original height
    (feet stay on the floor; jumps keep their height).

    Args:
      joints: (F, 16, 3) mm, world frame, y up.
      bones: factor per BONE_GROUPS name.
    Returns:
      (F, 16, 3) float64 mm.
    """
    j = _motion(joints)
    missing = set(BONE_GROUPS) - set(bones)
    if missing:
        raise ValueError(f"bone factors missing for {sorted(missing)}")
    out = np.empty_like(j)
    leg = 0.5 * (bones["thigh"] + bones["shin"])
    root = j[:, ROOT]
    out[:, ROOT] = root
    out[:, ROOT, [0, 2]] = root[:1, [0, 2]] + leg * (root[:, [0, 2]] - root[:1, [0, 2]])
    for c in _TREE_ORDER:
        p = PARENT[c]
        out[:, c] = out[:, p] + bones[BONE_GROUP[c]] * (j[:, c] - j[:, p])
    return _keep_floor_contact(out, j)


# With `styled`, each subject performs every action in a style of its own, as H36M's actors do:
# a constant turn of some bones, drawn once per subject (`motion_style`). Without it every
# subject performs the very same poses, and more labelled subjects add only appearance and
# proportions (docs/experiments.md's Fig. 5 analogue measures what that gives).
# Half-ranges in degrees of the turn of the bone ending at each joint (about the body's
# left-right axis: forward/back swing; about its front-back axis: away from/towards the body).
STYLE_RANGE_DEG: dict[int, tuple[float, float]] = {
    JOINT_INDEX["thorax"]: (10.0, 5.0),       # torso lean
    JOINT_INDEX["upper_neck"]: (12.0, 6.0),   # head carriage
    JOINT_INDEX["r_elbow"]: (30.0, 20.0), JOINT_INDEX["l_elbow"]: (30.0, 20.0),  # upper arms
    JOINT_INDEX["r_wrist"]: (35.0, 0.0), JOINT_INDEX["l_wrist"]: (35.0, 0.0),    # elbow bend
    JOINT_INDEX["r_knee"]: (12.0, 8.0), JOINT_INDEX["l_knee"]: (12.0, 8.0),      # thighs
    JOINT_INDEX["r_ankle"]: (15.0, 0.0), JOINT_INDEX["l_ankle"]: (15.0, 0.0),    # knee bend
}


def motion_style(subject: str, strength: float = 1.0) -> dict[int, tuple[float, float]]:
    """The constant bone turns of a subject: {joint: (pitch, roll) degrees} for the bone ending
    at each joint of STYLE_RANGE_DEG, uniform within its half-ranges times `strength`, the same
    on every call (seeded by the name; a stronger style turns the same bones the same way,
    `strength` times as far)."""
    if not (np.isfinite(strength) and strength >= 0):
        raise ValueError(f"style strength must be finite and >= 0, got {strength!r}")
    rng = np.random.default_rng(zlib.crc32(subject.encode()))
    return {j: (float(strength * rng.uniform(-p, p)), float(strength * rng.uniform(-r, r)))
            for j, (p, r) in sorted(STYLE_RANGE_DEG.items())}


def _body_frames(j: np.ndarray) -> np.ndarray:
    """(F, 3, 3) orthonormal body frames, columns: left-right (right hip to left hip), up the
    spine (pelvis to thorax, made orthogonal to the first), and their cross product."""
    x = j[:, JOINT_INDEX["l_hip"]] - j[:, JOINT_INDEX["r_hip"]]
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    y = j[:, JOINT_INDEX["thorax"]] - j[:, ROOT]
    y -= (y * x).sum(-1, keepdims=True) * x
    y /= np.linalg.norm(y, axis=-1, keepdims=True)
    return np.stack([x, y, np.cross(x, y)], axis=-1)


def restyle(joints: np.ndarray, style: dict[int, tuple[float, float]]) -> np.ndarray:
    """Turn bones of a motion by constant angles in the body frame, keeping bone lengths.

    The bone ending at joint c is turned by Rx(pitch) Rz(roll) expressed in each frame's body
    frame (`_body_frames`), after the turns of the bones above it (a turned upper arm carries its
    forearm), like a change of joint angles. Each frame is then shifted vertically so that its
    lowest joint keeps its height (feet stay on the floor).

    Args:
      joints: (F, 16, 3) mm, world frame, y up.
      style: {joint index: (pitch, roll) degrees}; joints not named keep their bone's direction.
    Returns:
      (F, 16, 3) float64 mm.
    """
    j = _motion(joints)
    unknown = sorted(set(style) - set(PARENT))
    if unknown:
        raise ValueError(f"style names joints without a parent bone: {unknown}")
    frames = _body_frames(j)
    eye = np.broadcast_to(np.eye(3), frames.shape)
    turn = {ROOT: eye}
    out = np.empty_like(j)
    out[:, ROOT] = j[:, ROOT]
    for c in _TREE_ORDER:
        p = PARENT[c]
        turn[c] = turn[p]
        if c in style:
            pitch, roll = np.deg2rad(style[c])
            turn_body = (geometry.rotation_matrix(np.array([1.0, 0, 0]), pitch)
                         @ geometry.rotation_matrix(np.array([0, 0, 1.0]), roll))
            local = frames @ turn_body @ np.swapaxes(frames, -1, -2)
            turn[c] = turn[p] @ local
        out[:, c] = out[:, p] + np.einsum("fij,fj->fi", turn[c], j[:, c] - j[:, p])
    return _keep_floor_contact(out, j)


def mirror(joints: np.ndarray) -> np.ndarray:
    """Mirror a world-frame motion (..., 16, 3) left-right: negate world x, swap joint labels."""
    m = np.array(joints, np.float64, copy=True)
    m[..., 0] = -m[..., 0]
    return flip_joints(m)


def video_fps_to_clip_fps(video_fps: float, tempo: float) -> float:
    """Clip sampling rate for a video at `video_fps` played at speed `tempo` (>1 is faster)."""
    return video_fps / tempo


def sequence_motion(subject: str, action: str, subaction: int, video_fps: float,
                    style_strength: float = 0.0) -> np.ndarray:
    """World-frame joints of one sequence, one row per video frame.

    Args:
      subject: a name in SUBJECTS. action: a name in ACTIONS. subaction: 1 or 2.
      video_fps: frame rate of the rendered video (10 like the paper's downsampled H36M).
      style_strength: strength of the subject's own style (`motion_style`): 0 none, 1 the
        half-ranges of STYLE_RANGE_DEG, 2 twice as wide.
    Returns:
      (F, 16, 3) float64 mm, world frame, y up, root trajectory centred on the area centre
      (horizontal mean of the pelvis over the sequence at x = z = 0).
    """
    s = SUBJECTS[check_subjects([subject])[0]]
    check_actions([action])
    if subaction not in SUBACTIONS:
        raise ValueError(f"unknown subaction {subaction!r}; valid: {SUBACTIONS}")
    tempo = s.tempo * (SLOW_SUBACTION_TEMPO if subaction == 2 else 1.0)
    clip = mocap.load_clip(action, fps=video_fps_to_clip_fps(video_fps, tempo))
    j = (restyle(clip.joints, motion_style(s.name, style_strength)) if style_strength
         else clip.joints)
    j = retarget(j, s.bones)
    if subaction == 2:
        j = mirror(j)
    centre = j[:, ROOT, :].mean(axis=0)
    j[..., 0] -= centre[0]
    j[..., 2] -= centre[2]
    return j


def appearance_arrays(subject: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render appearance of a subject as arrays.

    Returns:
      radii (NUM_PARTS,) mm, colors (NUM_PARTS, 3) RGB in [0, 1], hair (3,) RGB.
    """
    s = SUBJECTS[check_subjects([subject])[0]]
    radii = np.array([BASE_RADII_MM[p[0]] for p in BODY_PARTS]) * s.width
    # Head and neck scale with the head bones, not with body width.
    for name in ("head", "neck"):
        k = [p[0] for p in BODY_PARTS].index(name)
        radii[k] = BASE_RADII_MM[name] * s.bones["head"]
    material_rgb = {"skin": s.skin, "top": s.top, "bottom": s.bottom, "shoes": s.shoes}
    colors = np.array([material_rgb[MATERIALS[m]] for m in PART_MATERIAL], np.float64)
    assert colors.shape == (NUM_PARTS, 3)
    return radii.astype(np.float32), colors.astype(np.float32), np.asarray(s.hair, np.float32)


def camera_position(camera: Camera) -> np.ndarray:
    """(3,) world position of a camera in mm."""
    a = np.deg2rad(camera.azimuth_deg)
    return np.array([camera.distance_mm * np.sin(a), camera.height_mm,
                     camera.distance_mm * np.cos(a)])


def camera_intrinsics(camera: Camera) -> np.ndarray:
    """(4,) [fx, fy, cx, cy] in pixels of the nominal VIDEO_SIZE video."""
    return np.array([camera.focal_px, camera.focal_px, *camera.principal_px], np.float64)
