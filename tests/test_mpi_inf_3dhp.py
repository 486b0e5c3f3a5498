"""mpi_inf_3dhp builder on fixtures in the dataset's formats: annot.mat (scipy, MATLAB v5),
camera.calibration text, avi videos, and the test set's v7.3 annot_data.mat (h5py) + JPEGs."""
from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image

import helpers_realdata as hr
from hourglass_jax.data import mpi_inf_3dhp as m3, realdata

RES = 64
N_TRAIN = 7  # frames per training video at 25 fps; 12.5 fps keeps 0, 2, 4, 6
SIZE = 512   # fixture frames are SIZE x SIZE (the real ones are 2048 x 2048)
CAMS = (0, 4)
# 28-joint rows (0-based) of the joints checked below.
HEAD_TOP28, NECK28, L_SH28, R_SH28, PELVIS28, R_ANKLE28, L_WRIST28 = 7, 5, 9, 14, 4, 25, 11
TS_K = {"TS1": np.array([420.0, 421.5, 250.0, 262.0]),
        "TS5": np.array([380.0, 380.0, 240.0, 135.0])}
TS_SIZE = {"TS1": (SIZE, SIZE), "TS5": (270, 480)}  # (H, W): square studio, wide outdoor
TS_VALID = {"TS1": np.array([1, 0, 1, 1, 0]), "TS5": np.array([1, 1, 0])}
TS_ACTIVITY = {"TS1": np.array([1, 1, 3, 7, 2]), "TS5": np.array([6, 6, 5])}


def _calib_k(cam: int) -> np.ndarray:
    return np.array([400.0 + 3 * cam, 398.0 + 3 * cam, 250.0 + cam, 258.0 - cam])


def _write_calibration(path: str) -> None:
    lines = ["Fs"]
    for c in range(14):
        fx, fy, cx, cy = _calib_k(c)
        lines += [f"name          {c}", "  sensor      10 10", f"  size        {SIZE} {SIZE}",
                  "  animated    0",
                  f"  intrinsic   {fx} 0 {cx} 0 0 {fy} {cy} 0 0 0 1 0 0 0 0 1 ",
                  "  extrinsic   1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1 ", "  radial      0"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def _poses28(rng, n: int, root_z: float) -> np.ndarray:
    """(n, 28, 3) mm camera frame; a person moving right 150 mm per frame."""
    out = rng.normal(0, 200, (n, 28, 3)) + [0, 0, root_z]
    for i in range(n):
        p = hr.person_mpii16(rng, np.array([-450.0 + 150 * i, 100.0, root_z]))
        # The 17 test joints of the module doc, from the MPII-16 person (neck = upper neck).
        j17 = [p[9], p[8], p[12], p[11], p[10], p[13], p[14], p[15], p[2], p[1], p[0], p[3],
               p[4], p[5], p[6], 0.5 * (p[6] + p[7]), p[9] + [0, 80, 0]]
        out[i, list(m3.TRAIN28_TO_TEST17)] = j17
    return out


def _project(p, k):
    return np.stack([k[0] * p[..., 0] / p[..., 2] + k[2], k[1] * p[..., 1] / p[..., 2] + k[3]], -1)


def _marker_uv(p28, k):
    uv = np.zeros((16, 2))
    uv[9], uv[0], uv[15] = (_project(p28[j], k) for j in (HEAD_TOP28, R_ANKLE28, L_WRIST28))
    return uv


def _write_train_seq(root, subject, seq, rng, n=N_TRAIN, cams=CAMS, video_frames=None):
    d = os.path.join(root, subject, f"Seq{seq}")
    os.makedirs(os.path.join(d, "imageSequence"), exist_ok=True)
    _write_calibration(os.path.join(d, "camera.calibration"))
    a2, a3 = np.empty((14, 1), object), np.empty((14, 1), object)
    poses = {}
    for c in range(14):
        p = _poses28(rng, n, 4000.0 + 100 * c)
        poses[c] = p
        a3[c, 0] = p.reshape(n, 84)
        a2[c, 0] = _project(p, _calib_k(c)).reshape(n, 56)
    scipy.io.savemat(os.path.join(d, "annot.mat"), {
        "annot2": a2, "annot3": a3, "univ_annot3": a3, "frames": np.arange(n)[:, None],
        "cameras": np.arange(14)[None]})
    for c in cams:
        frames = np.stack([hr.draw_frame(SIZE, SIZE, _marker_uv(p, _calib_k(c))) for p in poses[c]])
        hr.write_video(os.path.join(d, "imageSequence", f"video_{c}.avi"),
                       frames[:video_frames], 25, codec="ffv1")
    return poses


def _write_test_seq(root, ts, rng, transposed=False):
    d = os.path.join(root, ts)
    os.makedirs(os.path.join(d, "imageSequence"), exist_ok=True)
    n = len(TS_VALID[ts])
    p28 = _poses28(rng, n, 3500.0)
    j17 = p28[:, list(m3.TRAIN28_TO_TEST17)]
    a2 = _project(j17, TS_K[ts])
    h, w = TS_SIZE[ts]
    for i in range(n):
        Image.fromarray(hr.draw_frame(h, w, _marker_uv(p28[i], TS_K[ts]))).save(
            os.path.join(d, "imageSequence", f"img_{i + 1:06d}.jpg"), quality=98)
    with h5py.File(os.path.join(d, "annot_data.mat"), "w") as f:
        if transposed:  # the order MATLAB's column-major dims give when read without transposing
            f["annot2"], f["annot3"] = a2[:, None].T, j17[:, None].T
            f["valid_frame"], f["activity_annotation"] = TS_VALID[ts][None], TS_ACTIVITY[ts][None]
        else:
            f["annot2"], f["annot3"] = a2[:, None], j17[:, None]
            f["valid_frame"] = TS_VALID[ts][:, None]
            f["activity_annotation"] = TS_ACTIVITY[ts][:, None]
    return p28


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("3dhp"))
    rng = np.random.default_rng(0)
    train = {seq: _write_train_seq(root, "S1", seq, rng) for seq in (1, 2)}
    test = {"TS1": _write_test_seq(root, "TS1", rng),
            "TS5": _write_test_seq(root, "TS5", rng, transposed=True)}
    cfg = m3.Mpi3dhpConfig(name="fixture", res=RES, train_subjects=("S1",), cameras=CAMS,
                           test_sequences=("TS1", "TS5"))
    b = m3.prepare(root, cfg, tmp_path_factory.mktemp("tfds"), workers=2)
    src = b.as_data_source()
    recs = {k: [src[k][i] for i in range(len(src[k]))] for k in ("train", "validation")}
    return recs, train, test, root


