"""The volumetric stacked hourglass network (paper Sec. 3.1, Fig. 2), in Flax linen.

Architecture as described by Newell et al. (stacked hourglass, ECCV 2016) and Pavlakos et al.
(coarse-to-fine volumetric prediction, CVPR 2017), written from those papers' descriptions:

- pre-activation bottleneck residual blocks (BN-ReLU-conv1x1 C/2, BN-ReLU-conv3x3 C/2,
  BN-ReLU-conv1x1 C, plus a 1x1 projection on the skip path when the width changes);
- a stem that brings the image to 1/4 resolution (7x7/2 conv, residual, 2x2 max pool, residuals);
- recursive hourglasses (pool, residual, recurse, residual, nearest upsample, add the skip branch);
- per stack: hourglass, residual, 1x1 conv-BN-ReLU, 1x1 head; between stacks, Newell's
  intermediate re-injection `x + conv1x1(features) + conv1x1(heatmaps)`.

`Detector2D` holds the 2D stacks (trained on the 2D set, then frozen); `VolumetricHourglass` adds
the third, volumetric stack (`lifter`) whose head emits 16 * D channels reshaped to per-joint volumes
(B, 16, D, h, w). Images are channels-last (B, H, W, 3) floats in [0, 1].
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from hourglass_jax.skeleton import NUM_JOINTS


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Static network configuration (hashable, safe as a jit static argument).

    Attributes:
      input_size: side of the square input crop, px (divisible by 4).
      channels: feature width C of the hourglasses (even: the bottleneck uses C/2).
      num_joints: joints per person (16, MPII order).
      depth_bins: D, root-relative depth bins of the volumetric stack.
      hourglass_depth: number of 2x poolings inside each hourglass; heatmap_size must be divisible
        by 2**hourglass_depth.
      num_2d_stacks: stacks of the 2D detector (the volumetric stack comes on top).
      dtype: compute dtype (jnp.float32 or jnp.bfloat16); parameters are always float32, and the
        returned heatmaps and volumes are float32.
      bn_momentum: BatchNorm running-average momentum (flax convention: new = m*old + (1-m)*batch).
      bn_axis_name: when set, BatchNorm averages its batch statistics over this mapped axis
        (synchronised BatchNorm inside `jax.shard_map` over a ("data",) mesh), so a data-parallel
        step normalises exactly as one device with the whole batch would.
    """

    input_size: int
    channels: int
    depth_bins: int
    num_joints: int = NUM_JOINTS
    hourglass_depth: int = 4
    num_2d_stacks: int = 2
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9
    bn_axis_name: str | None = None

    def __post_init__(self) -> None:
        if self.input_size <= 0 or self.input_size % 4:
            raise ValueError(f"input_size must be a positive multiple of 4, got {self.input_size}")
        if self.channels < 2 or self.channels % 2:
            raise ValueError(f"channels must be an even number >= 2, got {self.channels}")
        if self.depth_bins < 1 or self.num_joints < 1 or self.num_2d_stacks < 1:
            raise ValueError(
                f"depth_bins, num_joints and num_2d_stacks must be >= 1, got {self.depth_bins}, "
                f"{self.num_joints}, {self.num_2d_stacks}")
        if self.hourglass_depth < 1 or self.heatmap_size % (2 ** self.hourglass_depth):
            raise ValueError(
                f"heatmap_size {self.heatmap_size} (input_size // 4) must be divisible by "
                f"2**hourglass_depth = {2 ** self.hourglass_depth}")
        if jnp.dtype(self.dtype) not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)):
            raise ValueError(f"dtype must be float32 or bfloat16, got {self.dtype}")

    @property
    def heatmap_size(self) -> int:
        """Side of the heatmaps and volumes, px at 1/4 of the input."""
        return self.input_size // 4


_PRESETS: dict[str, dict[str, Any]] = {
    # Smallest network that still has every part: 2 detector stacks (so the re-injection runs),
    # a 2-level hourglass, a few depth bins. For unit tests only.
    "test": dict(input_size=32, channels=16, depth_bins=4, hourglass_depth=2),
    # The CPU default: 64 px crops -> 16 px heatmaps; depth 3 leaves a 2x2 bottleneck.
    # DESIGN.md measured ~42 images/s for 3 stacks at 64 channels on 2 cores.
    "tiny": dict(input_size=64, channels=64, depth_bins=16, hourglass_depth=3),
    # Paper / c2f-vol: 256 px input, 256 channels, 64 x 64 x 64 volumes, hourglass depth 4.
    "paper": dict(input_size=256, channels=256, depth_bins=64, hourglass_depth=4),
}


