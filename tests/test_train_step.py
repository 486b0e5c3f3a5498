"""The data-parallel training step: 8 devices == 1 device, frozen stacks, optimizer, bf16."""
from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import helpers_train as H
from hourglass_jax import mesh as M
from hourglass_jax import train

FROZEN_KW = dict(frozen=("detector",), apply_kwargs=dict(train_detector=False))


@functools.lru_cache(maxsize=None)
def _standard_run(frozen: bool, n_devices: int):
    """(initial state, state and metrics after 2 steps): the stand-in with RMSprop lr 1e-3,
    shared by several tests (each run compiles a step: the slow part on CPU)."""
    kw = FROZEN_KW if frozen else {}
    model, tx, state = H.init_state(frozen=kw.get("frozen", ()), lr=1e-3)
    return (jax.device_get(state),) + _run(state, model, tx, n_devices, steps=2, **kw)


def _run(state, model, tx, n_devices, steps=1, **kw):
    mesh = M.make_data_mesh(n_devices)
    step = train.make_train_step(model, H.loss_fn, tx, mesh, **kw)
    state = train.place_state(state, mesh)
    metrics = None
    for s in range(steps):
        state, metrics = step(state, M.shard_global_batch(H.make_batch(s), mesh))
    return jax.device_get(state), jax.device_get(metrics)


def _max_abs_diff(a, b):
    return max(jax.tree.leaves(jax.tree.map(
        lambda x, y: float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)))),
        a, b)))


@pytest.mark.parametrize("frozen", [False, True])
def test_eight_devices_equal_one_device(frozen):
    """Global batch 8 on 8 devices vs the same batch on 1 device: params, BatchNorm running
    statistics, optimizer state and loss agree to float32 rounding."""
    assert len(jax.devices()) == 8
    state, one, m1 = _standard_run(frozen, 1)
    _, eight, m8 = _standard_run(frozen, 8)
    np.testing.assert_allclose(m1["loss"], m8["loss"], rtol=1e-5)
    assert _max_abs_diff(one.batch_stats, eight.batch_stats) < 1e-5
    assert _max_abs_diff(one.params, eight.params) < 1e-5
    assert _max_abs_diff(one.opt_state, eight.opt_state) < 1e-6
    # The step did something measurable (else the comparison above would be vacuous).
    assert _max_abs_diff(state.params["lifter"], one.params["lifter"]) > 1e-4
    assert _max_abs_diff(state.batch_stats["lifter"], one.batch_stats["lifter"]) > 1e-3


def test_step_matches_float64_numpy_reference():
    """One step of a BatchNorm-free linear model on 8 devices equals a float64 NumPy
    computation of the global-batch gradient and Torch's RMSprop update."""
    import flax.linen as nn

    class Linear(nn.Module):
        @nn.compact
        def __call__(self, x, train):
            return {"pose": nn.Dense(3, use_bias=False, name="lifter")(x.reshape(x.shape[0], -1))}

    def loss_fn(out, batch):
        return jnp.mean((out["pose"] - batch["pose"]) ** 2), {}

    lr = 1e-2
    model = Linear()
    tx = train.make_optimizer(lr)
    state = train.create_train_state(model, tx, 0, np.zeros((1, 8, 8, 3), np.float32), train=False)
    mesh = M.make_data_mesh(8)
    step = train.make_train_step(model, loss_fn, tx, mesh)
    batches = [H.make_batch(0), H.make_batch(1)]
    s = train.place_state(state, mesh)
    for b in batches:
        s, _ = step(s, M.shard_global_batch(b, mesh))
    w = np.asarray(state.params["lifter"]["kernel"], np.float64)
    v = np.zeros_like(w)
    for b in batches:
        x = b["image"].reshape(8, -1).astype(np.float64)
        r = x @ w - b["pose"]
        g = 2.0 * x.T @ r / r.size  # d/dw mean((xw - y)^2) over the global batch
        v = 0.99 * v + 0.01 * g * g  # torch RMSprop, alpha 0.99, eps outside the sqrt
        w = w - lr * g / (np.sqrt(v) + 1e-8)
    np.testing.assert_allclose(np.asarray(s.params["lifter"]["kernel"]), w, rtol=1e-4, atol=1e-6)


