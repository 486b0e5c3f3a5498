"""Fine-tuning losses of the paper (Sec. 3.3): weighted fidelity Sw (Eq. 3-4), bone-length
consistency U (Eq. 5), and their sum L = Sw + gamma U (Eq. 2).

Normalisation. The paper writes Eq. 3 and 5 as sums over the F frames. We average over frames
instead (`reduction="mean"`, the default) and sum over joints and bones exactly as written, so the
loss equals the paper's divided by the number of frames in the batch: its size (and so the
gradient scale the learning rate sees) does not change with the batch size or with the number of
devices a global batch is split over; a per-device mean averaged over devices equals the global
mean. `reduction="sum"` gives the paper's sums literally. Units are the poses' units (mm, so the
loss is in mm^2); RMSprop normalises the gradient scale, and gamma balances the two terms.

Poses are (..., 16, 3), the leading dims being "frames" (a batch, or batch x time).
"""
from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from hourglass_jax.skeleton import BONES, NUM_BONES, NUM_JOINTS

Reduction = Literal["mean", "sum"]


def _check_pose(x: jax.Array, name: str) -> None:
    if x.ndim < 2 or tuple(x.shape[-2:]) != (NUM_JOINTS, 3):
        raise ValueError(f"{name} must be (..., {NUM_JOINTS}, 3), got shape {x.shape}")


def _reduce(per_frame: jax.Array, reduction: Reduction) -> jax.Array:
    if reduction == "mean":
        return jnp.mean(per_frame)
    if reduction == "sum":
        return jnp.sum(per_frame)
    raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")


def fidelity_weights(scores: jax.Array, tau: float) -> jax.Array:
    """Eq. 4: W(s) = 1 where s > tau, else s. (...,) -> (...,)."""
    if isinstance(tau, (int, float)) and not 0.0 <= tau <= 1.0:  # traced values pass unchecked
        raise ValueError(f"tau must be in [0, 1], got {tau}")
    return jnp.where(scores > tau, 1.0, scores)


def weighted_fidelity_loss(pred: jax.Array, target: jax.Array, scores: jax.Array,
                           tau: float = 0.7, reduction: Reduction = "mean",
                           per_frame_normalised: bool = False) -> jax.Array:
    """Eq. 3: sum over joints of W(s_ij) * ||pred_ij - target_ij||^2, reduced over frames.

    Args:
      pred: (..., 16, 3) the network's poses (mm).
      target: (..., 16, 3) the pseudo-labels (the optimised predictions, mm); must be finite.
      scores: (..., 16) confidence of each pseudo-label joint in [0, 1]; held constant
        (no gradient flows into the weights).
      tau: Eq. 4 threshold.
      reduction: "mean" over frames (default) or "sum" (the paper's literal Eq. 3).
      per_frame_normalised: our option: scale each frame's weights to sum to its number of
        joints, so that Eq. 4 only moves weight between a frame's joints and every frame
        counts as much as an unweighted one.
    Returns:
      scalar, mm^2.
    """
    _check_pose(pred, "pred")
    if target.shape != pred.shape:
        raise ValueError(f"target shape {target.shape} != pred shape {pred.shape}")
    if scores.shape != pred.shape[:-1]:
        raise ValueError(f"scores must be {pred.shape[:-1]}, got shape {scores.shape}")
    w = jax.lax.stop_gradient(fidelity_weights(scores, tau))
    if per_frame_normalised:  # a frame of all-zero scores keeps zero weights
        total = jnp.sum(w, axis=-1, keepdims=True)
        w = jnp.where(total > 0, w * w.shape[-1] / jnp.where(total > 0, total, 1.0), 0.0)
    sq = jnp.sum((pred - target) ** 2, axis=-1)  # (..., 16)
    return _reduce(jnp.sum(w * sq, axis=-1), reduction)


def bone_lengths_safe(poses: jax.Array) -> jax.Array:
    """Lengths (..., 11) of the Eq. 5 bones of poses (..., 16, 3), with a finite gradient even for
    a zero-length bone (which soft-argmax can produce when two joints fall in one voxel)."""
    _check_pose(poses, "poses")
    a = jnp.asarray([b[0] for b in BONES])
    b = jnp.asarray([b[1] for b in BONES])
    sq = jnp.sum((poses[..., a, :] - poses[..., b, :]) ** 2, axis=-1)
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def bone_consistency_loss(pred: jax.Array, bone_lengths: jax.Array,
                          reduction: Reduction = "mean") -> jax.Array:
    """Eq. 5: sum over the 11 bones of (|bone of pred| - target length)^2, reduced over frames.

    Args:
      pred: (..., 16, 3) the network's poses (mm).
      bone_lengths: (..., 11) target lengths per sample (mm), e.g. per video from the completed
        poses, broadcast to each of its frames; order of `skeleton.BONES`.
      reduction: "mean" over frames (default) or "sum" (the paper's literal Eq. 5).
    Returns:
      scalar, mm^2.
    """
    _check_pose(pred, "pred")
    if bone_lengths.shape != pred.shape[:-2] + (NUM_BONES,):
        raise ValueError(f"bone_lengths must be {pred.shape[:-2] + (NUM_BONES,)}, got shape "
                         f"{bone_lengths.shape}")
    diff = bone_lengths_safe(pred) - jax.lax.stop_gradient(bone_lengths)
    return _reduce(jnp.sum(diff ** 2, axis=-1), reduction)


def finetune_loss(pred: jax.Array, target: jax.Array, scores: jax.Array,
                  bone_lengths: jax.Array, tau: float = 0.7, gamma: float = 1.0,
                  reduction: Reduction = "mean", per_frame_normalised: bool = False
                  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Eq. 2: L = Sw + gamma * U.

    Args: as `weighted_fidelity_loss` and `bone_consistency_loss`; gamma >= 0 weighs U (gamma = 0
      is the "weighted fidelity only" ablation; scores all 1 with tau < 1 is plain supervision).
    Returns:
      (L, {"fidelity": Sw, "bone": U}), scalars in mm^2.
    """
    if isinstance(gamma, (int, float)) and not gamma >= 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    sw = weighted_fidelity_loss(pred, target, scores, tau, reduction, per_frame_normalised)
    u = bone_consistency_loss(pred, bone_lengths, reduction)
    return sw + gamma * u, {"fidelity": sw, "bone": u}
