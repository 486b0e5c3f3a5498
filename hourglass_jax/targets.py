"""Gaussian heatmap targets (2D and volumetric) and the supervised heatmap loss.

As Newell et al. and Pavlakos et al. (c2f-vol) do: each joint's target is an unnormalised Gaussian
with peak 1 at the joint's continuous position, sigma = 1 pixel (voxel) at heatmap resolution.
Pixel (voxel) index i has its centre at coordinate i (the `geometry.py` convention), so a joint at
coordinate c lies inside an axis of n cells when -0.5 <= c < n - 0.5. A joint outside the heatmap
(volume), or not finite, gets an all-zero target. The supervised loss is the mean squared error,
summed over every stack with intermediate supervision (the 2D stacks and the volumetric stack).
"""
from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from hourglass_jax.geometry import VolumeSpec, crop_px_to_heatmap, pose_to_voxels

DEFAULT_SIGMA_2D: float = 1.0  # heatmap px, as Newell / c2f-vol
DEFAULT_SIGMA_3D: float = 1.0  # voxels, on every axis


def _axis_gaussian(c: jax.Array, n: int, sigma: float) -> jax.Array:
    """exp(-(i - c)^2 / (2 sigma^2)) for i = 0..n-1: (...,) -> (..., n)."""
    i = jnp.arange(n, dtype=jnp.float32)
    return jnp.exp(-((i - c[..., None]) ** 2) / (2.0 * sigma * sigma))


def _inside(c: jax.Array, n: int) -> jax.Array:
    return jnp.isfinite(c) & (c >= -0.5) & (c < n - 0.5)


def _check_sigma(sigma: float) -> None:
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")


def gaussian_heatmaps(joints: jax.Array, size: int, sigma: float = DEFAULT_SIGMA_2D,
                      visible: jax.Array | None = None) -> jax.Array:
    """2D Gaussian heatmaps, channels last as the network outputs them.

    Args:
      joints: (..., J, 2) float, (x, y) in heatmap pixels (column, row).
      size: heatmap side h = w.
      sigma: Gaussian sigma, heatmap px.
      visible: optional (..., J) bool; False gives an all-zero map.
    Returns:
      (..., size, size, J) float32 targets, peak 1 at the joint.
    """
    _check_sigma(sigma)
    joints = jnp.asarray(joints, jnp.float32)
    if joints.ndim < 2 or joints.shape[-1] != 2:
        raise ValueError(f"joints must be (..., J, 2) heatmap px, got shape {joints.shape}")
    x, y = joints[..., 0], joints[..., 1]
    keep = _inside(x, size) & _inside(y, size)
    if visible is not None:
        keep = keep & jnp.asarray(visible, bool)
    gx = _axis_gaussian(jnp.where(keep, x, 0.0), size, sigma)  # (..., J, w)
    gy = _axis_gaussian(jnp.where(keep, y, 0.0), size, sigma)  # (..., J, h)
    maps = gy[..., :, None] * gx[..., None, :] * keep[..., None, None]  # (..., J, h, w)
    return jnp.moveaxis(maps, -3, -1)


def gaussian_volumes(coords: jax.Array, depth_bins: int, size: int,
                     sigma: float = DEFAULT_SIGMA_3D,
                     visible: jax.Array | None = None) -> jax.Array:
    """3D Gaussian volume targets in the network's layout.

    Args:
      coords: (..., J, 3) float voxel coordinates (x, y, z) = (column, row, depth bin), e.g. from
        `geometry.pose_to_voxels`.
      depth_bins: D.
      size: h = w of the volume.
      sigma: Gaussian sigma in voxels (same on all axes).
      visible: optional (..., J) bool; False gives an all-zero volume.
    Returns:
      (..., J, D, size, size) float32, peak 1 at the joint; all zero for joints outside.
    """
    _check_sigma(sigma)
    coords = jnp.asarray(coords, jnp.float32)
    if coords.ndim < 2 or coords.shape[-1] != 3:
        raise ValueError(f"coords must be (..., J, 3) voxels (x, y, z), got shape {coords.shape}")
    x, y, z = coords[..., 0], coords[..., 1], coords[..., 2]
    keep = _inside(x, size) & _inside(y, size) & _inside(z, depth_bins)
    if visible is not None:
        keep = keep & jnp.asarray(visible, bool)
    gx = _axis_gaussian(jnp.where(keep, x, 0.0), size, sigma)
    gy = _axis_gaussian(jnp.where(keep, y, 0.0), size, sigma)
    gz = _axis_gaussian(jnp.where(keep, z, 0.0), depth_bins, sigma)
    # Separable: the product of three 1D Gaussians is the isotropic 3D Gaussian.
    return (gz[..., :, None, None] * gy[..., None, :, None] * gx[..., None, None, :]
            * keep[..., None, None, None])


