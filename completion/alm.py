"""Eq. 1 of the paper solved by the inexact augmented Lagrange multiplier method (ALM).

    min ||X#||_* + lambda_d ||X D||_F^2 + lambda_c ||C||_* + lambda_e ||E||_1
    s.t. X = X B + E,  P_Omega(X) = P_Omega(S),  B = C,  X# = X

X, X#, E, S in R^{3P x F} (rows joint coordinates p*3 + c, columns frames), B, C in R^{F x F}.
Augmented Lagrangian with multipliers Y1 (X - XB - E), Y2 (B - C), Y3 (X - X#) and penalty mu:
one iteration updates, in this order (each the exact minimiser with the others fixed):

    X# = SVT_{1/mu}(X + Y3/mu)
    C  = SVT_{lambda_c/mu}(B + Y2/mu)
    E  = shrink_{lambda_e/mu}(X - XB + Y1/mu)
    B  = (I + X^T X)^{-1} (X^T (X - E) + C + (X^T Y1 - Y2)/mu)          (Woodbury, 3P x 3P)
    X  = argmin over the unobserved entries (observed ones held at S) of
         tr(X M X^T)/2 - tr(R X^T),  M = 2 lambda_d D D^T + mu (I-B)(I-B)^T + mu I,
         R = mu X# - Y3 + (mu E - Y1)(I - B)^T: per row, an SPD solve on its unobserved
         frames (Cholesky; one factor per joint when the mask is per joint; the unobserved
         frames are gathered into a static number of slots, so the factor is about
         0.3 F square for 30% hidden, not F x F)
    Y1 += mu (X - XB - E); Y2 += mu (B - C); Y3 += mu (X - X#); mu = min(rho mu, mu_max)

and stops early when the three relative primal residuals are all below `tol`:
||X - XB - E||_F / ||P_Omega(S)||_F, ||B - C||_F / sqrt(F_valid), ||X - X#||_F / ||P_Omega(S)||_F.

Soft data term (CompletionConfig.lambda_o > 0, our extension, not the paper's): the constraint
P_Omega(X) = P_Omega(S) is replaced by lambda_o/2 ||P_Omega(X - S)||_F^2 in the objective, so the
confident entries can lose their noise. Only the X step changes: every frame is free and each
row k solves the full F x F system (M + lambda_o diag(w_k)) x_k = R_k + lambda_o w_k * s_k,
w_k the row's observed-and-valid indicator (one Cholesky factor per joint for a per-joint mask,
per row otherwise; no packed slots). The returned X keeps its solved values at the observed
entries, and `objective` stays the Eq. 1 terms (without the data term), as in the reference.

Who validates: `complete` (host-side wrapper) checks shapes and the config always, and the
values (NaN in observed entries, nothing observed) whenever its inputs are concrete arrays;
`validate_inputs` does the same checks on its own. `solve` and `complete_core` are the pure,
jittable, vmappable cores: they check static shapes only and never inspect values.

Padding: a `valid` (F,) mask marks real frames. Padded frames start at zero, are never
observed, are cut out of D, and start with B = C = diag(valid); every update then keeps their
rows/columns exactly zero (docs/completion.md has the argument), so the real frames follow the
same iterates as the unpadded problem.
"""
from __future__ import annotations

import contextlib
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from completion import ops
from completion.config import CompletionConfig


class SolveResult(NamedTuple):
    """Output of `solve` on the paper's matrices (R = 3P rows, F frames)."""

    X: jax.Array            # (R, F) completed matrix; observed entries equal S if lambda_o = 0
    X_sharp: jax.Array      # (R, F) low-rank auxiliary X#
    E: jax.Array            # (R, F) sparse error of X = XB + E
    B: jax.Array            # (F, F) self-representation coefficients
    C: jax.Array            # (F, F) low-rank auxiliary of B
    iterations: jax.Array   # () int32, ALM iterations run
    converged: jax.Array    # () bool, all residuals <= tol before max_iters
    residuals: jax.Array    # (3,) relative primal residuals (X - XB - E, B - C, X - X#)
    objective: jax.Array    # () Eq. 1 objective at (X#, X, C, E) (no soft data term)


class CompletionResult(NamedTuple):
    """Output of `complete`, in the input's units (mm for poses)."""

    X: jax.Array            # (F, P, 3) completed poses; observed entries = input if lambda_o = 0
    E: jax.Array            # (F, P, 3) sparse error term, same units
    iterations: jax.Array   # () int32
    converged: jax.Array    # () bool
    residuals: jax.Array    # (3,) relative primal residuals (see module docstring)
    objective: jax.Array    # () Eq. 1 objective on the normalised data (unitless)


