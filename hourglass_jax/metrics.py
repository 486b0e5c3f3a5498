"""3D pose errors (MPJPE, NMPJPE, PMPJPE) and per-action / per-subject tables.

Definitions as in DESIGN.md (VideoPose3D / Rhodin et al.):
- MPJPE: mean over joints of the Euclidean distance after aligning both poses at the root (pelvis, joint 6).
- NMPJPE: after root alignment, the prediction is scaled by the least-squares scale
  ``s = <p, g> / <p, p>`` (one per pose, over all joints and coordinates), then MPJPE.
- PMPJPE: after the similarity transform (translation, rotation, uniform scale) that best aligns the
  prediction to the ground truth in the least-squares sense (orthogonal Procrustes by SVD, with the
  reflection fix: rotations only, det = +1), then MPJPE.

The error functions accept NumPy or JAX arrays: NumPy inputs are computed in float64 NumPy, JAX inputs in
jax.numpy (jittable, vmappable). Errors are per pose, shape (...), in the inputs' units (mm).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hourglass_jax.skeleton import ROOT

_TINY = 1e-12  # guards the divisions for an all-zero (degenerate) prediction


def _xp(*arrays):
    return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def _prepare(pred, gt, root: int | None):
    xp = _xp(pred, gt)
    p, g = xp.asarray(pred), xp.asarray(gt)
    if p.shape != g.shape:
        raise ValueError(f"pred and gt shapes differ: {tuple(p.shape)} vs {tuple(g.shape)}")
    if p.ndim < 2 or p.shape[-1] != 3:
        raise ValueError(f"poses must have shape (..., J, 3), got {tuple(p.shape)}")
    if root is not None and not 0 <= root < p.shape[-2]:
        raise ValueError(f"root joint {root} out of range for {p.shape[-2]} joints")
    if not xp.issubdtype(p.dtype, xp.floating):
        p = p.astype(np.float64 if xp is np else jnp.zeros(()).dtype)
    g = g.astype(p.dtype)
    if xp is np:   # values can only be checked outside jit
        for a, name in ((p, "pred"), (g, "gt")):
            if not np.all(np.isfinite(a)):
                raise ValueError(f"{name} contains {int(np.sum(~np.isfinite(a)))} non-finite values")
    if root is not None:
        p = p - p[..., root:root + 1, :]
        g = g - g[..., root:root + 1, :]
    return xp, p, g


def mpjpe(pred, gt, root: int = ROOT):
    """Mean per-joint position error after root alignment.

    Args:
      pred, gt: (..., J, 3) poses (J = 16 for MPII-16), any common unit (mm).
      root: joint subtracted from each pose first (pelvis, 6).
    Returns:
      (...) error per pose, in the inputs' unit.
    """
    xp = _xp(pred, gt)
    return xp.mean(joint_errors(pred, gt, "mpjpe", root), axis=-1)


def nmpjpe(pred, gt, root: int = ROOT):
    """MPJPE after root alignment and the least-squares scale ``s = <p, g> / <p, p>`` per pose.

    Args:
      pred, gt: (..., J, 3) poses, common unit.
      root: joint subtracted first (pelvis, 6).
    Returns:
      (...) error per pose, in the inputs' unit.
    """
    xp = _xp(pred, gt)
    return xp.mean(joint_errors(pred, gt, "nmpjpe", root), axis=-1)


def procrustes_align(pred, gt):
    """Similarity transform of ``pred`` that best matches ``gt`` (least squares, rotations only).

    Minimises ``||s * R @ p_j + t - g_j||^2`` summed over joints, with det(R) = +1 (a mirrored
    prediction is not mirrored back: the reflection fix of Umeyama 1991).

    Args:
      pred, gt: (..., J, 3) poses.
    Returns:
      (..., J, 3) the aligned prediction.
    """
    xp, p, g = _prepare(pred, gt, None)
    mp, mg = xp.mean(p, axis=-2, keepdims=True), xp.mean(g, axis=-2, keepdims=True)
    p0, g0 = p - mp, g - mg
    h = xp.swapaxes(p0, -1, -2) @ g0                            # (..., 3, 3) cross-covariance
    u, sv, vt = xp.linalg.svd(h)
    v = xp.swapaxes(vt, -1, -2)
    # det(V U^T) = -1 means the best orthogonal map is a reflection: flip the weakest axis.
    d = xp.sign(xp.linalg.det(v @ xp.swapaxes(u, -1, -2)))
    d = xp.where(d == 0, 1.0, d)
    flip = xp.stack([xp.ones_like(d), xp.ones_like(d), d], axis=-1)  # (..., 3)
    rot = (v * flip[..., None, :]) @ xp.swapaxes(u, -1, -2)        # R = V diag(1, 1, d) U^T
    scale = xp.sum(sv * flip, axis=-1) / xp.maximum(xp.sum(p0 * p0, axis=(-2, -1)), _TINY)
    return scale[..., None, None] * (p0 @ xp.swapaxes(rot, -1, -2)) + mg


def pmpjpe(pred, gt):
    """MPJPE after similarity Procrustes alignment (translation, rotation with det +1, scale).

    Args:
      pred, gt: (..., J, 3) poses, common unit.
    Returns:
      (...) error per pose, in the inputs' unit.
    """
    xp = _xp(pred, gt)
    return xp.mean(joint_errors(pred, gt, "pmpjpe"), axis=-1)


JOINT_ERROR_KINDS: tuple[str, ...] = ("mpjpe", "nmpjpe", "pmpjpe")


def pose_errors(pred, gt) -> dict[str, np.ndarray]:
    """The three errors of every pose at once: {"mpjpe", "nmpjpe", "pmpjpe"}: (...) each, in the
    inputs' unit (mm), for pred, gt (..., J, 3). Compute once, then average over any grouping."""
    return {"mpjpe": mpjpe(pred, gt), "nmpjpe": nmpjpe(pred, gt), "pmpjpe": pmpjpe(pred, gt)}


