"""The Eq. 1 solver: building blocks, equality with the NumPy reference, convergence, quality,
scale, transformations, bad input."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from completion import CompletionConfig, complete, interpolate, ops, solve
from completion import reference as ref
from completion import alm
from completion.alm import free_slots, per_joint_if_equal
from helpers_jaxpr import dot_precisions


def _problem(seed, f, p, hide, nan_frac=0.5):
    """Random-walk poses in mm with a random hidden set; some hidden entries are NaN."""
    rng = np.random.default_rng(seed)
    poses = rng.normal(size=(f, p, 3)).cumsum(0) * 50.0 + 1000.0
    observed = rng.random((f, p)) > hide
    observed[0, 0] = True
    hidden = ~observed
    nan = hidden & (rng.random((f, p)) < nan_frac)
    poses[nan] = np.nan
    return poses, observed


# ---------------------------------------------------------------- building blocks (ops.py)

@pytest.fixture
def float32_products():
    """The building blocks follow their caller's matmul precision, and JAX's default rounds
    float32 products to TensorFloat32 on recent GPUs (these tests then missed their float64
    references by up to 5% on an H200); `alm` sets CompletionConfig.matmul_precision for them."""
    with jax.default_matmul_precision("highest"):
        yield


@pytest.mark.usefixtures("float32_products")
@pytest.mark.parametrize("shape", [(6, 9), (9, 6)])
def test_svt_eigh_equals_svd_definition(shape):
    a = np.random.default_rng(0).normal(size=shape)
    u, s, vt = np.linalg.svd(a, full_matrices=False)
    tau = np.median(s)
    want = (u * np.maximum(s - tau, 0)) @ vt
    for method in ("eigh", "svd"):
        got, nuc = ops.svt(jnp.asarray(a, jnp.float32), tau, method)
        np.testing.assert_allclose(got, want, atol=1e-5)
        np.testing.assert_allclose(nuc, np.maximum(s - tau, 0).sum(), rtol=1e-5)


def test_shrink_closed_form():
    a = jnp.array([-3.0, -0.5, 0.0, 0.5, 3.0])
    np.testing.assert_array_equal(ops.shrink(a, 1.0), [-2.0, 0.0, 0.0, 0.0, 2.0])


def test_path_laplacian_is_d_dt_and_decouples_padding():
    f = 7
    valid = np.array([1, 1, 1, 1, 1, 0, 0], bool)
    d = np.zeros((f, f - 1))
    for t in range(4):  # only differences between two valid frames
        d[t, t], d[t + 1, t] = -1, 1
    np.testing.assert_array_equal(ops.path_laplacian(jnp.asarray(valid)), d @ d.T)
    x = np.random.default_rng(1).normal(size=(3, f))
    np.testing.assert_allclose(ops.temporal_diff(jnp.asarray(x), jnp.asarray(valid)), x @ d,
                               atol=1e-6)


@pytest.mark.usefixtures("float32_products")
def test_woodbury_b_update_equals_direct_solve():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(6, 20)) * 5  # large X^T X: where plain Woodbury cancels in float32
    rhs = rng.normal(size=(20, 20))
    want = np.linalg.solve(np.eye(20) + x.T @ x, rhs)
    got = ops.woodbury_b_update(jnp.asarray(x, jnp.float32), jnp.asarray(rhs, jnp.float32))
    np.testing.assert_allclose(got, want, atol=2e-5 * np.abs(want).max())


_solve_x = jax.jit(ops.constrained_spd_solve_right)  # one compile, not one per eager op


def _constrained_problem(seed=3, f=9, groups=2):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(f, f))
    m = a @ a.T + f * np.eye(f)
    rhs = rng.normal(size=(3 * groups, f))
    fixed = rng.normal(size=(3 * groups, f))
    free = rng.random((groups, f)) > 0.4  # groups of 3 rows sharing a mask
    return m, rhs, fixed, free


def _constrained_want(m, rhs, fixed, free):
    want = fixed.copy()
    for r in range(rhs.shape[0]):
        h = free[r // 3]
        # Stationarity of x M x^T / 2 - rhs x^T over the free entries, the others held.
        want[r, h] = np.linalg.solve(m[np.ix_(h, h)], rhs[r, h] - fixed[r, ~h] @ m[np.ix_(~h, h)])
    return want


@pytest.mark.usefixtures("float32_products")
@pytest.mark.parametrize("slots", ["F", "tight", "tight+2"])
def test_constrained_solve_equals_per_row_dense_solve(slots):
    m, rhs, fixed, free = _constrained_problem(f=12, groups=3)
    free[1] = False  # a group with nothing free: its rows come back as given
    tight = int(free.sum(1).max())
    assert tight < 12  # the packed solve really is smaller than F here
    index = {"F": None, "tight": ops.free_index(jnp.asarray(free), tight),
             "tight+2": ops.free_index(jnp.asarray(free), tight + 2)}[slots]
    got = np.asarray(_solve_x(jnp.asarray(rhs), jnp.asarray(m), jnp.asarray(free),
                              jnp.asarray(fixed), index))
    np.testing.assert_allclose(got, _constrained_want(m, rhs, fixed, free), atol=1e-5)


@pytest.mark.usefixtures("float32_products")
def test_constrained_solve_with_too_few_slots_gives_nan_not_a_wrong_answer():
    m, rhs, fixed, free = _constrained_problem(f=10, groups=2)
    free[0] = [True] * 6 + [False] * 4
    free[1] = [True] * 2 + [False] * 8
    index = ops.free_index(jnp.asarray(free), 4)
    np.testing.assert_array_equal(index.overflow, [True, False])
    got = np.asarray(_solve_x(jnp.asarray(rhs), jnp.asarray(m), jnp.asarray(free),
                              jnp.asarray(fixed), index))
    assert np.isnan(got[:3, :4]).all()  # group 0 (rows 0-2): 6 free frames, 4 slots
    np.testing.assert_allclose(got[3:], _constrained_want(m, rhs, fixed, free)[3:], atol=1e-5)


def test_free_index_packs_free_frames_in_time_order():
    free = np.array([[0, 1, 0, 1, 1, 0], [0, 0, 0, 0, 0, 0]], bool)
    index = ops.free_index(jnp.asarray(free), 4)
    np.testing.assert_array_equal(index.idx[0, :3], [1, 3, 4])
    np.testing.assert_array_equal(index.ok, [[1, 1, 1, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(index.target, [[1, 3, 4, 6], [6, 6, 6, 6]])  # 6 = F: dropped
    with pytest.raises(ValueError, match="size"):
        ops.free_index(jnp.asarray(free), 7)


def test_free_slots_rounds_the_largest_free_count_up_to_16():
    free = np.zeros((3, 40), bool)
    free[0, :3], free[1, :17] = True, True
    assert free_slots(free) == 32
    assert free_slots(free[:, :20]) == 20  # capped at F
    assert free_slots(np.zeros((2, 40), bool)) == 1  # nothing free: one (unused) slot
    batch = np.zeros((2, 3, 50), bool)
    batch[1, 2, :33] = True
    assert free_slots(batch) == 48  # the maximum over every leading axis


def test_per_joint_mask_used_only_when_x_y_z_agree():
    rng = np.random.default_rng(8)
    joint = rng.random((6, 3)) > 0.5  # (F, P) with P = 3: must not be mistaken for x, y, z
    np.testing.assert_array_equal(per_joint_if_equal(joint, 3), joint)
    same = np.repeat(joint[..., None], 3, axis=-1)
    np.testing.assert_array_equal(per_joint_if_equal(same, 3), joint)
    batched = np.repeat(same[None], 2, axis=0)  # (N, F, P, 3) with poses (N, F, P, 3)
    np.testing.assert_array_equal(per_joint_if_equal(batched, 4), np.repeat(joint[None], 2, 0))
    differ = same.copy()
    differ[2, 1, 0] = ~differ[2, 1, 0]
    assert per_joint_if_equal(differ, 3) is differ


def test_packed_x_step_equals_full_size_under_an_outer_jit():
    """Traced masks (outer jit) get the full F x F X step; concrete masks the packed one (16
    slots here, F = 32): the same iterates to float64 rounding."""
    rng = np.random.default_rng(9)
    r_, f = 6, 32
    s = rng.normal(size=(r_, 3)) @ rng.normal(size=(3, f))
    mask = rng.random((r_, f)) > 0.25
    assert free_slots(~mask) < f
    cfg = CompletionConfig(tol=0.0, max_iters=20)
    with jax.enable_x64(True):
        args = (jnp.asarray(s), jnp.asarray(mask), jnp.asarray(np.where(mask, s, 0.0)))
        packed = solve(*args, cfg)
        full = jax.jit(lambda a, b, c: solve(a, b, c, cfg))(*args)
        np.testing.assert_allclose(packed.X, full.X, rtol=0, atol=1e-9)
        np.testing.assert_allclose(packed.B, full.B, rtol=0, atol=1e-9)
    want = ref.solve(s, mask, np.where(mask, s, 0.0), cfg)
    np.testing.assert_allclose(np.asarray(packed.X), want.X, rtol=0, atol=1e-8)


def test_fill_linear_matches_np_interp():
    rng = np.random.default_rng(4)
    vals = rng.normal(size=(4, 15))
    known = rng.random((4, 15)) > 0.6
    known[3] = False  # a row with nothing known -> 0
    valid = np.ones(15, bool)
    valid[-2:] = False  # padding: ignored and zeroed
    got = np.asarray(ops.fill_linear(jnp.asarray(np.where(known, vals, np.nan)),
                                     jnp.asarray(known), jnp.asarray(valid)))
    t = np.arange(13)
    for r in range(3):
        k = known[r, :13]
        np.testing.assert_allclose(got[r, :13], np.interp(t, t[k], vals[r, :13][k]), atol=1e-6)
    np.testing.assert_array_equal(got[3], 0.0)
    np.testing.assert_array_equal(got[:, 13:], 0.0)


def test_interpolate_baseline_closed_form():
    poses = np.zeros((5, 1, 3))
    poses[:, 0, 0] = [0.0, np.nan, np.nan, 30.0, 99.0]
    obs = np.array([[True], [False], [False], [True], [False]])
    out = interpolate(poses, obs)
    np.testing.assert_allclose(out[:, 0, 0], [0.0, 10.0, 20.0, 30.0, 30.0])


# ---------------------------------------------------------------- equal to the reference

CASES = [  # (seed, F, P, hidden fraction, config changes)
    (1, 30, 5, 0.5, dict(lambda_d=1.0, lambda_c=0.3, lambda_e=2.0)),
    (2, 40, 4, 0.1, dict(lambda_d=30.0, lambda_c=3.0, lambda_e=0.1, svt="svd", center="axis")),
]


@pytest.mark.parametrize("seed,f,p,hide,changes", CASES)
def test_jax_float32_equals_float64_reference(seed, f, p, hide, changes):
    poses, observed = _problem(seed, f, p, hide)
    if seed == 2:  # a per-coordinate (F, P, 3) mask: the X step's one-factor-per-row path
        observed = observed[..., None] & (np.random.default_rng(seed).random((f, p, 3)) > 0.2)
        observed[0, 0] = True
    cfg = CompletionConfig(**changes).replace(tol=0.0, max_iters=40)  # same iteration count
    got = complete(poses, observed, cfg)
    want = ref.complete(poses, observed, cfg)
    assert int(got.iterations) == want.iterations == 40
    span = np.nanmax(np.abs(poses - np.nanmean(poses)))
    np.testing.assert_allclose(got.X, want.X, atol=1e-4 * span)
    np.testing.assert_allclose(got.E, want.E, atol=1e-4 * span)
    np.testing.assert_allclose(got.residuals, want.residuals, rtol=1e-2, atol=1e-6)
    np.testing.assert_allclose(got.objective, want.objective, rtol=1e-4)


def test_jax_float64_matches_reference_to_convergence():
    poses, observed = _problem(5, 24, 4, 0.3)
    cfg = CompletionConfig(tol=1e-8, max_iters=400)
    with jax.enable_x64(True):
        got = complete(poses, observed, cfg)
        assert got.X.dtype == jnp.float64
        got = jax.tree.map(np.asarray, got)
    want = ref.complete(poses, observed, cfg)
    assert want.converged and bool(got.converged)
    assert int(got.iterations) == want.iterations
    np.testing.assert_allclose(got.X, want.X, rtol=0, atol=1e-7 * np.nanmax(np.abs(poses)))
    # Nuclear norms via the Gram matrix: sqrt(eps)-level error on tiny singular values.
    np.testing.assert_allclose(got.objective, want.objective, rtol=1e-7)


# ---------------------------------------------------------------- convergence properties

def test_constraints_hold_at_convergence_on_matrices():
    rng = np.random.default_rng(6)
    r_, f = 9, 25
    s = rng.normal(size=(r_, 2)) @ rng.normal(size=(2, f))
    mask = rng.random((r_, f)) > 0.3
    x0 = np.where(mask, s, 0.0)
    cfg = CompletionConfig()
    out = solve(jnp.asarray(s, jnp.float32), jnp.asarray(mask), jnp.asarray(x0, jnp.float32), cfg)
    assert bool(out.converged) and int(out.iterations) < cfg.max_iters
    x, b, c, e, xs = (np.asarray(a, np.float64) for a in (out.X, out.B, out.C, out.E, out.X_sharp))
    np.testing.assert_array_equal(np.asarray(out.X)[mask], s.astype(np.float32)[mask])
    norm_s = np.linalg.norm(np.where(mask, s.astype(np.float32), 0))
    # Recomputed here from the returned variables, not taken from the solver's own report.
    assert np.linalg.norm(x - x @ b - e) / norm_s < cfg.tol * 1.5
    assert np.linalg.norm(b - c) / np.sqrt(f) < cfg.tol * 1.5
    assert np.linalg.norm(x - xs) / norm_s < cfg.tol * 1.5


def test_observed_entries_exact_in_mm_and_no_convergence_is_reported():
    poses, observed = _problem(7, 20, 16, 0.3)
    out = complete(poses, observed, CompletionConfig(max_iters=3))
    assert not bool(out.converged) and int(out.iterations) == 3
    obs3 = np.broadcast_to(observed[..., None], poses.shape)
    np.testing.assert_array_equal(np.asarray(out.X)[obs3], poses.astype(np.float32)[obs3])
    assert np.isfinite(np.asarray(out.X)).all()


# ---------------------------------------------------------------- quality on low-rank smooth data

def test_low_rank_smooth_with_outliers_completed_much_better_than_input():
    rng = np.random.default_rng(8)
    f, p = 80, 8
    t = np.linspace(0, 2 * np.pi, f)
    basis = np.stack([np.sin(t), np.cos(t), np.sin(2 * t)])  # rank 3, smooth
    truth = ((rng.normal(size=(3 * p, 3)) * 300) @ basis).T.reshape(f, p, 3) + 500.0
    observed = rng.random((f, p, 3)) > 0.3  # 30% hidden
    pred = truth.copy()
    # Hidden entries: wrong predictions (what a network outputs under low confidence).
    pred[~observed] += rng.normal(size=(~observed).sum()) * 200.0
    outlier = observed & (rng.random((f, p, 3)) < 0.05)  # 5% gross outliers, kept confident
    pred[outlier] += rng.choice([-1, 1], outlier.sum()) * 1000.0
    out = complete(pred, observed)
    assert bool(out.converged)
    x = np.asarray(out.X, np.float64)
    hidden = ~observed
    err_in = np.abs(pred - truth)[hidden].mean()
    err_out = np.abs(x - truth)[hidden].mean()
    err_int = np.abs(interpolate(pred, observed) - truth)[hidden].mean()
    print(f"hidden entries, mean abs error: input {err_in:.1f} mm, interpolation "
          f"{err_int:.1f} mm, completion {err_out:.1f} mm (ratio {err_out / err_in:.3f})")
    # Measured with the defaults: input 167.2, interpolation 47.9, completion 45.2 mm (0.27).
    assert err_out < 0.3 * err_in
    assert err_out < err_int
    # E flags the outliers: they carry most of the sparse error's mass.
    e = np.abs(np.asarray(out.E))
    assert e[outlier].mean() > 5 * e[observed & ~outlier].mean()


# ---------------------------------------------------------------- scale, jit, vmap

def test_mm_scale_handled_in_float32():
    # The same motion in metres and in mm (offset by 5 m): same completion up to units.
    poses, observed = _problem(9, 30, 6, 0.3, nan_frac=0.0)
    metres = complete(poses / 1000.0, observed)
    mm = complete(poses + 5000.0, observed)
    assert mm.X.dtype == jnp.float32
    assert np.isfinite(np.asarray(mm.X)).all() and bool(mm.converged)
    np.testing.assert_allclose(np.asarray(mm.X) - 5000.0, np.asarray(metres.X) * 1000.0,
                               atol=0.05)  # mm, on coordinates of ~1000 mm


def test_jit_and_vmap():
    cfg = CompletionConfig(max_iters=30)
    seqs = [_problem(s, 16, 4, 0.3, nan_frac=0.0) for s in (10, 11, 12)]
    poses = np.stack([s[0] for s in seqs]).astype(np.float32)
    obs = np.stack([s[1] for s in seqs])
    batched = jax.jit(jax.vmap(lambda p, o: complete(p, o, cfg)))(poses, obs)
    assert batched.X.shape == (3, 16, 4, 3)
    for i in range(3):
        single = complete(poses[i], obs[i], cfg)
        np.testing.assert_allclose(batched.X[i], single.X, atol=1e-2)  # mm
        assert int(batched.iterations[i]) == int(single.iterations)


@pytest.mark.parametrize("changes", [dict(), dict(svt="svd"), dict(lambda_o=5.0)])
def test_every_solver_product_carries_the_configured_matmul_precision(changes):
    # Checked where GPUs and TPUs read it (helpers_jaxpr): on each dot_general of the traced
    # solve. JAX's default (None here) lets a GPU round the factors to TensorFloat32.
    poses, observed = _problem(15, 12, 4, 0.3, nan_frac=0.0)
    valid = np.ones(12, bool)
    want = {"highest": (jax.lax.Precision.HIGHEST,) * 2,
            "tensorfloat32": (jax.lax.Precision.HIGH,) * 2, "default": None}
    for name, precision in want.items():
        cfg = CompletionConfig(max_iters=3, matmul_precision=name, **changes)
        jaxpr = jax.make_jaxpr(lambda p, o, v: alm.complete_core(p, o, v, cfg))(
            poses, observed, valid).jaxpr
        found = dot_precisions(jaxpr)
        assert len(found) >= 10, found  # the loop's products were reached
        assert all(p == precision for p in found), (name, set(found))


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("make,match", [
    (lambda p, o: (p[..., :2], o), "poses must be"),
    (lambda p, o: (p, o[:, :3]), "observed must be"),
    (lambda p, o: (p, o.astype(float)), "bool"),
    (lambda p, o: (p[:1], o[:1]), "F = 2"),
    (lambda p, o: (p, np.zeros_like(o)), "nothing observed"),
    (lambda p, o: (np.where(o[..., None], np.nan, p), o), "finite"),
])
def test_bad_input_raises(make, match):
    poses, observed = _problem(13, 10, 4, 0.3, nan_frac=0.0)
    p, o = make(poses, observed)
    with pytest.raises(ValueError, match=match):
        complete(p, o)


@pytest.mark.parametrize("field,value", [
    ("lambda_d", float("nan")), ("mu0", float("inf")), ("mu0", 0.0), ("rho", 0.5),
    ("tol", -1.0), ("max_iters", 0), ("svt", "qr"), ("lambda_e", -1.0),
    ("matmul_precision", "fastest"),
])
def test_bad_config_raises(field, value):
    poses, observed = _problem(14, 10, 4, 0.3, nan_frac=0.0)
    cfg = dataclasses.replace(CompletionConfig(), **{field: value})
    with pytest.raises(ValueError, match=field):
        complete(poses, observed, cfg)


def test_config_is_hashable_and_frozen():
    cfg = CompletionConfig()
    assert hash(cfg) == hash(CompletionConfig())
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lambda_d = 1.0  # type: ignore[misc]


def test_few_observed_entries_of_a_static_prediction_stay_finite():
    """One observed joint in a few frames of a nearly static pose (seen in real predictions of a
    weak network): the observed spread is ~0 while the other joints are hundreds of mm away.
    The completion must stay finite and keep the observed entries, as the reference does."""
    rng = np.random.default_rng(7)
    skeleton = rng.normal(scale=300.0, size=(1, 16, 3))
    poses = skeleton + rng.normal(scale=0.05, size=(18, 16, 3))
    observed = np.zeros((18, 16), bool)
    observed[[2, 9], 6] = True
    cfg = CompletionConfig(max_iters=300)
    out = complete(poses, observed, cfg)
    reference = ref.complete(poses, observed, cfg)
    assert np.isfinite(np.asarray(out.X)).all() and np.isfinite(reference.X).all()
    np.testing.assert_array_equal(np.asarray(out.X)[observed], poses[observed].astype(np.float32))
    np.testing.assert_allclose(np.asarray(out.X), reference.X, atol=1.0)
