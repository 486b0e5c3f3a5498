"""The `mocap_render` TFDS builder (config `tiny`): geometry of the stored examples, splits,
visibility, clean rebuilds and error handling."""
import dataclasses
import os
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

from hourglass_jax import geometry
from hourglass_jax.data import mocap_render as mr
from hourglass_jax.data import render, subjects
from hourglass_jax.skeleton import ROOT, bone_lengths


def config_named(name: str) -> mr.MocapRenderConfig:
    return next(c for c in mr.CONFIGS if c.name == name)


CFG = config_named("tiny")


@pytest.fixture(scope="session")
def tiny_dir():
    """One build per code version, shared by the test session (and later sessions)."""
    return mr.cached_data_dir("tiny")


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    return mr.load("tiny", tiny_dir, build=False)


def _all(src):
    return [src[i] for i in range(len(src))]


def _text(x):
    return x.decode() if isinstance(x, bytes) else str(x)


def test_projection_of_pose3d_equals_pose2d(tiny):
    """Closed form in float64: pinhole projection, then Newell's box map to the crop."""
    for split in ("train", "pretrain2d"):
        for ex in _all(tiny[split])[::7]:
            p = ex["pose3d"].astype(np.float64)
            fx, fy, cx, cy = ex["intrinsics"].astype(np.float64)
            u = fx * p[:, 0] / p[:, 2] + cx
            v = fy * p[:, 1] / p[:, 2] + cy
            s = CFG.res / (200.0 * float(ex["scale"]))
            crop = np.stack([s * (u - ex["center"][0]), s * (v - ex["center"][1])], -1)
            crop += (CFG.res - 1) / 2.0
            np.testing.assert_allclose(ex["pose2d"], crop, atol=2e-3)


def test_backprojection_with_root_depth_recovers_pose3d(tiny):
    for ex in _all(tiny["validation"])[::5]:
        p = ex["pose3d"].astype(np.float64)
        assert ex["root_depth"] == pytest.approx(p[ROOT, 2], rel=1e-6)
        uv = geometry.crop_to_image(ex["pose2d"].astype(np.float64), ex["center"],
                                    float(ex["scale"]), CFG.res)
        depth = float(ex["root_depth"]) + (p[:, 2] - p[ROOT, 2])  # true root + relative depth
        back = geometry.backproject(uv, depth, ex["intrinsics"].astype(np.float64))
        np.testing.assert_allclose(back, p, atol=0.5)  # mm; float32 storage of 2D px


def test_subjects_actions_and_sequences_land_in_the_right_splits(tiny):
    expected = {"train": subjects.TRAIN_SUBJECTS, "validation": subjects.VALIDATION_SUBJECTS,
                "pretrain2d": subjects.PRETRAIN_SUBJECTS}
    assert set(tiny) == set(expected)
    for split, subs in expected.items():
        exs = _all(tiny[split])
        assert {_text(e["subject"]) for e in exs} == set(subs), split
        assert len(exs) == mr.count_frames(CFG, split)
        if split == "pretrain2d":
            continue
        seqs = {}
        for e in exs:
            seqs.setdefault(_text(e["sequence"]), []).append(int(e["frame"]))
            s, a, sub, cam = _text(e["sequence"]).split("/")
            assert (s, a, int(sub), cam) == (_text(e["subject"]), _text(e["action"]),
                                             int(e["subaction"]), _text(e["camera"]))
        # Every subject x action x subaction x camera video, frames 0..F-1 exactly once.
        assert len(seqs) == len(subs) * len(CFG.actions) * 2 * 4
        for seq, frames in seqs.items():
            assert sorted(frames) == list(range(len(frames))), seq


