"""Configuration of the Eq. 1 trajectory-completion solver."""
from __future__ import annotations

import dataclasses
import math

_SVT_METHODS = ("eigh", "svd")
# "default": no override (jax_default_matmul_precision decides: TF32 on recent NVIDIA GPUs,
# bfloat16 passes on TPU); the others are set with jax.default_matmul_precision while tracing.
_MATMUL_PRECISIONS = ("highest", "float32", "high", "tensorfloat32", "bfloat16", "default")


@dataclasses.dataclass(frozen=True)
class CompletionConfig:
    """Weights and ALM schedule of Eq. 1 (paper Sec. 3.2).

    Frozen and hashable, so it can be a static argument of `jax.jit`. The lambdas act on the
    *normalised* data (see `completion.alm.complete`: the observed entries are centred and
    scaled to unit RMS), so they do not depend on the input's units. The defaults were chosen
    by measurement on real mocap clips with occlusion bursts, noise and outliers
    (docs/completion.md has the tables): on 15 held-out corrupted clips they complete the
    hidden joints 10% better than linear interpolation (82.1 vs 91.5 mm MPJPE). The float32
    solver's residuals floor at about 1e-5..1e-4, hence tol = 1e-4 (use float64 for tighter).

    Attributes:
      lambda_d: weight of the temporal smoothness term ||X D||_F^2.
      lambda_c: weight of the nuclear norm ||C||_* of the self-representation matrix.
      lambda_e: weight of the sparse error term ||E||_1.
      mu0: initial ALM penalty.
      rho: growth factor of the penalty per iteration (> 1).
      mu_max: upper bound of the penalty.
      tol: early stop when all three relative primal residuals are below it.
      max_iters: iteration cap; reaching it gives converged=False, no exception.
      center: normalisation before solving: "row" subtracts each joint coordinate's mean over
        its observed frames, "axis" one mean per x/y/z axis; both then divide by one RMS scale.
      init: start of X and X# at the unobserved entries: "predictions" (the paper: the network's
        predictions, NaN filled by linear interpolation over time) or "interpolation" (every
        unobserved entry from linear interpolation of the observed ones).
      svt: "eigh" (singular value thresholding through the eigendecomposition of the small
        Gram matrix, the fast path) or "svd" (a full SVD).
      lambda_o: 0 (the default, the paper): the confident entries are held exactly,
        P_Omega(X) = P_Omega(S). > 0: that constraint is replaced by a soft data term
        lambda_o / 2 ||P_Omega(X - S)||_F^2 of this weight on the normalised data, so the
        confident entries may move too. Our extension, not the paper's: the exact constraint
        copies the confident predictions unchanged and so cannot remove their noise. As
        lambda_o grows the result tends to the exact one. Costs F x F Cholesky factors in
        the X step (every frame is free) instead of the packed unobserved-frame slots.
      matmul_precision: precision of the solver's float32 matrix products. "highest" (the
        default) computes them in true float32 on every backend, as the NumPy reference does.
        JAX's own default ("default") lets GPUs round the factors to TensorFloat32 (10-bit
        mantissa) and TPUs to bfloat16 passes: fine for networks, but the SVT squares the
        data in its Gram matrices: measured on an H200, TF32 products left errors of 0.5-12,700
        (data units, vs 0.0002-0.001) after 20 iterations, and no solve reached `tol` (F = 300
        in 500 iterations, 480 real videos in 150; docs/completion.md, "Matmul precision on
        GPUs"). "tensorfloat32"
        / "bfloat16" ask for those explicitly (the benchmark compares them); on CPU every
        choice computes in float32.
    """

    lambda_d: float = 5.0
    lambda_c: float = 10.0
    lambda_e: float = 1.0
    mu0: float = 0.1
    rho: float = 1.1
    mu_max: float = 1e6
    tol: float = 1e-4
    max_iters: int = 500
    svt: str = "eigh"
    center: str = "row"
    init: str = "predictions"
    lambda_o: float = 0.0
    matmul_precision: str = "highest"

    @property
    def soft_data_term(self) -> bool:
        """True when lambda_o > 0: the confident entries are pulled towards the data, not held."""
        return self.lambda_o > 0

    def validate(self) -> "CompletionConfig":
        """Raise ValueError naming the first bad field; return self when all are valid."""
        for name in ("lambda_d", "lambda_c", "lambda_e", "mu0", "rho", "mu_max", "tol",
                     "lambda_o"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"CompletionConfig.{name} must be a finite number, got {value!r}")
        for name in ("lambda_d", "lambda_c", "lambda_e", "lambda_o"):
            if getattr(self, name) < 0:
                raise ValueError(f"CompletionConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.mu0 <= 0:
            raise ValueError(f"CompletionConfig.mu0 must be > 0, got {self.mu0}")
        if self.rho < 1:
            raise ValueError(f"CompletionConfig.rho must be >= 1, got {self.rho}")
        if self.mu_max < self.mu0:
            raise ValueError(f"CompletionConfig.mu_max ({self.mu_max}) must be >= mu0 ({self.mu0})")
        if self.tol < 0:
            raise ValueError(f"CompletionConfig.tol must be >= 0, got {self.tol}")
        if not isinstance(self.max_iters, int) or isinstance(self.max_iters, bool) \
                or self.max_iters < 1:
            raise ValueError(f"CompletionConfig.max_iters must be an int >= 1, got {self.max_iters!r}")
        if self.svt not in _SVT_METHODS:
            raise ValueError(f"CompletionConfig.svt must be one of {_SVT_METHODS}, got {self.svt!r}")
        if self.center not in ("row", "axis"):
            raise ValueError(f"CompletionConfig.center must be 'row' or 'axis', got {self.center!r}")
        if self.matmul_precision not in _MATMUL_PRECISIONS:
            raise ValueError(f"CompletionConfig.matmul_precision must be one of "
                             f"{_MATMUL_PRECISIONS}, got {self.matmul_precision!r}")
        if self.init not in ("predictions", "interpolation"):
            raise ValueError(f"CompletionConfig.init must be 'predictions' or 'interpolation', "
                             f"got {self.init!r}")
        return self

    def replace(self, **changes) -> "CompletionConfig":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)
