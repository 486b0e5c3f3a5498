"""Local / global 3D soft-argmax and joint confidence against float64 NumPy references."""
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hourglass_jax.softargmax import (argmax_voxel, coordinate_loss, global_softargmax,
                                      joint_confidence, local_softargmax, reference_cube_mass)

D, H, W = 9, 10, 11  # distinct sizes catch axis mix-ups


def _gaussian(center_xyz, sigma=1.0, amp=1.0, shape=(D, H, W)):
    """float64 unit-peak Gaussian blob; center (x, y, z) in voxel coordinates."""
    z, y, x = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    cx, cy, cz = center_xyz
    return amp * np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * sigma ** 2))


def _splat(p_xyz, shape=(D, H, W)):
    """Trilinear splat of a point onto its 8 neighbouring voxels (weighted mean = the point)."""
    vol = np.zeros(shape)
    base = np.floor(p_xyz).astype(int)
    frac = np.asarray(p_xyz) - base
    for corner in itertools.product((0, 1), repeat=3):
        wgt = np.prod([f if c else 1 - f for f, c in zip(frac, corner)])
        x, y, z = base + np.asarray(corner)
        vol[z, y, x] += wgt
    return vol


def _ref_local(vol, k):
    """float64 loop reference of the definition: clipped cube around the argmax, weights
    max(v, 0). Returns (mean (x, y, z), total weight)."""
    r = k // 2
    z0, y0, x0 = np.unravel_index(np.argmax(vol), vol.shape)
    num, den = np.zeros(3), 0.0
    for z in range(z0 - r, z0 + r + 1):
        for y in range(y0 - r, y0 + r + 1):
            for x in range(x0 - r, x0 + r + 1):
                if 0 <= z < vol.shape[0] and 0 <= y < vol.shape[1] and 0 <= x < vol.shape[2]:
                    wgt = max(vol[z, y, x], 0.0)
                    num += wgt * np.array([x, y, z])
                    den += wgt
    return num / den, den


def test_trilinear_splat_centre_is_exact():
    rng = np.random.default_rng(0)
    pts = rng.uniform([1, 1, 1], [W - 2, H - 2, D - 2], size=(2, 16, 3))
    vols = np.stack([np.stack([_splat(p) for p in row]) for row in pts])  # (2, 16, D, H, W)
    fn = jax.jit(local_softargmax, static_argnums=1)
    for k in (3, 5):
        got = fn(jnp.asarray(vols, jnp.float32), k)
        assert got.shape == (2, 16, 3)
        np.testing.assert_allclose(np.asarray(got), pts, atol=2e-5)
    # bf16 volumes (bf16 compute): coordinates still float32; only the weights are rounded.
    got = fn(jnp.asarray(vols, jnp.bfloat16), 3)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), pts, atol=0.02)