def test_subjects_have_their_own_proportions_and_bones_are_constant(tiny):
    """Per video the 11 bones are constant (rigid subject); subjects differ by up to ~10%."""
    per_subject = {}
    for ex in _all(tiny["train"]) + _all(tiny["validation"]):
        per_subject.setdefault(_text(ex["subject"]), []).append(bone_lengths(ex["pose3d"]))
    means = {}
    for s, bl in per_subject.items():
        bl = np.asarray(bl, np.float64)
        assert np.max(bl.std(0)) < 0.5, s  # mm: float32 storage only
        means[s] = bl.mean(0)
    ratio = means["S8"] / means["S1"]
    assert ratio.max() > 1.08 and ratio.max() < 1.25


def test_visible_flags_agree_with_a_sampled_depth_test(tiny):
    """Rebuild each frame's capsules (subject's appearance, the sequence's occluder) and ray
    march in float64: a joint is hidden iff something not containing it lies in front."""
    try:  # the float64 oracle of test_render.py (import path depends on how pytest runs)
        from tests.test_render import _np_segments, _visible_reference
    except ImportError:
        from test_render import _np_segments, _visible_reference

    n_hidden = 0
    exs = [e for e in _all(tiny["train"]) if int(e["frame"]) == 0]
    for ex in exs[::3]:
        seq = _text(ex["sequence"])
        radii, _, _ = subjects.appearance_arrays(_text(ex["subject"]))
        r = np.asarray(radii, np.float64)
        joints = ex["pose3d"].astype(np.float64)
        a, b = _np_segments(joints, r)
        cam = subjects.CAMERAS[subjects.CAMERA_NAMES.index(_text(ex["camera"]))]
        rot, t = geometry.look_at_camera(subjects.camera_position(cam),
                                         np.array(subjects.LOOK_AT_MM), np.array([0.0, 1, 0]))
        _, _, ends, orad, _ = mr._scene_inputs(rot[None], t[None], np.array([mr._seed(seq)]),
                                               CFG.occluder_prob)
        if orad[0, 0] > 0:
            a = np.concatenate([a, ends[0, :, 0]])
            b = np.concatenate([b, ends[0, :, 1]])
            r = np.concatenate([r, orad[0]])
        ref = _visible_reference(joints, a, b, r)
        inside = np.all((ex["pose2d"] > -0.5) & (ex["pose2d"] < CFG.res - 0.5), -1)
        np.testing.assert_array_equal(ex["visible"], ref & inside, err_msg=seq)
        n_hidden += int((~ex["visible"]).sum())
    assert n_hidden > 0


def test_clean_build_reads_back_the_same_examples(tmp_path, tiny):
    """A build from an empty directory stores exactly what the renderer produces, and the
    same bytes as the shared build (rendering is deterministic)."""
    fresh = mr.load("tiny", tmp_path / "tfds")
    assert {k: len(v) for k, v in fresh.items()} == {k: len(v) for k, v in tiny.items()}
    by_key = {(_text(e["sequence"]), int(e["frame"])): e for e in _all(fresh["validation"])}
    shared = {(_text(e["sequence"]), int(e["frame"])): e for e in _all(tiny["validation"])}
    assert by_key.keys() == shared.keys()
    for k in by_key:
        for f in ("image", "pose3d", "pose2d", "visible", "center", "scale"):
            np.testing.assert_array_equal(by_key[k][f], shared[k][f])
    # Re-render the first batch directly and compare with what was stored.
    batch = next(mr.split_frames(CFG, "validation"))
    out = mr.render_frames(batch, CFG)
    for i in range(0, len(batch.sequence), 9):
        ex = by_key[(batch.sequence[i], int(batch.frame[i]))]
        np.testing.assert_array_equal(ex["image"], out["image"][i])
        np.testing.assert_array_equal(ex["pose2d"], out["pose2d"][i])
        np.testing.assert_array_equal(ex["visible"], out["visible"][i])


