"""Trajectory completion of 3D pose sequences by Eq. 1 (low rank + smooth + sparse errors).

Depends on jax and numpy only (never on hourglass_jax). Public API:

- `CompletionConfig`: the lambdas and ALM schedule (frozen, hashable, static under jit).
- `complete(poses, observed, config)`: one (F, P, 3) sequence -> `CompletionResult`.
- `solve(S, mask, X0, config)`: the ALM on the paper's (3P, F) matrices -> `SolveResult`.
- `complete_batch(sequences, observed, config)`: many sequences of different lengths, one call.
- `complete_long(poses, observed, config)`: overlapping windows solved in one batched call.
- `interpolate(poses, observed)`: the linear-interpolation gap-filling baseline.
"""
from completion.config import CompletionConfig
from completion.alm import (CompletionResult, SolveResult, complete, complete_core, solve,
                            validate_inputs)
from completion.interp import interpolate
from completion.windows import complete_batch, complete_long

__all__ = [
    "CompletionConfig", "CompletionResult", "SolveResult", "complete", "complete_core", "solve",
    "validate_inputs", "interpolate", "complete_batch", "complete_long",
]
