"""Cameras, crops, the voxel grid: closed forms and exact round trips."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hourglass_jax import geometry as g
from hourglass_jax.skeleton import ROOT
from helpers_jaxpr import dot_precisions

K = np.array([1145.0, 1143.8, 512.5, 515.4])   # H36M-like intrinsics [fx, fy, cx, cy] px


def _random_poses(rng, batch):
    """(batch, 16, 3) mm camera frame: a root 3-6 m in front, joints within +-900 mm of it."""
    root = np.stack([rng.uniform(-800, 800, batch), rng.uniform(-500, 500, batch),
                     rng.uniform(3000, 6000, batch)], -1)
    return root[:, None, :] + rng.uniform(-900, 900, (batch, 16, 3))


def test_project_closed_form():
    pts = np.array([[0.0, 0.0, 2000.0], [100.0, -50.0, 1000.0]])
    uv = g.project(pts, K)
    np.testing.assert_allclose(uv[0], K[2:])
    np.testing.assert_allclose(uv[1], [K[0] * 0.1 + K[2], K[1] * -0.05 + K[3]])


def test_backproject_inverts_project_batched():
    rng = np.random.default_rng(0)
    poses = _random_poses(rng, 5)
    ks = K * rng.uniform(0.8, 1.2, (5, 4))          # a different camera per pose, left-aligned (5, 4)
    uv = g.project(poses, ks)
    assert uv.shape == (5, 16, 2)
    for b in range(5):                               # batching == one camera at a time
        np.testing.assert_allclose(uv[b], g.project(poses[b], ks[b]), rtol=1e-14)
    np.testing.assert_allclose(g.backproject(uv, poses[..., 2], ks), poses, rtol=1e-12, atol=1e-9)
    with pytest.raises(ValueError, match="depth"):
        g.backproject(uv, poses[..., 0, 2], ks)
    with pytest.raises(ValueError, match="intrinsics"):
        g.project(poses, K[:3])


def test_look_at_closed_form_and_target_at_principal_point():
    # Camera on -z looking at the origin, world y up: image right is world -x, image down is world -y.
    R, t = g.look_at_camera([0.0, 0.0, -5000.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0])
    np.testing.assert_allclose(R, np.diag([-1.0, -1.0, 1.0]), atol=1e-15)
    np.testing.assert_allclose(t, [0.0, 0.0, 5000.0], atol=1e-12)
    rng = np.random.default_rng(1)
    for _ in range(5):
        pos, tgt = rng.uniform(-5000, 5000, 3), rng.uniform(-500, 500, 3)
        R, t = g.look_at_camera(pos, tgt, [0.0, 1.0, 0.0])
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(R) == pytest.approx(1.0)
        np.testing.assert_allclose(g.world_to_camera(pos, R, t), 0.0, atol=1e-9)
        tc = g.world_to_camera(tgt, R, t)
        assert tc[2] == pytest.approx(np.linalg.norm(tgt - pos))
        np.testing.assert_allclose(g.project(tc, K), K[2:], atol=1e-9)
        # A point above the target appears higher in the image (smaller v).
        assert g.project(g.world_to_camera(tgt + [0, 300.0, 0], R, t), K)[1] < K[3]
        pts = rng.normal(size=(7, 3)) * 1000
        np.testing.assert_allclose(g.camera_to_world(g.world_to_camera(pts, R, t), R, t), pts, atol=1e-9)
    with pytest.raises(ValueError, match="parallel"):
        g.look_at_camera([0.0, 5000.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0])


def test_rotation_matrix_matches_scipy():
    rng = np.random.default_rng(2)
    axes, angles = rng.normal(size=(6, 3)), rng.uniform(-np.pi, np.pi, 6)
    ref = Rotation.from_rotvec(axes / np.linalg.norm(axes, axis=-1, keepdims=True) * angles[:, None])
    np.testing.assert_allclose(g.rotation_matrix(axes, angles), ref.as_matrix(), atol=1e-12)
    np.testing.assert_allclose(g.rotation_matrix([0, 0, 2.0], np.pi / 2) @ [1.0, 0, 0], [0, 1.0, 0],
                               atol=1e-15)


def test_rotation_2d_is_counter_clockwise_on_screen():
    # Image y points down: rotating "right" by 90 deg counter-clockwise on screen gives "up" = (0, -1).
    np.testing.assert_allclose(g.rotation_2d(90.0) @ [1.0, 0.0], [0.0, -1.0], atol=1e-15)
    th = np.array([-30.0, 12.5, 200.0])
    np.testing.assert_allclose(g.rotation_2d(th), g.rotation_matrix([0, 0, 1.0], -np.radians(th))[:, :2, :2],
                               atol=1e-15)


def test_crop_closed_form():
    center, scale, res = np.array([300.0, 200.0]), 1.5, 64       # box 300 px
    s = res / 300.0
    np.testing.assert_allclose(g.image_to_crop(center, center, scale, res), [31.5, 31.5])
    # Box edges map to the crop's pixel edges -0.5 and res - 0.5.
    np.testing.assert_allclose(g.image_to_crop(center - 150.0, center, scale, res), [-0.5, -0.5])
    np.testing.assert_allclose(g.image_to_crop(center + 150.0, center, scale, res), [63.5, 63.5])
    # 90 deg counter-clockwise: a point right of the centre moves straight up in the crop.
    np.testing.assert_allclose(g.image_to_crop(center + [30.0, 0.0], center, scale, res, 90.0),
                               [31.5, 31.5 - 30.0 * s], atol=1e-12)
    A = g.crop_affine(center, scale, res, 90.0)
    assert A.shape == (2, 3)


def test_crop_round_trip_with_rotation_batched():
    rng = np.random.default_rng(3)
    centers = rng.uniform(100, 900, (4, 2))
    scales = rng.uniform(0.5, 3.0, 4)
    rots = rng.uniform(-30, 30, 4)
    uv = rng.uniform(0, 1000, (4, 16, 2))
    crop = g.image_to_crop(uv, centers, scales, 256, rots)
    for b in range(4):
        np.testing.assert_allclose(crop[b], g.image_to_crop(uv[b], centers[b], scales[b], 256, rots[b]))
        # Rotation keeps distances up to the zoom factor.
        d_img = np.linalg.norm(uv[b, 0] - uv[b, 1])
        d_crop = np.linalg.norm(crop[b, 0] - crop[b, 1])
        assert d_crop == pytest.approx(d_img * 256 / (200 * scales[b]))
    np.testing.assert_allclose(g.crop_to_image(crop, centers, scales, 256, rots), uv, atol=1e-9)


def test_heatmap_is_the_same_box_at_lower_resolution():
    spec = g.VolumeSpec(heatmap_size=16, depth_bins=8)
    assert spec.input_size == 64 and spec.stride == 4
    # Crop pixels 0..3 (centres 0, 1, 2, 3) form heatmap pixel 0 (centre 1.5); 4..7 form pixel 1.
    np.testing.assert_allclose(g.crop_px_to_heatmap(np.array([[1.5, 5.5], [-0.5, 63.5]]), spec),
                               [[0.0, 1.0], [-0.5, 15.5]])
    rng = np.random.default_rng(4)
    uv, c, s, r = rng.uniform(0, 500, (10, 2)), np.array([250.0, 240.0]), 2.0, 17.0
    via_crop = g.crop_px_to_heatmap(g.image_to_crop(uv, c, s, 64, r), spec)
    np.testing.assert_allclose(via_crop, g.image_to_crop(uv, c, s, 16, r), atol=1e-12)
    np.testing.assert_allclose(g.heatmap_to_crop_px(via_crop, spec), g.image_to_crop(uv, c, s, 64, r),
                               atol=1e-12)


def test_depth_bin_centres():
    spec = g.VolumeSpec(heatmap_size=16, depth_bins=64, depth_range_mm=1000.0)
    assert spec.bin_size_mm == 31.25
    i = np.arange(64)
    np.testing.assert_allclose(g.depth_to_bin(-1000.0 + (i + 0.5) * 31.25, spec), i, atol=1e-12)
    np.testing.assert_allclose(g.depth_to_bin(np.array([-1000.0, 0.0, 1000.0]), spec), [-0.5, 31.5, 63.5])
    np.testing.assert_allclose(g.bin_to_depth(i, spec), -1000.0 + (i + 0.5) * 31.25)
    z = np.random.default_rng(5).uniform(-1200, 1200, 50)
    np.testing.assert_allclose(g.bin_to_depth(g.depth_to_bin(z, spec), spec), z, atol=1e-9)


def test_pose_to_voxels_closed_form_and_round_trip():
    rng = np.random.default_rng(6)
    spec = g.VolumeSpec(heatmap_size=64, depth_bins=64, input_size=256)
    poses = _random_poses(rng, 3)
    centers = rng.uniform(300, 700, (3, 2))
    scales, rots = rng.uniform(1, 2, 3), rng.uniform(-30, 30, 3)
    vox = g.pose_to_voxels(poses, K, centers, scales, spec, rots)
    assert vox.shape == (3, 16, 3)
    # Independent float64 formula, written out for the unrotated case.
    v0 = g.pose_to_voxels(poses, K, centers, scales, spec)
    u = K[0] * poses[..., 0] / poses[..., 2] + K[2]
    v = K[1] * poses[..., 1] / poses[..., 2] + K[3]
    zoom = (256 / (200 * scales))[:, None]
    cx = (u - centers[:, None, 0]) * zoom + 127.5
    cy = (v - centers[:, None, 1]) * zoom + 127.5
    zrel = poses[..., 2] - poses[:, ROOT:ROOT + 1, 2]
    ref = np.stack([(cx - 1.5) / 4, (cy - 1.5) / 4, (zrel + 1000) / 31.25 - 0.5], -1)
    np.testing.assert_allclose(v0, ref, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(vox[:, ROOT, 2], 31.5)
    back = g.voxels_to_pose(vox, K, centers, scales, poses[:, ROOT, 2], spec, rots)
    np.testing.assert_allclose(back, poses, rtol=1e-12, atol=1e-8)
    # A wrong root depth scales the pose about the camera centre: the error is not zero.
    wrong = g.voxels_to_pose(vox, K, centers, scales, poses[:, ROOT, 2] + 500.0, spec, rots)
    assert np.abs(wrong - poses).min() > 1.0


def test_traced_geometry_issues_no_matrix_product():
    # Under jit a GPU may round `@`'s float32 factors to TensorFloat32 (2^-11 relative: up to
    # 0.5 px at 1000 px). The 2x2 / 3x3 maps are products and sums instead (helpers_jaxpr).
    rng = np.random.default_rng(8)
    spec = g.VolumeSpec(heatmap_size=16, depth_bins=16, input_size=64)
    poses = jnp.asarray(_random_poses(rng, 2), jnp.float32)
    centers, scales, rots = jnp.full((2, 2), 500.0), jnp.ones(2), jnp.full(2, 10.0)
    rot, t = g.look_at_camera(np.array([0.0, -3000.0, 1000.0]), np.zeros(3), np.array([0.0, 0.0, 1.0]))
    traced = {
        "pose_to_voxels": lambda p: g.pose_to_voxels(p, K, centers, scales, spec, rots),
        "voxels_to_pose": lambda p: g.voxels_to_pose(p, K, centers, scales, p[:, 0, 2], spec,
                                                     rots),
        "world_to_camera": lambda p: g.world_to_camera(p, jnp.asarray(rot), jnp.asarray(t)),
        "camera_to_world": lambda p: g.camera_to_world(p, jnp.asarray(rot), jnp.asarray(t)),
        "rotation_matrix": lambda p: g.rotation_matrix(p[:, 0], p[:, 1, 0]),
    }
    for name, fn in traced.items():
        assert dot_precisions(jax.make_jaxpr(fn)(poses).jaxpr) == [], name
    # The same maps computed as products and sums still equal the float64 matrix products.
    pts = _random_poses(rng, 2)
    np.testing.assert_allclose(g.world_to_camera(pts, rot, t), pts @ rot.T + t, rtol=1e-12)
    axis, angle = rng.normal(size=(3,)), 0.7
    want = Rotation.from_rotvec(angle * axis / np.linalg.norm(axis)).as_matrix()
    np.testing.assert_allclose(g.rotation_matrix(axis, angle), want, atol=1e-12)


def test_jit_float32_matches_float64():
    rng = np.random.default_rng(7)
    spec = g.VolumeSpec(heatmap_size=16, depth_bins=16, input_size=64)
    poses = _random_poses(rng, 2)
    c, s = np.array([[500.0, 500.0], [480.0, 530.0]]), np.array([2.0, 2.5])
    f = jax.jit(g.pose_to_voxels, static_argnames="spec")
    vox = f(jnp.asarray(poses, jnp.float32), jnp.asarray(K, jnp.float32), jnp.asarray(c, jnp.float32),
            jnp.asarray(s, jnp.float32), spec=spec)
    assert isinstance(vox, jax.Array) and vox.dtype == jnp.float32
    ref = g.pose_to_voxels(poses, K, c, s, spec)
    np.testing.assert_allclose(np.asarray(vox), ref, atol=2e-3)
    back = jax.jit(g.voxels_to_pose, static_argnames="spec")(
        vox, jnp.asarray(K, jnp.float32), jnp.asarray(c, jnp.float32), jnp.asarray(s, jnp.float32),
        jnp.asarray(poses[:, ROOT, 2], jnp.float32), spec=spec)
    np.testing.assert_allclose(np.asarray(back), poses, rtol=2e-5, atol=0.5)


def test_bad_input():
    with pytest.raises(ValueError, match="input_size"):
        g.VolumeSpec(heatmap_size=16, depth_bins=16, input_size=60)
    with pytest.raises(ValueError, match="depth_bins"):
        g.VolumeSpec(heatmap_size=16, depth_bins=0)
    with pytest.raises(ValueError, match="depth_range_mm"):
        g.VolumeSpec(heatmap_size=16, depth_bins=8, depth_range_mm=float("nan"))
    with pytest.raises(TypeError):
        g.VolumeSpec(16, 16)     # keyword-only
    spec = g.VolumeSpec(heatmap_size=16, depth_bins=8)
    with pytest.raises(ValueError, match="pose_cam"):
        g.pose_to_voxels(np.ones((17, 3)), K, [0.0, 0.0], 1.0, spec)
    with pytest.raises(ValueError, match="center"):
        g.image_to_crop(np.ones((3, 2)), [0.0, 0.0, 0.0], 1.0, 64)
    with pytest.raises(ValueError, match="scale must be > 0"):
        g.image_to_crop(np.ones((3, 2)), [0.0, 0.0], 0.0, 64)
    with pytest.raises(ValueError, match="res"):
        g.crop_affine([0.0, 0.0], 1.0, 64.0)
    with pytest.raises(ValueError, match="center contains 1 non-finite"):
        g.crop_to_image(np.ones((3, 2)), [np.nan, 0.0], 1.0, 64)
    with pytest.raises(ValueError, match="focal"):
        g.project(np.ones((4, 3)), [0.0, 1000.0, 500.0, 500.0])
    with pytest.raises(ValueError, match="batch dims"):
        g.project(np.ones((4, 3)), np.ones((4, 4, 4)))


def test_camera_sees_the_mocap_subject_unmirrored():
    """Facing the camera, the subject's right hip is on the image's left; seen from behind, on its right."""
    from hourglass_jax.data import mocap
    from hourglass_jax.skeleton import JOINT_INDEX as J

    rest = mocap.rest_pose()                       # faces +x, y up
    pelvis = rest[J["pelvis"]]
    for cam_x, right_on_left in ((4000.0, True), (-4000.0, False)):
        R, t = g.look_at_camera(pelvis + [cam_x, 0.0, 0.0], pelvis, [0.0, 1.0, 0.0])
        uv = g.project(g.world_to_camera(rest, R, t), K)
        assert (uv[J["r_hip"], 0] < uv[J["l_hip"], 0]) == right_on_left
        assert (uv[J["r_wrist"], 0] < uv[J["l_wrist"], 0]) == right_on_left
        assert uv[J["head_top"], 1] < uv[J["pelvis"], 1] < uv[J["r_ankle"], 1]   # upright in the image