def test_missing_or_corrupt_dataset_directory_is_a_clear_error(tmp_path, tiny_dir):
    with pytest.raises(ValueError, match="no mocap_render/tiny dataset"):
        mr.load("tiny", tmp_path / "nothing_here", build=False)
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        mr.load("tiny", afile)
    with pytest.raises(ValueError, match="unknown mocap_render config"):
        mr.load("huge", tmp_path)
    # Corrupt records: truncate the validation array_record file.
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    vdir = broken / "mocap_render" / "tiny" / "1.0.0"
    rec = next(p for p in os.listdir(vdir) if "validation.array_record" in p)
    with open(vdir / rec, "r+b") as f:
        f.truncate(200)
    with pytest.raises(ValueError, match="corrupt"):
        mr.load("tiny", broken, build=False)
    # Corrupt metadata.
    broken2 = tmp_path / "broken2"
    shutil.copytree(tiny_dir, broken2)
    (broken2 / "mocap_render" / "tiny" / "1.0.0" / "dataset_info.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        mr.load("tiny", broken2, build=False)


def test_render_sizes_of_configs_are_supported():
    for cfg in mr.CONFIGS:
        assert render.check_size(cfg.res) == cfg.res
    bad = mr.MocapRenderConfig(name="bad", res=50)
    with pytest.raises(ValueError, match="unsupported image size"):
        mr.render_frames(next(mr.split_frames(CFG, "train")), bad)


def test_retarget_scales_bones_keeps_angles_and_floor_contact():
    from hourglass_jax.data import mocap

    src = np.asarray(mocap.load_clip("walk").joints)
    bones = dict(zip(subjects.BONE_GROUPS, (0.9, 1.1, 1.05, 0.95, 1.0, 1.08, 0.92, 1.1, 0.9)))
    out = subjects.retarget(src, bones)
    for child, parent in subjects.PARENT.items():
        v0, v1 = src[:, child] - src[:, parent], out[:, child] - out[:, parent]
        f = bones[subjects.BONE_GROUP[child]]
        np.testing.assert_allclose(np.linalg.norm(v1, axis=-1), f * np.linalg.norm(v0, axis=-1),
                                   rtol=1e-12)
        np.testing.assert_allclose(v1, f * v0, atol=1e-9)  # same direction: same joint angles
    np.testing.assert_allclose(out[..., 1].min(1), src[..., 1].min(1), atol=1e-9)
    with pytest.raises(ValueError, match="missing"):
        subjects.retarget(src, {"hip": 1.0})
    with pytest.raises(ValueError, match=r"\(F, 16, 3\)"):
        subjects.retarget(src[:, :15], bones)


def _angle_deg(a, b):
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def test_restyle_turns_the_named_bones_about_the_body_axes_and_keeps_lengths():
    from hourglass_jax.data import mocap
    from hourglass_jax.skeleton import JOINT_INDEX as J

    src = np.asarray(mocap.load_clip("walk").joints, np.float64)
    bone = lambda p, c: p[:, c] - p[:, subjects.PARENT[c]]  # noqa: E731
    np.testing.assert_allclose(subjects.restyle(src, {}), src, atol=1e-9)
    left_right = src[:, J["l_hip"]] - src[:, J["r_hip"]]
    front_back = np.cross(left_right, src[:, J["thorax"]] - src[:, J["pelvis"]])
    for pitch, roll, axis in ((30.0, 0.0, left_right), (0.0, 25.0, front_back)):
        out = subjects.restyle(src, {J["r_wrist"]: (pitch, roll)})
        # The forearm turns about the body axis asked (its component along it stays) by the
        # angle asked (that of its components across it); no other bone turns.
        unit = axis / np.linalg.norm(axis, axis=-1, keepdims=True)
        across = lambda v: v - (v * unit).sum(-1, keepdims=True) * unit  # noqa: E731
        before, after = bone(src, J["r_wrist"]), bone(out, J["r_wrist"])
        np.testing.assert_allclose((after * unit).sum(-1), (before * unit).sum(-1), atol=1e-6)
        np.testing.assert_allclose(_angle_deg(across(after), across(before)),
                                   max(pitch, roll), atol=1e-6)
        for c in subjects.PARENT:
            if c != J["r_wrist"]:
                np.testing.assert_allclose(bone(out, c), bone(src, c), atol=1e-9)
    # A turned upper arm carries its forearm: the elbow angle stays.
    out = subjects.restyle(src, {J["l_elbow"]: (-20.0, 15.0)})
    np.testing.assert_allclose(
        _angle_deg(bone(out, J["l_elbow"]), bone(out, J["l_wrist"])),
        _angle_deg(bone(src, J["l_elbow"]), bone(src, J["l_wrist"])), atol=1e-6)
    # Every subject's style: bone lengths kept, the lowest joint of each frame at its height.
    for name in subjects.VIDEO_SUBJECTS:
        style = subjects.motion_style(name)
        assert style == subjects.motion_style(name)  # the same on every call
        for c, (p, r) in style.items():
            lim_p, lim_r = subjects.STYLE_RANGE_DEG[c]
            assert abs(p) <= lim_p and abs(r) <= lim_r
        out = subjects.restyle(src, style)
        for c in subjects.PARENT:
            np.testing.assert_allclose(np.linalg.norm(bone(out, c), axis=-1),
                                       np.linalg.norm(bone(src, c), axis=-1), rtol=1e-9)
        np.testing.assert_allclose(out[..., 1].min(1), src[..., 1].min(1), atol=1e-9)
    assert subjects.motion_style("S1") != subjects.motion_style("S9")
    # A stronger style turns the same bones the same way, that many times as far.
    for strength in (0.0, 2.0):
        scaled = subjects.motion_style("S7", strength)
        for c, (p, r) in subjects.motion_style("S7").items():
            np.testing.assert_allclose(scaled[c], (strength * p, strength * r), rtol=1e-12)
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="style strength"):
            subjects.motion_style("S7", bad)
    with pytest.raises(ValueError, match="without a parent"):
        subjects.restyle(src, {J["pelvis"]: (10.0, 0.0)})
    with pytest.raises(ValueError, match=r"\(F, 16, 3\)"):
        subjects.restyle(src[:, :15], {})