def _after(a: jax.Array, b: jax.Array) -> jax.Array:
    """`a`, but computed only once `b` is: a data dependency (XLA does not fold x * 0 for floats).

    Independent LAPACK calls (the two SVTs, the B step's Cholesky) may run at once on XLA:CPU;
    each batched call then waits for its batch tasks on the same intra-op thread pool, which
    deadlocked on a 2-core machine (jaxlib 0.10.2; gdb showed two threads in ParallelBatchMap
    of ssyevd). `lax.optimization_barrier` did not order them; this dependency does.
    """
    return a + 0.0 * jnp.ravel(b)[0]


def _alm(s: jax.Array, mask: jax.Array, x0: jax.Array, valid: jax.Array,
         cfg: CompletionConfig, group: int = 1, max_free: int | None = None) -> SolveResult:
    # jnp reads the default matmul precision while tracing, so this context sets the precision
    # of every product of the solve, inside the while loop too (see CompletionConfig).
    precision = (contextlib.nullcontext() if cfg.matmul_precision == "default"
                 else jax.default_matmul_precision(cfg.matmul_precision))
    with precision:
        return _alm_traced(s, mask, x0, valid, cfg, group, max_free)


def _alm_traced(s: jax.Array, mask: jax.Array, x0: jax.Array, valid: jax.Array,
                cfg: CompletionConfig, group: int, max_free: int | None) -> SolveResult:
    # group: consecutive rows sharing one observed mask (3 = x, y, z of a joint), static.
    # max_free: static bound on any group's unobserved valid frames (None: F); see free_slots.
    # Ignored with the soft data term (cfg.lambda_o > 0): every frame is free there.
    dtype = s.dtype
    r, f = s.shape
    vf = valid.astype(dtype)
    s = jnp.where(mask, s, 0.0)
    x0 = jnp.where(mask, s, x0) * vf
    lap = ops.path_laplacian(valid, dtype)
    eye = jnp.eye(f, dtype=dtype)
    b0 = jnp.diag(vf)
    tiny = jnp.asarray(np.finfo(np.dtype(dtype)).tiny, dtype)
    norm_s = jnp.maximum(jnp.linalg.norm(s), tiny)
    norm_b = jnp.sqrt(jnp.maximum(jnp.sum(vf), 1.0))
    zeros_rf = jnp.zeros((r, f), dtype)
    zeros_ff = jnp.zeros((f, f), dtype)
    soft = cfg.soft_data_term  # static: which X step is compiled
    if soft:
        # (R / group, F) data-term weights; zero on padding, whose rows of M are 2 mu I with a
        # zero right-hand side, so padded frames solve to exactly 0 as in the exact step.
        weight = cfg.lambda_o * (mask[::group] & valid[None, :]).astype(dtype)
    else:
        free = ~mask[::group] & valid[None, :]  # (R / group, F) entries the X step may change
        # Loop-invariant: where each group's free frames are (the X step's gather/scatter).
        index = ops.free_index(free, None if max_free is None else min(max_free, f))

    def cond(state):
        it, res = state[-2], state[-1]
        return (it < cfg.max_iters) & (jnp.max(res) > cfg.tol)

    def body(state):
        x, xs, e, b, c, y1, y2, y3, mu, _, _, it, _ = state
        inv_mu = 1.0 / mu
        # The SVTs return the nuclear norms of their results: the objective needs no more eighs.
        xs, nuc_xs = ops.svt(x + y3 * inv_mu, inv_mu, cfg.svt)
        # One LAPACK call at a time (see _after): X# SVT -> C SVT -> Cholesky of I + X X^T.
        c, nuc_c = ops.svt(_after(b + y2 * inv_mu, xs), cfg.lambda_c * inv_mu, cfg.svt)
        x = _after(x, c)
        e = ops.shrink(x - x @ b + y1 * inv_mu, cfg.lambda_e * inv_mu)
        rhs_b = x.T @ (x - e) + c + (x.T @ y1 - y2) * inv_mu
        b = ops.woodbury_b_update(x, rhs_b)
        i_b = eye - b
        m = 2.0 * cfg.lambda_d * lap + mu * (i_b @ i_b.T) + mu * eye
        rhs_x = mu * xs - y3 + (mu * e - y1) @ i_b.T
        if soft:  # minimiser with the data term: all frames free, pulled towards S on Omega
            x = ops.weighted_spd_solve_right(rhs_x, m, weight, s) * vf
        else:
            # Exact minimiser with P_Omega(X) = P_Omega(S) held (solving without the constraint
            # and then resetting the observed entries is not: it biased the completions,
            # measured on mocap, docs/completion.md). Padding frames are held at 0.
            x = ops.constrained_spd_solve_right(rhs_x, m, free, s, index) * vf
        r1 = x - x @ b - e
        r2 = b - c
        r3 = x - xs
        y1 = y1 + mu * r1
        y2 = y2 + mu * r2
        y3 = y3 + mu * r3
        res = jnp.stack([jnp.linalg.norm(r1) / norm_s, jnp.linalg.norm(r2) / norm_b,
                         jnp.linalg.norm(r3) / norm_s])
        mu = jnp.minimum(cfg.rho * mu, cfg.mu_max).astype(dtype)
        return (x, xs, e, b, c, y1, y2, y3, mu, nuc_xs, nuc_c, it + 1, res)

    zero = jnp.zeros((), dtype)  # nuclear norms: the loop runs at least once (res starts at inf)
    init = (x0, x0, zeros_rf, b0, b0, zeros_rf, zeros_ff, zeros_rf,
            jnp.asarray(cfg.mu0, dtype), zero, zero, jnp.asarray(0, jnp.int32),
            jnp.full((3,), jnp.inf, dtype))
    x, xs, e, b, c, _, _, _, _, nuc_xs, nuc_c, it, res = lax.while_loop(cond, body, init)
    objective = (nuc_xs + cfg.lambda_d * jnp.sum(ops.temporal_diff(x, valid) ** 2)
                 + cfg.lambda_c * nuc_c + cfg.lambda_e * jnp.sum(jnp.abs(e)))
    return SolveResult(x, xs, e, b, c, it, jnp.max(res) <= cfg.tol, res, objective)