def joint_errors(pred, gt, kind: str, root: int = ROOT):
    """Per-joint Euclidean errors after the alignment of one metric.

    The mean over the joint axis is exactly ``mpjpe`` / ``nmpjpe`` / ``pmpjpe`` (those functions are
    that mean), so errors of a subset of joints (e.g. the confident ones) can be averaged consistently.

    Args:
      pred, gt: (..., J, 3) poses (J = 16 for MPII-16), common unit (mm).
      kind: "mpjpe" (root-aligned), "nmpjpe" (root-aligned, then the least-squares scale
        ``s = <p, g> / <p, p>`` per pose) or "pmpjpe" (similarity Procrustes, rotations only).
      root: joint subtracted first for "mpjpe" and "nmpjpe" (pelvis, 6); Procrustes ignores it.
    Returns:
      (..., J) error of each joint, in the inputs' unit.
    """
    if kind == "pmpjpe":
        xp, _, g = _prepare(pred, gt, None)
        return xp.linalg.norm(procrustes_align(pred, gt) - g, axis=-1)
    if kind not in ("mpjpe", "nmpjpe"):
        raise ValueError(f"unknown error kind {kind!r}; choose from {', '.join(JOINT_ERROR_KINDS)}")
    xp, p, g = _prepare(pred, gt, root)
    if kind == "nmpjpe":
        pp = xp.sum(p * p, axis=(-2, -1), keepdims=True)
        pg = xp.sum(p * g, axis=(-2, -1), keepdims=True)
        p = pg / xp.maximum(pp, _TINY) * p
    return xp.linalg.norm(p - g, axis=-1)


