"""The volumetric hourglass network: shapes, presets, frozen detector, transplantable variables."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hourglass_jax.model import (Detector2D, ModelConfig, Residual, VolumetricHourglass,
                                 model_config)

CFG = model_config("test")
B = 2


def _images(seed: int = 0, batch: int = B, size: int = CFG.input_size) -> jax.Array:
    return jax.random.uniform(jax.random.key(seed), (batch, size, size, 3))


@pytest.fixture(scope="module")
def full():
    model = VolumetricHourglass(CFG)
    variables = model.init(jax.random.key(1), _images(), train=False)
    return model, variables


def test_presets_and_bad_configs():
    assert model_config("tiny").heatmap_size == 16
    paper = model_config("paper")
    assert (paper.input_size, paper.channels, paper.depth_bins, paper.hourglass_depth,
            paper.heatmap_size) == (256, 256, 64, 4, 64)
    with pytest.raises(ValueError, match="known"):
        model_config("huge")
    with pytest.raises(ValueError, match="input_size"):
        ModelConfig(input_size=30, channels=16, depth_bins=4)
    with pytest.raises(ValueError, match="channels"):
        ModelConfig(input_size=32, channels=15, depth_bins=4)
    with pytest.raises(ValueError, match="2\\*\\*hourglass_depth"):
        ModelConfig(input_size=32, channels=16, depth_bins=4, hourglass_depth=4)  # 8 px maps
    with pytest.raises(ValueError, match="dtype"):
        ModelConfig(input_size=32, channels=16, depth_bins=4, hourglass_depth=2,
                    dtype=jnp.float16)
    # Static under jit: hashable and equal by value.
    assert hash(model_config("test")) == hash(CFG) and model_config("test") == CFG


def test_forward_shapes_and_variable_layout(full):
    model, variables = full
    assert set(variables) == {"params", "batch_stats"}
    assert set(variables["params"]) == {"detector", "lifter"}
    assert set(variables["batch_stats"]) == {"detector", "lifter"}
    out = model.apply(variables, _images(), train=False)
    h = CFG.heatmap_size
    assert out["heatmaps2d"].shape == (CFG.num_2d_stacks, B, h, h, 16)
    assert out["volume"].shape == (B, 16, CFG.depth_bins, h, h)
    assert out["volume"].dtype == jnp.float32
    assert np.all(np.isfinite(out["volume"]))
    # Images differ -> outputs differ (the volume really depends on the input).
    out2 = model.apply(variables, _images(seed=5), train=False)
    assert not np.allclose(out["volume"], out2["volume"])
    with pytest.raises(ValueError, match="images must be"):
        model.apply(variables, jnp.zeros((B, 16, 16, 3)), train=False)


def test_volume_channel_layout_is_joint_major(full):
    """Channel j * D + d of the lifter head is joint j, depth bin d (a 1x1 head is per-pixel)."""
    model, variables = full
    d = CFG.depth_bins
    kernel = variables["params"]["lifter"]["head"]["kernel"]
    # Zero every head weight, set the bias to the channel index: volume[b, j, z] = j * D + z.
    params = jax.tree_util.tree_map(lambda a: a, variables["params"])
    params["lifter"]["head"] = {"kernel": jnp.zeros_like(kernel),
                                "bias": jnp.arange(16 * d, dtype=jnp.float32)}
    vol = model.apply({**variables, "params": params}, _images(), train=False)["volume"]
    expect = (np.arange(16)[:, None] * d + np.arange(d)[None, :])[None, :, :, None, None]
    np.testing.assert_array_equal(np.asarray(vol), np.broadcast_to(expect, vol.shape))


def test_detector_variables_transplant(full):
    """A Detector2D trained alone drops into the full model unchanged."""
    model, variables = full
    det = Detector2D(CFG)
    dvars = det.init(jax.random.key(7), _images(), train=False)
    same_tree = jax.tree_util.tree_structure
    assert same_tree(dvars["params"]) == same_tree(variables["params"]["detector"])
    assert same_tree(dvars["batch_stats"]) == same_tree(variables["batch_stats"]["detector"])
    # Give the standalone detector non-trivial BatchNorm statistics (one training pass).
    _, upd = det.apply(dvars, _images(3), train=True, mutable=["batch_stats"])
    dvars = {"params": dvars["params"], "batch_stats": upd["batch_stats"]}
    merged = {
        "params": {**variables["params"], "detector": dvars["params"]},
        "batch_stats": {**variables["batch_stats"], "detector": dvars["batch_stats"]},
    }
    hm_alone, feats = det.apply(dvars, _images(4), train=False)
    assert feats.shape == (B, CFG.heatmap_size, CFG.heatmap_size, CFG.channels)
    out = model.apply(merged, _images(4), train=True, mutable=["batch_stats"])[0]
    np.testing.assert_array_equal(np.asarray(out["heatmaps2d"]), np.asarray(hm_alone))


def test_frozen_detector_gets_no_gradient_and_keeps_stats():
    # A shallower hourglass than CFG: two gradient compilations dominate this test's time.
    cfg = dataclasses.replace(CFG, hourglass_depth=1)
    model = VolumetricHourglass(cfg)
    images = _images(2)
    variables = model.init(jax.random.key(1), images, train=False)

    def loss(params, train_detector):
        out, upd = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                               images, train=True, train_detector=train_detector,
                               mutable=["batch_stats"])
        # Both outputs enter the loss: the heatmaps too must not leak gradient when frozen.
        return jnp.sum(out["volume"] ** 2) + jnp.sum(out["heatmaps2d"] ** 2), upd

    grad_fn = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)
    (_, upd), grads = grad_fn(variables["params"], False)
    for g in jax.tree_util.tree_leaves(grads["detector"]):
        assert np.all(np.asarray(g) == 0.0)
    assert any(np.any(np.asarray(g) != 0) for g in jax.tree_util.tree_leaves(grads["lifter"]))
    for new, old in zip(jax.tree_util.tree_leaves(upd["batch_stats"]["detector"]),
                        jax.tree_util.tree_leaves(variables["batch_stats"]["detector"])):
        np.testing.assert_array_equal(np.asarray(new), np.asarray(old))
    assert any(not np.array_equal(n, o) for n, o in zip(
        jax.tree_util.tree_leaves(upd["batch_stats"]["lifter"]),
        jax.tree_util.tree_leaves(variables["batch_stats"]["lifter"])))

    # train_detector=True: the detector learns and its statistics move.
    (_, upd), grads = grad_fn(variables["params"], True)
    assert any(np.any(np.asarray(g) != 0) for g in jax.tree_util.tree_leaves(grads["detector"]))
    assert any(not np.array_equal(n, o) for n, o in zip(
        jax.tree_util.tree_leaves(upd["batch_stats"]["detector"]),
        jax.tree_util.tree_leaves(variables["batch_stats"]["detector"])))


def test_freeze_batchnorm_trains_the_evaluated_function():
    # Fine-tuning with frozen BatchNorm: the train-mode output equals the eval-mode output, the
    # lifter's running statistics stay bit-identical, and its weights still get a gradient.
    cfg = dataclasses.replace(CFG, hourglass_depth=1)
    model = VolumetricHourglass(cfg)
    images = _images(2)
    variables = model.init(jax.random.key(2), images, train=False)
    # Running statistics away from their (0, 1) init, so batch and running normalisation differ.
    variables = {"params": variables["params"], "batch_stats": jax.tree_util.tree_map(
        lambda x: 1.5 * x + 0.01, variables["batch_stats"])}
    evaluated = model.apply(variables, images, train=False)["volume"]

    def loss(params):
        out, upd = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                               images, train=True, freeze_batchnorm=True, mutable=["batch_stats"])
        return jnp.sum(out["volume"] ** 2), (out["volume"], upd)

    (_, (trained, upd)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(
        variables["params"])
    np.testing.assert_allclose(np.asarray(trained), np.asarray(evaluated), rtol=1e-6, atol=1e-7)
    for new, old in zip(jax.tree_util.tree_leaves(upd["batch_stats"]),
                        jax.tree_util.tree_leaves(variables["batch_stats"])):
        np.testing.assert_array_equal(np.asarray(new), np.asarray(old))
    assert any(np.any(np.asarray(g) != 0) for g in jax.tree_util.tree_leaves(grads["lifter"]))
    # Without the freeze the same call normalises by the batch: a different function.
    unfrozen = model.apply(variables, images, train=True, mutable=["batch_stats"])[0]["volume"]
    assert not np.allclose(np.asarray(unfrozen), np.asarray(evaluated), atol=1e-5)


def test_bfloat16_compute_keeps_float32_params_and_outputs(full):
    ref_model, ref_vars = full
    model = VolumetricHourglass(dataclasses.replace(CFG, dtype=jnp.bfloat16))
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(1), _images(), train=False))
    assert {a.dtype for a in jax.tree_util.tree_leaves(shapes)} == {jnp.dtype(jnp.float32)}
    assert jax.tree_util.tree_structure(shapes) == jax.tree_util.tree_structure(ref_vars)
    out = model.apply(ref_vars, _images(), train=False)
    assert out["volume"].dtype == jnp.float32 and out["heatmaps2d"].dtype == jnp.float32
    # Same parameters in float32: bf16 has ~3 significant digits, so only loosely equal.
    ref = ref_model.apply(ref_vars, _images(), train=False)
    for key in ("volume", "heatmaps2d"):
        err = np.abs(np.asarray(out[key]) - np.asarray(ref[key]))
        assert err.max() < 0.05 * np.abs(np.asarray(ref[key])).max()  # measured ~0.01


def test_paper_config_shapes():
    cfg = model_config("paper")
    model = VolumetricHourglass(cfg)
    images = jax.ShapeDtypeStruct((2, 256, 256, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
    out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, images)
    assert out["volume"].shape == (2, 16, 64, 64, 64)
    assert out["heatmaps2d"].shape == (2, 2, 64, 64, 16)
    # The lifter head: 1x1 conv from 256 channels to 16 joints x 64 bins.
    assert variables["params"]["lifter"]["head"]["kernel"].shape == (1, 1, 256, 16 * 64)


def test_synchronised_batchnorm_matches_whole_batch():
    """With bn_axis_name, a batch split over devices normalises exactly like the whole batch."""
    n = 4
    if jax.device_count() < n:
        pytest.skip("needs 4 devices")
    cfg = dataclasses.replace(CFG, bn_axis_name="data")
    block_sync, block = Residual(8, cfg), Residual(8, CFG)
    x = jax.random.normal(jax.random.key(0), (n * 2, 4, 4, 6))
    variables = block.init(jax.random.key(1), x, train=False)
    ref, ref_upd = block.apply(variables, x, train=True, mutable=["batch_stats"])
    mesh = jax.make_mesh((n,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,),
                         devices=jax.devices()[:n])
    P = jax.sharding.PartitionSpec

    @jax.jit
    @jax.shard_map(mesh=mesh, in_specs=(P(), P("data")), out_specs=(P("data"), P()))
    def step(v, xs):
        return block_sync.apply(v, xs, train=True, mutable=["batch_stats"])

    sharding = jax.sharding.NamedSharding(mesh, P("data"))
    out, upd = step(variables, jax.device_put(x, sharding))
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(upd), jax.tree_util.tree_leaves(ref_upd)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_lifter_learns_to_place_joints():
    """A real learning check: with the detector frozen, the lifter fits the 3D targets of a few
    images well enough that the soft-argmax lands within a voxel of every joint."""
    import optax

    from hourglass_jax.softargmax import joint_confidence, local_softargmax
    from hourglass_jax.targets import gaussian_volumes, heatmap_loss

    cfg = dataclasses.replace(CFG, depth_bins=8, channels=32)
    model = VolumetricHourglass(cfg)
    images = _images(9, batch=4)
    h = cfg.heatmap_size
    rng = np.random.default_rng(0)
    coords = rng.uniform([1, 1, 1], [h - 2, h - 2, cfg.depth_bins - 2], size=(4, 16, 3))
    target = gaussian_volumes(jnp.asarray(coords), cfg.depth_bins, h)
    variables = model.init(jax.random.key(0), images, train=False)
    tx = optax.adam(2e-3)
    params, stats = variables["params"], variables["batch_stats"]
    opt = tx.init(params)

    @jax.jit
    def step(params, stats, opt):
        def loss_fn(p):
            out, upd = model.apply({"params": p, "batch_stats": stats}, images, train=True,
                                   mutable=["batch_stats"])
            return heatmap_loss(out, {"volume": target}), upd["batch_stats"]
        (loss, stats), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
        upd, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, upd), stats, opt, loss

    losses = []
    for _ in range(300):
        params, stats, opt, loss = step(params, stats, opt)
        losses.append(float(loss))
    assert losses[-1] < 0.02 * losses[0]
    vol = model.apply({"params": params, "batch_stats": stats}, images, train=True,
                      mutable=["batch_stats"])[0]["volume"]
    err = np.abs(np.asarray(local_softargmax(vol, 3)) - coords)
    # k = 3 on sigma-1 targets is biased by up to 0.23 voxel (see softargmax.py).
    assert np.median(err) < 0.2 and err.max() < 0.5  # voxels
    # The confidence separates fitted joints from guesses on images never seen (measured mean
    # 0.96 vs 0.71 with these seeds).
    variables = {"params": params, "batch_stats": stats}
    seen = joint_confidence(model.apply(variables, images, train=False)["volume"])
    unseen = joint_confidence(model.apply(variables, _images(123, batch=4), train=False)["volume"])
    assert float(jnp.mean(seen)) > 0.85 and float(jnp.mean(unseen)) < float(jnp.mean(seen)) - 0.1
