"""Batched 3D pose prediction in mm from a VolumetricHourglass (the stages and the CLI use it)."""
from __future__ import annotations

import functools
from typing import Iterator, Mapping

import jax
import numpy as np

from hourglass_jax import geometry
from hourglass_jax.model import ModelConfig, VolumetricHourglass
from hourglass_jax.softargmax import predict_pose_mm


def volume_spec(cfg: ModelConfig) -> geometry.VolumeSpec:
    return geometry.VolumeSpec(heatmap_size=cfg.heatmap_size, depth_bins=cfg.depth_bins,
                               input_size=cfg.input_size)



@functools.lru_cache(maxsize=8)
def make_predictor(cfg: ModelConfig, k: int):
    """Jitted `(variables, images, intrinsics, center, scale, root_depth) -> (pose (B, 16, 3) mm
    camera frame, confidence (B, 16))` of a VolumetricHourglass; one per (config, k), so that
    evaluating many networks of one architecture compiles once."""
    spec = volume_spec(cfg)
    module = VolumetricHourglass(cfg)

    @jax.jit
    def predict(variables, images, intrinsics, center, scale, root_depth):
        out = module.apply(variables, images, train=False)
        return predict_pose_mm(out["volume"], intrinsics, center, scale, root_depth, spec, k)

    return predict


def predict_batches(predict, variables, batches: Iterator[Mapping[str, np.ndarray]],
                    batch_size: int) -> Iterator[tuple[Mapping[str, np.ndarray], np.ndarray,
                                                       np.ndarray]]:
    """Runs `predict` over host batches of any size in fixed-size chunks (one compilation).

    Yields (batch, pose (n, 16, 3) mm camera frame, confidence (n, 16)) per input batch.
    """
    for batch in batches:
        n = len(batch["image"])
        poses, confs = [], []
        for lo in range(0, n, batch_size):
            rows = np.arange(lo, min(lo + batch_size, n))
            pad = np.concatenate([rows, np.full(batch_size - len(rows), rows[-1])])
            args = [np.asarray(batch[key])[pad] for key in
                    ("image", "intrinsics", "center", "scale", "root_depth")]
            pose, conf = jax.device_get(predict(variables, *args))
            poses.append(pose[:len(rows)])
            confs.append(conf[:len(rows)])
        yield batch, np.concatenate(poses), np.concatenate(confs)
