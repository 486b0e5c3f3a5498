"""Gaussian heatmap / volume targets and the heatmap loss against float64 NumPy references."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hourglass_jax.geometry import VolumeSpec
from hourglass_jax.softargmax import local_softargmax
from hourglass_jax.targets import (gaussian_heatmaps, gaussian_volumes, heatmap_loss,
                                   heatmaps_from_crop_px, volumes_from_pose)


def _inside(c, n):
    return np.isfinite(c) and -0.5 <= c < n - 0.5


def _ref_heatmap(x, y, size, sigma):
    """float64 loop reference: exp(-squared distance / 2 sigma^2) over every pixel, or zeros."""
    out = np.zeros((size, size))
    if not (_inside(x, size) and _inside(y, size)):
        return out
    for r in range(size):
        for c in range(size):
            out[r, c] = np.exp(-((c - x) ** 2 + (r - y) ** 2) / (2 * sigma ** 2))
    return out


def test_gaussian_heatmaps_match_reference():
    size, sigma = 8, 1.3
    rng = np.random.default_rng(0)
    joints = rng.uniform(-1.5, size + 0.5, size=(2, 5, 2))
    joints[0, 0] = (-0.5, 3.0)            # on the lower edge: inside
    joints[0, 1] = (3.0, size - 0.5)      # on the upper edge: outside
    joints[0, 2] = (np.nan, 2.0)          # no annotation
    visible = np.ones((2, 5), bool)
    visible[1, 4] = False
    got = np.asarray(jax.jit(gaussian_heatmaps, static_argnums=(1, 2))(
        jnp.asarray(joints), size, sigma, jnp.asarray(visible)))
    assert got.shape == (2, size, size, 5) and got.dtype == np.float32
    for b in range(2):
        for j in range(5):
            want = _ref_heatmap(*joints[b, j], size, sigma) * visible[b, j]
            np.testing.assert_allclose(got[b, :, :, j], want, atol=1e-6)
    assert got[0, :, :, 0].max() > 0 and got[0, :, :, 1].max() == 0 and got[0, :, :, 2].max() == 0
    assert got[1, :, :, 4].max() == 0


def test_gaussian_volumes_match_reference():
    d, size, sigma = 6, 7, 1.0
    rng = np.random.default_rng(1)
    coords = rng.uniform(-1.0, 7.5, size=(3, 4, 3))
    coords[0, 0] = (3.2, 2.7, 5.6)   # z beyond D - 0.5: outside
    coords[0, 1] = (3.2, 2.7, 5.4)   # inside
    got = np.asarray(gaussian_volumes(jnp.asarray(coords), d, size, sigma))
    assert got.shape == (3, 4, d, size, size)
    z, y, x = np.meshgrid(np.arange(d), np.arange(size), np.arange(size), indexing="ij")
    for b in range(3):
        for j in range(4):
            cx, cy, cz = coords[b, j]
            inside = _inside(cx, size) and _inside(cy, size) and _inside(cz, d)
            want = np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * sigma ** 2))
            np.testing.assert_allclose(got[b, j], want * inside, atol=1e-6)
    assert got[0, 0].max() == 0 and got[0, 1].max() > 0.5


def test_crop_px_targets_peak_at_the_heatmap_pixel():
    spec = VolumeSpec(heatmap_size=8, depth_bins=4, input_size=32)
    # Heatmap pixel i covers crop px [4i, 4i + 4): its centre is crop px 4i + 1.5.
    joints = np.array([[[4 * 2 + 1.5, 4 * 5 + 1.5], [4 * 7 + 1.5, 1.5], [40.0, 3.0]]])
    got = np.asarray(heatmaps_from_crop_px(jnp.asarray(joints), spec))
    assert got.shape == (1, 8, 8, 3)
    assert got[0, 5, 2, 0] == pytest.approx(1.0) and got[0, 0, 7, 1] == pytest.approx(1.0)
    assert np.argmax(got[0, :, :, 0]) == 5 * 8 + 2
    assert got[0, :, :, 2].max() == 0  # crop px 40 lies beyond the 32 px crop


def test_volume_targets_from_pose_decode_back():
    from hourglass_jax.geometry import pose_to_voxels
    spec = VolumeSpec(heatmap_size=16, depth_bins=16, depth_range_mm=1000.0, input_size=64)
    rng = np.random.default_rng(2)
    root = np.array([0.0, 0.0, 4500.0])
    pose = root + rng.uniform(-350, 350, size=(1, 16, 3))
    pose[0, 6] = root
    pose[0, 0, 2] = root[2] + 1200.0  # beyond +-1000 mm root-relative depth: zero target
    intr = np.array([1000.0, 1000.0, 500.0, 500.0])
    center, scale = np.array([500.0, 500.0]), np.array([1.0])
    vol = np.asarray(volumes_from_pose(pose, intr, center, scale, spec))
    assert vol.shape == (1, 16, 16, 16, 16)
    assert vol[0, 0].max() == 0
    vox = pose_to_voxels(pose, intr, center, scale, spec)
    dec = np.asarray(local_softargmax(jnp.asarray(vol), 5))
    # Sigma-1 targets decode to within the documented 0.045 voxel bias of the k = 5 cube.
    np.testing.assert_allclose(dec[0, 1:], vox[0, 1:], atol=0.05)


def test_heatmap_loss_hand_computed():
    rng = np.random.default_rng(3)
    t2 = rng.uniform(size=(2, 4, 4, 16)).astype(np.float32)
    t3 = rng.uniform(size=(2, 16, 3, 4, 4)).astype(np.float32)
    a = np.array([0.5, -2.0], np.float32)  # per-stack constant offsets
    c = np.float32(0.25)
    outputs = {"heatmaps2d": jnp.asarray(t2[None] + a[:, None, None, None, None]),
               "volume": jnp.asarray(t3 + c)}
    # MSE of a constant offset is its square; stacks add: 0.25 + 4 + 0.0625.
    got = jax.jit(heatmap_loss)(outputs, {"heatmaps2d": t2, "volume": t3})
    assert float(got) == pytest.approx(0.25 + 4.0 + 0.0625, rel=1e-5)
    assert float(heatmap_loss(outputs, {"volume": t3})) == pytest.approx(0.0625, rel=1e-5)
    with pytest.raises(ValueError, match="keys"):
        heatmap_loss(outputs, {"pose": t3})
    with pytest.raises(ValueError, match="volume"):
        heatmap_loss(outputs, {"volume": t3[:, :, :2]})


def test_bad_input():
    with pytest.raises(ValueError, match="joints"):
        gaussian_heatmaps(jnp.zeros((2, 16, 3)), 8)
    with pytest.raises(ValueError, match="coords"):
        gaussian_volumes(jnp.zeros((2, 16, 2)), 4, 8)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_volumes(jnp.zeros((2, 16, 3)), 4, 8, sigma=0.0)
