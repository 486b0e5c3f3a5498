"""A network exported with hourglass_jax.export reads back identical, and bad paths fail clearly."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hourglass_jax import export
from hourglass_jax.model import Detector2D, VolumetricHourglass, model_config


def test_round_trip_keeps_config_and_every_variable(tmp_path):
    cfg = model_config("test")
    module = VolumetricHourglass(cfg)
    variables = module.init(jax.random.key(3), jnp.zeros((1, 32, 32, 3)), train=False)
    export.save_model(tmp_path / "m", "volumetric", cfg, variables)
    loaded, cfg2, variables2 = export.load_model(tmp_path / "m")
    assert isinstance(loaded, VolumetricHourglass) and cfg2 == cfg
    flat1 = jax.tree_util.tree_leaves_with_path(variables)
    flat2 = dict(jax.tree_util.tree_leaves_with_path(variables2))
    assert len(flat1) == len(flat2)
    for path, leaf in flat1:
        np.testing.assert_array_equal(np.asarray(leaf), flat2[path])
    # The loaded network computes what the saved one computed.
    x = jax.random.uniform(jax.random.key(4), (2, 32, 32, 3))
    out1 = module.apply(variables, x, train=False)["volume"]
    out2 = loaded.apply(variables2, x, train=False)["volume"]
    np.testing.assert_array_equal(np.asarray(out1), np.asarray(out2))


def test_detector_kind_and_override(tmp_path):
    cfg = model_config("test")
    variables = Detector2D(cfg).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
    export.save_model(tmp_path / "d", "detector2d", cfg, variables)
    module, cfg2, _ = export.load_model(tmp_path / "d", bn_axis_name="data")
    assert isinstance(module, Detector2D) and cfg2.bn_axis_name == "data"


def test_missing_or_bad_exports_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an exported model"):
        export.load_model(tmp_path / "nothing")
    with pytest.raises(ValueError, match="unknown model kind"):
        export.save_model(tmp_path / "x", "resnet", model_config("test"), {"params": {}})