def model_config(name: str, **overrides: Any) -> ModelConfig:
    """A preset `ModelConfig` ("test", "tiny" or "paper"), with optional field overrides."""
    if name not in _PRESETS:
        raise ValueError(f"unknown model config {name!r}; known: {sorted(_PRESETS)}")
    return ModelConfig(**{**_PRESETS[name], **overrides})


def _conv(features: int, kernel: int, cfg: ModelConfig, stride: int = 1, name: str | None = None,
          kernel_init: Any = nn.linear.default_kernel_init):
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding="SAME",
                   dtype=cfg.dtype, param_dtype=jnp.float32, kernel_init=kernel_init, name=name)


# Heatmap heads start near zero output (normal, std 1e-3, as Xiao et al.'s Simple Baselines
# initialise their final layer): targets are almost all zeros, and a default-initialised head
# starts with outputs of variance ~0.5, which L2 training spends many steps removing (measured:
# lifter overfitting 4 images reached 0.12 voxel median error in 100 Adam steps with this init,
# 0.3 voxel after 500 steps with the default one).
_HEAD_INIT = nn.initializers.normal(stddev=1e-3)


def _bn(cfg: ModelConfig, train: bool, name: str | None = None):
    return nn.BatchNorm(use_running_average=not train, momentum=cfg.bn_momentum, epsilon=1e-5,
                        dtype=cfg.dtype, param_dtype=jnp.float32, axis_name=cfg.bn_axis_name,
                        name=name)


class Residual(nn.Module):
    """Pre-activation bottleneck residual block: (B, h, w, Cin) -> (B, h, w, features)."""

    features: int
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        half = self.features // 2
        y = nn.relu(_bn(self.cfg, train)(x))
        y = _conv(half, 1, self.cfg)(y)
        y = nn.relu(_bn(self.cfg, train)(y))
        y = _conv(half, 3, self.cfg)(y)
        y = nn.relu(_bn(self.cfg, train)(y))
        y = _conv(self.features, 1, self.cfg)(y)
        skip = x if x.shape[-1] == self.features else _conv(self.features, 1, self.cfg)(x)
        return skip + y


class Hourglass(nn.Module):
    """Recursive hourglass of `depth` poolings: (B, h, w, C) -> (B, h, w, C)."""

    depth: int
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        c = self.cfg.channels
        up = Residual(c, self.cfg)(x, train)
        low = nn.max_pool(x, (2, 2), strides=(2, 2))
        low = Residual(c, self.cfg)(low, train)
        if self.depth > 1:
            low = Hourglass(self.depth - 1, self.cfg)(low, train)
        else:
            low = Residual(c, self.cfg)(low, train)
        low = Residual(c, self.cfg)(low, train)
        # Nearest-neighbour 2x upsampling.
        low = jnp.repeat(jnp.repeat(low, 2, axis=1), 2, axis=2)
        return up + low