_SLOT_MULTIPLE = 16  # free-frame slots are rounded up to this: nearby counts share a program


def free_slots(free) -> int:
    """Static X-step size for a concrete mask of free (unobserved, valid) entries.

    The largest number of free frames in any row of `free` (..., F), rounded up to a multiple
    of 16 (so that masks with similar counts share one compiled program), capped at F, at
    least 1. The X step then factors slots x slots matrices instead of F x F.
    """
    free = np.asarray(free, bool)
    f = free.shape[-1]
    most = int(free.sum(axis=-1).max()) if free.size else 0
    return int(min(f, max(1, -(-most // _SLOT_MULTIPLE) * _SLOT_MULTIPLE)))


def x_step_slots(free, config: CompletionConfig) -> int | None:
    """The static `max_free` for a concrete free mask (..., F): `free_slots(free)` for the exact
    X step; None (all F frames) with the soft data term, where every frame is free, so masks
    with different unobserved counts share one compiled program."""
    return None if config.soft_data_term else free_slots(free)


@functools.partial(jax.jit, static_argnames=("config", "max_free"))
def _solve_jit(S, mask, X0, config, valid, max_free):
    dtype = jnp.result_type(S.dtype, jnp.float32)
    if valid is None:
        valid = jnp.ones((S.shape[1],), bool)
    return _alm(S.astype(dtype), mask.astype(bool), X0.astype(dtype), valid.astype(bool), config,
                max_free=max_free)


def solve(S: jax.Array, mask: jax.Array, X0: jax.Array,
          config: CompletionConfig = CompletionConfig(), valid: jax.Array | None = None
          ) -> SolveResult:
    """Solve Eq. 1 on the paper's matrices by inexact ALM (pure, jittable, vmappable).

    Works on the matrices as given: use `complete` for poses in mm (it normalises first; the
    default lambdas assume unit-RMS data). With a concrete mask the X step is sized to its
    largest number of unobserved frames per row (`free_slots`); under an outer jit/vmap (traced
    mask) it uses all F frames: the same result, slower. With config.lambda_o > 0 (soft data
    term) every frame is free and the X step is always F x F.

    Args:
      S: (3P, F) predictions; only the entries where `mask` is True are used.
      mask: (3P, F) bool, Omega: the observed (confident) entries, held exactly (or pulled
        towards S by the soft data term when config.lambda_o > 0).
      X0: (3P, F) initial X and X# (finite everywhere).
      config: static CompletionConfig.
      valid: optional (F,) bool, False for padding frames (see module docstring).
    Returns:
      SolveResult.
    """
    if S.ndim != 2 or S.shape != mask.shape or S.shape != X0.shape:
        raise ValueError(f"S, mask and X0 must be (3P, F) of one shape, got {S.shape}, "
                         f"{mask.shape}, {X0.shape}")
    config.validate()
    max_free = None
    if _is_concrete(mask, valid):
        v = np.ones(S.shape[1], bool) if valid is None else np.asarray(valid, bool)
        max_free = x_step_slots(~np.asarray(mask, bool) & v, config)
    return _solve_jit(S, mask, X0, config, valid, max_free)


def _to_matrix(a: jax.Array) -> jax.Array:
    """(F, P, 3) -> (3P, F), row p*3 + c."""
    f = a.shape[0]
    return a.reshape(f, -1).T


def _from_matrix(m: jax.Array, p: int) -> jax.Array:
    """(3P, F) -> (F, P, 3)."""
    return m.T.reshape(m.shape[1], p, 3)


def complete_core(poses: jax.Array, observed: jax.Array, valid: jax.Array,
                  config: CompletionConfig, max_free: int | None = None) -> CompletionResult:
    """Pure core of `complete` (no value checks): normalise, solve Eq. 1, return in input units.

    Args:
      poses: (F, P, 3) float, NaN allowed where not observed.
      observed: (F, P) bool (one mask per joint: one Cholesky factor per joint in the X step)
        or (F, P, 3) bool (per coordinate: one factor per row).
      valid: (F,) bool, False for padding frames (their outputs are 0).
      config: CompletionConfig (static).
      max_free: static, at least the largest number of unobserved valid frames of any joint
        (any row for a per-coordinate mask); `free_slots` computes it from a concrete mask.
        None: F (always enough). Too small a bound gives NaN, never a silently wrong answer.
        Ignored when config.lambda_o > 0 (the soft X step frees every frame).
    Returns:
      CompletionResult.
    """
    dtype = jnp.result_type(poses.dtype, jnp.float32)
    poses = poses.astype(dtype)
    f, p, _ = poses.shape
    vmask = valid[:, None, None]
    group = 3 if observed.ndim == 2 else 1
    if observed.ndim == 2:
        observed = jnp.broadcast_to(observed[..., None], poses.shape)
    obs = observed & vmask
    known = jnp.isfinite(poses) & vmask
    if config.init == "interpolation":  # ignore unconfident predictions, start from the gap fill
        known = known & obs
    # Centre (per joint coordinate over time, or per axis) and scale by one RMS, all over the
    # observed entries: float32 then sees O(1) numbers whatever the units, and the lambdas mean
    # the same for mm or m.
    w = obs.astype(dtype)
    cnt_axis = jnp.sum(w, axis=(0, 1))
    centre = jnp.sum(jnp.where(obs, poses, 0.0), axis=(0, 1)) / jnp.maximum(cnt_axis, 1.0)  # (3,)
    if config.center == "row":
        cnt_row = jnp.sum(w, axis=0)  # (P, 3)
        row_mean = jnp.sum(jnp.where(obs, poses, 0.0), axis=0) / jnp.maximum(cnt_row, 1.0)
        centre = jnp.where(cnt_row > 0, row_mean, centre)  # (P, 3); unobserved rows: axis mean
    dev = jnp.where(obs, poses - centre, 0.0)
    scale = jnp.sqrt(jnp.sum(dev ** 2) / jnp.maximum(jnp.sum(w), 1.0))
    # With few observed entries (one joint in one frame, or a nearly static joint) the observed
    # spread can be ~0 while the other predictions are hundreds of mm away: dividing by it
    # overflows float32. Keep the scale at least a tenth of the spread of every finite entry.
    finite = jnp.isfinite(poses) & vmask
    dev_all = jnp.where(finite, poses - centre, 0.0)
    scale_all = jnp.sqrt(jnp.sum(dev_all ** 2) / jnp.maximum(jnp.sum(finite), 1.0))
    scale = jnp.maximum(scale, 0.1 * scale_all)
    scale = jnp.where(scale > 0, scale, 1.0)
    normed = (poses - centre) / scale
    s_mat = _to_matrix(jnp.where(obs, normed, 0.0))
    obs_mat = _to_matrix(obs)
    x0 = ops.fill_linear(_to_matrix(jnp.where(known, normed, 0.0)), _to_matrix(known), valid)
    res = _alm(s_mat, obs_mat, x0, valid, config, group, max_free)
    x = _from_matrix(res.X, p) * scale + centre
    if not config.soft_data_term:  # exact constraint: observed entries as given (no round trip)
        x = jnp.where(obs, poses, x)
    x = jnp.where(vmask, x, 0.0)
    e = _from_matrix(res.E, p) * scale
    return CompletionResult(x, e, res.iterations, res.converged, res.residuals, res.objective)


_complete_jit = jax.jit(complete_core, static_argnames=("config", "max_free"))


def _observed_3d(poses_shape: tuple[int, ...], observed) -> jax.Array:
    f, p, _ = poses_shape
    obs = jnp.asarray(observed)
    if obs.dtype != jnp.bool_:
        raise ValueError(f"observed must be a bool mask, got dtype {obs.dtype}")
    if obs.shape == (f, p):
        obs = jnp.broadcast_to(obs[..., None], (f, p, 3))
    elif obs.shape != (f, p, 3):
        raise ValueError(f"observed must be (F, P) = {(f, p)} or (F, P, 3) = {(f, p, 3)}, "
                         f"got {obs.shape}")
    return obs


def _check_shapes(poses, config: CompletionConfig) -> None:
    shape = tuple(np.shape(poses))
    if len(shape) != 3 or shape[-1] != 3:
        raise ValueError(f"poses must be (F, P, 3), got shape {shape}")
    if shape[0] < 2:
        raise ValueError(f"need at least F = 2 frames, got F = {shape[0]}")
    if shape[1] < 1:
        raise ValueError(f"need at least one joint, got P = {shape[1]}")
    if not isinstance(config, CompletionConfig):
        raise ValueError(f"config must be a CompletionConfig, got {type(config).__name__}")
    config.validate()


def validate_inputs(poses, observed, config: CompletionConfig = CompletionConfig()) -> None:
    """Host-side checks of `complete`'s inputs; raises ValueError naming the problem.

    Checks: poses (F, P, 3) with F >= 2; observed a bool (F, P) or (F, P, 3) mask; no NaN/inf
    in an observed entry; at least one observed entry; finite, sane config values.
    """
    _check_shapes(poses, config)
    obs = np.asarray(_observed_3d(np.shape(poses), observed))
    p = np.asarray(poses)
    if not obs.any():
        raise ValueError("nothing observed: the observed mask has no True entry")
    bad = obs & ~np.isfinite(p)
    if bad.any():
        fr, j, _ = np.argwhere(bad)[0]
        raise ValueError(f"observed entries must be finite: {int(bad.sum())} NaN/inf observed "
                         f"value(s), first at frame {fr}, joint {j}")


def _is_concrete(*xs) -> bool:
    return not any(isinstance(x, jax.core.Tracer) for x in xs)


def complete(poses, observed, config: CompletionConfig = CompletionConfig()) -> CompletionResult:
    """Complete a pose sequence with Eq. 1 (host-side wrapper: validates, then runs the jitted core).

    Args:
      poses: (F, P, 3) predictions in any units (mm), NaN allowed where there is no prediction.
      observed: (F, P) or (F, P, 3) bool, True where the prediction is confident (score > tau):
        those entries are held exactly (config.lambda_o = 0) or pulled towards the input by the
        soft data term (lambda_o > 0; then they are returned as solved, not as given).
      config: CompletionConfig (static under jit).
    Returns:
      CompletionResult with X, E in the input's units.

    Validation: shapes and config are always checked; values (NaN observed, nothing observed)
    only when the arrays are concrete (under an outer jit/vmap they are tracers and the value
    checks are skipped: call `validate_inputs` on the host first). Not converging within
    max_iters gives converged=False, no exception.
    """
    _check_shapes(poses, config)
    _observed_3d(tuple(np.shape(poses)), observed)  # shape and dtype checks
    max_free = None
    if _is_concrete(poses, observed):
        validate_inputs(poses, observed, config)
        observed = per_joint_if_equal(np.asarray(observed), np.ndim(poses))
        max_free = x_step_slots(~np.asarray(observed).swapaxes(0, -1), config)
    obs = jnp.asarray(observed)  # (F, P) stays per joint: fewer Cholesky factors
    poses = jnp.asarray(poses)
    valid = jnp.ones((poses.shape[0],), bool)
    return _complete_jit(poses, obs, valid, config, max_free)


def per_joint_if_equal(observed: np.ndarray, poses_ndim: int) -> np.ndarray:
    """(..., F, P, 3) mask -> (..., F, P) when x, y, z agree everywhere (host side, concrete).

    `poses_ndim` is the ndim of the matching poses ((..., F, P, 3)): only a mask of that ndim is
    per coordinate. The X step then shares one Cholesky factor among a joint's three rows: the
    same solution, a third of the factorisations. Other masks are returned unchanged.
    """
    if observed.ndim == poses_ndim and (observed == observed[..., :1]).all():
        return observed[..., 0]
    return observed
