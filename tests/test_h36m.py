"""h36m builder on fixtures in the release's formats: CDF poses (cdflib) + mp4 videos, and the
preprocessed annot h5 + extracted frames."""
from __future__ import annotations

import dataclasses
import os

import h5py
import numpy as np
import pytest
from PIL import Image

from hourglass_jax.data import h36m, realdata
from hourglass_jax.skeleton import H36M_32_TO_17
import helpers_realdata as hr

N_FRAMES = 11  # at 50 fps; step 5 keeps frames 0, 5, 10
RES = 64
# H36M-32 slots used below (the release's joint numbering).
R_ANKLE32, HEAD32, L_SH32, R_SH32, PELVIS32, L_WRIST32 = 3, 15, 17, 25, 0, 19


def _pose32(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 32, 3) mm camera frame: a person walking right at 4.5 m, 150 mm per frame (so that a
    crop of the wrong frame shows its markers elsewhere)."""
    out = rng.normal(0, 300, (n, 32, 3)) + np.array([0, 0, 4500.0])
    for i in range(n):
        p = hr.person_mpii16(rng, np.array([-700.0 + 150 * i, 100.0, 4500.0]))
        j17 = [p[6], p[2], p[1], p[0], p[3], p[4], p[5], 0.5 * (p[6] + p[7]), p[8],
               p[8] + [0, -100, -80], p[9], p[13], p[14], p[15], p[12], p[11], p[10]]
        out[i, list(H36M_32_TO_17)] = j17
    return out


def _project(p: np.ndarray, cam: str) -> np.ndarray:
    fx, fy, cx, cy = h36m.CAMERA_INTRINSICS[cam]
    return np.stack([fx * p[..., 0] / p[..., 2] + cx, fy * p[..., 1] / p[..., 2] + cy], -1)


def _mpii_markers_uv(p32: np.ndarray, cam: str) -> np.ndarray:
    """Frame px of the MPII-16 joints that carry markers (head top, right ankle, left wrist)."""
    uv = np.zeros((16, 2))
    uv[9] = _project(p32[HEAD32], cam)
    uv[0] = _project(p32[R_ANKLE32], cam)
    uv[15] = _project(p32[L_WRIST32], cam)
    return uv


def _write_cdf(path: str, pose: np.ndarray) -> None:
    from cdflib import cdfwrite
    c = cdfwrite.CDF(path, cdf_spec={"Majority": "Row_major"}, delete=True)
    data = pose.reshape(1, pose.shape[-3] if pose.ndim == 3 else pose.shape[1], -1)
    c.write_var({"Variable": "Pose", "Data_Type": cdfwrite.CDF.CDF_DOUBLE, "Num_Elements": 1,
                 "Rec_Vary": True, "Dim_Sizes": list(data.shape[1:])}, var_attrs={},
                var_data=data)
    c.close()


def _write_take(root: str, subject: str, base: str, cam: str, p32: np.ndarray | None,
                video: bool = True) -> None:
    pose_dir = os.path.join(root, subject, "MyPoseFeatures", "D3_Positions_mono")
    os.makedirs(pose_dir, exist_ok=True)
    os.makedirs(os.path.join(root, subject, "Videos"), exist_ok=True)
    _write_cdf(os.path.join(pose_dir, f"{base}.{cam}.cdf"), p32)
    if video:
        frames = np.stack([hr.draw_frame(1000, 1000, _mpii_markers_uv(p, cam)) for p in p32])
        hr.write_video(os.path.join(root, subject, "Videos", f"{base}.{cam}.mp4"), frames, 50)


TAKES = (("S1", "Walking", "55011271"), ("S1", "Walking 1", "55011271"),
         ("S1", "TakingPhoto 1", "58860488"), ("S11", "Directions 1", "60457274"))


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("h36m_release"))
    rng = np.random.default_rng(0)
    poses = {}
    for s, base, cam in TAKES:
        poses[(s, base, cam)] = _pose32(rng, N_FRAMES)
        _write_take(root, s, base, cam, poses[(s, base, cam)])
    # The release's broken S11 Directions video of camera 54138969: poses but no usable video.
    _write_take(root, "S11", "Directions", "54138969", _pose32(rng, N_FRAMES), video=False)
    # Some subjects also hold "_ALL" pose files (every take concatenated; no video).
    _write_take(root, "S1", "_ALL 1", "55011271", _pose32(rng, 2 * N_FRAMES), video=False)
    return root, poses


@pytest.fixture(scope="module")
def built(release, tmp_path_factory):
    root, poses = release
    cfg = h36m.H36MConfig(name="fixture", res=RES, train_subjects=("S1",),
                          validation_subjects=("S11",))
    data_dir = tmp_path_factory.mktemp("tfds")
    b = h36m.prepare(root, cfg, data_dir, workers=2)  # the parallel decode path
    src = b.as_data_source()
    recs = {k: [src[k][i] for i in range(len(src[k]))] for k in ("train", "validation")}
    return recs, poses, (data_dir, cfg)


def _text(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def test_splits_actions_subactions_and_frame_subsampling(built):
    recs, _, _ = built
    seen = {(_text(r["subject"]), _text(r["action"]), int(r["subaction"]), _text(r["camera"]),
             int(r["frame"])) for r in recs["train"]}
    want = {("S1", "Walking", sub, "55011271", f) for sub in (1, 2) for f in range(3)}
    want |= {("S1", "Photo", 1, "58860488", f) for f in range(3)}
    assert seen == want and len(recs["train"]) == 9
    # S11: the broken "Directions" video of camera 54138969 is skipped; it still counts as take 1,
    # so "Directions 1" is subaction 2.
    assert {(_text(r["subject"]), _text(r["sequence"])) for r in recs["validation"]} == {
        ("S11", "S11/Directions/2/60457274")}
    assert sorted(int(r["frame"]) for r in recs["validation"]) == [0, 1, 2]
    for r in recs["train"] + recs["validation"]:
        assert bool(r["has_pose3d"]) and r["image"].shape == (RES, RES, 3)


def test_joints_cameras_and_crops_match_the_release(built):
    recs, poses, _ = built
    base_of = {("S1", "Walking", 1): "Walking", ("S1", "Walking", 2): "Walking 1",
               ("S1", "Photo", 1): "TakingPhoto 1", ("S11", "Directions", 2): "Directions 1"}
    for r in recs["train"] + recs["validation"]:
        s, cam = _text(r["subject"]), _text(r["camera"])
        p32 = poses[(s, base_of[(s, _text(r["action"]), int(r["subaction"]))], cam)]
        src = p32[5 * int(r["frame"])]  # 10 fps frame k is 50 fps frame 5k
        p3 = r["pose3d"].astype(np.float64)
        np.testing.assert_allclose(p3[0], src[R_ANKLE32], atol=1e-3)
        np.testing.assert_allclose(p3[9], src[HEAD32], atol=1e-3)
        np.testing.assert_allclose(p3[6], src[PELVIS32], atol=1e-3)
        np.testing.assert_allclose(p3[7], 0.5 * (src[L_SH32] + src[R_SH32]), atol=1e-3)
        np.testing.assert_allclose(r["root_depth"], src[PELVIS32, 2], atol=1e-3)
        np.testing.assert_allclose(r["intrinsics"], h36m.CAMERA_INTRINSICS[cam], rtol=1e-6)
        # Projection of the 3D pose, mapped into the crop by hand, is the stored 2D pose.
        uv = _project(p3, cam)
        crop = (uv - r["center"]) * RES / (200.0 * r["scale"]) + (RES - 1) / 2
        np.testing.assert_allclose(r["pose2d"], crop, atol=2e-3)
        # The crop shows this frame's markers where pose2d says (a wrong frame would not).
        assert hr.crop_has_markers(r["image"], r["pose2d"]), (s, cam, int(r["frame"]))


def test_missing_video_wrong_cdf_and_truncated_video_are_clear_errors(release, tmp_path):
    root, poses = release
    take = ("S1", "Walking", "55011271")
    p32 = poses[take]
    # Missing video: the error names the expected path.
    _write_take(str(tmp_path), *take, p32, video=False)
    with pytest.raises(realdata.LayoutError, match=r"Videos/Walking\.55011271\.mp4"):
        h36m.scan_original(str(tmp_path), ("S1",))
    # A subject directory that is absent.
    with pytest.raises(realdata.LayoutError, match=r"S5/MyPoseFeatures/D3_Positions_mono"):
        h36m.scan_original(str(tmp_path), ("S5",))
    # Wrong layout: a CDF whose Pose is not 32 x 3 per frame.
    bad = str(tmp_path / "bad.cdf")
    _write_cdf(bad, np.zeros((1, 4, 90)))
    with pytest.raises(realdata.LayoutError, match=r"\(1, N, 96\)"):
        h36m.read_cdf_poses(bad)
    # Not a CDF at all.
    junk = tmp_path / "junk.cdf"
    junk.write_bytes(b"not a cdf")
    with pytest.raises(realdata.LayoutError, match="Pose"):
        h36m.read_cdf_poses(str(junk))
    # A video with fewer frames than its poses.
    vid = tmp_path / "short.mp4"
    hr.write_video(str(vid), np.zeros((3, 16, 16, 3), np.uint8), 50)
    t = h36m.Take("S1", "Walking", "Walking", 1, "55011271",
                  os.path.join(root, "S1/MyPoseFeatures/D3_Positions_mono/Walking.55011271.cdf"),
                  str(vid))
    with pytest.raises(realdata.LayoutError, match=r"truncated.*3 decodable frames.*11"):
        list(h36m.original_examples(t, RES, 5))
    # A download cut short: the mp4's index is missing, ffmpeg cannot open it.
    data = open(os.path.join(root, "S1/Videos/Walking.55011271.mp4"), "rb").read()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(realdata.LayoutError,
                       match=r"cannot decode .*cut\.mp4 \(expected a video with 11 frames\)"):
        list(h36m.original_examples(dataclasses.replace(t, video=str(cut)), RES, 5))
    # Neither layout.
    with pytest.raises(realdata.LayoutError, match="neither Human3.6M layout"):
        h36m.detect_layout(str(tmp_path / "empty"))


def test_preprocessed_layout(tmp_path):
    rng = np.random.default_rng(1)
    cam = "54138969"
    names, S, part, center, scale = [], [], [], [], []
    os.makedirs(tmp_path / "images")
    os.makedirs(tmp_path / "annot")
    p32 = _pose32(rng, 2)
    for i, p in enumerate(p32):
        name = f"S9_Walking_1.{cam}_{5 * i + 1:06d}.jpg"
        j17 = p[list(H36M_32_TO_17)]
        uv = _project(j17, cam)
        Image.fromarray(hr.draw_frame(1002, 1000, _mpii_markers_uv(p, cam))).save(
            tmp_path / "images" / name, quality=98)
        names.append(name.encode())
        S.append(j17)
        part.append(uv)
        center.append(uv.mean(0))
        scale.append(3.0)
    for split in ("train", "valid"):
        with h5py.File(tmp_path / "annot" / f"{split}.h5", "w") as f:
            f["S"], f["part"], f["center"] = np.array(S), np.array(part), np.array(center)
            f["scale"] = np.array(scale)
            if split == "train":
                f["imgname"] = np.array(names)
    # c2f-vol keeps the names of valid.h5's rows in a text file.
    (tmp_path / "annot" / "valid_images.txt").write_text("\n".join(n.decode() for n in names))
    assert list(h36m.read_preprocessed(str(tmp_path), "train")["imgname"]) == [
        n.decode() for n in names]
    ex = list(h36m.preprocessed_examples(str(tmp_path), "validation", ("S9",), RES))
    assert [k for k, _ in ex] == [f"S9/Walking/1/{cam}/{i:05d}" for i in range(2)]
    for i, (_, e) in enumerate(ex):
        np.testing.assert_allclose(e["pose3d"][9], p32[i, HEAD32], atol=1e-3)
        np.testing.assert_allclose(e["center"], center[i], atol=1e-3)
        img = np.asarray(Image.open(__import__("io").BytesIO(e["image"])))
        assert hr.crop_has_markers(img, e["pose2d"])
    with h5py.File(tmp_path / "annot" / "valid.h5", "a") as f:
        del f["S"]
        f["S"] = np.zeros((2, 16, 3))
    with pytest.raises(realdata.LayoutError,
                       match=r"S has shape \(2, 16, 3\), expected \(2, 17, 3\)"):
        list(h36m.preprocessed_examples(str(tmp_path), "validation", ("S9",), RES))


def _load_config(name: str):
    import importlib
    return importlib.import_module(f"experiments.configs.{name}").get_config()


def test_paper_configs_name_the_protocols_and_fail_clearly_until_prepared(built, tmp_path):
    acts = set(h36m.ACTIONS)
    half, hard = _load_config("h36m_action_half"), _load_config("h36m_action_hard")
    for c in (half, hard):
        lab, unl = set(c.data.labelled_actions), set(c.data.unlabelled_actions)
        assert lab | unl == acts and not lab & unl and lab <= acts
    assert set(hard.data.unlabelled_actions) == {"Photo", "Purchases", "Sitting", "SittingDown"}
    assert len(half.data.labelled_actions) == 8
    for name, lab in (("h36m_subject_s1", "S1"), ("h36m_subject_s15", "S1 S5"),
                      ("h36m_subject_s156", "S1 S5 S6"), ("h36m_subject_s1567", "S1 S5 S6 S7")):
        c = _load_config(name)
        assert c.data.dataset == "h36m" and c.data.labelled_subjects == tuple(lab.split())
        assert set(c.data.labelled_subjects) | set(c.data.unlabelled_subjects) == set(
            h36m.TRAIN_SUBJECTS)
        assert c.data.validation_subjects == ("S9", "S11") and c.model.name == "paper"
    dp = _load_config("h36m_discussion_phoning")
    assert dp.data.labelled_actions == ("Discussion",)
    assert dp.data.unlabelled_actions == ("Phoning",)
    # Not prepared: a clear error that says how to prepare it.
    with pytest.raises(ValueError,
                       match=r"h36m/full is not prepared in .*hourglass_jax\.data\.prepare h36m"):
        realdata.require_prepared("h36m", tmp_path, "full")
    realdata.require_prepared("h36m", *built[2])  # the fixture build passes
    realdata.require_prepared("mocap_render", tmp_path)  # the embedded default is not checked here


@pytest.mark.parametrize("center,scale", [((150.3, 180.7), 1.1),   # downsampled, inside
                                          ((20.0, 260.0), 1.5),    # box past two frame edges
                                          ((118.2, 205.9), 0.2)])  # upsampled (40 px box)
def test_crop_image_puts_frame_pixels_where_geometry_says(center, scale):
    """A bright dot of the frame lands in the crop where image_to_crop maps it (intensity
    centroid within 0.1 crop px: PIL's per-output-pixel weight normalisation and uint8 rounding
    move it by ~0.05 px; a half-pixel convention error would move it 0.15-0.8 px), and outside
    the frame the crop is black."""
    from hourglass_jax import geometry
    frame = np.zeros((300, 400, 3), np.uint8)
    dot = np.array([123.0, 201.0])
    frame[200:203, 122:125] = 255  # 3 x 3 px centred on the dot
    crop = realdata.crop_image(frame, np.array(center), scale, RES).astype(np.float64)[..., 0]
    ys, xs = np.mgrid[:RES, :RES]
    got = np.array([(crop * xs).sum(), (crop * ys).sum()]) / crop.sum()
    want = geometry.image_to_crop(dot, np.array(center), scale, RES)
    np.testing.assert_allclose(got, want, atol=0.1)
    # Crop pixels whose centres map outside the frame are black.
    uv = geometry.crop_to_image(np.stack([xs, ys], -1).astype(np.float64), np.array(center),
                                scale, RES)
    far = (uv[..., 0] < -2) | (uv[..., 1] < -2) | (uv[..., 0] > 401) | (uv[..., 1] > 301)
    assert not np.any(crop[far])


def test_visible_means_inside_the_frame():
    frame = np.zeros((100, 200, 3), np.uint8)
    uv = np.tile([100.0, 50.0], (16, 1))
    uv[3] = [-0.6, 50.0]    # just left of pixel 0's left edge
    uv[4] = [199.4, 99.4]   # inside the last pixel
    uv[5] = [50.0, 99.6]    # below the frame
    ex = realdata.make_example(frame, np.tile([0.0, 0.0, 4000.0], (16, 1)), uv,
                               np.array([1000.0, 1000, 100, 50]), 32, subject="S1", action="a",
                               subaction=1, camera="c", frame_index=0)
    want = np.ones(16, bool)
    want[[3, 5]] = False
    np.testing.assert_array_equal(ex["visible"], want)


def _sources(built):
    data_dir, cfg = built[2]
    return h36m.builder(cfg, data_dir).as_data_source()


def test_pipeline_reads_the_videos_in_frame_order(built):
    from hourglass_jax.data import pipeline
    seqs = dict(pipeline.read_sequences(_sources(built)["train"]))
    assert sorted(seqs) == ["S1/Photo/1/58860488", "S1/Walking/1/55011271",
                            "S1/Walking/2/55011271"]
    for batch in seqs.values():
        np.testing.assert_array_equal(batch["frame"], [0, 1, 2])
        # 150 mm per 50 fps frame: consecutive 10 fps frames are 750 mm apart.
        np.testing.assert_allclose(np.diff(batch["pose3d"][:, 6, 0]),
                                   [750.0, 750.0], atol=60.0)


def _augment_accepts_real_cameras() -> bool:
    from hourglass_jax.data import augment
    return hasattr(augment, "SQUARE_PIXEL_RTOL")


# H36M's focal lengths differ by ~0.1 %; augment.rotate_scale accepts that from the version that
# has SQUARE_PIXEL_RTOL (earlier ones raise "rotation needs square pixels").
@pytest.mark.skipif(not _augment_accepts_real_cameras(),
                    reason="this augment.py rotates only cameras with fx == fy exactly")
def test_augmented_training_batches_stay_consistent(built):
    """The paper's augmentation on H36M examples: every augmented 3D pose still projects onto
    its 2D target (to ~0.1 %, the cameras' fx/fy mismatch, of the distance in crop px)."""
    from hourglass_jax.data import pipeline
    p = pipeline.TrainPipeline(_sources(built)["train"], global_batch_size=8, seed=0,
                               process_index=0, process_count=1)
    for step in range(2):
        b = p.batch_at(step)
        assert b["image"].shape == (8, RES, RES, 3)
        fx, fy, cx, cy = (b["intrinsics"][:, i, None] for i in range(4))
        p3 = b["pose3d"].astype(np.float64)
        uv = np.stack([fx * p3[..., 0] / p3[..., 2] + cx, fy * p3[..., 1] / p3[..., 2] + cy], -1)
        crop = (uv - b["center"][:, None]) * RES / (200.0 * b["scale"][:, None, None]) \
            + (RES - 1) / 2
        np.testing.assert_allclose(crop, b["pose2d"], atol=0.15)
    assert np.any(b["rotation"] != 0) and np.any(b["flipped"])


def test_ordered_map_keeps_order_and_raises_worker_errors():
    import math
    items = [float(i * i) for i in range(9)]
    assert list(realdata.ordered_map(math.sqrt, items, workers=2, window=3)) == list(range(9))
    assert list(realdata.ordered_map(math.sqrt, items)) == list(range(9))
    with pytest.raises(ValueError, match="math domain error"):
        list(realdata.ordered_map(math.sqrt, [4.0, -1.0, 9.0], workers=2))