def _t(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _check_pose(r, p28: np.ndarray, k: np.ndarray) -> None:
    p3 = r["pose3d"].astype(np.float64)
    np.testing.assert_allclose(p3[9], p28[HEAD_TOP28], atol=1e-3)
    np.testing.assert_allclose(p3[8], p28[NECK28], atol=1e-3)
    np.testing.assert_allclose(p3[0], p28[R_ANKLE28], atol=1e-3)
    np.testing.assert_allclose(p3[15], p28[L_WRIST28], atol=1e-3)
    np.testing.assert_allclose(p3[6], p28[PELVIS28], atol=1e-3)
    np.testing.assert_allclose(p3[7], 0.5 * (p28[L_SH28] + p28[R_SH28]), atol=1e-3)
    np.testing.assert_allclose(r["intrinsics"], k, rtol=1e-5)
    # The stored 2D pose, mapped back from the crop by hand, is the 2D annotation (projection).
    uv = (r["pose2d"] - (RES - 1) / 2) * (200.0 * r["scale"]) / RES + r["center"]
    np.testing.assert_allclose(uv, _project(p3, k), atol=0.02)
    assert hr.crop_has_markers(r["image"], r["pose2d"])


def test_training_set_joints_cameras_subsampling_and_crops(built):
    recs, train, _, _ = built
    keys = sorted((_t(r["sequence"]), int(r["frame"])) for r in recs["train"])
    assert keys == sorted((f"S1/Seq{q}/{q}/{c}", f) for q in (1, 2) for c in CAMS for f in range(4))
    for r in recs["train"]:
        seq, cam = int(r["subaction"]), int(_t(r["camera"]))
        assert _t(r["action"]) == f"Seq{seq}" and bool(r["has_pose3d"])
        _check_pose(r, train[seq][cam][2 * int(r["frame"])], _calib_k(cam))  # 25 -> 12.5 fps


def test_test_set_valid_frames_activities_and_fitted_intrinsics(built):
    recs, _, test, _ = built
    got = {}
    for r in recs["validation"]:
        ts = _t(r["subject"])
        got.setdefault(ts, []).append(r)
        assert _t(r["sequence"]) == f"{ts}/video/1/0"
    for ts, rs in got.items():
        valid = np.flatnonzero(TS_VALID[ts])
        assert sorted(int(r["frame"]) for r in rs) == list(range(len(valid)))
        for r in rs:
            i = valid[int(r["frame"])]
            assert _t(r["action"]) == m3.ACTIVITIES[TS_ACTIVITY[ts][i] - 1]
            _check_pose(r, test[ts][i], TS_K[ts])
    assert set(got) == {"TS1", "TS5"} and m3.SCENES["TS1"] == "green_screen"
    assert m3.SCENES["TS5"] == "outdoor"


def test_fit_intrinsics_recovers_a_known_camera():
    rng = np.random.default_rng(3)
    xyz = rng.uniform([-800, -900, 2500], [800, 900, 6000], (50, 3))
    k = np.array([1497.693, 1497.103, 1024.704, 1051.394])  # camera 0 of the training set
    got, rms = m3.fit_intrinsics(_project(xyz, k), xyz)
    np.testing.assert_allclose(got, k, rtol=1e-9)
    assert rms < 1e-6


def test_bad_input_is_a_clear_error(built, tmp_path):
    _, _, _, root = built
    rng = np.random.default_rng(5)
    cfg = m3.Mpi3dhpConfig(name="bad", res=RES, train_subjects=("S1",), cameras=CAMS,
                           test_sequences=())
    # A missing video: the message names it.
    _write_train_seq(str(tmp_path), "S1", 1, rng, cams=(0,))
    _write_train_seq(str(tmp_path), "S1", 2, rng, cams=CAMS)
    with pytest.raises(realdata.LayoutError,
                       match=r"S1/Seq1 camera 4 video.*S1/Seq1/imageSequence/video_4\.avi"):
        m3.check_layout(str(tmp_path), cfg)
    # A truncated video: 3 frames where annot.mat has 7.
    _write_train_seq(str(tmp_path), "S1", 1, rng, cams=CAMS, video_frames=3)
    with pytest.raises(realdata.LayoutError, match=r"video_0\.avi is truncated: .*3 decodable.*7"):
        list(m3.train_examples(str(tmp_path), "S1", 1, cfg))
    # A download cut short (the avi's tail and index missing).
    _write_train_seq(str(tmp_path), "S1", 1, rng, cams=CAMS)
    vid = tmp_path / "S1" / "Seq1" / "imageSequence" / "video_0.avi"
    data = vid.read_bytes()
    vid.write_bytes(data[:len(data) * 6 // 10])
    with pytest.raises(realdata.LayoutError, match=r"video_0\.avi is truncated: .*expects .*7"):
        list(m3.train_examples(str(tmp_path), "S1", 1, cfg))
    # Wrong layout in annot.mat: 27 joints per frame.
    bad = np.empty((14, 1), object)
    for c in range(14):
        bad[c, 0] = np.zeros((2, 81))
    scipy.io.savemat(tmp_path / "annot_bad.mat", {"annot3": bad})
    with pytest.raises(realdata.LayoutError,
                       match=r"annot3\{0\} has shape \(2, 81\), expected \(N, 84\)"):
        m3.read_train_annot(str(tmp_path / "annot_bad.mat"), (0,))
    # A test file with 16 joints, and one that is not HDF5 (e.g. saved as MATLAB v5).
    with h5py.File(tmp_path / "ts_bad.mat", "w") as f:
        f["annot2"], f["annot3"] = np.zeros((4, 1, 16, 2)), np.zeros((4, 1, 16, 3))
    with pytest.raises(realdata.LayoutError,
                       match=r"annot2 has shape \(4, 1, 16, 2\), expected \(N, 1, 17, 2\)"):
        m3.read_test_annot(str(tmp_path / "ts_bad.mat"))
    with pytest.raises(realdata.LayoutError, match="not a MATLAB v7.3"):
        m3.read_test_annot(os.path.join(root, "S1", "Seq1", "annot.mat"))
    # A calibration file without intrinsics.
    (tmp_path / "cal").write_text("Fs\nname 0\n  size 10 10\n")
    with pytest.raises(realdata.LayoutError, match="no 'name' / 'intrinsic' camera blocks"):
        m3.read_calibration(str(tmp_path / "cal"))


def test_paper_configs(tmp_path):
    import importlib
    s1 = importlib.import_module("experiments.configs.mpi3dhp_subject_s1").get_config()
    assert s1.data.dataset == "mpi_inf_3dhp" and s1.data.labelled_subjects == ("S1",)
    assert s1.data.unlabelled_subjects == tuple(f"S{i}" for i in range(2, 9))
    scenes = {ts: scene for scene, seqs in s1.evaluate.scenes.items() for ts in seqs}
    assert scenes == m3.SCENES and s1.data.validation_subjects == m3.TEST_SEQUENCES
    cross = importlib.import_module("experiments.configs.mpi3dhp_cross_h36m").get_config()
    assert cross.data.dataset == "h36m" and cross.data.unlabelled_dataset == "mpi_inf_3dhp"
    unl = [s.split("/")[0] for s in cross.data.unlabelled_sequences]
    val = [s.split("/")[0] for s in cross.data.validation_sequences]
    assert len(unl) == 5 and set(unl) <= {"S1", "S2", "S3", "S4", "S5"}
    assert len(val) == 3 and set(val) <= {"S6", "S7", "S8"}
    with pytest.raises(ValueError,
                       match=r"mpi_inf_3dhp/full is not prepared .*prepare mpi_inf_3dhp"):
        realdata.require_prepared("mpi_inf_3dhp", tmp_path, "full")
