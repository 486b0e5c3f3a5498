"""The DeepMimic clips as MPII-16 joints: loading, bone lengths, orientation, scale, resampling."""
import os
import shutil
import sys

import numpy as np
import pytest

from hourglass_jax.data import mocap
from hourglass_jax.skeleton import BONES, JOINT_INDEX as J, bone_lengths

UP = np.array([0.0, 1.0, 0.0])
UPRIGHT_CLIPS = ("walk", "run", "punch", "dance_a", "dance_b")


def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _facing(joints):
    """Forward direction per frame from the hips alone: (left hip - right hip) x up, horizontal unit.

    For a subject whose right is r and up u, forward f satisfies r = f x u, so (-r) x u = f.
    """
    f = np.cross(joints[:, J["l_hip"]] - joints[:, J["r_hip"]], UP)
    f[:, 1] = 0.0
    return _unit(f)


def test_clip_names_match_the_shipped_files():
    assert len(mocap.CLIP_NAMES) == 15
    motions = os.path.join(mocap.data_dir(), "data", "motions")
    shipped = sorted(f[len("humanoid3d_"):-4] for f in os.listdir(motions) if f.startswith("humanoid3d_"))
    assert shipped == sorted(mocap.CLIP_NAMES)


def test_unknown_clip_lists_valid_names():
    with pytest.raises(ValueError, match="walk") as e:
        mocap.load_clip("moonwalk")
    assert "moonwalk" in str(e.value) and "cartwheel" in str(e.value)


def test_whole_clip_set_loads():
    clips = mocap.load_all_clips()
    assert tuple(clips) == mocap.CLIP_NAMES
    total = 0
    for name, clip in clips.items():
        assert clip.name == name
        assert clip.joints.dtype == np.float64 and clip.joints.shape[1:] == (16, 3)
        assert clip.joints.shape[0] >= 25
        assert np.all(np.isfinite(clip.joints))
        assert clip.fps in (16.0, 24.0, 30.0, 60.0)
        assert not clip.joints.flags.writeable   # cached object shared by callers
        total += clip.num_frames
    # DESIGN.md: 1,620 frames in the files; roll's one double-length frame is resampled to 60 fps.
    assert 1610 <= total <= 1630


def test_bone_lengths_constant_and_equal_urdf_numbers():
    # Closed-form bone lengths from the URDF joint origins (humanoid.urdf, x 0.25 to metres, x 1000 to mm):
    # thigh 1.686184, shin 1.639480, upper arm 1.099152, forearm 1.035788, hip offset 0.339548 URDF units;
    # the head (upper neck -> head top) is the diameter of the 0.41-unit head sphere.
    s = 250.0
    expected = {
        (6, 2): 0.339548 * s, (6, 3): 0.339548 * s, (2, 1): 1.686184 * s, (3, 4): 1.686184 * s,
        (1, 0): 1.639480 * s, (4, 5): 1.639480 * s, (12, 11): 1.099152 * s, (13, 14): 1.099152 * s,
        (11, 10): 1.035788 * s, (14, 15): 1.035788 * s, (8, 9): 2 * 0.41 * s,
    }
    want = np.array([expected[b] for b in BONES])
    for name, clip in mocap.load_all_clips().items():
        lengths = bone_lengths(clip.joints)
        spread = lengths.max(axis=0) - lengths.min(axis=0)
        assert spread.max() < 1.0, (name, spread)
        np.testing.assert_allclose(lengths.mean(axis=0), want, atol=1e-6, err_msg=name)


def test_height_is_human():
    rest = mocap.rest_pose()
    # Standing straight: ankle to head top, plus the ankle's height over the sole (about 50 mm).
    height = rest[J["head_top"], 1] - rest[J["r_ankle"], 1] + 50.0
    assert 1500.0 <= height <= 1900.0
    walk = mocap.load_clip("walk").joints
    assert 1500.0 <= walk[:, J["head_top"], 1].max() <= 1900.0