def heatmaps_from_crop_px(joints_crop_px: jax.Array, spec: VolumeSpec,
                          sigma: float = DEFAULT_SIGMA_2D,
                          visible: jax.Array | None = None) -> jax.Array:
    """2D targets from joints in crop px: (..., J, 2) -> (..., h, w, J) float32, h = w = spec's
    heatmap_size.

    Converts with `geometry.crop_px_to_heatmap`, then `gaussian_heatmaps`.
    """
    hm = crop_px_to_heatmap(jnp.asarray(joints_crop_px, jnp.float32), spec)
    return gaussian_heatmaps(hm, spec.heatmap_size, sigma, visible)


def volumes_from_pose(pose_cam: jax.Array, intrinsics: jax.Array, center: jax.Array,
                      scale: jax.Array, spec: VolumeSpec, rotation_deg: jax.Array | float = 0.0,
                      sigma: float = DEFAULT_SIGMA_3D,
                      visible: jax.Array | None = None) -> jax.Array:
    """3D targets from camera-frame poses: (B, 16, 3) mm -> (B, 16, D, h, w) float32.

    Converts with `geometry.pose_to_voxels` (crop as center (B, 2) px, scale (B,), rotation (B,)
    deg; intrinsics (B, 4)), then `gaussian_volumes`. Joints outside the volume (beyond the crop or
    the +-depth_range_mm root-relative depth range) get all-zero targets.
    """
    vox = pose_to_voxels(jnp.asarray(pose_cam, jnp.float32), jnp.asarray(intrinsics),
                         jnp.asarray(center), jnp.asarray(scale), spec, jnp.asarray(rotation_deg))
    return gaussian_volumes(vox, spec.depth_bins, spec.heatmap_size, sigma, visible)


def heatmap_loss(outputs: Mapping[str, jax.Array],
                 targets: Mapping[str, jax.Array]) -> jax.Array:
    """Supervised L2 heatmap loss: mean squared error per stack, summed over the stacks.

    Args:
      outputs: the network's dict: "heatmaps2d" (S2, B, h, w, J) and/or "volume" (B, J, D, h, w).
      targets: "heatmaps2d" (B, h, w, J) (the same target for every 2D stack) and/or "volume"
        (B, J, D, h, w). Only the keys present in `targets` are supervised (the 3D stage, with a
        frozen detector, passes just "volume").
    Returns:
      scalar float32: sum over supervised stacks of mean((output - target)^2).
    """
    known = {"heatmaps2d", "volume"}
    if not targets or not set(targets) <= known:
        raise ValueError(f"targets must have keys among {sorted(known)}, got {sorted(targets)}")
    total = jnp.zeros((), jnp.float32)
    if "heatmaps2d" in targets:
        pred, tgt = outputs["heatmaps2d"], targets["heatmaps2d"]
        if pred.shape[1:] != tgt.shape:
            raise ValueError(f"heatmaps2d: outputs {pred.shape} vs targets {tgt.shape}: expected "
                             "(S2, B, h, w, J) and (B, h, w, J)")
        per_stack = jnp.mean((pred.astype(jnp.float32) - tgt[None]) ** 2, axis=(1, 2, 3, 4))
        total = total + jnp.sum(per_stack)
    if "volume" in targets:
        pred, tgt = outputs["volume"], targets["volume"]
        if pred.shape != tgt.shape:
            raise ValueError(f"volume: outputs {pred.shape} vs targets {tgt.shape}")
        total = total + jnp.mean((pred.astype(jnp.float32) - tgt) ** 2)
    return total
