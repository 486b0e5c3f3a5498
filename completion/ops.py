"""Building blocks of the Eq. 1 solver: SVT, shrinkage, the temporal difference operator, solves.

All functions are pure jax.numpy, jittable and vmappable. Matrices follow the paper: X in
R^{3P x F} (rows = joint coordinates, columns = frames), B, C in R^{F x F}. Their matrix
products follow the caller's default matmul precision (`jax.default_matmul_precision`); JAX's
own default rounds float32 factors to TensorFloat32 on recent NVIDIA GPUs, which the solver
cannot afford (docs/completion.md, "Matmul precision on GPUs"): `completion.alm` traces them
under CompletionConfig.matmul_precision ("highest" by default).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax


def shrink(a: jax.Array, tau: jax.Array | float) -> jax.Array:
    """Soft thresholding sign(a) max(|a| - tau, 0): the proximal operator of tau ||.||_1."""
    return jnp.sign(a) * jnp.maximum(jnp.abs(a) - tau, 0.0)


def _gram_factors(a: jax.Array, tau: jax.Array | float):
    """Eigen-decomposition of the smaller Gram matrix of `a` and the SVT gains max(s - tau, 0) / s.

    Returns (q, gain, sv): q (k, k) eigenvectors of the k x k Gram matrix (k = min(m, n)), gain (k,)
    and the singular values sv (k,). Eigenvalues below 0 (rounding) are clipped, and directions with
    s = 0 get gain 0: thresholding zeroes them anyway, so the squared condition number of the
    Gram matrix does not hurt (DESIGN.md, "The solver").
    """
    m, n = a.shape
    gram = a @ a.T if m <= n else a.T @ a
    lam, q = jnp.linalg.eigh(gram)
    sv = jnp.sqrt(jnp.maximum(lam, 0.0))
    kept = sv > tau
    gain = jnp.where(kept, (sv - tau) / jnp.where(kept, sv, 1.0), 0.0)
    return q, gain, sv


def svt(a: jax.Array, tau: jax.Array | float, method: str = "eigh") -> tuple[jax.Array, jax.Array]:
    """Singular value thresholding: the proximal operator of tau ||.||_*.

    Args:
      a: (m, n) matrix.
      tau: threshold (scalar).
      method: "eigh" (eigendecomposition of the min(m, n)-square Gram matrix) or "svd".
    Returns:
      (SVT_tau(a) of shape (m, n), its nuclear norm sum(max(s - tau, 0))).
    """
    if method == "svd":
        u, s, vt = jnp.linalg.svd(a, full_matrices=False)
        s_t = jnp.maximum(s - tau, 0.0)
        return (u * s_t) @ vt, jnp.sum(s_t)
    if method != "eigh":
        raise ValueError(f"unknown SVT method {method!r}; use 'eigh' or 'svd'")
    m, n = a.shape
    q, gain, sv = _gram_factors(a, tau)
    nuclear = jnp.sum(jnp.maximum(sv - tau, 0.0))
    if m <= n:  # a = U S V^T, U = q: SVT(a) = U diag(gain) U^T a
        return (q * gain) @ (q.T @ a), nuclear
    return (a @ q * gain) @ q.T, nuclear  # V = q: SVT(a) = a V diag(gain) V^T


def path_laplacian(valid: jax.Array, dtype=jnp.float32) -> jax.Array:
    """D D^T for the temporal difference operator D in R^{F x (F-1)} of Eq. 1.

    Column t of D is e_{t+1} - e_t, so ||X D||_F^2 = sum_t ||x_{t+1} - x_t||^2. A difference is
    kept only when both frames are valid (not padding), so padded frames are decoupled.

    Args:
      valid: (F,) bool, False for padding frames.
    Returns:
      (F, F) tridiagonal graph Laplacian of the valid consecutive-frame pairs.
    """
    v = valid.astype(dtype)
    w = v[1:] * v[:-1]  # (F-1,) weight of the edge (t, t+1)
    deg = jnp.concatenate([w, jnp.zeros((1,), dtype)]) + jnp.concatenate([jnp.zeros((1,), dtype), w])
    return jnp.diag(deg) - jnp.diag(w, 1) - jnp.diag(w, -1)


def temporal_diff(x: jax.Array, valid: jax.Array) -> jax.Array:
    """X D: (R, F) -> (R, F-1) frame differences x_{t+1} - x_t, zero across padding."""
    w = (valid[1:] & valid[:-1]).astype(x.dtype)
    return (x[:, 1:] - x[:, :-1]) * w


def _woodbury_once(x: jax.Array, chol: jax.Array, rhs: jax.Array) -> jax.Array:
    y = jax.scipy.linalg.solve_triangular(chol, x @ rhs, lower=True)
    z = jax.scipy.linalg.solve_triangular(chol.T, y, lower=False)
    return rhs - x.T @ z


def woodbury_b_update(x: jax.Array, rhs: jax.Array) -> jax.Array:
    """Solve (I_F + X^T X) B = rhs through the small (R x R) system (Woodbury identity).

    (I + X^T X)^{-1} = I - X^T (I_R + X X^T)^{-1} X, so only an R x R Cholesky (R = 3P) is needed.
    The subtraction cancels along directions where X^T X is large, which in float32 left the ALM
    stalled at residuals ~1e-3 (measured, F = 100); one step of iterative refinement restores the
    accuracy of a direct F x F solve at O(R F^2) extra cost.

    Args:
      x: (R, F); rhs: (F, F).
    Returns:
      B (F, F).
    """
    r = x.shape[0]
    chol = jnp.linalg.cholesky(jnp.eye(r, dtype=x.dtype) + x @ x.T)
    b = _woodbury_once(x, chol, rhs)
    return b + _woodbury_once(x, chol, rhs - b - x.T @ (x @ b))


def fill_linear(values: jax.Array, known: jax.Array, valid: jax.Array) -> jax.Array:
    """Linear interpolation over time of each row's known entries; constant beyond the ends.

    Args:
      values: (R, F); entries where `known` is False are ignored (may be NaN).
      known: (R, F) bool.
      valid: (F,) bool, False for padding frames (never known; set to 0 in the output).
    Returns:
      (R, F): known entries unchanged, the others interpolated; rows with nothing known are 0.
    """
    f = values.shape[-1]
    known = known & valid[None, :]
    t = jnp.arange(f)
    # Index of the last known frame at or before t, and of the first known frame at or after t.
    prev = lax.cummax(jnp.where(known, t, -1), axis=1)
    nxt = lax.cummin(jnp.where(known, t, f), axis=1, reverse=True)
    has_prev, has_next = prev >= 0, nxt < f
    vals = jnp.where(known, values, 0.0)
    v_prev = jnp.take_along_axis(vals, jnp.clip(prev, 0, f - 1), axis=1)
    v_next = jnp.take_along_axis(vals, jnp.clip(nxt, 0, f - 1), axis=1)
    span = jnp.maximum(nxt - prev, 1).astype(values.dtype)
    alpha = (t[None, :] - prev).astype(values.dtype) / span
    inner = v_prev + alpha * (v_next - v_prev)
    out = jnp.where(has_prev & has_next, inner,
                    jnp.where(has_prev, v_prev, jnp.where(has_next, v_next, 0.0)))
    out = jnp.where(known, values, out)
    return jnp.where(valid[None, :], out, 0.0)


class FreeIndex(NamedTuple):
    """Where each row group's free (unobserved) frames are, packed into `size` slots."""

    idx: jax.Array       # (G, size) int32 frame per slot: the free frames ascending, then others
    ok: jax.Array        # (G, size) bool, the slot holds a free frame
    target: jax.Array    # (G, size) int32 frame the slot's solution goes to; F (dropped) if not ok
    overflow: jax.Array  # (G,) bool, more free frames than slots (that group's result is NaN)