def test_floor_is_at_zero():
    for name in UPRIGHT_CLIPS + ("kick",):
        ankles = mocap.load_clip(name).joints[:, [J["r_ankle"], J["l_ankle"]], 1]
        # The ankle joint sits about 50 mm over the sole; the lowest ankle of a standing clip is near that.
        assert -20.0 <= ankles.min() <= 120.0, name
    for name, clip in mocap.load_all_clips().items():
        assert clip.joints[..., 1].min() > -100.0, name   # nothing deep under the floor


def test_up_is_y():
    for name in UPRIGHT_CLIPS:
        j = mocap.load_clip(name).joints
        head, neck, pelvis = j[:, J["head_top"], 1], j[:, J["upper_neck"], 1], j[:, J["pelvis"], 1]
        ankles = j[:, [J["r_ankle"], J["l_ankle"]], 1].max(axis=1)
        assert np.all(head > neck) and np.all(neck > pelvis) and np.all(pelvis > ankles), name


@pytest.mark.parametrize("name", ["walk", "run"])
def test_right_side_is_subject_right(name):
    """The facing direction computed from the hip labels must agree with the direction of travel."""
    j = mocap.load_clip(name).joints
    travel = j[-1, J["pelvis"]] - j[0, J["pelvis"]]
    travel[1] = 0.0
    assert np.linalg.norm(travel) > 500.0   # both clips move forward by metres
    cos = _facing(j) @ _unit(travel)
    assert np.all(cos > 0.8), cos.min()      # swapped left/right labels would give cos ~ -1


@pytest.mark.parametrize("name", ["walk", "run"])
def test_knees_bend_forward(name):
    """Knees flex with the shin behind the thigh: the knee lies in front of the hip-ankle line."""
    j = mocap.load_clip(name).joints
    forward = _facing(j)
    for hip, knee, ankle in (("r_hip", "r_knee", "r_ankle"), ("l_hip", "l_knee", "l_ankle")):
        thigh = _unit(j[:, J[knee]] - j[:, J[hip]])
        shin = _unit(j[:, J[ankle]] - j[:, J[knee]])
        flexion = np.degrees(np.arccos(np.clip(np.sum(thigh * shin, -1), -1, 1)))
        bent = flexion > 20.0
        assert bent.sum() >= 3
        ahead = np.sum((j[:, J[knee]] - 0.5 * (j[:, J[hip]] + j[:, J[ankle]])) * forward, -1)
        assert np.all(ahead[bent] > 0.0), (knee, ahead[bent].min())