class _StackBody(nn.Module):
    """Hourglass + residual + 1x1 conv-BN-ReLU: the features a stack's head reads."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        c = self.cfg.channels
        y = Hourglass(self.cfg.hourglass_depth, self.cfg)(x, train)
        y = Residual(c, self.cfg)(y, train)
        y = _conv(c, 1, self.cfg)(y)
        return nn.relu(_bn(self.cfg, train)(y))


def _check_images(images: jax.Array, cfg: ModelConfig) -> None:
    s = cfg.input_size
    if images.ndim != 4 or images.shape[1:] != (s, s, 3):
        raise ValueError(f"images must be (B, {s}, {s}, 3), got shape {images.shape}")


class Detector2D(nn.Module):
    """The 2D stacked hourglass detector (pretrained on 2D data, frozen in the 3D stages).

    __call__(images (B, H, W, 3) float in [0, 1], train) returns
      heatmaps: (S2, B, h, w, J) float32, one set of joint heatmaps per stack (intermediate
        supervision), h = w = input_size // 4;
      features: (B, h, w, C) in the compute dtype, the last stack's features (the input of its
        heatmap head), which the volumetric stack lifts.
    """

    config: ModelConfig

    @nn.compact
    def __call__(self, images: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
        cfg = self.config
        _check_images(images, cfg)
        c = cfg.channels
        # Stem widths follow Newell (64, 128 for C = 256), scaled with C.
        c1, c2 = max(c // 4, 2), max(c // 2, 2)
        x = images.astype(cfg.dtype)
        # Pads 3 px on every side as Newell's stem does ("SAME" would pad (2, 3) at stride 2 and
        # shift the sampling grid by a pixel, so imported PyTorch weights would not match).
        x = nn.Conv(c1, (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)), dtype=cfg.dtype,
                    param_dtype=jnp.float32)(x)
        x = nn.relu(_bn(cfg, train)(x))
        x = Residual(c2, cfg)(x, train)
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = Residual(c2, cfg)(x, train)
        x = Residual(c, cfg)(x, train)
        heatmaps = []
        feats = x
        for s in range(cfg.num_2d_stacks):
            feats = _StackBody(cfg, name=f"stack{s}")(x, train)
            hm = _conv(cfg.num_joints, 1, cfg, name=f"head{s}", kernel_init=_HEAD_INIT)(feats)
            heatmaps.append(hm.astype(jnp.float32))
            if s + 1 < cfg.num_2d_stacks:
                # Newell's re-injection: the next stack sees the trunk, these features and heatmaps.
                x = (x + _conv(c, 1, cfg, name=f"reinject_features{s}")(feats)
                     + _conv(c, 1, cfg, name=f"reinject_heatmaps{s}")(hm))
        return jnp.stack(heatmaps), feats


class VolumetricStack(nn.Module):
    """The volumetric (third) stack: detector features + heatmaps -> (B, J, D, h, w) float32."""

    config: ModelConfig

    @nn.compact
    def __call__(self, features: jax.Array, heatmaps: jax.Array, train: bool) -> jax.Array:
        cfg = self.config
        c = cfg.channels
        # Re-injection as between 2D stacks; these 1x1 convs belong to the lifter (trained in 3D).
        x = (_conv(c, 1, cfg, name="inject_features")(features.astype(cfg.dtype))
             + _conv(c, 1, cfg, name="inject_heatmaps")(heatmaps.astype(cfg.dtype)))
        y = _StackBody(cfg, name="stack")(x, train)
        out = _conv(cfg.num_joints * cfg.depth_bins, 1, cfg, name="head",
                    kernel_init=_HEAD_INIT)(y)
        b, h, w, _ = out.shape
        # Channel j * D + d is joint j, depth bin d.
        vol = out.reshape(b, h, w, cfg.num_joints, cfg.depth_bins)
        return jnp.transpose(vol, (0, 3, 4, 1, 2)).astype(jnp.float32)


class VolumetricHourglass(nn.Module):
    """Detector2D (`detector`) + VolumetricStack (`lifter`): the paper's 3-stack network.

    __call__(images (B, H, W, 3) in [0, 1], train, train_detector=False, freeze_batchnorm=False)
    returns a dict:
      heatmaps2d: (S2, B, h, w, J) float32, the detector's heatmaps;
      volume: (B, J, D, h, w) float32, per-joint volumetric heatmaps (x = w index, y = h index,
        z = depth bin).
    With train_detector=False (the 3D stages) the detector runs with its BatchNorm running averages
    and its outputs are wrapped in stop_gradient: its params and batch_stats cannot change.
    With freeze_batchnorm=True the lifter also normalises with its running averages and leaves
    them unchanged while its weights train (fine-tuning: the network then trains exactly the
    function it is evaluated with, instead of one normalised by small pseudo-labelled batches).
    Variables: {"params": {"detector", "lifter"}, "batch_stats": {"detector", "lifter"}}; the
    "detector" subtrees are exactly a standalone Detector2D's variables.
    """

    config: ModelConfig

    def setup(self) -> None:
        self.detector = Detector2D(self.config)
        self.lifter = VolumetricStack(self.config)

    def __call__(self, images: jax.Array, train: bool, train_detector: bool = False,
                 freeze_batchnorm: bool = False) -> dict[str, jax.Array]:
        heatmaps, features = self.detector(images, train=train and train_detector)
        if not train_detector:
            heatmaps = jax.lax.stop_gradient(heatmaps)
            features = jax.lax.stop_gradient(features)
        volume = self.lifter(features, heatmaps[-1], train=train and not freeze_batchnorm)
        return {"heatmaps2d": heatmaps, "volume": volume}
