"""One ml_collections config file per protocol; `base.py` holds the shared defaults."""
from __future__ import annotations

import importlib
import os

import ml_collections

_HERE = os.path.dirname(os.path.abspath(__file__))


def protocols() -> tuple[str, ...]:
    """Names of the protocol config files in this folder (base.py excluded)."""
    return tuple(sorted(f[:-3] for f in os.listdir(_HERE)
                        if f.endswith(".py") and f not in ("__init__.py", "base.py")
                        and not f.endswith("_base.py")))


def get_protocol_config(name: str) -> ml_collections.ConfigDict:
    """The config of protocol `name` (e.g. "subject_s1"); ValueError listing the valid ones."""
    if name not in protocols():
        raise ValueError(f"unknown protocol {name!r}; valid: {', '.join(protocols())}")
    return importlib.import_module(f"experiments.configs.{name}").get_config()
