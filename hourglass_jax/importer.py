"""Import the 2D stacks of a PyTorch stacked hourglass into the Flax `Detector2D` (model.py).

Source layout: the princeton-vl `pytorch_stacked_hourglass` PoseNet (MPII-pretrained checkpoints
with 2 or 8 stacks are published there). Its state-dict keys, for stack i:

  pre.0.conv / pre.0.bn            7x7/2 conv + BatchNorm (+ ReLU)     -> Conv_0, BatchNorm_0
  pre.1, pre.3, pre.4              Residual blocks (pre.2 is a pool)   -> Residual_0, _1, _2
  hgs.i.0.{up1,low1,low2,low3}     recursive Hourglass (low2 nests)    -> stack{i}/Hourglass_0
  features.i.0 / features.i.1      Residual + 1x1 conv-BN(-ReLU)       -> stack{i}/Residual_0,
                                                                   stack{i}/Conv_0, BatchNorm_0
  outs.i.conv                      1x1 heatmap head                    -> head{i}
  merge_features.i.conv.conv       1x1 re-injection of the features    -> reinject_features{i}
  merge_preds.i.conv.conv          1x1 re-injection of the heatmaps    -> reinject_heatmaps{i}

and each Residual holds bn1, conv1.conv, bn2, conv2.conv, bn3, conv3.conv and skip_layer.conv
(used only when the width changes) -> BatchNorm_0, Conv_0, BatchNorm_1, Conv_1, BatchNorm_2,
Conv_2, Conv_3. Conv weights (O, I, kh, kw) become kernels (kh, kw, I, O); BatchNorm weight/bias
-> scale/bias, running_mean/var -> batch_stats mean/var. Checkpoints as saved by its training
script (`{"state_dict": ...}`, keys prefixed with e.g. "model.module.") are accepted. Both
networks take RGB images in [0, 1] (the PyTorch test script divides by 255).

The first `num_2d_stacks` stacks of the checkpoint are imported (an 8-stack checkpoint can fill a
2-stack detector: the first k stacks of a stacked hourglass are a complete k-stack network).

Command line (writes a Detector2D export that hourglass_jax.export.load_model reads):
    python -m hourglass_jax.importer CHECKPOINT OUT_DIR [--model paper] [--stacks 2]

Known difference: model.py's 7x7/2 stem convolution pads "SAME", (2, 3) px, where the PyTorch
layout pads (3, 3); imported heatmaps differ by a few percent until model.py pads symmetrically
(tests/test_importer.py shows every other weight maps exactly).
"""
from __future__ import annotations

import os
import re
from typing import Any, Mapping

import numpy as np

from hourglass_jax.model import ModelConfig

_TOP_LEVEL = ("pre.", "hgs.", "features.", "outs.", "merge_features.", "merge_preds.")


class ImportErrorDetail(ValueError):
    """The state dict does not fit the asked Detector2D (names the key and the shapes)."""


def load_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A PyTorch checkpoint file -> {key: float32 array}, prefixes stripped (needs torch)."""
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise ValueError(f"missing checkpoint: expected a PyTorch file at {p}")
    try:
        import torch
    except ImportError as e:
        raise ValueError("reading a PyTorch checkpoint needs the `torch` package "
                         "(pip install torch; a CPU wheel is enough)") from e
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types
        raise ValueError(f"{p}: not a loadable PyTorch checkpoint ({e})") from e
    if isinstance(obj, Mapping) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{p}: expected a state dict (or {{'state_dict': ...}}), got "
                         f"{type(obj).__name__}")
    return normalise_keys({k: v.detach().cpu().numpy() for k, v in obj.items()
                           if hasattr(v, "detach")})


def normalise_keys(state: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Strip wrapper prefixes ("module.", "model.module.", ...) so keys start at `pre.`/`hgs.`."""
    out = {}
    for k, v in state.items():
        m = re.search(r"(?:^|\.)((?:pre|hgs|features|outs|merge_features|merge_preds)\..*)$", k)
        if m:
            out[m.group(1)] = np.asarray(v, np.float32)
    if not out:
        raise ImportErrorDetail("no stacked-hourglass keys (pre.*, hgs.*, outs.*, ...) in the "
                                f"state dict; its first keys are {list(state)[:5]}")
    return out


def count_stacks(state: Mapping[str, np.ndarray]) -> int:
    """Number of stacks in a (normalised) state dict."""
    ids = {int(k.split(".")[1]) for k in state if k.startswith("outs.")}
    return max(ids) + 1 if ids else 0


