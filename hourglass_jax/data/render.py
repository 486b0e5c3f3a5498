"""A small JAX ray caster that draws a person from MPII-16 joints into a crop.

The body is a union of capsules (a capsule is every point within a radius of a segment): shins,
thighs, a pelvis band, the trunk, a shoulder band, neck, upper arms, forearms, hands, feet and a
head. Every crop pixel casts a ray from the camera centre; the nearest capsule hit wins, so
self-occlusion is exact, not painted in a fixed order. Behind the person the ray meets a
textured floor (world plane y = 0) or a textured backdrop that is a function of the world ray
direction, so the background stays fixed in the scene while the crop follows the person.
Optional occluders are extra capsules given in the camera frame (e.g. a pole between camera
and subject).

Conventions: camera frame as OpenCV (x right, y down, z forward), millimetres. Crop pixel
(row v, column u) has its centre at the continuous point (u, v); a point projects to
u = fx x / z + cx, v = fy y / z + cy with the crop intrinsics (fx, fy, cx, cy) in crop pixels.

Everything is pure JAX: `render` draws one frame and `render_batch` is its jitted vmap.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

SUPPORTED_SIZES: tuple[int, ...] = (32, 64, 128, 256)

# Body parts: (name, joint a, joint b, material). Spheres have a == b. The head is special:
# its segment runs from just above the upper neck to one radius below the head top, so the
# top of the rendered head touches the head_top joint.
BODY_PARTS: tuple[tuple[str, int, int, str], ...] = (
    ("r_shin", 0, 1, "bottom"),
    ("r_thigh", 1, 2, "bottom"),
    ("l_thigh", 3, 4, "bottom"),
    ("l_shin", 4, 5, "bottom"),
    ("pelvis", 2, 3, "bottom"),
    ("trunk", 6, 7, "top"),
    ("shoulders", 12, 13, "top"),
    ("neck", 7, 8, "skin"),
    ("head", 8, 9, "skin"),
    ("r_upper_arm", 12, 11, "top"),
    ("r_forearm", 11, 10, "skin"),
    ("l_upper_arm", 13, 14, "top"),
    ("l_forearm", 14, 15, "skin"),
    ("r_hand", 10, 10, "skin"),
    ("l_hand", 15, 15, "skin"),
    ("r_foot", 0, 0, "shoes"),
    ("l_foot", 5, 5, "shoes"),
)
NUM_PARTS: int = len(BODY_PARTS)
PART_NAMES: tuple[str, ...] = tuple(p[0] for p in BODY_PARTS)
PART_INDEX: dict[str, int] = {n: i for i, n in enumerate(PART_NAMES)}
MATERIALS: tuple[str, ...] = ("skin", "top", "bottom", "shoes")
PART_MATERIAL: tuple[int, ...] = tuple(MATERIALS.index(p[3]) for p in BODY_PARTS)
_HEAD = PART_INDEX["head"]
_PART_A = np.array([p[1] for p in BODY_PARTS])
_PART_B = np.array([p[2] for p in BODY_PARTS])

_SLACK_MM = 2.0
BACKGROUND_ID: int = -1  # `part` value of a pixel that shows floor or backdrop.


class Appearance(NamedTuple):
    """Per-subject look.

    radii: (NUM_PARTS,) capsule radii in mm, in BODY_PARTS order.
    colors: (NUM_PARTS, 3) RGB in [0, 1] per part.
    hair: (3,) RGB of the back and top of the head (the face is `colors[head]`).
    """

    radii: jax.Array
    colors: jax.Array
    hair: jax.Array


class Occluders(NamedTuple):
    """Extra capsules in the camera frame.

    ends: (O, 2, 3) segment end points, mm, camera frame.
    radii: (O,) mm; a radius <= 0 disables that occluder.
    colors: (O, 3) RGB in [0, 1].
    """

    ends: jax.Array
    radii: jax.Array
    colors: jax.Array


class Scene(NamedTuple):
    """Everything one frame needs besides the body.

    cam_r: (3, 3) world-to-camera rotation; cam_t: (3,) mm, x_cam = cam_r @ x_world + cam_t.
      The world has y up and the floor at y = 0.
    light: (3,) unit direction, camera frame, from the surface towards the light.
    bg_params: (BG_PARAMS,) random numbers in [0, 1) that define floor and backdrop texture
      (draw with `random_background`); keep them fixed over a video so the scene is static.
    """

    cam_r: jax.Array
    cam_t: jax.Array
    light: jax.Array
    bg_params: jax.Array


BG_PARAMS: int = 32


class RenderOutput(NamedTuple):
    """image (R, R, 3) float32 in [0, 1]; depth (R, R) camera z in mm of the nearest body or
    occluder surface (+inf where the ray shows background); part (R, R) int32 index of that
    body part, NUM_PARTS + o for occluder o, BACKGROUND_ID for background; visible (16,) bool:
    the joint is inside the crop and no body part that does not contain it, and no occluder,
    lies between the camera and the joint."""

    image: jax.Array
    depth: jax.Array
    part: jax.Array
    visible: jax.Array


def check_size(res: int) -> int:
    """Return `res` if the renderer supports that crop size, else raise ValueError."""
    if int(res) != res or int(res) not in SUPPORTED_SIZES:
        raise ValueError(f"unsupported image size {res!r}: the renderer draws square crops of "
                         f"{SUPPORTED_SIZES} pixels")
    return int(res)


def random_background(key: jax.Array) -> jax.Array:
    """(BG_PARAMS,) uniform random texture parameters for `Scene.bg_params`."""
    return jax.random.uniform(key, (BG_PARAMS,), jnp.float32)


def part_segments(joints: jax.Array, radii: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Capsule segments of the body.

    Args:
      joints: (16, 3) mm, camera frame.
      radii: (NUM_PARTS,) mm.
    Returns:
      a, b: (NUM_PARTS, 3) segment end points in mm.
    """
    a = joints[_PART_A]
    b = joints[_PART_B]
    # Head: from 40% up the neck-to-top segment to one head radius below the top.
    neck, top = joints[8], joints[9]
    axis = top - neck
    length = jnp.sqrt(jnp.sum(axis**2) + 1e-9)
    r = radii[_HEAD]
    head_b = top - axis / length * jnp.minimum(r, 0.6 * length)
    head_a = neck + 0.4 * axis
    a = a.at[_HEAD].set(head_a)
    b = b.at[_HEAD].set(head_b)
    return a, b


