"""The MPII-16 skeleton: joint order, left/right flip pairs, the bones of Eq. 5.

Every pose array in the project is (..., 16, 3) in this order, in millimetres.
"""
from __future__ import annotations

import numpy as np

JOINT_NAMES: tuple[str, ...] = (
    "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle",
    "pelvis", "thorax", "upper_neck", "head_top",
    "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist",
)
NUM_JOINTS: int = len(JOINT_NAMES)
JOINT_INDEX: dict[str, int] = {name: i for i, name in enumerate(JOINT_NAMES)}

ROOT: int = JOINT_INDEX["pelvis"]  # 6: all root-relative poses subtract this joint.

# Left/right pairs swapped by a horizontal flip.
FLIP_PAIRS: tuple[tuple[int, int], ...] = ((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13))

# Permutation applied to the joint axis by a flip: FLIP_PERMUTATION[j] is the joint that j becomes.
FLIP_PERMUTATION: np.ndarray = np.arange(NUM_JOINTS)
for _a, _b in FLIP_PAIRS:
    FLIP_PERMUTATION[_a], FLIP_PERMUTATION[_b] = _b, _a
FLIP_PERMUTATION.setflags(write=False)

# The 11 bones of Eq. 5 (paper Sec. 3.3): pelvis to both hips, thighs, shins, upper arms,
# forearms, upper neck to head top. Their lengths are invariant while a subject moves.
BONES: tuple[tuple[int, int], ...] = (
    (6, 2), (6, 3),        # pelvis - right hip, pelvis - left hip
    (2, 1), (3, 4),        # thighs
    (1, 0), (4, 5),        # shins
    (12, 11), (13, 14),    # upper arms
    (11, 10), (14, 15),    # forearms
    (8, 9),                # upper neck - head top
)
# Permutation of the bone axis by a flip: left and right bones swap, like their joints.
BONE_FLIP_PERMUTATION: np.ndarray = np.array(
    [BONES.index(tuple(int(FLIP_PERMUTATION[j]) for j in bone)) for bone in BONES])
BONE_FLIP_PERMUTATION.setflags(write=False)
BONE_NAMES: tuple[str, ...] = tuple(f"{JOINT_NAMES[a]}-{JOINT_NAMES[b]}" for a, b in BONES)
NUM_BONES: int = len(BONES)

# Edges drawn in plots: the 11 bones plus the spine and shoulder girdle.
EDGES: tuple[tuple[int, int], ...] = BONES + ((6, 7), (7, 8), (7, 12), (7, 13))

# Side of each joint for colouring plots: -1 right, +1 left, 0 centre.
SIDE: tuple[int, ...] = (-1, -1, -1, 1, 1, 1, 0, 0, 0, 0, -1, -1, -1, 1, 1, 1)

# Human3.6M: the usual 32 -> 17 selection, then 17 -> MPII-16.
H36M_32_TO_17: tuple[int, ...] = (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27)
H36M_17_NAMES: tuple[str, ...] = (
    "pelvis", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "spine",
    "neck", "nose", "head", "l_shoulder", "l_elbow", "l_wrist", "r_shoulder", "r_elbow",
    "r_wrist",
)


def h36m17_to_mpii16(joints17: np.ndarray) -> np.ndarray:
    """Map H36M-17 joints (..., 17, D) to MPII-16 (..., 16, D).

    Thorax is the mean of the shoulders, upper neck the H36M neck, head top the H36M head;
    spine and nose are dropped.
    """
    j = np.asarray(joints17)
    if j.shape[-2] != 17:
        raise ValueError(f"expected (..., 17, D) H36M-17 joints, got shape {j.shape}")
    idx = {n: i for i, n in enumerate(H36M_17_NAMES)}
    pick = lambda n: j[..., idx[n], :]  # noqa: E731
    out = [
        pick("r_ankle"), pick("r_knee"), pick("r_hip"), pick("l_hip"), pick("l_knee"),
        pick("l_ankle"), pick("pelvis"), 0.5 * (pick("l_shoulder") + pick("r_shoulder")),
        pick("neck"), pick("head"), pick("r_wrist"), pick("r_elbow"), pick("r_shoulder"),
        pick("l_shoulder"), pick("l_elbow"), pick("l_wrist"),
    ]
    return np.stack(out, axis=-2)


def bone_lengths(poses):
    """Lengths of the 11 bones of Eq. 5.

    Args:
      poses: (..., 16, 3) joint positions (any units; numpy or jax arrays).
    Returns:
      (..., 11) bone lengths in the input's units.
    """
    xp = _array_module(poses)
    a = xp.asarray([b[0] for b in BONES])
    b = xp.asarray([b[1] for b in BONES])
    return xp.linalg.norm(poses[..., a, :] - poses[..., b, :], axis=-1)


def flip_joints(poses):
    """Swap left and right joint labels (..., 16, D); geometry is untouched."""
    return poses[..., FLIP_PERMUTATION, :]


def _array_module(x):
    if type(x).__module__.startswith("jax"):
        import jax.numpy as jnp
        return jnp
    return np
