"""The ray caster against brute-force float64 NumPy references (sampling along rays)."""
import numpy as np
import pytest

from hourglass_jax import geometry
from hourglass_jax.data import mocap, render, subjects
from hourglass_jax.data.render import NUM_PARTS

RES = 32


def _np_segments(joints, radii):
    """Capsule segments as documented in render.py, rebuilt in NumPy float64."""
    a = np.array([joints[p[1]] for p in render.BODY_PARTS], np.float64)
    b = np.array([joints[p[2]] for p in render.BODY_PARTS], np.float64)
    h = render.PART_INDEX["head"]
    axis = joints[9] - joints[8]
    length = np.linalg.norm(axis)
    a[h] = joints[8] + 0.4 * axis
    b[h] = joints[9] - axis / length * min(radii[h], 0.6 * length)
    return a, b


def _seg_dist(p, a, b):
    """Distance of points p (..., 3) to segments a, b (C, 3): (..., C)."""
    ab = b - a
    s = np.einsum("...ck,ck->...c", p[..., None, :] - a, ab) / np.maximum(
        np.sum(ab * ab, -1), 1e-9)
    q = a + np.clip(s, 0, 1)[..., None] * ab
    return np.linalg.norm(p[..., None, :] - q, axis=-1)


def _scene_for(pose_world, cam_pos, subject="S8", occluder=None, res=RES):
    """Camera looking at the pose; returns joints_cam, crop intrinsics and render inputs."""
    target = pose_world[6]
    r, t = geometry.look_at_camera(cam_pos, target, np.array([0.0, 1.0, 0.0]))
    joints = geometry.world_to_camera(pose_world, r, t)
    k = np.array([1145.0, 1145.0, 500.0, 500.0])
    uv = geometry.project(joints, k)
    center = 0.5 * (uv.min(0) + uv.max(0))
    scale = 1.3 * np.max(uv.max(0) - uv.min(0)) / 200.0
    a = geometry.crop_affine(center, scale, res)
    kc = np.array([a[0, 0] * k[0], a[1, 1] * k[1], *geometry.apply_affine(a, k[2:])])
    radii, colors, hair = subjects.appearance_arrays(subject)
    if occluder is None:
        occ = render.Occluders(np.zeros((1, 2, 3), np.float32), np.zeros(1, np.float32),
                               np.zeros((1, 3), np.float32))
    else:
        occ = occluder
    scene = render.Scene(r.astype(np.float32), t.astype(np.float32),
                         np.array([0.0, -0.6, -0.8], np.float32),
                         np.linspace(0, 1, render.BG_PARAMS).astype(np.float32))
    app = render.Appearance(radii, colors, hair)
    return joints, kc, app, scene, occ


def _render1(joints, kc, app, scene, occ, res=RES):
    b = lambda x: np.asarray(x, np.float32)[None]  # noqa: E731
    out = render.render_batch(joints[None], kc[None], render.Appearance(*map(b, app)),
                              render.Scene(*map(b, scene)), render.Occluders(*map(b, occ)), res)
    return [np.asarray(x[0]) for x in out]