def aggregate(errors, keys: Sequence[str], all_key: str = "all") -> dict[str, float]:
    """Mean error per key (action, subject, ...) plus the mean over all poses.

    Args:
      errors: (N,) per-pose errors.
      keys: N strings, the group of each pose.
      all_key: name of the overall entry (the mean over all N poses, not over the groups).
    Returns:
      {key: mean} in order of first appearance, then {all_key: mean of all}.
    Raises:
      ValueError: empty input, length mismatch, non-finite errors, or a key equal to all_key.
    """
    e = np.asarray(errors, dtype=np.float64)
    k = [str(x) for x in np.asarray(keys).reshape(-1)] if not isinstance(keys, str) else None
    if e.ndim != 1 or e.size == 0:
        raise ValueError(f"errors must be a non-empty (N,) array, got shape {e.shape}")
    if k is None or len(k) != e.size:
        raise ValueError(f"keys must be a sequence of {e.size} strings, got {keys!r:.80}")
    if not np.all(np.isfinite(e)):
        raise ValueError(f"errors contain {int(np.sum(~np.isfinite(e)))} non-finite values")
    if all_key in k:
        raise ValueError(f"a key equals the overall entry's name {all_key!r}")
    out: dict[str, float] = {}
    order = list(dict.fromkeys(k))
    arr = np.asarray(k)
    for key in order:
        out[key] = float(e[arr == key].mean())
    out[all_key] = float(e.mean())
    return out


def aggregate_table(errors, row_keys: Sequence[str], col_keys: Sequence[str],
                    all_key: str = "all") -> dict[str, dict[str, float]]:
    """Mean error per (row, column) pair, e.g. rows = subjects, columns = actions, with margins.

    Args:
      errors: (N,) per-pose errors.
      row_keys, col_keys: N strings each.
      all_key: name of the margin row/column (means over all poses of that row/column/everything).
    Returns:
      {row: {col: mean, ..., all_key: row mean}, ..., all_key: {col: column mean, ..., all_key: mean}}
      in order of first appearance; pairs with no pose are absent. Feed it to ``markdown_table``.
    """
    e = np.asarray(errors, dtype=np.float64)
    rows, cols = np.asarray(row_keys, dtype=str), np.asarray(col_keys, dtype=str)
    if rows.shape != e.shape or cols.shape != e.shape:
        raise ValueError(f"row_keys {rows.shape} and col_keys {cols.shape} must match errors {e.shape}")
    out = {}
    for r in dict.fromkeys(rows.tolist()):
        sel = rows == r
        out[r] = aggregate(e[sel], cols[sel].tolist(), all_key)
    out[all_key] = aggregate(e, cols.tolist(), all_key)
    return out


def markdown_table(rows: Mapping[str, Mapping[str, float]], row_label: str = "",
                   precision: int = 1, columns: Sequence[str] | None = None) -> str:
    """{row: {column: value}} -> a GitHub markdown table string.

    Columns are ``columns`` if given, else every column in order of first appearance; a missing cell is
    shown as "-". Values are formatted with ``precision`` decimals (strings are shown as they are).

    Example: ``markdown_table({"baseline": {"walk": 97.7, "all": 97.7}}, "method")`` ->
    ``| method | walk | all |`` / ``|---|---:|---:|`` / ``| baseline | 97.7 | 97.7 |``.
    """
    if not rows:
        raise ValueError("markdown_table: no rows")
    cols = list(columns) if columns is not None else list(dict.fromkeys(c for r in rows.values() for c in r))

    def cell(v) -> str:
        if v is None:
            return "-"
        if isinstance(v, str):
            return v
        return f"{float(v):.{precision}f}"

    lines = ["| " + " | ".join([row_label] + [str(c) for c in cols]) + " |",
             "|---|" + "|".join("---:" for _ in cols) + "|"]
    for name, r in rows.items():
        lines.append("| " + " | ".join([str(name)] + [cell(r.get(c)) for c in cols]) + " |")
    return "\n".join(lines) + "\n"