def test_rest_pose_faces_plus_x_with_right_at_plus_z():
    rest = mocap.rest_pose()
    assert rest[J["r_hip"], 2] > 0 > rest[J["l_hip"], 2]
    assert rest[J["r_wrist"], 2] > 0 > rest[J["l_wrist"], 2]
    np.testing.assert_allclose(_facing(rest[None])[0], [1.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(rest[J["pelvis"]], 0.0, atol=1e-12)
    # Thorax is the shoulder midpoint (the H36M -> MPII convention of skeleton.py).
    np.testing.assert_allclose(rest[J["thorax"]], 0.5 * (rest[J["r_shoulder"]] + rest[J["l_shoulder"]]))


def test_resample_linear_closed_form():
    # Joints moving linearly in time: any resampling is exact on the line x(t) = a + b t.
    fps = 30.0
    t = np.arange(31) / fps
    a = np.random.default_rng(0).normal(size=(16, 3)) * 300
    b = np.random.default_rng(1).normal(size=(16, 3)) * 1000
    clip = mocap.MocapClip("line", fps, a + t[:, None, None] * b)
    for new_fps in (10.0, 25.0, 50.0, 60.0, 30.0):
        out = mocap.resample(clip, new_fps)
        tt = np.arange(out.num_frames) / new_fps
        assert out.fps == new_fps
        assert out.num_frames == int(np.floor(1.0 * new_fps + 1e-6)) + 1   # covers exactly 1 s
        np.testing.assert_allclose(out.joints, a + tt[:, None, None] * b, atol=1e-9)


def test_resample_real_clip_keeps_input_frames():
    walk = mocap.load_clip("walk")
    up = mocap.resample(walk, 60.0)
    assert up.num_frames == 2 * walk.num_frames - 1
    np.testing.assert_array_equal(up.joints[::2], walk.joints)
    np.testing.assert_allclose(up.joints[1::2], 0.5 * (walk.joints[:-1] + walk.joints[1:]), atol=1e-9)
    down = mocap.resample(walk, 10.0)
    np.testing.assert_array_equal(down.joints, walk.joints[::3])
    with pytest.raises(ValueError, match="fps"):
        mocap.resample(walk, 0.0)


def test_load_clip_at_other_rate_keeps_bones_exact():
    walk = mocap.load_clip("walk")
    walk50 = mocap.load_clip("walk", fps=50.0)
    assert walk50.fps == 50.0
    assert abs(walk50.duration_s - walk.duration_s) < 0.02
    lengths = bone_lengths(walk50.joints)
    assert (lengths.max(0) - lengths.min(0)).max() < 1e-6
    # Times k * 0.1 s are frames 3k at 30 fps and 5k at 50 fps (file times drift by 4 us per frame).
    np.testing.assert_allclose(walk50.joints[::5], walk.joints[::3][: len(walk50.joints[::5])], atol=1.0)


def test_roll_irregular_timing_is_resampled():
    """roll's file frame 5 lasts 33 ms (two 60 fps frames): file frame 6 is output frame 7."""
    frames = mocap._read_frames("roll")
    assert abs(frames[5, 0] - 2 * frames[4, 0]) < 1e-3
    humanoid = mocap._load_humanoid()
    raw = mocap._forward_kinematics(*mocap._parse_frames(frames, humanoid), humanoid)
    roll = mocap.load_clip("roll")
    assert roll.fps == 60.0 and roll.num_frames == len(frames)   # one frame gained, ~0.5 lost to drift
    np.testing.assert_allclose(roll.joints[:6], raw[:6], atol=1.0)
    # The long frame is 32.666 ms, not 33.333: later file frames are 0.04 output frames early.
    step = np.abs(np.diff(raw, axis=0)).max()
    np.testing.assert_allclose(roll.joints[7:60], raw[6:59], atol=0.05 * step)
    # Output frame 6 falls halfway through the long frame: between raw frames 5 and 6.
    assert np.abs(roll.joints[6] - raw[5]).max() > 5.0 and np.abs(roll.joints[6] - raw[6]).max() > 5.0


def test_figure_script_writes_pngs(tmp_path):
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "docs", "make_mocap_figures.py")
    spec = importlib.util.spec_from_file_location("make_mocap_figures", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.clips_figure(str(tmp_path / "clips.png"), frames_per_clip=2)
    module.rest_figure(str(tmp_path / "rest.png"))
    for name in ("clips.png", "rest.png"):
        with open(tmp_path / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_mocap_dir_from_the_environment(tmp_path, monkeypatch):
    # A copy of just the clips and the URDF serves where the pybullet wheel is not installed.
    shipped = mocap.data_dir()
    (tmp_path / "data").mkdir()
    shutil.copytree(os.path.join(shipped, "data", "motions"), tmp_path / "data" / "motions")
    (tmp_path / "humanoid").mkdir()
    shutil.copy(os.path.join(shipped, "humanoid", "humanoid.urdf"), tmp_path / "humanoid")
    want = mocap.load_clip("walk").joints
    monkeypatch.setenv(mocap.MOCAP_DIR_ENV, str(tmp_path))
    assert mocap.data_dir() == str(tmp_path)
    mocap.load_clip.cache_clear()
    mocap._load_humanoid.cache_clear()
    try:
        assert mocap.clip_path("walk").startswith(str(tmp_path))
        np.testing.assert_array_equal(mocap.load_clip("walk").joints, want)
        os.remove(tmp_path / "humanoid" / "humanoid.urdf")
        with pytest.raises(ValueError, match="humanoid.urdf"):
            mocap.data_dir()
    finally:
        mocap.load_clip.cache_clear()
        mocap._load_humanoid.cache_clear()


def test_missing_pybullet_names_both_ways_out(monkeypatch):
    monkeypatch.delenv(mocap.MOCAP_DIR_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "pybullet_data", None)  # import now raises ImportError
    with pytest.raises(ValueError, match="pip install pybullet.*HOURGLASS_MOCAP_DIR"):
        mocap.data_dir()
