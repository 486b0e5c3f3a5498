"""The paper's augmentation (Sec. 4.1): 50% horizontal flip, rotation in -30..+30 deg, scale in
0.75..1.25, applied to the image and to the 2D and 3D targets consistently.

An augmented sample is again exactly what a pinhole camera sees, so every downstream formula
(geometry.project, image_to_crop with rotation 0, pose_to_voxels) holds for it unchanged:

* Flip: the crop is mirrored about its vertical centre line. That is the view of a mirrored
  camera: the 3D pose becomes (-x, y, z) in the camera frame, left and right joints swap labels,
  and the principal point moves to cx' = 2 * center_x - cx (fx stays positive).
* Rotation by theta (counter-clockwise on screen, geometry.rotation_2d) about the crop centre:
  the camera rolls about its optical axis, so the 3D pose is rotated about the camera z axis
  (pose3d' = rotation_matrix(z, -theta) @ pose3d; depths, and so root_depth, are unchanged),
  and because the crop centre is not the principal point, the principal point turns about the
  crop centre: pp' = center + rotation_2d(theta) @ (pp - center). This needs square pixels
  (fx == fy), which the embedded dataset's cameras have (see SQUARE_PIXEL_RTOL for real ones).
* Scale by s: the crop box grows by s (scale' = s * scale); the person looks smaller for s > 1.
  The 3D pose and the camera are unchanged.

Samples are dicts of numpy arrays: image (R, R, 3) uint8 or float, pose3d (16, 3) mm camera
frame, pose2d (16, 2) crop px, visible (16,) bool, intrinsics (4,) image px, center (2,) image
px, scale (); other keys pass through.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from hourglass_jax import geometry
from hourglass_jax.skeleton import BONE_FLIP_PERMUTATION, FLIP_PERMUTATION

# Optional per-joint (16,) and per-bone (11,) sample entries that a flip relabels too (the
# fine-tuning stage's pseudo-label confidences and per-video bone lengths).
PER_JOINT_KEYS: tuple[str, ...] = ("confidence",)
PER_BONE_KEYS: tuple[str, ...] = ("bone_lengths",)

# Rotation is an exact camera roll only for fx == fy. Real cameras are close (H36M's differ by
# ~0.1%): up to this relative difference the sample is accepted, and the rotated 3D pose then
# projects onto the rotated 2D target up to |fx - fy| / f of the point's distance from the
# principal point (0.1% of ~100 crop px: ~0.1 px). The 2D target itself is exact.
SQUARE_PIXEL_RTOL: float = 5e-3
ROTATION_DEG: float = 30.0
SCALE_RANGE: tuple[float, float] = (0.75, 1.25)
FLIP_PROB: float = 0.5


def _check(sample: dict) -> int:
    img = sample["image"]
    if img.ndim != 3 or img.shape[0] != img.shape[1] or img.shape[2] != 3:
        raise ValueError(f"image must be (R, R, 3), got shape {img.shape}")
    for k, shape in (("pose3d", (16, 3)), ("pose2d", (16, 2)), ("visible", (16,)),
                     ("intrinsics", (4,)), ("center", (2,))):
        if np.shape(sample[k]) != shape:
            raise ValueError(f"{k} must have shape {shape}, got {np.shape(sample[k])}")
    return img.shape[0]


def _mirror_pose(pose3d: np.ndarray) -> np.ndarray:
    """A camera-frame pose (..., 16, 3) seen by the mirrored camera: x negated, left and right
    swapped (its own inverse)."""
    return np.asarray(pose3d, np.float64)[..., FLIP_PERMUTATION, :] * np.array([-1.0, 1.0, 1.0])


def _camera_roll(rotation_deg: float) -> np.ndarray:
    """(3, 3) turn of camera-frame points when the crop content turns by `rotation_deg`
    (counter-clockwise on screen): about the camera z axis by -rotation_deg."""
    return geometry.rotation_matrix(np.array([0.0, 0.0, 1.0]), -np.deg2rad(float(rotation_deg)))


def flip(sample: dict) -> dict:
    """Mirror a sample left-right (an involution: flip(flip(s)) == s)."""
    res = _check(sample)
    out = dict(sample)
    out["image"] = sample["image"][:, ::-1]
    p2 = np.array(sample["pose2d"], np.float64)
    p2[:, 0] = (res - 1) - p2[:, 0]
    out["pose2d"] = p2[FLIP_PERMUTATION].astype(sample["pose2d"].dtype)
    out["pose3d"] = _mirror_pose(sample["pose3d"]).astype(sample["pose3d"].dtype)
    out["visible"] = np.asarray(sample["visible"])[FLIP_PERMUTATION]
    for key in PER_JOINT_KEYS:
        if key in sample:
            out[key] = np.asarray(sample[key])[FLIP_PERMUTATION]
    for key in PER_BONE_KEYS:
        if key in sample:
            out[key] = np.asarray(sample[key])[BONE_FLIP_PERMUTATION]
    k = np.array(sample["intrinsics"], np.float64)
    k[2] = 2.0 * float(sample["center"][0]) - k[2]
    out["intrinsics"] = k.astype(sample["intrinsics"].dtype)
    return out


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """2x3 affine a after b."""
    return np.concatenate([a[:, :2] @ b[:, :2], (a[:, :2] @ b[:, 2] + a[:, 2])[:, None]], 1)


def _invert(a: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine map."""
    lin = np.linalg.inv(a[:, :2])
    return np.concatenate([lin, (-lin @ a[:, 2])[:, None]], 1)


