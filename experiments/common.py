"""Pieces the stages share: data sources, the network config, host batches."""
from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hourglass_jax.mesh import DATA_AXIS
from hourglass_jax.model import ModelConfig, model_config
from hourglass_jax.skeleton import ROOT

# Keys of a pipeline batch that reach the device (strings and bookkeeping stay on the host).
DEVICE_KEYS = ("image", "pose2d", "pose3d", "visible", "intrinsics", "center", "scale",
               "root_depth", "confidence", "bone_lengths")


def data_dir(config: ml_collections.ConfigDict) -> str:
    """The TFDS data directory: config.data.data_dir, else $HOURGLASS_DATA_DIR, else a cache."""
    return (config.data.data_dir or os.environ.get("HOURGLASS_DATA_DIR")
            or os.path.join(os.path.expanduser("~"), ".cache", "hourglass_jax", "tfds"))


def sources(config: ml_collections.ConfigDict, dataset: str | None = None) -> dict[str, Any]:
    """{split: data source} of `dataset` (default the experiment's; the embedded one is built on
    first use, the real ones must have been prepared)."""
    name = dataset or config.data.dataset
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
    """The network of the experiment (`model.name`'s preset, `model.channels` wide when that is
    set), with BatchNorm synchronised over the data axis."""
    width = int(config.model.get("channels", 0))
    return model_config(config.model.name, bn_axis_name=DATA_AXIS,
                        **({"channels": width} if width else {}))


def device_batch(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The numeric arrays of a pipeline batch that the jitted steps use."""
    return {k: np.asarray(batch[k]) for k in DEVICE_KEYS if k in batch}


def root_relative(poses: np.ndarray) -> np.ndarray:
    """(..., 16, 3) -> the same poses with the pelvis at the origin."""
    return poses - poses[..., ROOT:ROOT + 1, :]


def video_rows(sequence_id: np.ndarray, frame_index: np.ndarray | None = None
               ) -> list[np.ndarray]:
    """Row numbers of each video of a predictions table, in frame order (in table order without
    frame_index, for per-video statistics that ignore order); videos in ascending sequence id.
    sequence_id, frame_index: (N,) ints. One sort, not one scan per video."""
    sequence_id = np.asarray(sequence_id)
    keys = (sequence_id,) if frame_index is None else (np.asarray(frame_index), sequence_id)
    order = np.lexsort(keys)
    starts = np.flatnonzero(np.diff(sequence_id[order])) + 1
    return np.split(order, starts) if len(order) else []


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