def test_symmetric_gaussian_exact_and_subvoxel_bias_matches_closed_form():
    # Centred on a voxel: the cube is symmetric about the peak -> exact.
    c = np.array([4.0, 6.0, 3.0])
    got = local_softargmax(jnp.asarray(_gaussian(c)[None], jnp.float32), 5)[0]
    np.testing.assert_allclose(np.asarray(got), c, atol=1e-5)
    # Off-grid: per axis the separable Gaussian's windowed mean is the 1D windowed mean.
    c = np.array([4.3, 5.5 - 1e-3, 3.8])  # argmax at (4, 5, 4)
    for k in (3, 5):
        got = np.asarray(local_softargmax(jnp.asarray(_gaussian(c)[None], jnp.float32), k)[0])
        for axis, peak in zip(range(3), (4, 5, 4)):
            i = np.arange(peak - k // 2, peak + k // 2 + 1, dtype=np.float64)
            g = np.exp(-((i - c[axis]) ** 2) / 2)
            assert got[axis] == pytest.approx(np.sum(i * g) / np.sum(g), abs=2e-5)
        if k == 5:
            np.testing.assert_allclose(got, c, atol=0.05)  # documented: <= 0.045 voxel bias


def test_border_cubes_match_float64_reference():
    rng = np.random.default_rng(1)
    centres = [(0.2, 5.0, 4.0), (W - 1.3, 0.4, D - 1.1), (0.0, 0.0, 0.0), (W - 1.0, H - 1.0, 8.4),
               (1.4, H - 1.6, 0.45)]
    for c in centres:
        vol = _gaussian(c) + 0.05 * rng.standard_normal((D, H, W))  # negatives clamp to 0
        # Bait for wrap-around: mass on the opposite faces, outside every clipped cube.
        vol[:, :, (int(round(c[0])) + W // 2) % W] += 0.3
        for k in (3, 5):
            want, _ = _ref_local(vol, k)
            got = local_softargmax(jnp.asarray(vol[None, None], jnp.float32), k)[0, 0]
            np.testing.assert_allclose(np.asarray(got), want, atol=1e-4)
        # Against the truth: a blob cut by the border is pulled inwards, by 0.50 voxel when
        # centred on the last voxel and 0.76 at 0.4 voxel beyond it (1D closed forms), never 1.
        want, _ = _ref_local(_gaussian(c), 5)
        assert np.all(np.abs(want - np.asarray(c)) < 0.8)


def test_nonpositive_cube_falls_back_to_argmax():
    vol = -np.ones((1, D, H, W))
    vol[0, 2, 3, 4] = 0.0
    got = local_softargmax(jnp.asarray(vol, jnp.float32), 3)
    np.testing.assert_array_equal(np.asarray(got[0]), [4.0, 3.0, 2.0])
    np.testing.assert_array_equal(np.asarray(argmax_voxel(jnp.asarray(vol))[0]), [2, 3, 4])


def test_gradient_nonzero_inside_cube_zero_outside():
    rng = np.random.default_rng(2)
    vol = _gaussian((3.3, 4.6, 5.2)) + 0.1 * rng.uniform(size=(D, H, W))  # all positive
    jac = jax.jacrev(lambda v: local_softargmax(v[None], 3)[0])(jnp.asarray(vol, jnp.float32))
    jac = np.asarray(jac)  # (3, D, H, W)
    assert np.all(np.isfinite(jac))
    inside = np.zeros((D, H, W), bool)
    inside[4:7, 4:7, 2:5] = True  # argmax voxel (z, y, x) = (5, 5, 3), k = 3
    assert np.all(np.any(jac[:, inside] != 0, axis=0))
    assert np.all(jac[:, ~inside] == 0)
    # Closed form of d mean_x / d v_i = (x_i - mean_x) / total.
    mean, total = _ref_local(vol, 3)
    np.testing.assert_allclose(jac[0, 5, 5, 2], (2 - mean[0]) / total, rtol=1e-3)


def test_global_softargmax_matches_reference():
    rng = np.random.default_rng(3)
    vol = rng.standard_normal((2, 3, D, H, W))
    beta = 2.0
    got = np.asarray(global_softargmax(jnp.asarray(vol, jnp.float32), beta))
    z, y, x = np.meshgrid(np.arange(D), np.arange(H), np.arange(W), indexing="ij")
    for b, j in itertools.product(range(2), range(3)):
        e = np.exp(beta * (vol[b, j] - vol[b, j].max()))
        p = e / e.sum()
        want = [np.sum(p * x), np.sum(p * y), np.sum(p * z)]
        np.testing.assert_allclose(got[b, j], want, atol=1e-4)


def test_joint_confidence():
    sigma, k = 1.0, 5
    mass = sum(math.exp(-i * i / 2) for i in range(-2, 3)) ** 3  # closed form, ~15.32
    assert reference_cube_mass(k, sigma) == pytest.approx(mass)
    vols = np.stack([
        _gaussian((5.0, 5.0, 4.0)),               # perfect, on the grid -> 1
        _gaussian((5.5 - 1e-3, 4.5 - 1e-3, 3.5 - 1e-3)),  # perfect, half-voxel offsets -> ~0.97
        0.5 * _gaussian((5.0, 5.0, 4.0)),         # half as sure -> 0.5
        _gaussian((5.0, 5.0, 4.0), sigma=3.0),    # broad -> clipped at 1
        np.zeros((D, H, W)),                      # nothing -> 0
        _gaussian((0.0, 5.0, 4.0)),               # cut by the border
    ])
    got = np.asarray(joint_confidence(jnp.asarray(vols[None], jnp.float32), k, sigma))[0]
    want = [min(1.0, _ref_local(v, k)[1] / mass) if v.max() > 0 else 0.0 for v in vols]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert got[0] == pytest.approx(1.0, abs=1e-5) and 0.95 < got[1] < 0.99
    assert got[2] == pytest.approx(0.5, abs=1e-5) and got[3] == 1.0 and got[4] == 0.0
    # Cut at x = 0: 3 of 5 columns remain, (1 + e^-1/2 + e^-2) / (1 + 2e^-1/2 + 2e^-2) = 0.701.
    cut = (1 + math.exp(-0.5) + math.exp(-2)) / (1 + 2 * math.exp(-0.5) + 2 * math.exp(-2))
    assert got[5] == pytest.approx(cut, abs=1e-5)


def test_bad_input():
    vol = jnp.zeros((2, 16, 4, 4, 4))
    for k in (0, 2, 4, 3.0):
        with pytest.raises(ValueError, match="odd"):
            local_softargmax(vol, k)
    with pytest.raises(ValueError, match="volume"):
        local_softargmax(jnp.zeros((4, 4)), 3)


def test_predict_pose_mm_recovers_pose_through_geometry():
    from hourglass_jax.geometry import VolumeSpec, pose_to_voxels
    from hourglass_jax.softargmax import predict_pose_mm

    spec = VolumeSpec(heatmap_size=8, depth_bins=8, depth_range_mm=1000.0, input_size=32)
    rng = np.random.default_rng(4)
    root = np.array([[50.0, -80.0, 4000.0], [-120.0, 30.0, 5000.0]])
    pose = root[:, None, :] + rng.uniform(-300, 300, size=(2, 16, 3))
    pose[:, 6] = root  # pelvis
    intr = np.array([[1000.0, 1000.0, 500.0, 500.0], [1100.0, 1050.0, 480.0, 510.0]])
    center = intr[:, 2:] + intr[:, :2] * root[:, :2] / root[:, 2:]  # the root's pixel
    scale = np.array([1.0, 0.9])
    vox = pose_to_voxels(pose, intr, center, scale, spec)  # NumPy float64
    assert np.all((vox > 0) & (vox < 7))  # the splat's 8 neighbours are inside
    vols = np.stack([np.stack([_splat(p, (8, 8, 8)) for p in row]) for row in vox])
    fn = jax.jit(predict_pose_mm, static_argnames=("spec", "k"))
    got, conf = fn(jnp.asarray(vols, jnp.float32), intr, center, scale, root[:, 2], spec=spec,
                   k=3)
    assert got.shape == (2, 16, 3) and conf.shape == (2, 16)
    np.testing.assert_allclose(np.asarray(got), pose, atol=0.5)  # mm, float32 at 4-5 m depth
    # Fine-tuning differentiates a mm-space loss through the geometry into the volume.
    g = jax.grad(lambda v: jnp.sum(predict_pose_mm(v, intr, center, scale, root[:, 2], spec,
                                                   3)[0] ** 2))(jnp.asarray(vols, jnp.float32))
    g = np.asarray(g)
    assert np.all(np.isfinite(g)) and np.all(np.any(g != 0, axis=(2, 3, 4)))
    with pytest.raises(ValueError, match="VolumeSpec"):
        predict_pose_mm(jnp.zeros((2, 16, 4, 8, 8)), intr, center, scale, root[:, 2], spec)


def test_coordinate_loss_matches_reference_and_ignores_outside_joints():
    rng = np.random.default_rng(3)
    vols = np.stack([_gaussian(rng.uniform([1, 1, 1], [W - 2, H - 2, D - 2]), amp=a)
                     + 0.05 * rng.random((D, H, W)) for a in (1.0, 0.6, 0.3)])[None]
    # vols: (1, 3, D, H, W)
    targets = np.array([[[2.0, 3.0, 4.0], [5.5, 6.25, 1.0], [W + 2.0, 1.0, 1.0]]])  # 3rd outside
    got = float(coordinate_loss(jnp.asarray(vols, jnp.float32), jnp.asarray(targets, jnp.float32),
                                k=3))
    ref = np.mean([np.abs(_ref_local(vols[0, j], 3)[0] - targets[0, j]).sum() for j in (0, 1)])
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    # Where every joint is outside, nothing is counted: 0, not NaN.
    far = np.full((1, 3, 3), 1e4)
    assert float(coordinate_loss(jnp.asarray(vols, jnp.float32), jnp.asarray(far))) == 0.0
    # The gradient pulls the soft-argmax towards the target (a descent step lowers the loss).
    v = jnp.asarray(vols[:, :2], jnp.float32)
    t = jnp.asarray(targets[:, :2], jnp.float32)
    g = jax.grad(coordinate_loss)(v, t)
    assert float(coordinate_loss(v - 0.05 * g, t)) < float(coordinate_loss(v, t))
    with pytest.raises(ValueError, match="target_voxels"):
        coordinate_loss(v, t[..., :2])
