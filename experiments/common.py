"""Pieces the stages share: data sources, the networks, batched prediction in mm."""
from __future__ import annotations

import functools
import os
from typing import Any, Iterator, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hourglass_jax import geometry
from hourglass_jax.mesh import DATA_AXIS
from hourglass_jax.model import ModelConfig, VolumetricHourglass, model_config
from hourglass_jax.skeleton import ROOT
from hourglass_jax.softargmax import predict_pose_mm

# Keys of a pipeline batch that reach the device (strings and bookkeeping stay on the host).
DEVICE_KEYS = ("image", "pose2d", "pose3d", "visible", "intrinsics", "center", "scale",
               "root_depth", "confidence", "bone_lengths")


def data_dir(config: ml_collections.ConfigDict) -> str:
    """The TFDS data directory: config.data.data_dir, else $HOURGLASS_DATA_DIR, else a cache."""
    return (config.data.data_dir or os.environ.get("HOURGLASS_DATA_DIR")
            or os.path.join(os.path.expanduser("~"), ".cache", "hourglass_jax", "tfds"))


def sources(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """{split: data source} of the experiment's dataset (the embedded one is built on first use)."""
    name = config.data.dataset
    if name == "mocap_render":
        from hourglass_jax.data import mocap_render
        return mocap_render.load(config.data.builder_config, data_dir(config))
    import importlib

    from hourglass_jax.data import realdata
    if name not in realdata.REAL_DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid: mocap_render, "
                         f"{', '.join(sorted(realdata.REAL_DATASETS))}")
    realdata.require_prepared(name, data_dir(config), config.data.builder_config)
    module = importlib.import_module(realdata.REAL_DATASETS[name])
    return dict(module.builder(config.data.builder_config, data_dir(config)).as_data_source())


def network_config(config: ml_collections.ConfigDict) -> ModelConfig:
    """The network of the experiment, with BatchNorm synchronised over the data axis."""
    return model_config(config.model.name, bn_axis_name=DATA_AXIS)


def volume_spec(cfg: ModelConfig) -> geometry.VolumeSpec:
    return geometry.VolumeSpec(heatmap_size=cfg.heatmap_size, depth_bins=cfg.depth_bins,
                               input_size=cfg.input_size)


def device_batch(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The numeric arrays of a pipeline batch that the jitted steps use."""
    return {k: np.asarray(batch[k]) for k in DEVICE_KEYS if k in batch}


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


def root_relative(poses: np.ndarray) -> np.ndarray:
    """(..., 16, 3) -> the same poses with the pelvis at the origin."""
    return poses - poses[..., ROOT:ROOT + 1, :]


def tuple_or_none(values) -> tuple | None:
    """Config tuples: empty means 'no filter'."""
    values = tuple(values)
    return values or None


def to_jnp(tree):
    return jax.tree.map(jnp.asarray, tree)


def enable_compilation_cache(path: str) -> None:
    """Persist compiled XLA programs in `path` (reused by later stages, settings and runs)."""
    if path:
        os.makedirs(path, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