def free_index(free: jax.Array, size: int | None = None) -> FreeIndex:
    """Pack each group's free frames into `size` slots (loop-invariant: compute once per solve).

    Args:
      free: (G, F) bool, the entries the X step may change (one mask per row group).
      size: static number of slots, at least the largest free count of any group for an exact
        solve (default F, always enough). Smaller sizes make the X step cheaper: its Cholesky
        factors are size x size instead of F x F.
    Returns:
      FreeIndex.
    """
    g, f = free.shape
    size = f if size is None else int(size)
    if not 1 <= size <= f:
        raise ValueError(f"size must be in [1, F = {f}], got {size}")
    # A stable sort of "not free" puts the free frames first, in time order.
    order = jnp.argsort(~free, axis=1, stable=True)[:, :size].astype(jnp.int32)
    count = jnp.sum(free, axis=1)
    ok = jnp.arange(size)[None, :] < count[:, None]
    return FreeIndex(order, ok, jnp.where(ok, order, f), count > size)


def constrained_spd_solve_right(rhs: jax.Array, m: jax.Array, free: jax.Array,
                                fixed: jax.Array, index: FreeIndex | None = None) -> jax.Array:
    """Minimise sum_r (x_r M x_r^T / 2 - rhs_r x_r^T) with the non-free entries of x held fixed.

    The exact X step of Eq. 1 under P_Omega(X) = P_Omega(S): each row r solves
    M[h, h] x_r[h] = rhs_r[h] - fixed_r[o] M[o, h] over its free (hidden) frames h, o the rest.
    Rows are grouped: all k rows of a group share one free mask and one Cholesky factor (the
    x, y, z rows of a joint when the mask is per joint). Each group's free frames are gathered
    into `index`'s slots, so the factor is size x size (size = the largest free count, not F);
    unused slots get identity rows and are not written back. Held entries are returned as given.

    Args:
      rhs: (G*k, F); m: (F, F) symmetric positive definite; free: (G, F) bool;
      fixed: (G*k, F) values of the held entries (ignored where free).
      index: `free_index(free, size)`, precomputed outside a loop; default size F.
    Returns:
      (G*k, F) solution; the rows of a group whose free count exceeds the slots are NaN.
    """
    g, f = free.shape
    k = rhs.shape[0] // g
    dtype = rhs.dtype
    if index is None:
        index = free_index(free)
    idx, ok = index.idx, index.ok
    fixed = jnp.where(jnp.repeat(free, k, axis=0), 0.0, fixed)
    ok2 = ok[:, :, None] & ok[:, None, :]
    eye = jnp.eye(idx.shape[1], dtype=dtype)
    mg = jnp.where(ok2, m[idx[:, :, None], idx[:, None, :]], eye)  # (G, size, size)
    b = (rhs - fixed @ m).reshape(g, k, f)
    b = jnp.where(ok[:, None, :], jnp.take_along_axis(b, idx[:, None, :], axis=2), 0.0)
    # mg is symmetric by construction: potrf reads its lower triangle, no symmetrising pass.
    chol = lax.linalg.cholesky(mg, symmetrize_input=False)  # mg = L L^T
    # Rows x with x L L^T = b, solved from the right: no transposed copies of b or L.
    y = lax.linalg.triangular_solve(chol, b, left_side=False, lower=True, transpose_a=True)
    x = lax.linalg.triangular_solve(chol, y, left_side=False, lower=True)  # (G, k, size)
    x = jnp.where(index.overflow[:, None, None], jnp.nan, x)
    out = jax.vmap(lambda o, t, v: o.at[:, t].set(v, mode="drop"))(
        fixed.reshape(g, k, f), index.target, x)
    return out.reshape(g * k, f)


