"""Batched 3D pose prediction in mm from a VolumetricHourglass (the stages and the CLI use it)."""
from __future__ import annotations

import functools
from typing import Iterator, Mapping, Sequence

import jax
import numpy as np

from hourglass_jax import geometry
from hourglass_jax.data import augment
from hourglass_jax.model import ModelConfig, VolumetricHourglass
from hourglass_jax.skeleton import FLIP_PERMUTATION
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


# A sample's fields the predictor reads.
INPUT_KEYS: tuple[str, ...] = ("image", "intrinsics", "center", "scale", "root_depth")


def stack_samples(samples: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """n samples' `INPUT_KEYS` as one host batch for `predict_batches`: image (n, R, R, 3)
    float in [0, 1] (uint8 images, as `pipeline.decode` gives them, are scaled)."""
    batch = {k: np.stack([np.asarray(s[k]) for s in samples]) for k in INPUT_KEYS}
    if batch["image"].dtype == np.uint8:
        batch["image"] = batch["image"].astype(np.float32) / np.float32(255.0)
    return batch


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
            args = [np.asarray(batch[key])[pad] for key in INPUT_KEYS]
            pose, conf = jax.device_get(predict(variables, *args))
            poses.append(pose[:len(rows)])
            confs.append(conf[:len(rows)])
        yield batch, np.concatenate(poses), np.concatenate(confs)


# Views of a frame for test-time averaging: (flipped, rotation deg, scale factor), inside the
# training augmentation's ranges (augment.ROTATION_DEG, augment.SCALE_RANGE). The first is the
# frame as it is.
TEST_TIME_VIEWS: tuple[tuple[bool, float, float], ...] = (
    (False, 0.0, 1.0), (True, 0.0, 1.0), (False, -20.0, 1.0), (False, -10.0, 1.0),
    (False, 10.0, 1.0), (False, 20.0, 1.0), (False, 0.0, 0.85), (False, 0.0, 1.15))


def view_name(view: tuple[bool, float, float]) -> str:
    """'identity', 'flip', 'rotate+10', 'scale0.85', ... for a (flipped, rotation, scale) view."""
    flipped, rot, scale = view
    if not flipped and rot == 0 and scale == 1:
        return "identity"
    return "flip" if flipped else f"rotate{rot:+g}" if rot else f"scale{scale:g}"


def predict_views(predict, variables, samples: Sequence[Mapping[str, np.ndarray]],
                  batch_size: int,
                  views: Sequence[tuple[bool, float, float]] = TEST_TIME_VIEWS
                  ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One network's predictions on each view of `samples`, mapped back to the original frame.

    Each view is made by the training augmentation (`augment.flip`, then `augment.rotate_scale`)
    and its prediction is mapped back with `augment.pose_to_unaugmented`; a flipped view's
    confidences are swapped back to the original joint order. The identity view is the samples
    as they are (no resampling).

    Args:
      predict: from `make_predictor`. samples: n decoded samples (image (R, R, 3) uint8, or
        float in [0, 1]; pose3d, pose2d, visible, intrinsics, center, scale, root_depth), e.g.
        records from `pipeline.decode` or rows of a video batch.
    Returns:
      {view_name: (pose (n, 16, 3) mm in the original camera frame, confidence (n, 16))}.
    """
    out = {}
    for view in views:
        flipped, rot, scale = view
        seen = [augment.flip(s) if flipped else s for s in samples]
        if rot != 0 or scale != 1:
            seen = [augment.rotate_scale(s, rot, scale) for s in seen]
        # Decoded records are warped as RGB uint8, then scaled to [0, 1].
        (_, pose, conf), = predict_batches(predict, variables, [stack_samples(seen)],
                                           batch_size)
        pose = augment.pose_to_unaugmented(pose, flipped, rot)
        out[view_name(view)] = (pose, conf[..., FLIP_PERMUTATION] if flipped else conf)
    return out
