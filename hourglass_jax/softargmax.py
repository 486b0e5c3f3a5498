"""Joint coordinates and confidences from volumetric heatmaps (paper Sec. 3.3).

The paper replaces the non-differentiable argmax by a 3D version of Luvizon et al.'s peak finding:
the heatmap-weighted mean of the voxel positions inside a k x k x k cube centred on the coarse
maximum. Coordinates are continuous voxel units with voxel (z, y, x) = (depth bin, row, column) at
(x, y, z) = (column, row, depth bin) -- the convention of `geometry.depth_to_bin` and
`geometry.crop_px_to_heatmap`: index i's centre is at coordinate i.

All functions are jittable; k is static (it sets array shapes).

Choice of k (default 5): on a Gaussian heatmap of sigma 1 voxel (our targets), a window of 3
(+-1 sigma) pulls a peak half-way between voxels 0.23 voxel towards the argmax; a window of 5
(+-2 sigma) only 0.045 voxel, while still ignoring secondary modes a few voxels away. For 64-bin
volumes over +-1000 mm, 0.045 voxel is ~1.4 mm.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from hourglass_jax.geometry import VolumeSpec, voxels_to_pose
from hourglass_jax.targets import DEFAULT_SIGMA_3D

DEFAULT_K: int = 5


def _check_volume(volume: jax.Array) -> None:
    if volume.ndim < 3:
        raise ValueError(f"volume must be (..., D, h, w), got shape {volume.shape}")


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0:
        raise ValueError(f"cube size k must be a positive odd int, got {k!r}")
    return k // 2


def argmax_voxel(volume: jax.Array) -> jax.Array:
    """Integer (z, y, x) index of each volume's maximum: (..., D, h, w) -> (..., 3) int32."""
    _check_volume(volume)
    d, h, w = volume.shape[-3:]
    flat = jnp.argmax(volume.reshape(*volume.shape[:-3], d * h * w), axis=-1).astype(jnp.int32)
    return jnp.stack([flat // (h * w), (flat // w) % h, flat % w], axis=-1)


def _cube(volume: jax.Array, k: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The k^3 cube around the argmax, clipped at the borders.

    Returns the clamped (>= 0) values with voxels outside the volume zeroed, (..., k, k, k); the
    cube's (z, y, x) voxel coordinates as three (..., k) arrays stacked into (..., 3, k); and the
    argmax (..., 3). Out-of-volume positions are gathered at a clipped index and then masked, so
    no border voxel is counted twice and nothing wraps around.
    """
    r = _check_k(k)
    # float32 coordinates whatever the compute dtype: bf16 cannot hold 63.4 to 0.1 voxel.
    volume = volume.astype(jnp.float32)
    peak = argmax_voxel(volume)
    offsets = jnp.arange(-r, r + 1, dtype=jnp.int32)
    pos = peak[..., :, None] + offsets  # (..., 3, k): z, y, x positions of the cube
    sizes = jnp.asarray(volume.shape[-3:], dtype=jnp.int32)[:, None]
    valid = (pos >= 0) & (pos < sizes)
    idx = jnp.clip(pos, 0, sizes - 1)
    v = jnp.take_along_axis(volume, idx[..., 0, :, None, None], axis=-3)   # (..., k, h, w)
    v = jnp.take_along_axis(v, idx[..., 1, None, :, None], axis=-2)        # (..., k, k, w)
    v = jnp.take_along_axis(v, idx[..., 2, None, None, :], axis=-1)        # (..., k, k, k)
    mask = (valid[..., 0, :, None, None] & valid[..., 1, None, :, None]
            & valid[..., 2, None, None, :])
    weights = jnp.where(mask, jnp.maximum(v, 0.0), 0.0)
    return weights, pos.astype(volume.dtype), peak


def local_softargmax(volume: jax.Array, k: int = DEFAULT_K) -> jax.Array:
    """Local 3D soft-argmax: weighted mean voxel position in the k^3 cube around the maximum.

    Args:
      volume: (B, J, D, h, w) heatmaps (any leading dims). Values below 0 count as 0.
      k: odd cube side, static.
    Returns:
      (B, J, 3) float coordinates (x, y, z) = (column, row, depth bin), continuous voxel units.
      Differentiable with respect to the heatmap values inside the cube (the argmax position
      itself is piecewise constant). Where the cube holds no positive value, the argmax voxel.
    """
    weights, pos, peak = _cube(volume, k)
    total = jnp.sum(weights, axis=(-3, -2, -1))
    safe = jnp.where(total > 0, total, 1.0)
    z = jnp.sum(weights * pos[..., 0, :, None, None], axis=(-3, -2, -1)) / safe
    y = jnp.sum(weights * pos[..., 1, None, :, None], axis=(-3, -2, -1)) / safe
    x = jnp.sum(weights * pos[..., 2, None, None, :], axis=(-3, -2, -1)) / safe
    coords = jnp.stack([x, y, z], axis=-1)
    fallback = peak[..., ::-1].astype(coords.dtype)
    return jnp.where((total > 0)[..., None], coords, fallback)


def coordinate_loss(volume: jax.Array, target_voxels: jax.Array, k: int = DEFAULT_K) -> jax.Array:
    """Mean L1 distance, in voxels, between the local soft-argmax and the target positions.

    An auxiliary term for the supervised 3D stage (integral regression, as Sun et al., ECCV
    2018, train their soft-argmax): the L2 heatmap loss alone teaches where the peak is, this term
    teaches the sub-voxel position the local soft-argmax reads off, which is what the metrics and
    the fine-tuning loss see.

    Args:
      volume: (B, J, D, h, w) heatmaps.
      target_voxels: (B, J, 3) (x, y, z) voxel coordinates of the joints (`pose_to_voxels`).
      k: soft-argmax cube side.
    Returns:
      scalar, voxels: mean over the joints inside the volume of |x| + |y| + |z| differences;
      joints outside the volume (or not finite) do not count; 0 when none is inside.
    """
    _check_volume(volume)
    if target_voxels.shape != volume.shape[:-3] + (3,):
        raise ValueError(f"target_voxels must be {volume.shape[:-3] + (3,)}, got shape "
                         f"{target_voxels.shape}")
    sizes = jnp.asarray(volume.shape[-1:-4:-1], jnp.float32)  # (w, h, D) for (x, y, z)
    inside = jnp.all(jnp.isfinite(target_voxels) & (target_voxels >= -0.5)
                     & (target_voxels < sizes - 0.5), axis=-1)
    diff = jnp.abs(local_softargmax(volume, k) - jnp.where(inside[..., None], target_voxels, 0.0))
    per_joint = jnp.where(inside, jnp.sum(diff, axis=-1), 0.0)
    return jnp.sum(per_joint) / jnp.maximum(jnp.sum(inside), 1)


def global_softargmax(volume: jax.Array, beta: float = 1.0) -> jax.Array:
    """Global soft-argmax: expected voxel position under softmax(beta * volume).

    Args:
      volume: (B, J, D, h, w) heatmaps (any leading dims).
      beta: softmax inverse temperature; large values approach the hard argmax.
    Returns:
      (B, J, 3) float coordinates (x, y, z) = (column, row, depth bin).
    """
    _check_volume(volume)
    volume = volume.astype(jnp.float32)
    d, h, w = volume.shape[-3:]
    lead = volume.shape[:-3]
    p = jax.nn.softmax(beta * volume.reshape(*lead, d * h * w), axis=-1).reshape(volume.shape)
    z = jnp.sum(p.sum(axis=(-2, -1)) * jnp.arange(d, dtype=p.dtype), axis=-1)
    y = jnp.sum(p.sum(axis=(-3, -1)) * jnp.arange(h, dtype=p.dtype), axis=-1)
    x = jnp.sum(p.sum(axis=(-3, -2)) * jnp.arange(w, dtype=p.dtype), axis=-1)
    return jnp.stack([x, y, z], axis=-1)


def reference_cube_mass(k: int = DEFAULT_K, sigma: float = DEFAULT_SIGMA_3D) -> float:
    """Sum of a unit-peak 3D Gaussian of `sigma` voxels, centred on a voxel, over its k^3 cube."""
    r = _check_k(k)
    s = sum(math.exp(-(i * i) / (2.0 * sigma * sigma)) for i in range(-r, r + 1))
    return s ** 3


def joint_confidence(volume: jax.Array, k: int = DEFAULT_K,
                     sigma: float = DEFAULT_SIGMA_3D) -> jax.Array:
    """Per-joint confidence in [0, 1]: heatmap mass in the soft-argmax cube, relative to a target.

    score = min(1, sum of max(v, 0) over the clipped k^3 cube / reference_cube_mass(k, sigma)).
    A network trained on unit-peak Gaussian targets of `sigma` voxels (targets.py) that is sure of
    a joint reproduces the target there, scoring ~1 whatever the sub-voxel offset (0.97 for a peak
    half-way between voxels on all three axes, k = 5). Where it is unsure, L2 training spreads and
    flattens the prediction (the mean of the plausible targets), so less mass stays near the peak
    and the score drops, like the peak value does, but without the peak value's dependence on the
    sub-voxel position (0.69 at a half-voxel offset on three axes). The paper thresholds such
    scores at tau = 0.7. Joints whose cube is cut by the volume border score lower (their target is
    cut too).

    Args:
      volume: (B, J, D, h, w) heatmaps (any leading dims).
    Returns:
      (B, J) float scores in [0, 1]. Not meant to be differentiated (used as fixed weights).
    """
    weights, _, _ = _cube(volume, k)
    mass = jnp.sum(weights, axis=(-3, -2, -1))
    return jnp.clip(mass / reference_cube_mass(k, sigma), 0.0, 1.0)


def predict_pose_mm(volume: jax.Array, intrinsics: jax.Array, center: jax.Array,
                    scale: jax.Array, root_depth: jax.Array, spec: VolumeSpec,
                    k: int = DEFAULT_K, rotation_deg: jax.Array | float = 0.0,
                    sigma: float = DEFAULT_SIGMA_3D) -> tuple[jax.Array, jax.Array]:
    """Camera-frame pose and per-joint confidence from the network's volumes.

    Local soft-argmax voxel coordinates, then `geometry.voxels_to_pose` (back-projection of the
    heatmap position with the root's absolute depth plus each joint's root-relative depth bin).

    Args:
      volume: (B, 16, D, h, w) heatmaps; (D, h, w) must be (spec.depth_bins, spec.heatmap_size,
        spec.heatmap_size).
      intrinsics: (B, 4) or (4,) [fx, fy, cx, cy] px.
      center: (B, 2) or (2,) crop centre, image px; scale: (B,) or scalar, box side / 200 px.
      root_depth: (B,) or scalar, absolute camera z of the pelvis, mm.
      spec: the volume's geometry.
      k: soft-argmax cube side (static); sigma: target sigma for the confidence (voxels).
      rotation_deg: (B,) or scalar, the crop's rotation.
    Returns:
      pose: (B, 16, 3) mm, camera frame; confidence: (B, 16) in [0, 1] (`joint_confidence`).
      Differentiable in `volume` through the soft-argmax weights.
    """
    _check_volume(volume)
    want = (spec.depth_bins, spec.heatmap_size, spec.heatmap_size)
    if tuple(volume.shape[-3:]) != want:
        raise ValueError(f"volume's (D, h, w) {tuple(volume.shape[-3:])} does not match the "
                         f"VolumeSpec {want}")
    coords = local_softargmax(volume, k)
    pose = voxels_to_pose(coords, jnp.asarray(intrinsics), jnp.asarray(center),
                          jnp.asarray(scale), jnp.asarray(root_depth), spec,
                          jnp.asarray(rotation_deg))
    return pose, joint_confidence(volume, k, sigma)
