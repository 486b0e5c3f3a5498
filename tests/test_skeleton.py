"""Skeleton tables: flips swap left/right joints and bones consistently."""
import numpy as np

from hourglass_jax import skeleton
from hourglass_jax.data import augment


def _random_pose(rng):
    return rng.normal(scale=300.0, size=(16, 3))


def test_flip_permutations_are_involutions_that_swap_sides():
    for perm in (skeleton.FLIP_PERMUTATION, skeleton.BONE_FLIP_PERMUTATION):
        np.testing.assert_array_equal(perm[perm], np.arange(len(perm)))
    for j, k in enumerate(skeleton.FLIP_PERMUTATION):
        assert skeleton.SIDE[j] == -skeleton.SIDE[k]


def test_bone_permutation_matches_the_bones_of_the_flipped_skeleton():
    rng = np.random.default_rng(0)
    pose = _random_pose(rng)
    mirrored = skeleton.flip_joints(pose * np.array([-1.0, 1.0, 1.0]))
    np.testing.assert_allclose(skeleton.bone_lengths(mirrored),
                               skeleton.bone_lengths(pose)[skeleton.BONE_FLIP_PERMUTATION])


def test_flip_augmentation_relabels_confidences_and_bone_lengths():
    rng = np.random.default_rng(1)
    pose = _random_pose(rng) + np.array([0.0, 0.0, 5000.0])
    sample = {
        "image": rng.uniform(size=(32, 32, 3)).astype(np.float32),
        "pose3d": pose.astype(np.float32), "pose2d": rng.uniform(0, 31, (16, 2)).astype(np.float32),
        "visible": np.ones(16, bool), "intrinsics": np.array([500, 500, 16, 16], np.float32),
        "center": np.array([16, 16], np.float32), "scale": np.float32(0.16),
        "confidence": np.linspace(0, 1, 16).astype(np.float32),
        "bone_lengths": skeleton.bone_lengths(pose).astype(np.float32),
    }
    flipped = augment.flip(sample)
    np.testing.assert_array_equal(flipped["confidence"],
                                  sample["confidence"][skeleton.FLIP_PERMUTATION])
    # The flipped sample's bone lengths are those of its flipped 3D pose.
    np.testing.assert_allclose(flipped["bone_lengths"], skeleton.bone_lengths(flipped["pose3d"]),
                               rtol=1e-5)
    twice = augment.flip(flipped)
    for key in ("confidence", "bone_lengths", "pose3d"):
        np.testing.assert_array_equal(twice[key], sample[key])