def _dot(u: jax.Array, v: jax.Array) -> jax.Array:
    """Dot product over the last axis, written elementwise so XLA fuses it (no dot kernel)."""
    return u[..., 0] * v[..., 0] + u[..., 1] * v[..., 1] + u[..., 2] * v[..., 2]


def _ray_capsule(d: jax.Array, a: jax.Array, b: jax.Array, r: jax.Array) -> jax.Array:
    """Distance along unit rays from the origin to the first hit of capsules.

    A capsule is the union of a finite cylinder and two end spheres, so its first hit is the
    nearest of the three. Everything is elementwise with broadcasting (one fused XLA loop).

    Args:
      d: (..., 1, 3) unit ray directions. a, b: (C, 3) segment ends. r: (C,) radii.
    Returns:
      (..., C) ray parameter t (mm) of the first hit, +inf for a miss or a radius <= 0.
    """
    inf = jnp.inf

    def sphere(c):
        # |t d - c|^2 = r^2 with |d| = 1: t^2 - 2 t (d.c) + |c|^2 - r^2 = 0.
        bc = _dot(d, c)
        disc = bc**2 - (_dot(c, c) - r**2)
        t = bc - jnp.sqrt(jnp.maximum(disc, 0.0))
        return jnp.where((disc >= 0) & (t > 0), t, inf)

    axis = b - a
    length = jnp.sqrt(_dot(axis, axis))
    w = axis / jnp.maximum(length, 1e-6)[..., None]
    # Infinite cylinder: the part of (t d - a) perpendicular to w has length r.
    dw = _dot(d, w)
    d_perp = d - dw[..., None] * w
    aw = _dot(a, w)
    m_perp = -a + aw[..., None] * w  # ray origin relative to a, perpendicular part
    qa = _dot(d_perp, d_perp)
    qb = _dot(d_perp, m_perp)
    qc = _dot(m_perp, m_perp) - r**2
    disc = qb**2 - qa * qc
    t = (-qb - jnp.sqrt(jnp.maximum(disc, 0.0))) / jnp.maximum(qa, 1e-12)
    y = t * dw - aw  # position of the hit along the axis, from a
    body = (disc >= 0) & (qa > 1e-9) & (t > 0) & (y >= 0) & (y <= length) & (length > 1e-6)
    t_body = jnp.where(body, t, inf)
    t_all = jnp.minimum(jnp.minimum(sphere(a), sphere(b)), t_body)
    return jnp.where(r > 0, t_all, inf)


