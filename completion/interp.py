"""Linear interpolation over time of the observed entries: the standard gap-filling baseline."""
from __future__ import annotations

import numpy as np


def interpolate(poses, observed) -> np.ndarray:
    """Fill every unobserved entry by linear interpolation over time of its joint coordinate.

    Before the first / after the last observed frame the nearest observed value is held.
    Coordinates never observed keep their input values (NaN stays NaN).

    Args:
      poses: (F, P, 3) poses (any units), NaN allowed where not observed.
      observed: (F, P) or (F, P, 3) bool mask of the entries to trust.
    Returns:
      (F, P, 3) float64 array, observed entries unchanged.
    """
    x = np.array(poses, dtype=np.float64)
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"poses must be (F, P, 3), got shape {x.shape}")
    obs = np.asarray(observed)
    if obs.dtype != bool:
        raise ValueError(f"observed must be a bool mask, got dtype {obs.dtype}")
    if obs.shape == x.shape[:2]:
        obs = np.broadcast_to(obs[..., None], x.shape)
    elif obs.shape != x.shape:
        raise ValueError(f"observed must be (F, P) or (F, P, 3) matching poses {x.shape}, "
                         f"got {obs.shape}")
    if np.any(obs & ~np.isfinite(x)):
        raise ValueError("observed entries must be finite (found NaN/inf)")
    f = x.shape[0]
    t = np.arange(f)
    flat_x = x.reshape(f, -1)
    flat_o = obs.reshape(f, -1)
    out = flat_x.copy()
    for k in range(flat_x.shape[1]):
        o = flat_o[:, k]
        if o.any():
            out[:, k] = np.interp(t, t[o], flat_x[o, k])  # holds the end values beyond the ends
    return out.reshape(x.shape)