class _Builder:
    """Collects Flax params / batch_stats from torch keys, checking shapes."""

    def __init__(self, state: Mapping[str, np.ndarray]):
        self.state = state
        self.used: set[str] = set()
        self.params: dict = {}
        self.stats: dict = {}

    def _take(self, key: str) -> np.ndarray:
        if key not in self.state:
            raise ImportErrorDetail(f"missing key {key!r} in the PyTorch state dict")
        self.used.add(key)
        return self.state[key]

    @staticmethod
    def _put(tree: dict, path: tuple[str, ...], leaf: str, value: np.ndarray) -> None:
        for p in path:
            tree = tree.setdefault(p, {})
        tree[leaf] = value

    def conv(self, key: str, path: tuple[str, ...], cin: int, cout: int, k: int) -> None:
        w = self._take(f"{key}.weight")
        if w.shape != (cout, cin, k, k):
            raise ImportErrorDetail(f"{key}.weight has shape {w.shape}, the Flax model needs "
                                    f"{(cout, cin, k, k)} (out, in, kh, kw)")
        self._put(self.params, path, "kernel", np.ascontiguousarray(w.transpose(2, 3, 1, 0)))
        self._put(self.params, path, "bias", self._take(f"{key}.bias"))

    def bn(self, key: str, path: tuple[str, ...], c: int) -> None:
        vals = {n: self._take(f"{key}.{n}") for n in ("weight", "bias", "running_mean",
                                                      "running_var")}
        for n, v in vals.items():
            if v.shape != (c,):
                raise ImportErrorDetail(f"{key}.{n} has shape {v.shape}, expected ({c},)")
        self._put(self.params, path, "scale", vals["weight"])
        self._put(self.params, path, "bias", vals["bias"])
        self._put(self.stats, path, "mean", vals["running_mean"])
        self._put(self.stats, path, "var", vals["running_var"])

    def residual(self, key: str, path: tuple[str, ...], cin: int, cout: int) -> None:
        half = cout // 2
        self.bn(f"{key}.bn1", path + ("BatchNorm_0",), cin)
        self.conv(f"{key}.conv1.conv", path + ("Conv_0",), cin, half, 1)
        self.bn(f"{key}.bn2", path + ("BatchNorm_1",), half)
        self.conv(f"{key}.conv2.conv", path + ("Conv_1",), half, half, 3)
        self.bn(f"{key}.bn3", path + ("BatchNorm_2",), half)
        self.conv(f"{key}.conv3.conv", path + ("Conv_2",), half, cout, 1)
        if cin != cout:
            self.conv(f"{key}.skip_layer.conv", path + ("Conv_3",), cin, cout, 1)

    def hourglass(self, key: str, path: tuple[str, ...], depth: int, c: int) -> None:
        self.residual(f"{key}.up1", path + ("Residual_0",), c, c)
        self.residual(f"{key}.low1", path + ("Residual_1",), c, c)
        if depth > 1:
            self.hourglass(f"{key}.low2", path + ("Hourglass_0",), depth - 1, c)
            self.residual(f"{key}.low3", path + ("Residual_2",), c, c)
        else:
            self.residual(f"{key}.low2", path + ("Residual_2",), c, c)
            self.residual(f"{key}.low3", path + ("Residual_3",), c, c)