def warp_image(image: np.ndarray, out_to_in: np.ndarray) -> np.ndarray:
    """Bilinear warp: out[v, u] = image at out_to_in @ (u, v, 1); zero outside the image.

    Runs in Pillow (C): uint8 RGB images as one RGB warp, float images channel by channel in
    32-bit float mode.

    Args:
      image: (R, R, C) uint8 (C = 3) or float. out_to_in: (2, 3) affine in crop px with pixel
        centres at integers.
    Returns:
      (R, R, C), uint8 for uint8 input, else float32.
    """
    res = image.shape[0]
    m = np.asarray(out_to_in, np.float64)
    # Pillow puts pixel k at [k, k + 1): shift both sides by half a pixel.
    off = m[:, 2] - 0.5 * (m[:, 0] + m[:, 1]) + 0.5
    data = (m[0, 0], m[0, 1], off[0], m[1, 0], m[1, 1], off[1])

    def warp(img: Image.Image) -> Image.Image:
        return img.transform((res, res), Image.Transform.AFFINE, data,
                             resample=Image.Resampling.BILINEAR, fillcolor=0)

    if image.dtype == np.uint8 and image.shape[-1] == 3:
        return np.asarray(warp(Image.fromarray(image, "RGB")))
    chans = [np.asarray(warp(Image.fromarray(np.ascontiguousarray(image[..., c], np.float32),
                                             "F"))) for c in range(image.shape[-1])]
    return np.stack(chans, -1).astype(np.float32)


def rotate_scale(sample: dict, rotation_deg: float, scale_factor: float) -> dict:
    """Rotate the crop content by `rotation_deg` (counter-clockwise on screen) about the crop
    centre and grow the crop box by `scale_factor`; targets and camera follow (module doc)."""
    res = _check(sample)
    if not np.isfinite(rotation_deg) or not np.isfinite(scale_factor) or scale_factor <= 0:
        raise ValueError(f"bad augmentation: rotation {rotation_deg!r} deg, scale {scale_factor!r}")
    k = np.array(sample["intrinsics"], np.float64)
    if not np.isclose(k[0], k[1], rtol=SQUARE_PIXEL_RTOL):
        raise ValueError(f"rotation needs square pixels (fx == fy within {SQUARE_PIXEL_RTOL}), "
                         f"got intrinsics {k}")
    center = np.asarray(sample["center"], np.float64)
    scale = float(sample["scale"])
    new_scale = scale * scale_factor
    old_inv = geometry.crop_affine_inverse(center, scale, res)             # old crop -> image
    new = geometry.crop_affine(center, new_scale, res, rotation_deg)       # image -> new crop
    crop_map = _compose(new, old_inv)                                      # old crop -> new crop
    inv_map = _invert(crop_map)                                            # new crop -> old crop
    out = dict(sample)
    out["image"] = warp_image(sample["image"], inv_map)
    p2 = geometry.apply_affine(crop_map, np.asarray(sample["pose2d"], np.float64))
    out["pose2d"] = p2.astype(np.asarray(sample["pose2d"]).dtype)
    p3 = np.asarray(sample["pose3d"], np.float64) @ _camera_roll(rotation_deg).T
    out["pose3d"] = p3.astype(np.asarray(sample["pose3d"]).dtype)
    k[2:] = center + geometry.rotation_2d(rotation_deg) @ (k[2:] - center)
    out["intrinsics"] = k.astype(np.asarray(sample["intrinsics"]).dtype)
    out["scale"] = np.asarray(new_scale, np.asarray(sample["scale"]).dtype)
    inside = np.all((p2 > -0.5) & (p2 < res - 0.5), axis=-1)
    out["visible"] = np.asarray(sample["visible"]) & inside
    return out


def pose_to_unaugmented(pose3d: np.ndarray, flipped: bool, rotation_deg: float) -> np.ndarray:
    """Map poses seen in an augmented view back to the original camera frame.

    The inverse of what `random_augment` (flip, then `rotate_scale`) does to `pose3d`: turn back
    about the camera z axis, then un-mirror x and swap left and right back. Scale does not touch
    the 3D pose. Works on absolute and on root-relative poses (both maps are linear).

    Args:
      pose3d: (..., 16, 3) mm, the augmented view's camera frame (e.g. a network's prediction on
        the augmented image).
      flipped, rotation_deg: the view's `flipped` and `rotation` entries.
    Returns:
      (..., 16, 3) float64 mm in the original camera frame.
    """
    p = np.asarray(pose3d, np.float64)
    if p.shape[-2:] != (len(FLIP_PERMUTATION), 3):
        raise ValueError(f"pose3d must be (..., {len(FLIP_PERMUTATION)}, 3), got {p.shape}")
    if not np.isfinite(rotation_deg):
        raise ValueError(f"bad rotation {rotation_deg!r} deg")
    p = p @ _camera_roll(rotation_deg)  # rotate_scale applied p @ roll.T; roll is orthogonal
    return _mirror_pose(p) if flipped else p


def random_augment(sample: dict, rng: np.random.Generator, *, flip_prob: float = FLIP_PROB,
                   max_rotation_deg: float = ROTATION_DEG,
                   scale_range: tuple[float, float] = SCALE_RANGE) -> dict:
    """The paper's augmentation with parameters drawn from `rng`.

    Adds `flipped` (bool), `rotation` (deg) and `scale_factor` to the sample.
    """
    do_flip = bool(rng.uniform() < flip_prob)
    rot = float(rng.uniform(-max_rotation_deg, max_rotation_deg))
    s = float(rng.uniform(*scale_range))
    out = flip(sample) if do_flip else dict(sample)
    out = rotate_scale(out, rot, s)
    out["flipped"] = np.asarray(do_flip)
    out["rotation"] = np.asarray(rot, np.float32)
    out["scale_factor"] = np.asarray(s, np.float32)
    return out
