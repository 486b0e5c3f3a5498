"""Plain NumPy implementation of Eq. 1 and its ALM, written from the equations.

The test oracle and the benchmark baseline for `completion.alm`. It shares no code with the JAX
solver and takes the direct route at every step: SVT by a full SVD (the definition), the B
subproblem by a dense `np.linalg.solve` of its F x F normal equations (no Woodbury), the X
subproblem row by row on the unobserved frames (no Cholesky, no grouping), gap filling by `np.interp`. Float64 by default; `dtype` selects any float type.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from completion.config import CompletionConfig


class ReferenceResult(NamedTuple):
    """Same fields as SolveResult / CompletionResult (NumPy arrays, Python scalars)."""

    X: np.ndarray
    X_sharp: np.ndarray
    E: np.ndarray
    B: np.ndarray
    C: np.ndarray
    iterations: int
    converged: bool
    residuals: np.ndarray
    objective: float


def _svt(a: np.ndarray, tau: float) -> np.ndarray:
    u, s, vt = np.linalg.svd(a, full_matrices=False)
    return (u * np.maximum(s - tau, 0.0)) @ vt


def _diff_matrix(valid: np.ndarray, dtype) -> np.ndarray:
    """D in R^{F x (F-1)}: column t is e_{t+1} - e_t, zeroed when frame t or t+1 is padding."""
    f = valid.shape[0]
    d = np.zeros((f, f - 1), dtype)
    for t in range(f - 1):
        if valid[t] and valid[t + 1]:
            d[t, t], d[t + 1, t] = -1.0, 1.0
    return d


def solve(S, mask, X0, config: CompletionConfig = CompletionConfig(), valid=None,
          dtype=np.float64) -> ReferenceResult:
    """Eq. 1 by inexact ALM on (3P, F) matrices; same updates and stop rule as `completion.solve`.

    Args:
      S: (R, F) data, used where mask is True. mask: (R, F) bool. X0: (R, F) initial X, X#.
      config: CompletionConfig. valid: optional (F,) bool (False = padding frame).
      dtype: float type of all the arithmetic.
    With config.lambda_o > 0 the soft data term lambda_o / 2 ||P_Omega(X - S)||^2 replaces the
    constraint P_Omega(X) = P_Omega(S), as in `completion.solve`.
    """
    config.validate()
    s = np.where(mask, np.asarray(S, dtype), 0.0).astype(dtype)
    mask = np.asarray(mask, bool)
    r, f = s.shape
    valid = np.ones(f, bool) if valid is None else np.asarray(valid, bool)
    vf = valid.astype(dtype)
    d = _diff_matrix(valid, dtype)
    eye = np.eye(f, dtype=dtype)
    x = (np.where(mask, s, np.asarray(X0, dtype)) * vf).astype(dtype)
    xs = x.copy()
    e = np.zeros((r, f), dtype)
    b = np.diag(vf).astype(dtype)
    c = b.copy()
    y1 = np.zeros((r, f), dtype)
    y2 = np.zeros((f, f), dtype)
    y3 = np.zeros((r, f), dtype)
    mu = dtype(config.mu0)
    norm_s = max(np.linalg.norm(s), np.finfo(dtype).tiny)
    norm_b = np.sqrt(max(vf.sum(), 1.0))
    res = np.full(3, np.inf, dtype)
    it = 0
    while it < config.max_iters and res.max() > config.tol:
        # Each line minimises the augmented Lagrangian
        #   ||X#||_* + ld||XD||^2 + lc||C||_* + le||E||_1 + <Y1, X - XB - E> + <Y2, B - C>
        #   + <Y3, X - X#> + mu/2 (||X - XB - E||^2 + ||B - C||^2 + ||X - X#||^2)
        # over one variable with the others fixed.
        xs = _svt(x + y3 / mu, 1.0 / mu)
        c = _svt(b + y2 / mu, config.lambda_c / mu)
        g = x - x @ b + y1 / mu
        e = np.sign(g) * np.maximum(np.abs(g) - config.lambda_e / mu, 0.0)
        # d/dB = 0: (I + X^T X) B = X^T (X - E) + C + (X^T Y1 - Y2) / mu
        b = np.linalg.solve(eye + x.T @ x, x.T @ (x - e) + c + (x.T @ y1 - y2) / mu)
        # X step: the gradient in X is X M - rhs with
        #   M = 2 ld D D^T + mu (I-B)(I-B)^T + mu I,  rhs = mu X# - Y3 + (mu E - Y1)(I-B)^T;
        # it must vanish on the unobserved entries while the observed ones stay at S: per row,
        # M[h, h] x[h] = rhs[h] - x[o] M[o, h] (h unobserved frames, o the rest).
        ib = eye - b
        m = 2.0 * config.lambda_d * d @ d.T + mu * ib @ ib.T + mu * eye
        rhs = mu * xs - y3 + (mu * e - y1) @ ib.T
        x = s.copy()  # observed entries = S, the rest 0 until solved
        for k in range(r):
            if config.soft_data_term:  # every frame free, pulled towards S
                w = config.lambda_o * (mask[k] & valid)
                x[k] = np.linalg.solve(m + np.diag(w), rhs[k] + w * s[k]) * vf
                continue
            h = ~mask[k] & valid
            if h.any():
                o = ~h
                x[k, h] = np.linalg.solve(m[np.ix_(h, h)], rhs[k, h] - x[k, o] @ m[np.ix_(o, h)])
        r1, r2, r3 = x - x @ b - e, b - c, x - xs
        y1 = y1 + mu * r1
        y2 = y2 + mu * r2
        y3 = y3 + mu * r3
        res = np.array([np.linalg.norm(r1) / norm_s, np.linalg.norm(r2) / norm_b,
                        np.linalg.norm(r3) / norm_s], dtype)
        mu = dtype(min(config.rho * mu, config.mu_max))
        it += 1
    objective = (np.linalg.svd(xs, compute_uv=False).sum()
                 + config.lambda_d * np.sum((x @ d) ** 2)
                 + config.lambda_c * np.linalg.svd(c, compute_uv=False).sum()
                 + config.lambda_e * np.abs(e).sum())
    return ReferenceResult(x, xs, e, b, c, it, bool(res.max() <= config.tol), res, float(objective))


def complete(poses, observed, config: CompletionConfig = CompletionConfig(),
             dtype=np.float64) -> ReferenceResult:
    """Reference of `completion.complete`: (F, P, 3) poses, (F, P[, 3]) bool mask.

    Same normalisation (centre per axis, one RMS scale over observed entries, at least a tenth
    of the RMS over all finite entries), same start
    (unknown entries by linear interpolation over time of the finite ones). X and E are returned
    as (F, P, 3) in the input's units; X_sharp, B, C stay normalised matrices. With the soft data
    term (config.lambda_o > 0) the observed entries are not reset to the input.
    """
    p_in = np.asarray(poses, dtype)
    f, p, _ = p_in.shape
    obs = np.asarray(observed, bool)
    if obs.shape == (f, p):
        obs = np.repeat(obs[..., None], 3, axis=-1)
    centre = np.array([p_in[..., k][obs[..., k]].mean() for k in range(3)], dtype)
    if config.center == "row":  # per joint coordinate, over its observed frames
        centre = np.array([[p_in[:, j, k][obs[:, j, k]].mean() if obs[:, j, k].any()
                            else centre[k] for k in range(3)] for j in range(p)], dtype)
    dev = (p_in - centre)[obs]
    scale = np.sqrt(np.mean(dev ** 2))
    # At least a tenth of the spread of all finite entries (a near-static observed set would
    # otherwise blow the unobserved predictions up).
    finite = np.isfinite(p_in)
    scale = max(scale, 0.1 * np.sqrt(np.mean((p_in - centre)[finite] ** 2)))
    scale = scale if scale > 0 else dtype(1.0)
    normed = (p_in - centre) / scale
    to_m = lambda a: a.reshape(f, -1).T  # noqa: E731  (F, P, 3) -> (3P, F), row p*3 + c
    known = np.isfinite(p_in) & (obs if config.init == "interpolation" else True)
    s_m, obs_m, known_m = to_m(normed), to_m(obs), to_m(known)
    x0 = np.zeros_like(s_m)
    t = np.arange(f)
    for k in range(s_m.shape[0]):
        if known_m[k].any():
            x0[k] = np.interp(t, t[known_m[k]], s_m[k, known_m[k]])
    out = solve(np.where(obs_m, s_m, 0.0), obs_m, x0, config, dtype=dtype)
    x = out.X.T.reshape(f, p, 3) * scale + centre
    if not config.soft_data_term:  # exact constraint: observed entries are the input's, bit for bit
        x = np.where(obs, p_in, x)
    e = out.E.T.reshape(f, p, 3) * scale
    return out._replace(X=x, E=e)