def _poses(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        name = mocap.CLIP_NAMES[rng.integers(len(mocap.CLIP_NAMES))]
        j = subjects.sequence_motion("S8", name, 1, 10.0)
        pose = j[rng.integers(len(j))]
        az = rng.uniform(0, 2 * np.pi)
        cam = pose[6] + np.array([4000 * np.sin(az), 0, 4000 * np.cos(az)])
        cam[1] = rng.uniform(500, 2200)
        out.append((pose, cam))
    return out


def test_unsupported_size_and_bad_input_raise():
    pose, cam = _poses(1)[0]
    joints, kc, app, scene, occ = _scene_for(pose, cam)
    for bad in (48, 0, 63.5, 1024):
        with pytest.raises(ValueError, match="unsupported image size"):
            _render1(joints, kc, app, scene, occ, res=bad)
    with pytest.raises(ValueError, match="NaN"):
        j = joints.copy()
        j[3, 0] = np.nan
        _render1(j, kc, app, scene, occ)
    with pytest.raises(ValueError, match="behind the camera"):
        _render1(joints * np.array([1, 1, -1]), kc, app, scene, occ)
    with pytest.raises(ValueError, match=r"\(B, 16, 3\)"):
        render.render_batch(joints[None, :15], kc[None], app, scene, occ, RES)


@pytest.mark.parametrize("seed", [0, 1])
def test_depth_and_parts_match_ray_marching(seed):
    """Depth buffer and nearest part equal a float64 ray march through the capsule union."""
    pose, cam = _poses(1, seed)[0]
    joints, kc, app, scene, occ = _scene_for(pose, cam)
    image, depth, part, visible = _render1(joints, kc, app, scene, occ)
    a, b = _np_segments(joints, np.asarray(app.radii, np.float64))
    r = np.asarray(app.radii, np.float64)
    v, u = np.mgrid[0:RES, 0:RES].astype(np.float64)
    d = np.stack([(u - kc[2]) / kc[0], (v - kc[3]) / kc[1], np.ones_like(u)], -1)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    rng_lo = np.linalg.norm(joints, axis=-1).min() - 400
    ts = np.arange(rng_lo, rng_lo + 2600, 4.0)  # 4 mm steps
    hit_t = np.full((RES, RES), np.inf)
    hit_p = np.full((RES, RES), -1)
    for t in ts:  # march front to back; record the first sample inside a capsule
        dist = _seg_dist(t * d, a, b)  # (R, R, C)
        inside = dist < r
        new = inside.any(-1) & ~np.isfinite(hit_t)
        hit_t[new] = t
        hit_p[new] = np.argmax(inside, -1)[new]
    z_ref = hit_t * d[..., 2]
    both = np.isfinite(z_ref) & np.isfinite(depth)
    agree = np.isfinite(z_ref) == np.isfinite(depth)
    assert agree.mean() > 0.97, agree.mean()  # misses only at grazing silhouettes
    assert both.sum() > 40  # the person covers a good part of the crop
    # The march overshoots the true surface by less than one step (4 mm along the ray).
    err = z_ref[both] - depth[both]
    assert np.all(err > -0.5) and np.percentile(err, 95) < 4.5, (err.min(), err.max())
    assert np.mean(hit_p[both] == part[both]) > 0.95
    assert np.all(part[~np.isfinite(depth)] == render.BACKGROUND_ID)


def _visible_reference(joints, a, b, r, slack=2.0):
    """A joint is hidden iff a sample on the camera-to-joint segment is inside a capsule that
    does not contain the joint (float64 sampling every 2 mm)."""
    out = []
    for j in joints:
        rng = np.linalg.norm(j)
        contains = _seg_dist(j, a, b) < r + slack
        ts = np.arange(100.0, rng - slack, 2.0)
        pts = ts[:, None] * (j / rng)
        inside = (_seg_dist(pts, a, b) < r) & ~contains
        out.append(not inside.any())
    return np.array(out)


def test_visibility_agrees_with_sampled_depth_test():
    n_hidden = n_checked = 0
    for pose, cam in _poses(12, seed=3):
        joints, kc, app, scene, occ = _scene_for(pose, cam)
        image, depth, part, visible = _render1(joints, kc, app, scene, occ)
        r = np.asarray(app.radii, np.float64)
        a, b = _np_segments(joints, r)
        ref = _visible_reference(joints, a, b, r)
        uv = joints[:, :2] / joints[:, 2:] * kc[:2] + kc[2:]
        inside = np.all((uv > -0.5) & (uv < RES - 0.5), -1)
        np.testing.assert_array_equal(visible, ref & inside)
        n_hidden += int((~ref).sum())
        n_checked += 16
    assert 0 < n_hidden < n_checked  # the test saw both visible and self-occluded joints


def test_occluder_hides_joint_and_is_drawn():
    pose, cam = _poses(1, seed=5)[0]
    joints, kc, app, scene, _ = _scene_for(pose, cam)
    # A fat vertical pole halfway between the camera and the pelvis.
    mid = joints[6] * 0.5
    ends = np.stack([mid - [0, 600, 0], mid + [0, 600, 0]])[None].astype(np.float32)
    occ = render.Occluders(ends, np.array([80.0], np.float32), np.array([[1.0, 0, 0]], np.float32))
    image, depth, part, visible = _render1(joints, kc, app, scene, occ)
    assert not visible[6]
    uv = joints[6, :2] / joints[6, 2] * kc[:2] + kc[2:]
    u, v = np.round(uv).astype(int)
    assert part[v, u] == NUM_PARTS  # occluder 0
    np.testing.assert_allclose(depth[v, u], joints[6, 2] * 0.5, rtol=0.05)


def test_joints_land_on_their_body_parts_and_colours_follow_appearance():
    pose, cam = _poses(1, seed=7)[0]
    joints, kc, app, scene, occ = _scene_for(pose, cam, res=64)
    image, depth, part, visible = _render1(joints, kc, app, scene, occ, res=64)
    uv = joints[:, :2] / joints[:, 2:] * kc[:2] + kc[2:]
    for j in np.flatnonzero(visible):
        u, v = np.round(uv[j]).astype(int)
        touching = [k for k, p in enumerate(render.BODY_PARTS) if j in (p[1], p[2])]
        near = part[max(v - 1, 0):v + 2, max(u - 1, 0):u + 2]
        assert np.isin(near, touching + [render.PART_INDEX["trunk"]]).any(), (j, near)
    # Shaded pixels are the part colour times a shade in [0.45, 1] (hair aside).
    colors = np.asarray(app.colors)
    for k in range(NUM_PARTS):
        if k == render.PART_INDEX["head"]:
            continue
        px = image[part == k]
        if len(px) == 0:
            continue
        shade = px / np.maximum(colors[k], 1e-6)
        assert np.all(shade > 0.45 - 0.02) and np.all(shade < 1.0 + 0.02), k
        assert np.allclose(shade, shade[:, :1], atol=0.02), k  # same factor on all channels
