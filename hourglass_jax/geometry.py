"""Cameras, crops and the voxel grid: the geometry shared by the data, the network targets and evaluation.

Every function accepts NumPy or JAX arrays: with only NumPy inputs it computes in NumPy (float64 for the
dataset builders), with any JAX array it uses jax.numpy and is jittable (shapes are checked at trace time).

Conventions (DESIGN.md "Conventions"; pixel centres and the crop box edges are fixed here):
- Camera frame (OpenCV): x right, y down, z forward (depth), millimetres. ``p_cam = R @ p_world + t``.
- Intrinsics: ``[fx, fy, cx, cy]`` in pixels; ``u = fx * x / z + cx``, ``v = fy * y / z + cy``.
- Pixel coordinates (image, crop and heatmap alike) put pixel centres at integers: pixel k spans
  [k - 0.5, k + 0.5). Coordinates are (x, y) = (column, row).
- Crops (Newell's center/scale): the square box of side 200 * scale image px centred on ``center`` is the
  whole crop of ``res`` px, edge to edge: the box edge ``center - 100 * scale`` maps to crop -0.5, the centre
  to (res - 1) / 2 (the matrix of Newell's Lua getTransform maps it to res / 2: half a pixel apart).
  A rotation turns the content about the crop centre, positive = counter-clockwise on screen (as in
  Newell's pose-hg-train). Because the box maps edge to edge, a heatmap of the same box at any
  resolution is consistent with it: see ``crop_px_to_heatmap``.
- Batching: a camera or crop parameter with batch dims ``*B`` applies to points with leading dims ``*B``
  (left-aligned, e.g. points (B, 16, 3) with intrinsics (B, 4)); unbatched parameters apply to all points.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from hourglass_jax.skeleton import NUM_JOINTS, ROOT

BOX_PX_PER_SCALE: float = 200.0  # Newell: box side = 200 * scale image px.


def _xp(*arrays):
    """jax.numpy if any input is a JAX array (or tracer), else NumPy."""
    return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def _float(x, xp):
    a = xp.asarray(x)
    if not xp.issubdtype(a.dtype, xp.floating):
        a = a.astype(np.float64 if xp is np else jnp.zeros(()).dtype)
    return a


def _matvec(m, v):
    """``m @ v`` over the last axes, (..., k, n) x (..., n) -> (..., k), as products and a sum.

    Not ``@``: JAX's default lets recent NVIDIA GPUs round float32 matmul factors to
    TensorFloat32 (10-bit mantissa: a relative rounding up to 2^-11, so up to 0.5 px on image
    coordinates of 1000 px, not measured here); elementwise products stay float32 everywhere.
    """
    return (m * v[..., None, :]).sum(-1)


def _matmul(a, b):
    """``a @ b`` for small (..., k, n) x (..., n, l) matrices, float32 on every backend (see _matvec)."""
    return (a[..., :, :, None] * b[..., None, :, :]).sum(-2)


def _check_last(a, size: int, name: str) -> None:
    if a.ndim < 1 or a.shape[-1] != size:
        raise ValueError(f"{name} must have shape (..., {size}), got {tuple(a.shape)}")


def _check_values(xp, a, name: str, positive: bool = False) -> None:
    """NaN / sign checks, for NumPy inputs only (values are unknown while tracing under jit)."""
    if xp is not np:
        return
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains {int(np.sum(~np.isfinite(a)))} non-finite values")
    if positive and not np.all(a > 0):
        raise ValueError(f"{name} must be > 0, got min {np.min(a)!r}")


def _check_res(res) -> None:
    if isinstance(res, bool) or not isinstance(res, (int, np.integer)) or res <= 0:
        raise ValueError(f"res must be a positive int (crop side in px), got {res!r}")


def _left_align(param, target_ndim: int, core: int, name: str, xp):
    """Reshape ``param`` (*B, *core_shape) to (*B, 1, ..., 1, *core_shape) with target_ndim batch dims.

    ``core`` is the number of trailing dims that are not batch dims (1 for a vector, 2 for a matrix, 0 for
    a scalar). ``target_ndim`` is the number of non-core dims of the points it applies to.
    """
    batch = param.ndim - core
    if batch > target_ndim:
        raise ValueError(f"{name} has more batch dims ({tuple(param.shape)}) than the points it applies to")
    shape = tuple(param.shape[:batch]) + (1,) * (target_ndim - batch) + tuple(param.shape[batch:])
    return xp.reshape(param, shape)


# ----------------------------------------------------------------------------------------- cameras
def project(points, intrinsics):
    """Pinhole projection.

    Args:
      points: (..., 3) mm in the camera frame, z > 0 (z <= 0 gives inf/nan or a mirrored point).
      intrinsics: (4,) or (*B, 4) [fx, fy, cx, cy] px, left-aligned with points' leading dims.
    Returns:
      (..., 2) image px.
    """
    xp = _xp(points, intrinsics)
    p, k = _float(points, xp), _float(intrinsics, xp)
    _check_last(p, 3, "points")
    _check_last(k, 4, "intrinsics")
    _check_values(xp, k[..., :2], "intrinsics focal lengths", positive=True)
    _check_values(xp, k[..., 2:], "intrinsics principal point")
    k = _left_align(k, p.ndim - 1, 1, "intrinsics", xp)
    return p[..., :2] / p[..., 2:3] * k[..., :2] + k[..., 2:4]


def backproject(uv, depth, intrinsics):
    """Inverse of ``project`` given each point's absolute camera depth.

    Args:
      uv: (..., J, 2) image px.
      depth: (..., J) mm, the camera-frame z of each point.
      intrinsics: (4,) or (*B, 4) [fx, fy, cx, cy] px, left-aligned with uv's leading dims.
    Returns:
      (..., J, 3) mm in the camera frame.
    """
    xp = _xp(uv, depth, intrinsics)
    uv, z, k = _float(uv, xp), _float(depth, xp), _float(intrinsics, xp)
    _check_last(uv, 2, "uv")
    _check_last(k, 4, "intrinsics")
    if tuple(z.shape) != tuple(uv.shape[:-1]):
        raise ValueError(f"depth must have shape {tuple(uv.shape[:-1])} (uv without its last axis), "
                         f"got {tuple(z.shape)}")
    _check_values(xp, k[..., :2], "intrinsics focal lengths", positive=True)
    _check_values(xp, k[..., 2:], "intrinsics principal point")
    k = _left_align(k, uv.ndim - 1, 1, "intrinsics", xp)
    xy = (uv - k[..., 2:4]) / k[..., :2] * z[..., None]
    return xp.concatenate([xy, z[..., None]], axis=-1)


def look_at_camera(position, target, up):
    """World -> camera rotation and translation of a camera at ``position`` looking at ``target``.

    OpenCV axes: the camera looks along its +z, x is to the right in the image, y down; the world's
    ``up`` points up in the image (negative camera y).

    Args:
      position: (3,) camera centre, world frame (mm).
      target: (3,) point on the optical axis, world frame (mm).
      up: (3,) world up direction (any length, not parallel to the viewing direction).
    Returns:
      R (3, 3) and t (3,) mm with ``p_cam = R @ p_world + t``; the camera centre maps to 0.
    Raises:
      ValueError: (NumPy inputs) shapes not (3,), position == target, or up parallel to the view.
    """
    xp = _xp(position, target, up)
    c, tgt, u = (_float(a, xp) for a in (position, target, up))
    for a, name in ((c, "position"), (tgt, "target"), (u, "up")):
        if tuple(a.shape) != (3,):
            raise ValueError(f"{name} must have shape (3,), got {tuple(a.shape)}")
    fwd = tgt - c
    if xp is np:
        if np.linalg.norm(fwd) == 0:
            raise ValueError("look_at_camera: position equals target")
        if np.linalg.norm(np.cross(fwd, u)) <= 1e-9 * np.linalg.norm(fwd) * np.linalg.norm(u):
            raise ValueError("look_at_camera: up is parallel to the viewing direction")
    z = fwd / xp.linalg.norm(fwd)
    x = xp.cross(z, u)          # right = forward x up in a right-handed frame
    x = x / xp.linalg.norm(x)
    y = xp.cross(z, x)          # down
    rot = xp.stack([x, y, z], axis=0)
    return rot, -_matvec(rot, c)


def world_to_camera(points, R, t):
    """Rigid transform ``R @ p + t`` of points (..., 3) by R (3, 3) or (*B, 3, 3), t (3,) or (*B, 3)."""
    xp = _xp(points, R, t)
    p, r, tt = _float(points, xp), _float(R, xp), _float(t, xp)
    _check_last(p, 3, "points")
    if r.ndim < 2 or tuple(r.shape[-2:]) != (3, 3):
        raise ValueError(f"R must have shape (..., 3, 3), got {tuple(r.shape)}")
    _check_last(tt, 3, "t")
    r = _left_align(r, p.ndim - 1, 2, "R", xp)
    tt = _left_align(tt, p.ndim - 1, 1, "t", xp)
    return _matvec(r, p) + tt


def camera_to_world(points, R, t):
    """Inverse of ``world_to_camera``: ``R^T @ (p - t)``."""
    xp = _xp(points, R, t)
    r = _float(R, xp)
    if r.ndim < 2 or tuple(r.shape[-2:]) != (3, 3):
        raise ValueError(f"R must have shape (..., 3, 3), got {tuple(r.shape)}")
    rt = xp.swapaxes(r, -1, -2)
    tt = _float(t, xp)
    _check_last(tt, 3, "t")
    return world_to_camera(points, rt, -_matvec(rt, tt))


# --------------------------------------------------------------------------------------- rotations
def rotation_matrix(axis, angle_rad):
    """Right-handed rotation by ``angle_rad`` about ``axis`` (Rodrigues).

    Args:
      axis: (3,) or (..., 3), any non-zero length.
      angle_rad: scalar or (...) radians, broadcast with axis' leading dims.
    Returns:
      (..., 3, 3) rotation matrices, ``R @ v`` rotates v counter-clockwise seen from the axis' tip.
    """
    xp = _xp(axis, angle_rad)
    a, th = _float(axis, xp), _float(angle_rad, xp)
    _check_last(a, 3, "axis")
    a = a / xp.linalg.norm(a, axis=-1, keepdims=True)
    x, y, z = a[..., 0], a[..., 1], a[..., 2]
    zero = xp.zeros_like(x)
    k = xp.stack([xp.stack([zero, -z, y], -1), xp.stack([z, zero, -x], -1),
                  xp.stack([-y, x, zero], -1)], -2)                      # cross-product matrix
    s, c = xp.sin(th)[..., None, None], xp.cos(th)[..., None, None]
    return xp.eye(3) + s * k + (1 - c) * _matmul(k, k)


def rotation_2d(angle_deg):
    """Image-plane rotation (..., 2, 2) turning vectors counter-clockwise on screen by ``angle_deg``.

    Image axes are x right, y down, so this is [[cos, sin], [-sin, cos]]; it equals the xy block of
    ``rotation_matrix([0, 0, 1], -angle)`` in camera coordinates.
    """
    xp = _xp(angle_deg)
    th = _float(angle_deg, xp) * (math.pi / 180.0)
    c, s = xp.cos(th), xp.sin(th)
    return xp.stack([xp.stack([c, s], -1), xp.stack([-s, c], -1)], -2)


# ------------------------------------------------------------------------------------------- crops
def _crop_params(center, scale, res: int, rotation_deg):
    """Checked crop parameters as arrays of one module, and their common batch shape."""
    xp = _xp(center, scale, rotation_deg)
    c, sc, rot = _float(center, xp), _float(scale, xp), _float(rotation_deg, xp)
    _check_last(c, 2, "center")
    _check_res(res)
    _check_values(xp, c, "center")
    _check_values(xp, sc, "scale", positive=True)
    _check_values(xp, rot, "rotation_deg")
    batch = np.broadcast_shapes(tuple(c.shape[:-1]), tuple(sc.shape), tuple(rot.shape))
    return xp, c, sc, rot, batch


def crop_affine(center, scale, res: int, rotation_deg=0.0):
    """Affine map image px -> crop px of Newell's box (see the module docstring).

    ``crop = s * rot(uv - center) + (res - 1) / 2`` with ``s = res / (200 * scale)``.

    Args:
      center: (2,) or (*B, 2) box centre, image px.
      scale: scalar or (*B,): box side / 200 px.
      res: crop side in px.
      rotation_deg: scalar or (*B,), counter-clockwise on screen.
    Returns:
      (*B, 2, 3) matrices A with ``crop = A[:, :2] @ uv + A[:, 2]``.
    """
    xp, c, sc, rot, batch = _crop_params(center, scale, res, rotation_deg)
    s = (res / (BOX_PX_PER_SCALE * sc))[..., None, None]
    lin = s * rotation_2d(rot)                                           # (*B, 2, 2)
    lin = xp.broadcast_to(lin, batch + (2, 2))
    c = xp.broadcast_to(c, batch + (2,))
    offset = (res - 1) / 2.0 - _matvec(lin, c)
    return xp.concatenate([lin, offset[..., None]], axis=-1)


def crop_affine_inverse(center, scale, res: int, rotation_deg=0.0):
    """Affine map crop px -> image px, the exact inverse of ``crop_affine``: (*B, 2, 3)."""
    xp, c, sc, rot, batch = _crop_params(center, scale, res, rotation_deg)
    lin = ((BOX_PX_PER_SCALE * sc) / res)[..., None, None] * rotation_2d(-rot)
    lin = xp.broadcast_to(lin, batch + (2, 2))
    c = xp.broadcast_to(c, batch + (2,))
    offset = c - _matvec(lin, xp.full((2,), (res - 1) / 2.0))
    return xp.concatenate([lin, offset[..., None]], axis=-1)


def apply_affine(A, uv):
    """Apply (2, 3) or (*B, 2, 3) affine maps to points (*B, ..., 2) (left-aligned batch dims)."""
    xp = _xp(A, uv)
    a, p = _float(A, xp), _float(uv, xp)
    _check_last(p, 2, "uv")
    if a.ndim < 2 or tuple(a.shape[-2:]) != (2, 3):
        raise ValueError(f"affine matrix must have shape (..., 2, 3), got {tuple(a.shape)}")
    a = _left_align(a, p.ndim - 1, 2, "affine matrix", xp)
    return _matvec(a[..., :2], p) + a[..., 2]


def image_to_crop(uv, center, scale, res: int, rot=0.0):
    """Image px (*B, ..., 2) -> crop px of the box (center (*B, 2), scale (*B,), rot (*B,) deg)."""
    return apply_affine(crop_affine(center, scale, res, rot), uv)


def crop_to_image(uv_crop, center, scale, res: int, rot=0.0):
    """Crop px (*B, ..., 2) -> image px; the exact inverse of ``image_to_crop``."""
    return apply_affine(crop_affine_inverse(center, scale, res, rot), uv_crop)


# ------------------------------------------------------------------------------------------ volume
@dataclasses.dataclass(frozen=True, kw_only=True)
class VolumeSpec:
    """The network's output volume: heatmap_size x heatmap_size pixels x depth_bins depth bins.

    Keyword-only (so that a positional mix-up of the ints cannot pass silently).

    Attributes:
      heatmap_size: H = W of the heatmaps, px.
      depth_bins: D, bins over the root-relative depth [-depth_range_mm, +depth_range_mm].
      depth_range_mm: R, half the depth extent, mm (bin size 2R / D).
      input_size: side of the network's input crop, px; a multiple of heatmap_size (default 4x).
    """

    heatmap_size: int
    depth_bins: int
    depth_range_mm: float = 1000.0
    input_size: int | None = None

    def __post_init__(self) -> None:
        if self.input_size is None:
            object.__setattr__(self, "input_size", 4 * self.heatmap_size)
        for name in ("heatmap_size", "depth_bins", "input_size"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"VolumeSpec.{name} must be a positive int, got {v!r}")
        if self.input_size % self.heatmap_size:
            raise ValueError(f"VolumeSpec.input_size ({self.input_size}) must be a multiple of "
                             f"heatmap_size ({self.heatmap_size})")
        if not (math.isfinite(self.depth_range_mm) and self.depth_range_mm > 0):
            raise ValueError(f"VolumeSpec.depth_range_mm must be positive and finite, "
                             f"got {self.depth_range_mm!r}")

    @property
    def stride(self) -> int:
        """Crop px per heatmap px (input_size / heatmap_size)."""
        return self.input_size // self.heatmap_size

    @property
    def bin_size_mm(self) -> float:
        """Depth extent of one bin, mm."""
        return 2.0 * self.depth_range_mm / self.depth_bins


def depth_to_bin(z_rel_mm, spec: VolumeSpec):
    """Root-relative depth (...) mm -> continuous bin coordinate (...): bin i's centre is i.

    Bin i covers [-R + i * 2R/D, -R + (i + 1) * 2R/D); its centre z = -R + (i + 0.5) * 2R/D maps to i, so
    -R maps to -0.5 and +R to D - 0.5. Values outside the range extrapolate linearly.
    """
    xp = _xp(z_rel_mm)
    z = _float(z_rel_mm, xp)
    return (z + spec.depth_range_mm) / spec.bin_size_mm - 0.5


def bin_to_depth(b, spec: VolumeSpec):
    """Continuous bin coordinate (...) -> root-relative depth (...) mm; inverse of ``depth_to_bin``."""
    xp = _xp(b)
    return -spec.depth_range_mm + (_float(b, xp) + 0.5) * spec.bin_size_mm


def crop_px_to_heatmap(uv_crop, spec: VolumeSpec):
    """Crop px (..., 2) -> heatmap px (..., 2), both with pixel centres at integers.

    Heatmap pixel i covers crop pixels [stride * i, stride * i + stride), whose centres average to
    ``stride * i + (stride - 1) / 2`` (1.5 for stride 4): ``hm = (crop - (stride - 1) / 2) / stride``.
    Equivalently, the heatmap is Newell's box at heatmap_size px (``crop_affine`` with res=heatmap_size).
    """
    xp = _xp(uv_crop)
    st = spec.stride
    return (_float(uv_crop, xp) - (st - 1) / 2.0) / st


def heatmap_to_crop_px(xy_hm, spec: VolumeSpec):
    """Heatmap px (..., 2) -> crop px (..., 2); exact inverse of ``crop_px_to_heatmap``."""
    xp = _xp(xy_hm)
    st = spec.stride
    return _float(xy_hm, xp) * st + (st - 1) / 2.0


def _check_pose(pose, name: str) -> None:
    if pose.ndim < 2 or tuple(pose.shape[-2:]) != (NUM_JOINTS, 3):
        raise ValueError(f"{name} must have shape (..., {NUM_JOINTS}, 3), got {tuple(pose.shape)}")


def pose_to_voxels(pose_cam, intrinsics, center, scale, spec: VolumeSpec, rotation_deg=0.0):
    """Camera-frame pose -> voxel coordinates of the network's volume.

    Args:
      pose_cam: (*B, 16, 3) mm, camera frame, absolute (not root-relative).
      intrinsics: (4,) or (*B, 4) [fx, fy, cx, cy] px.
      center, scale, rotation_deg: the crop, (2,)/(*B, 2), scalar/(*B,), scalar/(*B,) (see crop_affine).
      spec: the volume.
    Returns:
      (*B, 16, 3): x, y in heatmap px (pixel centres at integers), z in depth bins of the root-relative
      camera depth ``z - z_root`` (root = pelvis, joint 6, which lands at bin (D - 1) / 2).
    """
    xp = _xp(pose_cam, intrinsics, center, scale, rotation_deg)
    p = _float(pose_cam, xp)
    _check_pose(p, "pose_cam")
    uv = project(p, intrinsics)
    hm = crop_px_to_heatmap(image_to_crop(uv, center, scale, spec.input_size, rotation_deg), spec)
    zb = depth_to_bin(p[..., 2] - p[..., ROOT:ROOT + 1, 2], spec)
    return xp.concatenate([hm, zb[..., None]], axis=-1)


def voxels_to_pose(voxels, intrinsics, center, scale, root_depth_mm, spec: VolumeSpec, rotation_deg=0.0):
    """Voxel coordinates -> camera-frame pose, by back-projection with the root's absolute depth.

    Args:
      voxels: (*B, 16, 3) as returned by ``pose_to_voxels`` (x, y heatmap px, z depth bins).
      intrinsics, center, scale, rotation_deg: as for ``pose_to_voxels``.
      root_depth_mm: scalar or (*B,) absolute camera z of the root (pelvis), mm.
      spec: the volume.
    Returns:
      (*B, 16, 3) mm, camera frame; the exact inverse of ``pose_to_voxels`` given the true root depth.
    """
    xp = _xp(voxels, intrinsics, center, scale, root_depth_mm, rotation_deg)
    v = _float(voxels, xp)
    _check_pose(v, "voxels")
    uv = crop_to_image(heatmap_to_crop_px(v[..., :2], spec), center, scale, spec.input_size, rotation_deg)
    root = _float(root_depth_mm, xp)
    root = _left_align(root, v.ndim - 2, 0, "root_depth_mm", xp)[..., None]
    depth = root + bin_to_depth(v[..., 2], spec)
    return backproject(uv, depth, intrinsics)
