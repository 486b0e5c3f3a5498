"""The soft data term (CompletionConfig.lambda_o > 0) of the JAX solver: equal to the NumPy
reference's `lambda_o` option, tends to the exact constraint, padding-invariant, validated."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from completion import CompletionConfig, complete, complete_batch, complete_long, ops, solve
from completion import reference as ref


def _problem(seed, f, p, hide, per_coordinate=False):
    """Random-walk poses in mm with a random hidden set (half of it NaN); optionally a
    per-coordinate (F, P, 3) mask whose x, y, z differ."""
    rng = np.random.default_rng(seed)
    poses = rng.normal(size=(f, p, 3)).cumsum(0) * 50.0 + 1000.0
    observed = rng.random((f, p)) > hide
    observed[0, 0] = True
    poses[~observed & (rng.random((f, p)) < 0.5)] = np.nan
    if per_coordinate:
        observed = observed[..., None] & (rng.random((f, p, 3)) > 0.2)
        observed[0, 0] = True
    return poses, observed


def _obs3(observed, shape):
    return np.broadcast_to(observed[..., None], shape) if observed.ndim == 2 else observed


def test_weighted_solve_equals_per_row_dense_solve():
    # The soft X step on its own: (M + diag(w_g)) x_r = rhs_r + w_g * t_r for every row r of
    # group g, one Cholesky factor per group. Zero weights must ignore the target (NaN there).
    rng = np.random.default_rng(3)
    f, g, k = 9, 2, 3
    a = rng.normal(size=(f, f))
    m = a @ a.T + 0.5 * np.eye(f)
    rhs = rng.normal(size=(g * k, f))
    weight = 10.0 * (rng.random((g, f)) > 0.4)
    target = np.where(np.repeat(weight, k, 0) > 0, rng.normal(size=(g * k, f)), np.nan)
    with jax.enable_x64(True):
        got = np.asarray(ops.weighted_spd_solve_right(jnp.asarray(rhs), jnp.asarray(m),
                                                      jnp.asarray(weight), jnp.asarray(target)))
    want = np.stack([np.linalg.solve(m + np.diag(weight[r // k]),
                                     rhs[r] + weight[r // k] * np.nan_to_num(target[r]))
                     for r in range(g * k)])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10 * np.abs(want).max())


@pytest.mark.parametrize("per_coordinate", [False, True], ids=["per_joint", "per_coordinate"])
@pytest.mark.parametrize("lambda_o", [1.0, 10.0])
def test_jax_float32_equals_float64_reference(lambda_o, per_coordinate):
    # As the exact path's reference test: 40 fixed iterations (tol = 0) on both sides, X and E
    # within 1e-4 of the data's span. float32 rounding through 40 ALM iterations; measured
    # max |X - X_ref| / span 4e-7..9e-7, |E - E_ref| / span 3e-7..1.3e-6 (both masks, both
    # lambdas), so 1e-4 leaves a 100x margin, while a wrong X step is far outside it: the
    # observed entries move 6e-2..2.4e-1 of the span here, so resetting them would fail.
    poses, observed = _problem(1, 30, 5, 0.4, per_coordinate)
    cfg = CompletionConfig(lambda_d=1.0, lambda_c=0.3, lambda_e=0.2, tol=0.0, max_iters=40,
                           lambda_o=lambda_o)
    got = jax.tree.map(np.asarray, complete(poses, observed, cfg))
    want = ref.complete(poses, observed, cfg)
    assert int(got.iterations) == want.iterations == 40
    span = np.nanmax(np.abs(poses - np.nanmean(poses)))
    np.testing.assert_allclose(got.X, want.X, rtol=0, atol=1e-4 * span)
    np.testing.assert_allclose(got.E, want.E, rtol=0, atol=1e-4 * span)
    np.testing.assert_allclose(got.residuals, want.residuals, rtol=1e-2, atol=1e-6)
    np.testing.assert_allclose(got.objective, want.objective, rtol=1e-4)
    # The soft term lets the confident entries move: they are returned as solved.
    obs3 = _obs3(observed, poses.shape)
    assert np.abs(got.X - poses)[obs3].max() > 1.0  # mm
    # The reference reads config.lambda_o too when its argument is not given.
    np.testing.assert_array_equal(ref.complete(poses, observed, cfg).X, want.X)


def test_jax_float64_equals_reference_on_matrices_with_padding():
    # `solve` on (R, F) matrices with padded frames (valid=False) and a per-row mask, float64:
    # equal to the reference to float64 rounding (measured 1e-14), padded frames exactly 0.
    rng = np.random.default_rng(4)
    r, f = 6, 20
    s = rng.normal(size=(r, 3)) @ rng.normal(size=(3, f)) + 0.1 * rng.normal(size=(r, f))
    mask = rng.random((r, f)) > 0.3
    valid = np.arange(f) < 16
    x0 = np.where(mask, s, 0.0)
    cfg = CompletionConfig(tol=0.0, max_iters=30, lambda_o=3.0)
    with jax.enable_x64(True):
        got = jax.tree.map(np.asarray, solve(jnp.asarray(s), jnp.asarray(mask), jnp.asarray(x0),
                                             cfg, jnp.asarray(valid)))
    want = ref.solve(s, mask, x0, cfg, valid=valid)
    np.testing.assert_allclose(got.X, want.X, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got.B, want.B, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(got.X[:, ~valid], 0.0)


def test_large_lambda_o_tends_to_the_exact_constraint():
    # The soft problem's solution differs from the exact one by O(1 / lambda_o). Measured
    # (converged, tol 1e-4), max deviation / span: lambda_o = 100: observed entries from S
    # 4.2e-2, result from the exact solver's 4.2e-2; lambda_o = 1e4: 5.1e-4 and 5.1e-4.
    poses, observed = _problem(5, 24, 4, 0.3)
    base = CompletionConfig(max_iters=300)
    span = np.nanmax(np.abs(poses - np.nanmean(poses)))
    obs3 = _obs3(observed, poses.shape)
    exact = np.asarray(complete(poses, observed, base).X, np.float64)
    dev, dist = {}, {}
    for lam in (100.0, 1e4):
        out = complete(poses, observed, base.replace(lambda_o=lam))
        assert bool(out.converged)
        x = np.asarray(out.X, np.float64)
        dev[lam] = np.abs(x - poses)[obs3].max() / span
        dist[lam] = np.abs(x - exact).max() / span
    assert dev[1e4] < 2e-3 and dist[1e4] < 2e-3
    assert dev[1e4] < 0.05 * dev[100.0] and dist[1e4] < 0.05 * dist[100.0]


SEQS = [_problem(10 + i, f, 4, 0.3) for i, f in enumerate((10, 17, 23))]


def test_padded_batch_equals_each_unbatched_solve_float64():
    # Padded to 32 frames and vmapped, each video must reproduce its own unbatched soft solve
    # (and so the reference) to float64 rounding, with its own iteration count (tol > 0, so the
    # members stop at different iterations: 82, 80, 83). Measured: 1e-15 relative to the
    # unbatched solves, 6e-15 to the reference.
    cfg = CompletionConfig(tol=1e-6, max_iters=200, lambda_o=10.0)
    with jax.enable_x64(True):
        outs = complete_batch([s for s, _ in SEQS], [o for _, o in SEQS], cfg)
        singles = [complete(s, o, cfg) for s, o in SEQS]
        outs, singles = jax.tree.map(np.asarray, (outs, singles))
    iters = set()
    for (poses, _), got, one in zip(SEQS, outs, singles):
        scale = np.nanmax(np.abs(poses))
        assert got.X.dtype == np.float64 and got.X.shape == poses.shape
        np.testing.assert_allclose(got.X, one.X, rtol=0, atol=1e-8 * scale)
        np.testing.assert_allclose(got.E, one.E, rtol=0, atol=1e-8 * scale)
        assert int(got.iterations) == int(one.iterations) and bool(got.converged)
        iters.add(int(got.iterations))
    assert len(iters) > 1  # the test does exercise per-member stopping
    poses, observed = SEQS[1]
    want = ref.complete(poses, observed, cfg.replace(tol=0.0, max_iters=int(outs[1].iterations)))
    np.testing.assert_allclose(outs[1].X, want.X, rtol=0, atol=1e-8 * np.nanmax(np.abs(poses)))


def test_padded_array_batch_float32_zero_padding():
    cfg = CompletionConfig(tol=0.0, max_iters=30, lambda_o=10.0)
    poses = np.zeros((3, 23, 4, 3), np.float32)
    obs = np.zeros((3, 23, 4), bool)
    for i, (s, o) in enumerate(SEQS):
        poses[i, :len(s)], obs[i, :len(s)] = s, o
    out = jax.tree.map(np.asarray, complete_batch(poses, obs, cfg, lengths=[10, 17, 23]))
    assert np.all(out.X[0, 10:] == 0) and np.all(out.X[1, 17:] == 0)
    s, o = SEQS[1]
    one = np.asarray(complete(s, o, cfg).X)
    # float32 on ~1000 mm coordinates, 32 padded frames vs 17: the same iterates up to rounding
    # (measured max 1.6e-3 mm, 1.7e-6 relative; the float64 test above pins it to 1e-8).
    np.testing.assert_allclose(out.X[1, :len(s)], one, rtol=0, atol=1e-5 * np.nanmax(np.abs(s)))


def test_complete_long_does_not_reset_the_observed_entries():
    # Windows of 32 frames (overlap 8) of a 70-frame video: with the soft term the observed
    # entries are blended like the others, not reset to the input; the result stays near one
    # whole soft solve (each window sees less context).
    poses, observed = _problem(7, 70, 4, 0.3)
    cfg = CompletionConfig(max_iters=150, lambda_o=10.0)
    long = np.asarray(complete_long(poses, observed, cfg, window=32, overlap=8).X, np.float64)
    whole = np.asarray(complete(poses, observed, cfg).X, np.float64)
    obs3 = _obs3(observed, poses.shape)
    assert np.isfinite(long).all()
    assert np.abs(long - poses)[obs3].max() > 1.0  # mm: moved, not reset
    span = np.nanmax(np.abs(poses - np.nanmean(poses)))
    assert np.abs(long - whole).mean() < 0.05 * span


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_bad_lambda_o_raises(value):
    poses, observed = _problem(14, 10, 4, 0.3)
    cfg = CompletionConfig(lambda_o=value)
    with pytest.raises(ValueError, match="lambda_o"):
        cfg.validate()
    with pytest.raises(ValueError, match="lambda_o"):
        complete(poses, observed, cfg)
    with pytest.raises(ValueError, match="lambda_o"):
        ref.complete(poses, observed, cfg)
