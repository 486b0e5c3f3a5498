"""The training step on the real network (`model.py`, "test" preset) with the supervised loss."""
from __future__ import annotations

import jax
import numpy as np
import optax
import pytest

from hourglass_jax import mesh as M
from hourglass_jax import train
from hourglass_jax.model import Detector2D, VolumetricHourglass, model_config
from hourglass_jax.targets import gaussian_heatmaps, gaussian_volumes, heatmap_loss

CFG = model_config("test", bn_axis_name=M.DATA_AXIS)
B = 8


def _batch(seed: int) -> dict[str, np.ndarray]:
    rs = np.random.default_rng(seed)
    h, d = CFG.heatmap_size, CFG.depth_bins
    joints = rs.uniform(1, h - 2, size=(B, 16, 3)).astype(np.float32)
    joints[..., 2] = rs.uniform(0.5, d - 1.5, size=(B, 16))
    s = CFG.input_size
    return {"image": rs.uniform(0, 1, size=(B, s, s, 3)).astype(np.float32),
            "heatmaps2d": np.asarray(gaussian_heatmaps(joints[..., :2], h)),
            "volume": np.asarray(gaussian_volumes(joints, d, h))}


def loss_3d(outputs, batch):
    return heatmap_loss(outputs, {"volume": batch["volume"]}), {}


def loss_2d(outputs, batch):
    return heatmap_loss({"heatmaps2d": outputs[0]}, {"heatmaps2d": batch["heatmaps2d"]}), {}


def _steps(model, loss_fn, tx, state, n_devices, steps, **kw):
    mesh = M.make_data_mesh(n_devices)
    step = train.make_train_step(model, loss_fn, tx, mesh, **kw)
    state = train.place_state(state, mesh)
    for s in range(steps):
        state, metrics = step(state, M.shard_global_batch(_batch(s), mesh))
    return jax.device_get(state), float(metrics["loss"])


def _max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture(scope="module")
def variables():
    """The volumetric network's initial variables (initialising it is the slow part)."""
    model = VolumetricHourglass(CFG)
    # Eager: compiling the initialiser takes longer than running it op by op on CPU.
    return model.init(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32), train=False)


def _state(variables, tx, collection=None):
    pick = (lambda t: t) if collection is None else (lambda t: t[collection])
    params = pick(variables["params"])
    return train.TrainState(step=np.int32(0), params=params,
                            batch_stats=pick(variables["batch_stats"]), opt_state=tx.init(params),
                            rng=np.asarray(jax.random.key_data(jax.random.key(1))))


def test_volumetric_step_frozen_detector_eight_devices_equal_one(variables):
    """Same step (2D stacks frozen) on 1 and 8 devices. Plain SGD with lr 1 here, so that
    parameter differences are gradient differences: RMSprop's first steps are ~lr * sign(g),
    which turns float noise in the (mathematically zero) gradients of conv biases that feed a
    BatchNorm into full-size steps of either sign."""
    model = VolumetricHourglass(CFG)
    tx = optax.partition({"train": optax.sgd(1.0), "frozen": optax.set_to_zero()},
                         {"detector": "frozen", "lifter": "train"})
    state = _state(variables, tx)
    kw = dict(frozen=("detector",), apply_kwargs=dict(train_detector=False))
    one, l1 = _steps(model, loss_3d, tx, state, 1, 1, **kw)
    eight, l8 = _steps(model, loss_3d, tx, state, 8, 1, **kw)
    np.testing.assert_allclose(l1, l8, rtol=1e-5)
    assert _max_diff(one.params, eight.params) < 1e-5
    # Running variances reach ~30 here; E[x^2] - E[x]^2 in float32 summed in another order
    # differs by ~1e-5 relative.
    for a, b in zip(jax.tree.leaves(one.batch_stats), jax.tree.leaves(eight.batch_stats)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
    assert _max_diff(state.params["lifter"], eight.params["lifter"]) > 1e-3
    assert _max_diff(state.batch_stats["lifter"], eight.batch_stats["lifter"]) > 1e-3
    for frozen in (lambda s: s.params["detector"], lambda s: s.batch_stats["detector"]):
        for a, b in zip(jax.tree.leaves(frozen(state)), jax.tree.leaves(frozen(eight))):
            assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


def test_frozen_detector_rmsprop_keeps_no_moments(variables):
    tx = train.make_optimizer(train.FINETUNE_LR, frozen=("detector",))
    state = _state(variables, tx)
    assert train.count_leaves(state.opt_state) == train.count_leaves(state.params["lifter"])
    assert train.count_leaves(state.params)[1] > train.count_leaves(state.params["lifter"])[1]


def test_2d_pretraining_step_trains_everything_and_lowers_loss(variables):
    model = Detector2D(CFG)
    tx = train.make_optimizer(1e-3)
    state = _state(variables, tx, "detector")  # a Detector2D's variables
    mesh = M.make_data_mesh(8)
    step = train.make_train_step(model, loss_2d, tx, mesh)
    s = train.place_state(state, mesh)
    host = _batch(0)
    batch = M.shard_global_batch(host, mesh)
    losses = []
    for _ in range(6):  # the same batch: the loss must fall
        s, m = step(s, batch)
        losses.append(float(m["loss"]))
    # The heads start near zero, so the first loss is about that of predicting all zeros,
    # computed here independently (float64): the network must do clearly better.
    zeros_loss = CFG.num_2d_stacks * np.mean(host["heatmaps2d"].astype(np.float64) ** 2)
    assert losses[0] == pytest.approx(zeros_loss, rel=0.05)
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.75 * zeros_loss, (losses, zeros_loss)
    after = jax.device_get(s)
    moved = [float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
             for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(after.params))]
    assert min(moved) > 0.0