def test_frozen_detector_bit_identical_and_no_moments():
    state, after, _ = _standard_run(True, 8)
    for a, b in zip(jax.tree.leaves(state.params["detector"]),
                    jax.tree.leaves(after.params["detector"])):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    for a, b in zip(jax.tree.leaves(state.batch_stats["detector"]),
                    jax.tree.leaves(after.batch_stats["detector"])):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    assert _max_abs_diff(state.params["lifter"], after.params["lifter"]) > 1e-3
    assert _max_abs_diff(state.batch_stats["lifter"], after.batch_stats["lifter"]) > 1e-3
    # Memory: the optimizer holds exactly one RMS accumulator per lifter parameter.
    n_opt, size_opt = train.count_leaves(state.opt_state)
    n_lift, size_lift = train.count_leaves(state.params["lifter"])
    n_all, size_all = train.count_leaves(state.params)
    assert (n_opt, size_opt) == (n_lift, size_lift) and size_all > size_lift
    # Unfrozen: one accumulator per parameter, and every subtree moves.
    state_all, after_all, _ = _standard_run(False, 8)
    assert train.count_leaves(state_all.opt_state) == (n_all, size_all)
    assert _max_abs_diff(state_all.params["detector"], after_all.params["detector"]) > 1e-3


def test_bf16_compute_runs_finite_with_float32_params():
    state, _, m32 = _standard_run(False, 8)
    model16, tx, _ = H.init_state(frozen=(), lr=1e-3, dtype=jnp.bfloat16)
    out16, m16 = _run(state, model16, tx, 8, steps=2)
    assert all(x.dtype == np.float32 for x in jax.tree.leaves(out16.params))
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(out16))
    # bf16 has an 8-bit mantissa: the loss agrees with float32 to a few percent.
    np.testing.assert_allclose(m16["loss"], m32["loss"], rtol=3e-2)
    assert _max_abs_diff(state.params, out16.params) > 1e-4


def test_eval_step_averages_over_devices():
    model = H.TwoStage()
    state = _standard_run(False, 8)[1]  # trained 2 steps: running stats are not the initial ones
    batch = H.make_batch(0)
    out = {}
    for n in (1, 8):
        mesh = M.make_data_mesh(n)
        ev = train.make_eval_step(
            model, lambda o, b: {"mse": jnp.mean((o["pose"] - b["pose"]) ** 2)}, mesh)
        out[n] = float(ev(train.place_state(state, mesh), M.shard_global_batch(batch, mesh))["mse"])
    pred = model.apply({"params": state.params, "batch_stats": state.batch_stats},
                       batch["image"], train=False)["pose"]
    want = np.mean((np.asarray(pred, np.float64) - batch["pose"]) ** 2)
    np.testing.assert_allclose([out[1], out[8]], [want, want], rtol=1e-5)