def weighted_spd_solve_right(rhs: jax.Array, m: jax.Array, weight: jax.Array,
                             target: jax.Array) -> jax.Array:
    """Minimise sum_r (x_r M x_r^T / 2 - rhs_r x_r^T + ||sqrt(w_r) (x_r - target_r)||^2 / 2).

    The X step with the soft data term (CompletionConfig.lambda_o > 0): no entry is held, every
    frame is free, and each row r solves the full F x F system
    (M + diag(w_r)) x_r = rhs_r + w_r * target_r. Rows are grouped as in
    `constrained_spd_solve_right`: the k rows of a group share one weight row and so one
    Cholesky factor (the x, y, z rows of a joint when the mask is per joint).

    Args:
      rhs: (G*k, F); m: (F, F) symmetric positive definite; weight: (G, F) >= 0;
      target: (G*k, F) values the weights pull towards (ignored where the weight is 0).
    Returns:
      (G*k, F) solution.
    """
    g, f = weight.shape
    k = rhs.shape[0] // g
    eye = jnp.eye(f, dtype=rhs.dtype)
    mg = m[None] + weight[:, :, None] * eye  # (G, F, F): M + diag(w_g), still SPD
    w = jnp.repeat(weight, k, axis=0)  # (G*k, F)
    # Zero weights must not touch the target (it may hold anything there): select, not multiply.
    b = (rhs + jnp.where(w > 0, w * target, 0.0)).reshape(g, k, f)
    chol = lax.linalg.cholesky(mg, symmetrize_input=False)  # potrf reads the lower triangle
    y = lax.linalg.triangular_solve(chol, b, left_side=False, lower=True, transpose_a=True)
    x = lax.linalg.triangular_solve(chol, y, left_side=False, lower=True)  # (G, k, F)
    return x.reshape(g * k, f)