def test_styled_config_renders_each_subject_in_its_style():
    styled, wide, xwide, plain = (config_named(n) for n in (
        "small_styled", "small_styled_wide", "small_styled_xwide", "small"))
    assert ((plain.motion_style, styled.motion_style, wide.motion_style, xwide.motion_style)
            == (0.0, 1.0, 2.0, 3.0))
    assert styled.res == plain.res == wide.res == xwide.res
    for cfg, strength in ((styled, 1.0), (wide, 2.0), (xwide, 3.0), (plain, 0.0)):
        fr = next(mr.video_frames(cfg, ("S9",)))
        action, sub, cam = fr.action[0], int(fr.subaction[0]), subjects.CAMERAS[0]
        assert fr.camera[0] == cam.name
        r, t = geometry.look_at_camera(subjects.camera_position(cam), np.array(subjects.LOOK_AT_MM),
                                       np.array([0.0, 1, 0]))
        world = subjects.sequence_motion("S9", action, sub, cfg.fps, style_strength=strength)
        np.testing.assert_allclose(fr.joints_cam, geometry.world_to_camera(world, r, t), atol=1e-6)
    rel = lambda x: x - x[:, ROOT:ROOT + 1]
    a = subjects.sequence_motion("S9", "walk", 1, 10.0, style_strength=1.0)
    b = subjects.sequence_motion("S9", "walk", 1, 10.0)
    assert np.linalg.norm(rel(a) - rel(b), axis=-1).mean() > 20
    # Two and three times the strength move the poses further and further from the unstyled ones.
    w = subjects.sequence_motion("S9", "walk", 1, 10.0, style_strength=2.0)
    x = subjects.sequence_motion("S9", "walk", 1, 10.0, style_strength=3.0)
    off = [np.linalg.norm(rel(m) - rel(b), axis=-1).mean() for m in (a, w, x)]
    assert off[1] > 1.5 * off[0] and off[2] > 1.2 * off[1], off


