"""The feature schema every pose dataset of the project writes (embedded and real ones alike),
so that the pipelines and protocols run unchanged on any of them."""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from hourglass_jax.skeleton import NUM_JOINTS


def pose_features(res: int) -> dict[str, tfds.features.FeatureConnector]:
    """Features of one example with crops of `res` px: image (PNG), pose3d (16, 3) float32 mm
    camera frame, pose2d (16, 2) crop px, visible (16,), intrinsics (4,) [fx, fy, cx, cy] px,
    crop center (2,) px and scale (box side / 200 px), root depth mm, and the identifiers."""
    f = tfds.features
    return {
        "image": f.Image(shape=(res, res, 3), encoding_format="png"),
        "pose3d": f.Tensor(shape=(NUM_JOINTS, 3), dtype=np.float32),
        "pose2d": f.Tensor(shape=(NUM_JOINTS, 2), dtype=np.float32),
        "visible": f.Tensor(shape=(NUM_JOINTS,), dtype=np.bool_),
        "intrinsics": f.Tensor(shape=(4,), dtype=np.float32),
        "center": f.Tensor(shape=(2,), dtype=np.float32),
        "scale": f.Scalar(dtype=np.float32),
        "root_depth": f.Scalar(dtype=np.float32),
        "subject": f.Text(),
        "action": f.Text(),
        "subaction": f.Scalar(dtype=np.int32),
        "camera": f.Text(),
        "sequence": f.Text(),
        "frame": f.Scalar(dtype=np.int32),
    }