def test_bad_inputs_raise_value_error():
    state = _standard_run(False, 8)[0]
    mesh = M.make_data_mesh(8)
    with pytest.raises(ValueError, match="not divisible"):
        M.shard_global_batch(H.make_batch(0, batch_size=6), mesh)
    bad = H.make_batch(0)
    bad["image"][0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        train.check_batch(bad, 3)
    with pytest.raises(ValueError, match="batch size"):
        train.check_batch({"a": np.zeros((4, 2)), "b": np.zeros((3, 2))}, 0)
    with pytest.raises(ValueError, match="not in params"):
        train.make_optimizer(1e-3, frozen=("nope",)).init(state.params)
    with pytest.raises(ValueError, match="num_devices"):
        M.make_data_mesh(9)


def test_warns_when_batchnorm_is_not_synchronised():
    model, tx = H.TwoStage(), train.make_optimizer(1e-3)
    unsynced = H.TwoStage(bn_axis_name=None)
    with pytest.warns(UserWarning, match="bn_axis_name=None"):
        train.make_train_step(unsynced, H.loss_fn, tx, M.make_data_mesh(8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train.make_train_step(model, H.loss_fn, tx, M.make_data_mesh(8))
        train.make_train_step(unsynced, H.loss_fn, tx, M.make_data_mesh(1))


def test_clipped_rmsprop_clips_each_normalised_step():
    """`clipped_rmsprop` against a NumPy reference: Torch7 RMSprop whose per-parameter ratio
    g / (sqrt(v) + eps) is clipped to +-c before the rate; a large bound is plain `rmsprop`."""
    lr, c = 0.1, 3.0
    grads = ([0.3, -1e-6, 2.0], [0.1, 0.0, -1.0], [-0.2, 5.0, 0.0], [0.25, 4.0, -0.5])
    p0 = np.array([1.0, -2.0, 0.5])
    ref_p, v, clipped_any, unclipped_any = p0.copy(), np.zeros(3), False, False
    for g in map(np.asarray, grads):
        v = 0.99 * v + 0.01 * g * g
        ratio = g / (np.sqrt(v) + 1e-8)
        clipped_any |= bool(np.any(np.abs(ratio) > c))
        unclipped_any |= bool(np.any((np.abs(ratio) < c) & (ratio != 0)))
        ref_p = ref_p - lr * np.clip(ratio, -c, c)
    assert clipped_any and unclipped_any  # the sequence exercises both sides of the bound

    def run(tx):
        p = jnp.asarray(p0)
        st = tx.init(p)
        for g in grads:
            u, st = tx.update(jnp.array(g), st, p)
            p = optax.apply_updates(p, u)
        return np.asarray(p)

    np.testing.assert_allclose(run(train.clipped_rmsprop(lr, c)), ref_p, rtol=1e-6)
    # The first step's ratio is 1 / sqrt(0.01) = 10 for every nonzero gradient: a bound above
    # every ratio of this sequence leaves RMSprop unchanged.
    np.testing.assert_allclose(run(train.clipped_rmsprop(lr, 1e3)), run(train.rmsprop(lr)),
                               rtol=1e-6)
    np.testing.assert_allclose(run(train.make_optimizer(lr, max_normalised_step=c)), ref_p,
                               rtol=1e-6)
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="max_normalised_step"):
            train.clipped_rmsprop(lr, bad)
    with pytest.raises(ValueError, match="max_normalised_step"):
        train.make_optimizer(lr, max_normalised_step=-1.0)


def test_rmsprop_is_torch_rmsprop():
    """`rmsprop` follows torch.optim.RMSprop's formula (alpha 0.99, eps outside the sqrt)."""
    tx = train.rmsprop(0.1)
    p = jnp.array([1.0, -2.0, 0.5])
    st = tx.init(p)
    ref_p, v = np.array([1.0, -2.0, 0.5]), np.zeros(3)
    for g in ([0.3, -1e-6, 2.0], [0.1, 0.0, -1.0], [-0.2, 5.0, 0.0]):
        u, st = tx.update(jnp.array(g), st, p)
        p = optax.apply_updates(p, u)
        g = np.asarray(g)
        v = 0.99 * v + 0.01 * g * g
        ref_p = ref_p - 0.1 * g / (np.sqrt(v) + 1e-8)
    np.testing.assert_allclose(np.asarray(p), ref_p, rtol=1e-6)


def test_state_from_trained_variables_equals_an_initialised_state_given_them():
    """Starting from a trained network's variables (NumPy, as `export.load_model` returns them)
    gives the state `create_train_state` gives once its variables are swapped for those: the
    same variables, a zero step, a fresh (zero) RMS accumulator and the seed's step RNG."""
    model, tx, state = H.init_state(frozen=("detector",), seed=4)
    trained = jax.tree.map(lambda x: np.asarray(x) + 0.5,
                           {"params": state.params, "batch_stats": state.batch_stats})
    fresh = train.train_state_from_variables(trained, tx, seed=4)
    expected = state.replace(params=jax.tree.map(jnp.asarray, trained["params"]),
                             batch_stats=jax.tree.map(jnp.asarray, trained["batch_stats"]))
    assert jax.tree.structure(fresh) == jax.tree.structure(expected)
    for got, want in zip(jax.tree.leaves(fresh), jax.tree.leaves(expected)):
        assert isinstance(got, jax.Array) and got.dtype == want.dtype
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert int(fresh.step) == 0
    assert all(not np.any(np.asarray(x)) for x in jax.tree.leaves(fresh.opt_state))
