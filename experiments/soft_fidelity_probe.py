"""Probe: Eq. 1 with a soft data term instead of the hard constraint on the confident entries.

Eq. 1 holds the confident entries exactly (P_Omega(X) = P_Omega(S)), so it cannot remove their
noise. This probe replaces that constraint by lambda_o / 2 ||P_Omega(X - S)||_F^2 in the
objective and measures, on every `--every`-th unlabelled video of a finished run, how the MPJPE
of all joints and of the confident ones changes. It is a float64 NumPy experiment built on the
reference solver's pieces (not a solver option yet: see the issue notes).

    python -m experiments.soft_fidelity_probe --workdir=runs/demo_s1 --tau=0.16 \
        --lambdas=1,3,10,30,100

The X step becomes, per row k of X (3P rows, F frames): (M + lambda_o diag(w_k)) x_k =
rhs_k + lambda_o w_k * s_k, with M and rhs those of the exact step (completion/reference.py) and
w_k the row's confident-frame indicator. As lambda_o grows, it tends to the exact constraint.
"""
from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np
from absl import app, flags

from completion.config import CompletionConfig
from completion.reference import _diff_matrix, _svt


def solve_soft(s: np.ndarray, mask: np.ndarray, x0: np.ndarray, config: CompletionConfig,
               lambda_o: float) -> np.ndarray:
    """(R, F) normalised data, (R, F) bool confident mask, (R, F) start -> (R, F) X."""
    r, f = s.shape
    d = _diff_matrix(np.ones(f, bool), np.float64)
    eye = np.eye(f)
    w = mask.astype(np.float64)
    x, e = x0.astype(np.float64).copy(), np.zeros((r, f))
    xs, b, c = x.copy(), eye.copy(), eye.copy()
    y1, y2, y3 = np.zeros((r, f)), np.zeros((f, f)), np.zeros((r, f))
    mu = config.mu0
    norm_s = max(np.linalg.norm(s), 1e-12)
    for _ in range(config.max_iters):
        xs = _svt(x + y3 / mu, 1.0 / mu)
        c = _svt(b + y2 / mu, config.lambda_c / mu)
        g = x - x @ b + y1 / mu
        e = np.sign(g) * np.maximum(np.abs(g) - config.lambda_e / mu, 0.0)
        b = np.linalg.solve(eye + x.T @ x, x.T @ (x - e) + c + (x.T @ y1 - y2) / mu)
        ib = eye - b
        m = 2.0 * config.lambda_d * d @ d.T + mu * ib @ ib.T + mu * eye
        rhs = mu * xs - y3 + (mu * e - y1) @ ib.T
        for k in range(r):
            x[k] = np.linalg.solve(m + lambda_o * np.diag(w[k]), rhs[k] + lambda_o * w[k] * s[k])
        r1, r2, r3 = x - x @ b - e, b - c, x - xs
        y1, y2, y3 = y1 + mu * r1, y2 + mu * r2, y3 + mu * r3
        mu = min(config.rho * mu, config.mu_max)
        if max(np.linalg.norm(r1) / norm_s, np.linalg.norm(r2) / np.sqrt(f),
               np.linalg.norm(r3) / norm_s) <= config.tol:
            break
    return x


def complete_soft(poses: np.ndarray, observed: np.ndarray, config: CompletionConfig,
                  lambda_o: float) -> np.ndarray:
    """(F, P, 3) mm, (F, P) bool -> (F, P, 3) mm, normalised as `completion.complete` does
    (centre per joint coordinate over its confident frames, one RMS scale)."""
    f, p, _ = poses.shape
    poses = np.asarray(poses, np.float64)
    obs = np.repeat(np.asarray(observed, bool)[..., None], 3, axis=-1)
    centre = np.array([[poses[:, j, k][obs[:, j, k]].mean() if obs[:, j, k].any()
                        else poses[..., k].mean() for k in range(3)] for j in range(p)])
    dev = poses - centre
    scale = max(np.sqrt(np.mean(dev[obs] ** 2)), 0.1 * np.sqrt(np.mean(dev ** 2)), 1e-9)
    s = (dev / scale).reshape(f, -1).T
    m = obs.reshape(f, -1).T
    x0, t = s.copy(), np.arange(f)
    for k in range(s.shape[0]):
        if m[k].any():
            x0[k] = np.interp(t, t[m[k]], s[k, m[k]])
    x = solve_soft(np.where(m, s, 0.0), m, x0, config, lambda_o)
    return x.T.reshape(f, p, 3) * scale + centre


def probe(preds: dict[str, np.ndarray], tau: float, lambdas: Sequence[float], every: int,
          config: CompletionConfig) -> dict:
    """MPJPE of the raw and the soft-completed predictions (all joints, confident joints)."""
    vids = np.unique(preds["sequence_id"])[::every]
    out = {"videos": int(len(vids)), "tau": tau, "lambda_o": {}}
    for lam in lambdas:
        raw, done, conf = [], [], []
        for vid in vids:
            rows = np.flatnonzero(preds["sequence_id"] == vid)
            rows = rows[np.argsort(preds["frame_index"][rows])]
            observed = preds["confidence"][rows] > tau
            if len(rows) < 2 or not observed.any():
                continue
            x = complete_soft(preds["pred"][rows], observed, config, lam)
            raw.append(np.linalg.norm(preds["pred"][rows] - preds["gt"][rows], axis=-1))
            done.append(np.linalg.norm(x - preds["gt"][rows], axis=-1))
            conf.append(observed)
        raw_e, done_e = np.concatenate(raw), np.concatenate(done)
        c = np.concatenate(conf)
        out["lambda_o"][f"{lam:g}"] = {
            "predictions_mpjpe": float(raw_e.mean()), "completed_mpjpe": float(done_e.mean()),
            "change_percent": float(100 * (done_e.mean() / raw_e.mean() - 1)),
            "confident_predictions": float(raw_e[c].mean()),
            "confident_completed": float(done_e[c].mean())}
    return out


def main(argv: Sequence[str]) -> None:
    del argv
    path = os.path.join(flags.FLAGS.workdir or "", "predict", "predictions.npz")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: --workdir must hold a finished predict stage")
    with np.load(path) as f:
        preds = {k: f[k] for k in f.files}
    lambdas = [float(v) for v in flags.FLAGS.lambdas.split(",") if v]
    result = probe(preds, flags.FLAGS.tau, lambdas, flags.FLAGS.every,
                   CompletionConfig(max_iters=flags.FLAGS.max_iters))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "A work directory with the predict stage done.")
    flags.DEFINE_float("tau", 0.16, "Confidence threshold.")
    flags.DEFINE_string("lambdas", "1,3,10,30,100", "Comma-separated lambda_o values.")
    flags.DEFINE_integer("every", 8, "Use every n-th unlabelled video.")
    flags.DEFINE_integer("max_iters", 150, "ALM iterations at most (the demo's setting).")
    app.run(main)