def convert_state_dict(state: Mapping[str, Any], config: ModelConfig) -> dict[str, dict]:
    """A princeton-vl PoseNet state dict -> Detector2D variables {"params", "batch_stats"}.

    Args:
      state: torch state dict (tensors or arrays), any wrapper prefix.
      config: the Detector2D's config: channels = the checkpoint's inp_dim (256 for the published
        models), hourglass_depth 4, num_joints = its oup_dim (16), num_2d_stacks <= its stacks.
    Returns:
      {"params": ..., "batch_stats": ...} of float32 NumPy arrays, the tree Detector2D.init makes.
    Raises:
      ImportErrorDetail (a ValueError) naming the first key that is missing or mis-shaped.
    """
    st = normalise_keys(state)
    have = count_stacks(st)
    if config.num_2d_stacks > have:
        raise ImportErrorDetail(f"the checkpoint has {have} stacks, the config asks for "
                                f"{config.num_2d_stacks}")
    c, j = config.channels, config.num_joints
    c1, c2 = max(c // 4, 2), max(c // 2, 2)  # Detector2D's stem widths (64, 128 for C = 256)
    b = _Builder(st)
    b.conv("pre.0.conv", ("Conv_0",), 3, c1, 7)
    b.bn("pre.0.bn", ("BatchNorm_0",), c1)
    b.residual("pre.1", ("Residual_0",), c1, c2)
    b.residual("pre.3", ("Residual_1",), c2, c2)
    b.residual("pre.4", ("Residual_2",), c2, c)
    for i in range(config.num_2d_stacks):
        s = f"stack{i}"
        b.hourglass(f"hgs.{i}.0", (s, "Hourglass_0"), config.hourglass_depth, c)
        b.residual(f"features.{i}.0", (s, "Residual_0"), c, c)
        b.conv(f"features.{i}.1.conv", (s, "Conv_0"), c, c, 1)
        b.bn(f"features.{i}.1.bn", (s, "BatchNorm_0"), c)
        b.conv(f"outs.{i}.conv", (f"head{i}",), c, j, 1)
        if i + 1 < config.num_2d_stacks:
            b.conv(f"merge_features.{i}.conv.conv", (f"reinject_features{i}",), c, c, 1)
            b.conv(f"merge_preds.{i}.conv.conv", (f"reinject_heatmaps{i}",), j, c, 1)
    # Keys left over must be ones the Flax model has no use for: skip layers of equal-width
    # residuals (never applied by PyTorch either) and stacks beyond num_2d_stacks.
    extra = [k for k in st if k not in b.used and ".skip_layer." not in k
             and not k.endswith("num_batches_tracked")
             and not _beyond(k, config.num_2d_stacks)]
    if extra:
        raise ImportErrorDetail(f"{len(extra)} state-dict entries have no place in the Flax "
                                f"detector (different layout?): {extra[:5]}")
    return {"params": b.params, "batch_stats": b.stats}


def _beyond(key: str, stacks: int) -> bool:
    parts = key.split(".")
    if parts[0] in ("hgs", "features", "outs"):
        return int(parts[1]) >= stacks
    if parts[0] in ("merge_features", "merge_preds"):
        return int(parts[1]) >= stacks - 1
    return False


def import_checkpoint(path: str | os.PathLike, config: ModelConfig) -> dict[str, dict]:
    """Detector2D variables from a PyTorch checkpoint file (see convert_state_dict)."""
    return convert_state_dict(load_torch_state_dict(path), config)


def replace_detector(variables: Mapping[str, Any], imported: Mapping[str, Any]) -> dict:
    """A VolumetricHourglass's variables with the "detector" subtrees replaced by `imported`.

    The shapes must match the existing detector exactly (same ModelConfig); the lifter is kept.
    """
    import jax

    out = {k: dict(v) for k, v in variables.items()}
    for col in ("params", "batch_stats"):
        old = variables[col]["detector"]
        new = imported[col]
        if jax.tree.structure(old) != jax.tree.structure(new):
            raise ImportErrorDetail(f"imported {col} do not have the detector's structure "
                                    "(another ModelConfig?)")
        for a, b_ in zip(jax.tree.leaves(old), jax.tree.leaves(new)):
            if np.shape(a) != np.shape(b_):
                raise ImportErrorDetail(f"imported {col} leaf of shape {np.shape(b_)} where "
                                        f"the detector has {np.shape(a)}")
        out[col]["detector"] = jax.tree.map(np.asarray, new)
    return out


def export_detector(checkpoint: str | os.PathLike, out_dir: str | os.PathLike,
                    config: ModelConfig) -> str:
    """Import a PyTorch checkpoint and write it as a Detector2D export (hourglass_jax.export),
    the form the experiment stages hand the pretrained 2D stacks on in; returns the path."""
    from hourglass_jax import export
    variables = import_checkpoint(checkpoint, config)
    return export.save_model(out_dir, "detector2d", config, variables)


def main(argv: list[str] | None = None) -> None:
    """`python -m hourglass_jax.importer CHECKPOINT OUT_DIR [--model paper] [--stacks 2]`."""
    import argparse
    import dataclasses

    from hourglass_jax.model import model_config
    parser = argparse.ArgumentParser(
        description="PyTorch stacked-hourglass checkpoint -> Flax Detector2D export")
    parser.add_argument("checkpoint", help="princeton-vl pytorch_stacked_hourglass checkpoint")
    parser.add_argument("out_dir", help="where to write the export (model_config.json, "
                                        "variables/)")
    parser.add_argument("--model", default="paper", help="model preset (model.model_config)")
    parser.add_argument("--stacks", type=int, default=2, help="2D stacks to import")
    args = parser.parse_args(argv)
    cfg = dataclasses.replace(model_config(args.model), num_2d_stacks=args.stacks)
    path = export_detector(args.checkpoint, args.out_dir, cfg)
    print(f"imported {args.stacks} stacks of {args.checkpoint} into {path}")


if __name__ == "__main__":
    main()
