"""Completion demo on real motion capture: `python -m completion.demo [--out DIR]`.

Takes a few real mocap clips (hourglass_jax.data.mocap, imported lazily so that the
`completion` package itself never depends on hourglass_jax), corrupts them like occluded,
noisy network predictions (`corrupt`), completes them in one batched call and reports the
error of the noisy input, of linear interpolation and of the completion, as a markdown table,
JSON and a PNG of one joint's trajectory.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def corrupt(joints: np.ndarray, rng: np.random.Generator, noise_mm: float = 15.0,
            hide_frac: float = 0.2, burst_len: tuple[int, int] = (3, 12),
            burst_err_mm: float = 150.0, outlier_frac: float = 0.02,
            outlier_mm: float = 300.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Simulate network predictions of a clip: noise, occlusion bursts, gross outliers.

    Every entry gets Gaussian noise (noise_mm per coordinate). Each joint is hidden
    (low confidence) in bursts of burst_len frames (inclusive range) covering about hide_frac of
    its frames; a hidden joint's prediction is additionally off by a random burst_err_mm offset,
    constant over the burst. A fraction outlier_frac of the *confident* entries get a gross
    outlier_mm error in a random direction and stay confident.

    Args:
      joints: (F, P, 3) ground truth in mm.
    Returns:
      (predictions (F, P, 3) mm, observed (F, P) bool, outlier (F, P) bool).
    """
    f, p, _ = joints.shape
    pred = joints + rng.normal(scale=noise_mm, size=joints.shape)
    observed = np.ones((f, p), bool)
    mean_len = 0.5 * (burst_len[0] + burst_len[1])
    p_start = hide_frac / (mean_len * (1.0 - hide_frac))
    for j in range(p):
        t = 0
        while t < f:
            if rng.random() < p_start:
                n = int(rng.integers(burst_len[0], burst_len[1] + 1))
                direction = rng.normal(size=3)
                pred[t:t + n, j] += burst_err_mm * direction / np.linalg.norm(direction)
                observed[t:t + n, j] = False
                t += n
            t += 1
    outlier = observed & (rng.random((f, p)) < outlier_frac)
    k = int(outlier.sum())
    direction = rng.normal(size=(k, 3))
    pred[outlier] += outlier_mm * direction / np.linalg.norm(direction, axis=1, keepdims=True)
    return pred, observed, outlier


def mpjpe(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    """Mean Euclidean joint error (mm) between (F, P, 3) arrays, over the (F, P) entries `where`."""
    err = np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64), axis=-1)
    return float(err.mean() if where is None else err[where].mean())
