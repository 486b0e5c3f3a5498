"""The importer: a PyTorch network of the princeton-vl stacked-hourglass layout (written here from
that layout, random weights and BatchNorm statistics) and the imported Flax Detector2D give the
same heatmaps on the same images."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hourglass_jax import importer, model

try:  # the reference network needs torch; without it only the key-table test runs
    import torch
except ImportError:  # not only ModuleNotFoundError: a wheel that cannot load means "skip" too
    torch = None
needs_torch = pytest.mark.skipif(
    torch is None, reason="torch is not installed: this test needs a PyTorch reference network "
    "(pip install torch, CPU wheel)")
if torch is not None:
    nn = torch.nn
    # One thread: the reference nets are tiny, and torch's thread pool fights JAX for the 2
    # cores (its first forward took ~10 s under load with the default threads, 0.03 s with one).
    torch.set_num_threads(1)


# ------------------------------------------- without torch: the layout's key table, both ways
_RESIDUAL = {"BatchNorm_0": "bn1", "Conv_0": "conv1.conv", "BatchNorm_1": "bn2",
             "Conv_1": "conv2.conv", "BatchNorm_2": "bn3", "Conv_2": "conv3.conv",
             "Conv_3": "skip_layer.conv"}
_LEAF = {("params", "kernel"): "weight", ("params", "bias"): "bias",
         ("params", "scale"): "weight", ("batch_stats", "mean"): "running_mean",
         ("batch_stats", "var"): "running_var"}


def _hourglass_key(p: tuple[str, ...], levels_left: int) -> str:
    """Key inside a PyTorch Hourglass for a Flax path inside one (written from the layout)."""
    if p[0] == "Hourglass_0":
        return "low2." + _hourglass_key(p[1:], levels_left - 1)
    names = (["up1", "low1", "low3"] if levels_left > 1 else ["up1", "low1", "low2", "low3"])
    return f"{names[int(p[0].split('_')[1])]}.{_RESIDUAL[p[1]]}"


def _torch_key(path: tuple[str, ...], depth: int) -> str:
    top = path[0]
    if top in ("Conv_0", "BatchNorm_0"):
        return {"Conv_0": "pre.0.conv", "BatchNorm_0": "pre.0.bn"}[top]
    if top.startswith("Residual_"):
        return f"pre.{(1, 3, 4)[int(top[-1])]}.{_RESIDUAL[path[1]]}"
    for prefix, name in (("head", "outs.{}.conv"),
                         ("reinject_features", "merge_features.{}.conv.conv"),
                         ("reinject_heatmaps", "merge_preds.{}.conv.conv")):
        if top.startswith(prefix):
            return name.format(top[len(prefix):])
    i, sub = top[len("stack"):], path[1]
    if sub == "Hourglass_0":
        return f"hgs.{i}.0.{_hourglass_key(path[2:], depth)}"
    if sub == "Residual_0":
        return f"features.{i}.0.{_RESIDUAL[path[2]]}"
    return f"features.{i}.1.{'conv' if sub == 'Conv_0' else 'bn'}"


def test_key_table_round_trip_without_torch():
    """Random Detector2D variables written out under the PyTorch layout's names (kernels as
    (out, in, kh, kw)), plus the entries PyTorch has and Flax does not use, import back exactly."""
    cfg = model.model_config("test")  # 2 stacks, hourglass depth 2
    shapes = jax.eval_shape(lambda: model.Detector2D(cfg).init(
        jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))  # shapes only: no compute
    rng = np.random.default_rng(0)
    variables = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32), shapes)
    state = {}
    for col in ("params", "batch_stats"):
        for path, leaf in jax.tree_util.tree_flatten_with_path(variables[col])[0]:
            names = tuple(k.key for k in path)
            key = f"{_torch_key(names[:-1], cfg.hourglass_depth)}.{_LEAF[(col, names[-1])]}"
            state[f"module.{key}"] = leaf.transpose(3, 2, 0, 1) if names[-1] == "kernel" else leaf
    # PyTorch keeps a skip conv in equal-width residuals (unused) and BatchNorm step counters.
    state["module.hgs.0.0.up1.skip_layer.conv.weight"] = np.ones((16, 16, 1, 1), np.float32)
    state["module.pre.0.bn.num_batches_tracked"] = np.zeros((), np.float32)
    got = importer.convert_state_dict(state, cfg)
    assert jax.tree.structure(got) == jax.tree.structure(jax.tree.map(np.asarray, variables))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(variables)):
        np.testing.assert_array_equal(a, b)
    # A key the layout does not have is reported, not ignored.
    state["module.outs.0.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"no place in the Flax detector.*outs\.0\.extra"):
        importer.convert_state_dict(state, cfg)


if torch is not None:  # the PyTorch layout (reference), written from its description
    class TConv(nn.Module):
        def __init__(self, cin, cout, k=3, stride=1, bn=False, relu=True):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, k, stride, padding=(k - 1) // 2, bias=True)
            self.bn = nn.BatchNorm2d(cout) if bn else None
            self.relu = nn.ReLU() if relu else None

        def forward(self, x):
            x = self.conv(x)
            if self.bn is not None:
                x = self.bn(x)
            return self.relu(x) if self.relu is not None else x


    class TResidual(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            half = cout // 2
            self.relu = nn.ReLU()
            self.bn1, self.conv1 = nn.BatchNorm2d(cin), TConv(cin, half, 1, relu=False)
            self.bn2, self.conv2 = nn.BatchNorm2d(half), TConv(half, half, 3, relu=False)
            self.bn3, self.conv3 = nn.BatchNorm2d(half), TConv(half, cout, 1, relu=False)
            self.skip_layer = TConv(cin, cout, 1, relu=False)  # present even when unused
            self.need_skip = cin != cout

        def forward(self, x):
            skip = self.skip_layer(x) if self.need_skip else x
            y = self.conv1(self.relu(self.bn1(x)))
            y = self.conv2(self.relu(self.bn2(y)))
            y = self.conv3(self.relu(self.bn3(y)))
            return y + skip


    class THourglass(nn.Module):
        def __init__(self, n, c):
            super().__init__()
            self.up1, self.pool1, self.low1 = TResidual(c, c), nn.MaxPool2d(2, 2), TResidual(c, c)
            self.low2 = THourglass(n - 1, c) if n > 1 else TResidual(c, c)
            self.low3 = TResidual(c, c)

        def forward(self, x):
            low = self.low3(self.low2(self.low1(self.pool1(x))))
            return self.up1(x) + nn.functional.interpolate(low, scale_factor=2, mode="nearest")


    class TMerge(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.conv = TConv(cin, cout, 1, relu=False)

        def forward(self, x):
            return self.conv(x)


    class TPoseNet(nn.Module):
        """PoseNet(nstack, inp_dim, oup_dim); stem widths (64, 128) at inp_dim 256, scaled here."""

        def __init__(self, nstack, c, joints, depth):
            super().__init__()
            c1, c2 = c // 4, c // 2
            self.nstack = nstack
            self.pre = nn.Sequential(TConv(3, c1, 7, 2, bn=True, relu=True), TResidual(c1, c2),
                                     nn.MaxPool2d(2, 2), TResidual(c2, c2), TResidual(c2, c))
            self.hgs = nn.ModuleList([nn.Sequential(THourglass(depth, c)) for _ in range(nstack)])
            self.features = nn.ModuleList([nn.Sequential(TResidual(c, c), TConv(c, c, 1, bn=True))
                                           for _ in range(nstack)])
            self.outs = nn.ModuleList([TConv(c, joints, 1, relu=False) for _ in range(nstack)])
            self.merge_features = nn.ModuleList([TMerge(c, c) for _ in range(nstack - 1)])
            self.merge_preds = nn.ModuleList([TMerge(joints, c) for _ in range(nstack - 1)])

        def forward(self, x):  # x (B, 3, H, W)
            x = self.pre(x)
            preds = []
            for i in range(self.nstack):
                feature = self.features[i](self.hgs[i](x))
                preds.append(self.outs[i](feature))
                if i < self.nstack - 1:
                    x = x + self.merge_preds[i](preds[-1]) + self.merge_features[i](feature)
            return torch.stack(preds, 1)  # (B, S, J, h, w)


def _random_net(nstack: int, c: int, depth: int, seed: int) -> TPoseNet:
    torch.manual_seed(seed)
    net = TPoseNet(nstack, c, 16, depth)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics, so BN mapping matters
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def _cfg(nstack: int, c: int = 16, size: int = 64, depth: int = 4) -> model.ModelConfig:
    return model.ModelConfig(input_size=size, channels=c, depth_bins=4, hourglass_depth=depth,
                             num_2d_stacks=nstack)


@functools.lru_cache(maxsize=None)
def _apply_fn(cfg: model.ModelConfig):
    # jit, once per config: one compile is faster than op-by-op dispatch on 2 cores.
    return jax.jit(lambda v, x: model.Detector2D(cfg).apply(v, x, train=False)[0])


def _heatmaps(cfg: model.ModelConfig, variables, images: np.ndarray) -> jax.Array:
    return _apply_fn(cfg)(variables, jnp.asarray(images))


def _compare(net: TPoseNet, cfg: model.ModelConfig, images: np.ndarray) -> float:
    variables = importer.convert_state_dict(net.state_dict(), cfg)
    hm = _heatmaps(cfg, variables, images)
    with torch.no_grad():
        ref = net(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    ref = ref[:, :cfg.num_2d_stacks].transpose(1, 0, 3, 4, 2)  # -> (S, B, h, w, J)
    assert hm.shape == ref.shape
    return float(np.max(np.abs(np.asarray(hm) - ref)) / np.max(np.abs(ref)))


@needs_torch
def test_imported_stacks_give_the_pytorch_heatmaps():
    net = _random_net(2, 16, 4, seed=2)  # 2 stacks, hourglass depth 4 as published
    images = np.random.default_rng(0).uniform(0, 1, (2, 64, 64, 3)).astype(np.float32)
    assert _compare(net, _cfg(2), images) < 1e-4


@needs_torch
@pytest.mark.parametrize("nstack", [2, 8])
def test_every_weight_lands_in_place(nstack):
    """The imported network equals the PyTorch one: every conv,
    BatchNorm (with its running statistics), hourglass level, head and re-injection is mapped."""
    net = _random_net(nstack, 16, 2, seed=nstack)
    images = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
    assert _compare(net, _cfg(nstack, size=32, depth=2), images) < 1e-5


@needs_torch
def test_first_stacks_of_an_8_stack_checkpoint(tmp_path):
    net = _random_net(8, 16, 2, seed=3)
    path = tmp_path / "checkpoint.pt"
    # Saved as the PyTorch training script does: wrapped model, under "state_dict".
    torch.save({"epoch": 1, "state_dict": {f"model.module.{k}": v
                                           for k, v in net.state_dict().items()}}, path)
    cfg = _cfg(2, size=32, depth=2)
    variables = importer.import_checkpoint(path, cfg)
    images = np.random.default_rng(1).uniform(0, 1, (1, 32, 32, 3)).astype(np.float32)
    hm = _heatmaps(cfg, variables, images)
    with torch.no_grad():
        ref = net(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()[:, :2]
    ref = ref.transpose(1, 0, 3, 4, 2)
    assert float(np.max(np.abs(np.asarray(hm) - ref)) / np.max(np.abs(ref))) < 1e-5


@needs_torch
def test_published_layout_fills_the_paper_detector():
    """A 2-stack, 256-channel network (the published models' widths) maps onto the paper config's
    Detector2D: every Flax leaf gets a tensor of its shape."""
    torch.manual_seed(0)
    net = TPoseNet(2, 256, 16, 4)
    cfg = model.model_config("paper")
    variables = importer.convert_state_dict(net.state_dict(), cfg)
    want = jax.eval_shape(lambda: model.Detector2D(cfg).init(
        jax.random.key(0), jnp.zeros((1, 256, 256, 3)), train=False))
    assert jax.tree.structure(want) == jax.tree.structure(variables)
    assert all(a.shape == b.shape
               for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(variables)))
    # And into a VolumetricHourglass: only the detector changes.
    full = jax.eval_shape(lambda: model.VolumetricHourglass(cfg).init(
        jax.random.key(0), jnp.zeros((1, 256, 256, 3)), train=False))
    full = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), full)
    merged = importer.replace_detector(full, variables)
    assert merged["params"]["lifter"] is not None
    np.testing.assert_array_equal(merged["params"]["detector"]["head1"]["kernel"],
                                  variables["params"]["head1"]["kernel"])


@needs_torch
def test_bad_checkpoints_are_clear_errors(tmp_path):
    sd = _random_net(2, 16, 2, seed=0).state_dict()
    with pytest.raises(ValueError, match="checkpoint has 2 stacks, the config asks for 8"):
        importer.convert_state_dict(sd, _cfg(8, size=32, depth=2))
    with pytest.raises(ValueError, match=r"pre\.0\.conv\.weight has shape \(4, 3, 7, 7\), the Flax "
                                         r"model needs \(8, 3, 7, 7\)"):
        importer.convert_state_dict(sd, _cfg(2, c=32, size=32, depth=2))
    del sd["outs.1.conv.bias"]
    with pytest.raises(ValueError, match=r"missing key 'outs\.1\.conv\.bias'"):
        importer.convert_state_dict(sd, _cfg(2, size=32, depth=2))
    with pytest.raises(ValueError, match="no stacked-hourglass keys"):
        importer.convert_state_dict({"fc.weight": np.zeros(3)}, _cfg(2, size=32, depth=2))
    with pytest.raises(ValueError, match="missing checkpoint: expected a PyTorch file at"):
        importer.load_torch_state_dict(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a loadable PyTorch checkpoint"):
        importer.load_torch_state_dict(tmp_path / "junk.pt")


@needs_torch
def test_export_command_writes_a_loadable_detector(tmp_path, capsys):
    from hourglass_jax import export
    net = _random_net(2, 16, 2, seed=5)
    torch.save({"state_dict": net.state_dict()}, tmp_path / "c.pt")
    # The "test" preset with 16 channels, 32 px and depth 2 is the shape of this network.
    cfg = model.model_config("test")
    assert (cfg.channels, cfg.input_size, cfg.hourglass_depth) == (16, 32, 2)
    importer.main([str(tmp_path / "c.pt"), str(tmp_path / "out"), "--model", "test"])
    assert "imported 2 stacks" in capsys.readouterr().out
    module, got_cfg, variables = export.load_model(tmp_path / "out")
    assert got_cfg == cfg and isinstance(module, model.Detector2D)
    want = importer.convert_state_dict(net.state_dict(), cfg)
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(variables)):
        np.testing.assert_array_equal(a, b)
