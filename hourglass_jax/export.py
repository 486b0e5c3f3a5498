"""A trained network as one directory: its ModelConfig (JSON) and variables (orbax).

Layout: `<path>/model_config.json`, `<path>/variables/` (an orbax StandardCheckpointer item
holding {"params", "batch_stats"}). The experiment stages hand trained networks to each other
this way, and the prediction CLI loads them.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from hourglass_jax.model import Detector2D, ModelConfig, VolumetricHourglass

_KINDS = {"detector2d": Detector2D, "volumetric": VolumetricHourglass}


def _config_to_json(cfg: ModelConfig) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    d["dtype"] = jnp.dtype(cfg.dtype).name
    return d


def _config_from_json(d: Mapping[str, Any]) -> ModelConfig:
    d = dict(d)
    d["dtype"] = jnp.dtype(d.get("dtype", "float32"))
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"model_config.json has unknown fields {unknown}")
    return ModelConfig(**d)


def save_model(path: str | os.PathLike, kind: str, config: ModelConfig,
               variables: Mapping[str, Any]) -> str:
    """Write a network (kind "detector2d" or "volumetric") and its variables to `path`.

    Overwrites an earlier export at the same path; returns the absolute path.
    """
    if kind not in _KINDS:
        raise ValueError(f"unknown model kind {kind!r}; valid: {sorted(_KINDS)}")
    path = os.path.abspath(os.fspath(path))
    os.makedirs(path, exist_ok=True)
    host = jax.device_get({"params": variables["params"],
                           "batch_stats": variables.get("batch_stats", {})})
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.join(path, "variables"), host, force=True)
    tmp = os.path.join(path, "model_config.json.tmp")
    with open(tmp, "w") as f:
        json.dump({"kind": kind, "config": _config_to_json(config)}, f, indent=2)
    os.replace(tmp, os.path.join(path, "model_config.json"))  # written last: marks completion
    return path


def load_model(path: str | os.PathLike, **config_overrides: Any
               ) -> tuple[Any, ModelConfig, dict[str, Any]]:
    """Read an export: returns (flax module, ModelConfig, variables {"params", "batch_stats"}).

    `config_overrides` change fields that do not alter the variables (e.g. dtype, bn_axis_name).
    Raises FileNotFoundError (with the expected layout) if `path` is not a complete export.
    """
    path = os.path.abspath(os.fspath(path))
    meta_path = os.path.join(path, "model_config.json")
    if not os.path.exists(meta_path) or not os.path.isdir(os.path.join(path, "variables")):
        raise FileNotFoundError(
            f"{path} is not an exported model: expected {meta_path} and a 'variables' directory "
            "(written by hourglass_jax.export.save_model)")
    with open(meta_path) as f:
        meta = json.load(f)
    kind = meta.get("kind")
    if kind not in _KINDS:
        raise ValueError(f"{meta_path}: unknown model kind {kind!r}")
    config = dataclasses.replace(_config_from_json(meta["config"]), **config_overrides)
    with ocp.StandardCheckpointer() as ckptr:
        variables = ckptr.restore(os.path.join(path, "variables"), _abstract_variables(kind, config))
    return _KINDS[kind](config), config, jax.tree.map(np.asarray, variables)


@functools.lru_cache(maxsize=16)
def _abstract_variables(kind: str, config: ModelConfig) -> dict[str, Any]:
    # The restore target: shapes and dtypes of {"params", "batch_stats"}. Cached because tracing
    # the network's init takes about a second, and one run loads the same network many times.
    module = _KINDS[kind](config)
    shape = (1, config.input_size, config.input_size, 3)
    abstract = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros(shape), train=False))
    return {"params": abstract["params"], "batch_stats": abstract.get("batch_stats", {})}