def test_25fps_config_samples_the_same_motions_more_densely():
    dense, plain = config_named("small_25fps"), config_named("small")
    assert (dense.fps, plain.fps) == (25.0, 10.0)
    # Every other field of the dataset (those MocapRenderConfig adds to BuilderConfig) is small's.
    inherited = {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}
    fields = [f.name for f in dataclasses.fields(mr.MocapRenderConfig)
              if f.name != "fps" and f.name not in inherited]
    assert fields and [getattr(dense, f) for f in fields] == [getattr(plain, f) for f in fields]
    for action, sub in (("walk", 1), ("cartwheel", 2)):
        a = subjects.sequence_motion("S5", action, sub, 10.0)
        b = subjects.sequence_motion("S5", action, sub, 25.0)
        # The same span of the clip: (F - 1) / fps agree within one frame of the dense video.
        assert abs((len(b) - 1) / 25.0 - (len(a) - 1) / 10.0) <= 1 / 25.0 + 1e-9
        # At the times both sample (every 0.2 s: frame 2k at 10 fps, 5k at 25 fps), the same
        # pose. Root-relative, because each video is centred on its own mean pelvis position.
        k = np.arange(0, len(a), 2)
        k = k[5 * k // 2 < len(b)]
        rel = lambda j: j - j[:, ROOT:ROOT + 1]
        np.testing.assert_allclose(rel(b[5 * k // 2]), rel(a[k]), atol=1e-6)
        step = lambda j: np.linalg.norm(np.diff(rel(j), axis=0), axis=-1).mean()
        assert step(b) < 0.5 * step(a)


def test_subactions_mirror_and_slow_down():
    a = subjects.sequence_motion("S5", "kick", 1, 10.0)
    b = subjects.sequence_motion("S5", "kick", 2, 10.0)
    # Played 20% slower: 1.25x the frames (within one frame of rounding).
    assert abs(len(b) - 1.25 * (len(a) - 1) - 1) <= 1.0
    # Mirrored: world x negated and left/right labels swapped; bone lengths stay.
    np.testing.assert_allclose(bone_lengths(b).mean(0), bone_lengths(a).mean(0), rtol=1e-6)
    m = subjects.mirror(a)
    np.testing.assert_allclose(subjects.mirror(m), a, atol=1e-12)
    from hourglass_jax.skeleton import FLIP_PERMUTATION
    np.testing.assert_allclose(m[:, FLIP_PERMUTATION, 0], -a[..., 0], atol=1e-12)
    with pytest.raises(ValueError, match="unknown subaction"):
        subjects.sequence_motion("S5", "kick", 3, 10.0)
    with pytest.raises(ValueError, match="unknown subject.*valid subjects"):
        subjects.sequence_motion("S3", "kick", 1, 10.0)
    with pytest.raises(ValueError, match="unknown action.*valid actions"):
        subjects.sequence_motion("S1", "swim", 1, 10.0)


def test_cameras_are_h36m_like_and_see_the_subject():
    for cam in subjects.CAMERAS:
        pos = subjects.camera_position(cam)
        assert 4400 <= np.hypot(pos[0], pos[2]) <= 5600 and 1400 <= pos[1] <= 2000
        rot, t = geometry.look_at_camera(pos, np.array(subjects.LOOK_AT_MM), np.array([0., 1, 0]))
        k = subjects.camera_intrinsics(cam)
        for action in subjects.ACTIONS:
            w = subjects.sequence_motion("S11", action, 1, 10.0)
            uv = geometry.project(geometry.world_to_camera(w, rot, t), k)
            # The pelvis stays inside the nominal 1000 x 1000 video in every frame.
            assert np.all((uv[:, ROOT] > 0) & (uv[:, ROOT] < 1000)), (cam.name, action)