def _closest_on_segment(p: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    """Closest points to p (..., 3) on the segments a-b (..., 3)."""
    ab = b - a
    s = jnp.sum((p - a) * ab, -1) / jnp.maximum(jnp.sum(ab * ab, -1), 1e-9)
    return a + jnp.clip(s, 0.0, 1.0)[..., None] * ab


def _rays(intrinsics: jax.Array, res: int) -> jax.Array:
    """(R, R, 3) unit ray directions through the crop pixel centres."""
    fx, fy, cx, cy = intrinsics[0], intrinsics[1], intrinsics[2], intrinsics[3]
    v, u = jnp.meshgrid(jnp.arange(res, dtype=jnp.float32), jnp.arange(res, dtype=jnp.float32),
                        indexing="ij")
    d = jnp.stack([(u - cx) / fx, (v - cy) / fy, jnp.ones_like(u)], axis=-1)
    return d / jnp.linalg.norm(d, axis=-1, keepdims=True)


def _background(d: jax.Array, scene: Scene) -> jax.Array:
    """(R, R, 3) floor / backdrop colours for unit camera rays d (R, R, 3)."""
    p = scene.bg_params
    dw = d @ scene.cam_r  # world direction: cam_r^T d, row-vector form
    centre = -scene.cam_r.T @ scene.cam_t  # camera centre in the world, mm
    # Backdrop: smooth colour bands over azimuth and elevation plus a grating.
    az = jnp.arctan2(dw[..., 0], dw[..., 2])
    el = dw[..., 1]
    base = 0.25 + 0.5 * p[0:3]
    band = (0.15 * jnp.sin(az[..., None] * (1 + 4 * p[3:6]) + 6.3 * p[6:9])
            + 0.12 * jnp.sin(el[..., None] * (3 + 12 * p[9:12]) + 6.3 * p[12:15]))
    grating = 0.06 * jnp.sin((az * (20 + 60 * p[15]) + el * (20 + 60 * p[16])))[..., None]
    wall = base + band + grating
    # Floor: checker tiles on the world plane y = 0, seen by rays that point down.
    t = -centre[1] / jnp.where(dw[..., 1] < -1e-4, dw[..., 1], -1e-4)
    hit = centre + t[..., None] * dw
    tile = 300.0 + 500.0 * p[17]
    checker = (jnp.floor(hit[..., 0] / tile) + jnp.floor(hit[..., 2] / tile)) % 2
    floor_a = 0.2 + 0.5 * p[18:21]
    floor_b = floor_a * (0.6 + 0.3 * p[21])
    floor = jnp.where(checker[..., None] > 0.5, floor_a, floor_b)
    fade = jnp.exp(-t / (8000.0 + 8000.0 * p[22]))[..., None]  # far floor fades to the wall
    floor = fade * floor + (1 - fade) * wall
    is_floor = (dw[..., 1] < -1e-4) & (centre[1] > 0)
    return jnp.clip(jnp.where(is_floor[..., None], floor, wall), 0.0, 1.0)


def _forward(joints: jax.Array) -> jax.Array:
    """(3,) unit direction the body faces: left x up (right-handed frames)."""
    left = (joints[3] - joints[2]) + (joints[13] - joints[12])
    up = joints[7] - joints[6]
    f = jnp.cross(left, up)
    return f / jnp.maximum(jnp.linalg.norm(f), 1e-6)


def _all_capsules(joints, appearance, occluders):
    a, b = part_segments(joints, appearance.radii)
    a = jnp.concatenate([a, occluders.ends[:, 0]], 0)
    b = jnp.concatenate([b, occluders.ends[:, 1]], 0)
    r = jnp.concatenate([appearance.radii, occluders.radii], 0)
    return a, b, r


def visibility(joints: jax.Array, appearance: Appearance, occluders: Occluders) -> jax.Array:
    """(16,) bool: no capsule that does not contain joint j lies between the camera and j.

    A joint sits on the axis of the capsules that end at it (and may be inside a fat trunk);
    a capsule that contains the joint cannot hide it, any other capsule hit along the ray
    before the joint does. Does not check the crop borders.
    """
    a, b, r = _all_capsules(joints, appearance, occluders)
    dist = jnp.linalg.norm(joints[:, None] - _closest_on_segment(joints[:, None], a[None], b[None]),
                           axis=-1)
    # 2 mm of slack: the head top lies exactly on the head's surface.
    contains = dist < r[None] + _SLACK_MM  # (16, C)
    rng = jnp.linalg.norm(joints, axis=-1)
    d = joints / rng[:, None]
    t = _ray_capsule(d[:, None, :], a, b, r)  # (16, C)
    blocked = (t < rng[:, None] - _SLACK_MM) & ~contains
    return ~jnp.any(blocked, axis=1)


def _first_hit(d: jax.Array, a: jax.Array, b: jax.Array, r: jax.Array):
    """Nearest hit over capsules, one capsule at a time (keeps the working set at (R, R):
    the all-capsules-at-once form is memory-bound on CPU).

    Returns t_min (R, R) mm along the ray (+inf: miss) and nearest (R, R) int32 capsule index.
    """
    def step(carry, cap):
        t_best, i_best = carry
        aa, bb, rr, i = cap
        t = _ray_capsule(d[..., None, :], aa[None], bb[None], rr[None])[..., 0]
        closer = t < t_best
        return (jnp.where(closer, t, t_best), jnp.where(closer, i, i_best)), None

    init = (jnp.full(d.shape[:-1], jnp.inf, d.dtype), jnp.zeros(d.shape[:-1], jnp.int32))
    (t_min, nearest), _ = jax.lax.scan(step, init, (a, b, r, jnp.arange(a.shape[0])))
    return t_min, nearest


def render(joints: jax.Array, intrinsics: jax.Array, appearance: Appearance, scene: Scene,
           occluders: Occluders, res: int) -> RenderOutput:
    """Draw one person into a res x res crop (not jitted; see `render_batch`).

    Args:
      joints: (16, 3) MPII-16 joints, mm, camera frame; all z must be > 0.
      intrinsics: (4,) crop camera [fx, fy, cx, cy] in crop pixels.
      appearance, scene, occluders: see their classes (occluders may have O = 0).
      res: crop side in pixels, one of SUPPORTED_SIZES.
    Returns:
      RenderOutput.
    """
    res = check_size(res)
    d = _rays(intrinsics, res)
    a, b, r = _all_capsules(joints, appearance, occluders)
    t_min, nearest = _first_hit(d, a, b, r)
    hit = jnp.isfinite(t_min)
    p = jnp.where(hit, t_min, 0.0)[..., None] * d
    # Shading: Lambert with an ambient term, normals from the capsule axis.
    n = p - _closest_on_segment(p, a[nearest], b[nearest])
    n = n / jnp.maximum(jnp.linalg.norm(n, axis=-1, keepdims=True), 1e-6)
    lam = jnp.maximum(_dot(n, scene.light), 0.0)
    shade = (0.45 + 0.55 * lam)[..., None]
    colors = jnp.concatenate([appearance.colors, occluders.colors], 0)
    col = colors[nearest]
    # Hair covers the back and the top of the head; the face looks forward.
    fwd = _forward(joints)
    up = joints[9] - joints[8]
    up = up / jnp.maximum(jnp.linalg.norm(up), 1e-6)
    is_hair = (nearest == _HEAD) & ((_dot(n, fwd) < -0.1) | (_dot(n, up) > 0.55))
    col = jnp.where(is_hair[..., None], appearance.hair, col)
    img = jnp.where(hit[..., None], jnp.clip(col * shade, 0.0, 1.0), _background(d, scene))
    depth = jnp.where(hit, t_min * d[..., 2], jnp.inf)
    part = jnp.where(hit, nearest, BACKGROUND_ID).astype(jnp.int32)

    uv = joints[:, :2] / joints[:, 2:3] * intrinsics[:2] + intrinsics[2:]
    inside = jnp.all((uv > -0.5) & (uv < res - 0.5), axis=-1)
    vis = visibility(joints, appearance, occluders) & inside
    return RenderOutput(img.astype(jnp.float32), depth, part, vis)


def _render_batch(joints, intrinsics, appearance, scene, occluders, res):
    return jax.vmap(render, in_axes=(0, 0, 0, 0, 0, None))(
        joints, intrinsics, appearance, scene, occluders, res)


_render_batch_jit = jax.jit(_render_batch, static_argnums=5)


def render_batch(joints: jax.Array, intrinsics: jax.Array, appearance: Appearance,
                 scene: Scene, occluders: Occluders, res: int) -> RenderOutput:
    """Jitted, vmapped `render` over a leading batch axis B of every argument.

    Args:
      joints: (B, 16, 3) mm camera frame; intrinsics: (B, 4) crop px; appearance, scene,
        occluders: their fields with a leading B axis; res: one of SUPPORTED_SIZES.
    Returns:
      RenderOutput with a leading B axis.
    Raises:
      ValueError: unsupported res, wrong shapes, non-finite joints or a joint behind the camera.
    """
    res = check_size(res)
    joints_np = np.asarray(joints)
    if joints_np.ndim != 3 or joints_np.shape[1:] != (16, 3):
        raise ValueError(f"joints must be (B, 16, 3) mm, got shape {joints_np.shape}")
    if not np.all(np.isfinite(joints_np)):
        raise ValueError("joints contain NaN or inf")
    if np.any(joints_np[..., 2] <= 0):
        raise ValueError("a joint is behind the camera (z <= 0 mm)")
    if np.shape(intrinsics) != (joints_np.shape[0], 4):
        raise ValueError(f"intrinsics must be (B, 4), got shape {np.shape(intrinsics)}")
    return _render_batch_jit(jnp.asarray(joints, jnp.float32),
                             jnp.asarray(intrinsics, jnp.float32), appearance, scene,
                             occluders, res)


def to_uint8(image: jax.Array | np.ndarray) -> np.ndarray:
    """float [0, 1] image (..., 3) -> uint8 (rounded)."""
    return np.clip(np.rint(np.asarray(image) * 255.0), 0, 255).astype(np.uint8)
