"""Cross-dataset protocols and per-scene results in the experiment stages (experiments/datasets.py).

The unlabelled and validation videos come from an MPI-INF-3DHP build made here from fixture files
in the dataset's formats (a few frames per video), while the protocol's own dataset is Human3.6M
(never read: the baseline network is a random one exported in place of train3d). Checks:
  - predict / complete / finetune use exactly the listed sequences of the named dataset and split;
  - evaluate reads the named dataset/split (and listed sequences);
  - per-scene errors equal float64 NumPy errors over the frames of each scene's subjects, and the
    report prints the per-scene table;
  - an unknown sequence id, dataset, split or a bad scene is a ValueError naming it.
"""
from __future__ import annotations

import contextlib
import io
import json
import os

import h5py
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.io
from PIL import Image

import helpers_realdata as hr
from experiments import configs, datasets, main, report, stages
from experiments.workdir import Workdir
from hourglass_jax import export
from hourglass_jax.data import mpi_inf_3dhp as m3
from hourglass_jax.data import pipeline
from hourglass_jax.mesh import DATA_AXIS
from hourglass_jax.model import VolumetricHourglass, model_config

SIZE = 160                      # fixture frames are SIZE x SIZE px
K = np.array([150.0, 150.0, 80.0, 80.0])  # [fx, fy, cx, cy] px of every fixture camera
TRAIN_SUBJECTS, CAMS, VIDEO_FRAMES = ("S2", "S3"), (0, 4), 7  # 7 frames at 25 fps -> 4 kept
TEST_VALID = {"TS1": np.array([1, 0, 1, 1]), "TS5": np.array([1, 1, 1])}
UNLABELLED = ("S2/Seq1/1/4", "S3/Seq2/2/0")   # 2 of the 8 training videos
VALIDATION = ("S3/Seq1/1/0",)
SCENES = {"green_screen": ("TS1",), "outdoor": ("TS5",)}


def _poses(rng, n: int) -> np.ndarray:
    """(n, 28, 3) random joints, mm, 4 m in front of the camera (the test set takes 17)."""
    return rng.normal(0.0, 250.0, (n, 28, 3)) + [0.0, 0.0, 4000.0]


def _project(p: np.ndarray) -> np.ndarray:
    return np.stack([K[0] * p[..., 0] / p[..., 2] + K[2], K[1] * p[..., 1] / p[..., 2] + K[3]], -1)


def _write_train_sequence(root: str, subject: str, seq: int, rng) -> None:
    d = os.path.join(root, subject, f"Seq{seq}")
    os.makedirs(os.path.join(d, "imageSequence"))
    lines = []
    for c in range(14):
        lines += [f"name {c}", f"  size {SIZE} {SIZE}",
                  f"  intrinsic {K[0]} 0 {K[2]} 0 0 {K[1]} {K[3]} 0 0 0 1 0 0 0 0 1"]
    with open(os.path.join(d, "camera.calibration"), "w") as f:
        f.write("Fs\n" + "\n".join(lines) + "\n")
    a2, a3 = np.empty((14, 1), object), np.empty((14, 1), object)
    for c in range(14):
        p = _poses(rng, VIDEO_FRAMES)
        a3[c, 0], a2[c, 0] = p.reshape(VIDEO_FRAMES, 84), _project(p).reshape(VIDEO_FRAMES, 56)
    scipy.io.savemat(os.path.join(d, "annot.mat"), {"annot2": a2, "annot3": a3})
    for c in CAMS:
        frames = rng.integers(0, 255, (VIDEO_FRAMES, SIZE, SIZE, 3), dtype=np.uint8)
        hr.write_video(os.path.join(d, "imageSequence", f"video_{c}.avi"), frames, 25,
                       codec="ffv1")


def _write_test_sequence(root: str, ts: str, rng) -> None:
    d = os.path.join(root, ts)
    os.makedirs(os.path.join(d, "imageSequence"))
    valid = TEST_VALID[ts]
    j17 = _poses(rng, len(valid))[:, :17]
    for i in range(len(valid)):
        Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(
            os.path.join(d, "imageSequence", f"img_{i + 1:06d}.jpg"))
    with h5py.File(os.path.join(d, "annot_data.mat"), "w") as f:
        f["annot2"], f["annot3"] = _project(j17)[:, None], j17[:, None]
        f["valid_frame"] = valid[:, None]
        f["activity_annotation"] = np.ones((len(valid), 1), np.int64)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    """A TFDS data dir holding mpi_inf_3dhp/small built from the fixture files: S2, S3 x Seq1-2 x
    cameras 0, 4 (8 videos of 4 frames) and test sequences TS1 (3 valid frames), TS5 (3)."""
    root = str(tmp_path_factory.mktemp("3dhp_manual"))
    rng = np.random.default_rng(0)
    for subject in TRAIN_SUBJECTS:
        for seq in m3.SEQUENCES:
            _write_train_sequence(root, subject, seq, rng)
    for ts in TEST_VALID:
        _write_test_sequence(root, ts, rng)
    # Fewer subjects and cameras than the registered configs expect; built under its own name,
    # then moved to where the registered "small" config (also 64 px) reads it.
    cfg = m3.Mpi3dhpConfig(name="fixture", res=64, train_subjects=TRAIN_SUBJECTS, cameras=CAMS,
                           test_sequences=tuple(TEST_VALID))
    out = str(tmp_path_factory.mktemp("tfds"))
    m3.prepare(root, cfg, out)
    os.rename(os.path.join(out, "mpi_inf_3dhp", "fixture"),
              os.path.join(out, "mpi_inf_3dhp", "small"))
    return out


def _records(data_dir: str, split: str) -> list[dict]:
    """Every record of a split, read straight from TFDS (the reference the stages must match)."""
    src = m3.builder("small", data_dir).as_data_source()[split]
    return [src[i] for i in range(len(src))]


def _text(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _cross_config(data_dir: str, **validation) -> ml_collections.ConfigDict:
    """The paper's H36M -> 3DHP protocol on the fixture build, with a tiny schedule."""
    c = configs.get_protocol_config("mpi3dhp_cross_h36m")
    c.data.data_dir = data_dir
    c.data.builder_config = "small"
    c.data.unlabelled_sequences = UNLABELLED
    for key, value in validation.items():
        c.data[key] = value
    c.finetune.settings = ("bone",)
    c.finetune.steps = 2
    c.finetune.batch_size = 1
    c.finetune.checkpoint_every = 2
    c.predict.batch_size = 8
    c.complete.max_iters = 30
    c.log_every = 1
    return c


def _workdir_with_baseline(path: str, config) -> Workdir:
    """A work directory whose train3d stage is a random 64 px network (the labelled dataset,
    H36M, is not needed by the stages under test)."""
    w = Workdir(path, config)
    cfg = model_config("test", input_size=64, channels=8, hourglass_depth=1, num_2d_stacks=1,
                       bn_axis_name=DATA_AXIS)  # the smallest network: compiles fastest
    variables = VolumetricHourglass(cfg).init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)),
                                              train=False)
    export.save_model(w.file("train3d", stages.MODEL_DIR), "volumetric", cfg, variables)
    w.mark_done("train3d")
    return w


@pytest.fixture(scope="module")
def cross_run(data_dir, tmp_path_factory):
    """Unlabelled: the 2 listed training videos; validation: the test set split, per scene."""
    config = _cross_config(data_dir, validation_split="validation", validation_sequences=(),
                           validation_subjects=tuple(TEST_VALID))
    config.evaluate.scenes = ml_collections.ConfigDict(SCENES)
    path = str(tmp_path_factory.mktemp("cross"))
    _workdir_with_baseline(path, config)
    log = io.StringIO()
    with contextlib.redirect_stdout(log):  # the stages' progress lines, for the checks below
        main.run(config, path, "predict,complete,finetune,evaluate,report")
    with open(os.path.join(path, "stages.log"), "w") as f:
        f.write(log.getvalue())
    return path


def _load(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def test_only_the_listed_videos_are_predicted_and_completed(cross_run, data_dir):
    recs = [r for r in _records(data_dir, "train") if _text(r["sequence"]) in UNLABELLED]
    for stage, name in (("predict", "predictions.npz"), ("complete", "pseudo_labels.npz")):
        out = _load(os.path.join(cross_run, stage, name))
        assert sorted(set(out["sequence"].tolist())) == sorted(UNLABELLED), stage
        assert len(out["sequence"]) == len(recs) == 8  # 4 frames (12.5 of 25 fps) per video
    # Ground truth stored beside the predictions is the listed videos' root-relative poses.
    want = {(_text(r["sequence"]), int(r["frame"])): r["pose3d"] - r["pose3d"][6] for r in recs}
    for seq, frame, gt in zip(out["sequence"], out["frame_index"], out["gt"]):
        np.testing.assert_allclose(gt, want[(str(seq), int(frame))], atol=1e-3)
    stats = json.load(open(os.path.join(cross_run, "complete", "solver_stats.json")))
    assert stats["videos"] == 2 and stats["frames"] == 8
    # Fine-tuning read the same 8 frames (a frame without a pseudo-label would be a KeyError).
    log = open(os.path.join(cross_run, "stages.log")).read()
    assert "finetune/bone: 2 steps on 8 pseudo-labelled frames" in log


def test_finetune_trains_on_the_listed_videos_only(cross_run, data_dir, tmp_path):
    config = _cross_config(data_dir)
    sel = datasets.selection(config, "unlabelled")
    assert (sel.dataset, sel.split, sel.sequences) == ("mpi_inf_3dhp", "train", UNLABELLED)
    pipe = pipeline.TrainPipeline(sel.source, global_batch_size=4, seed=0, augment=False,
                                  lookahead=0)
    seen = {str(s) for step in range(4) for s in pipe.batch_at(step)["sequence"]}
    assert seen == set(UNLABELLED) and len(pipe.indices) == 8
    labels = _load(os.path.join(cross_run, "complete", "pseudo_labels.npz"))
    # The pseudo-label rows are keyed by the record numbers the fine-tuning pipeline reads.
    assert sorted(labels["index"].tolist()) == list(range(8))


def _np_errors(pred: np.ndarray, gt: np.ndarray) -> dict[str, np.ndarray]:
    """Float64 NumPy MPJPE, NMPJPE, PMPJPE per frame (pelvis = joint 6; Umeyama without
    reflection), written from the definitions, not from hourglass_jax.metrics."""
    p = pred.astype(np.float64) - pred[:, 6:7]
    g = gt.astype(np.float64) - gt[:, 6:7]
    s = np.sum(p * g, axis=(1, 2)) / np.sum(p * p, axis=(1, 2))
    pm = []
    for a, b in zip(p, g):
        a0, b0 = a - a.mean(0), b - b.mean(0)
        u, sv, vt = np.linalg.svd(a0.T @ b0)
        d = np.diag([1.0, 1.0, np.sign(np.linalg.det(vt.T @ u.T))])
        rot = vt.T @ d @ u.T
        scale = np.trace(np.diag(sv) @ d) / np.sum(a0 ** 2)
        pm.append(np.linalg.norm(scale * a0 @ rot.T + b.mean(0) - b, axis=-1).mean())
    return {"mpjpe": np.linalg.norm(p - g, axis=-1).mean(-1),
            "nmpjpe": np.linalg.norm(s[:, None, None] * p - g, axis=-1).mean(-1),
            "pmpjpe": np.asarray(pm)}


def test_per_scene_errors_equal_numpy_over_the_scene_frames(cross_run, data_dir):
    results = json.load(open(os.path.join(cross_run, "evaluate", "results.json")))["settings"]
    assert set(results) == {"baseline", "bone"}
    truth = {(_text(r["subject"]), int(r["frame"])): r["pose3d"] - r["pose3d"][6]
             for r in _records(data_dir, "validation")}
    for name, res in results.items():
        out = _load(os.path.join(cross_run, "evaluate", f"predictions_{name}.npz"))
        # The validation frames are the test split's (3 valid frames of each sequence).
        assert sorted(zip(out["subject"].tolist(), out["frame_index"].tolist())) == sorted(truth)
        for subj, frame, gt in zip(out["subject"], out["frame_index"], out["gt"]):
            np.testing.assert_allclose(gt, truth[(str(subj), int(frame))], atol=1e-3)
        errors = _np_errors(out["pred"], out["gt"])
        assert set(res["per_scene"]) == set(SCENES)
        for scene, members in SCENES.items():
            rows = np.isin(out["subject"], members)
            assert res["per_scene"][scene]["frames"] == rows.sum() == 3
            for metric, e in errors.items():
                assert res["per_scene"][scene][metric] == pytest.approx(e[rows].mean(), rel=1e-4)
    md = open(os.path.join(cross_run, "report", "report.md")).read()
    assert "Table 7 analogue" in md
    table = json.load(open(os.path.join(cross_run, "report", "report.json")))["table7"]
    assert table["scenes"] == ["green_screen", "outdoor", "All"]
    row = table["rows"]["outdoor / + bone consistency (full method)"]
    assert row["MPJPE"] == pytest.approx(results["bone"]["per_scene"]["outdoor"]["mpjpe"])
    assert f"| outdoor / baseline | {results['baseline']['per_scene']['outdoor']['mpjpe']:.1f} |" \
        in md


def test_evaluate_reads_the_listed_validation_sequences(cross_run, data_dir, tmp_path):
    # As the paper's protocol: validation = listed videos of 3DHP's training split.
    config = _cross_config(data_dir, validation_sequences=VALIDATION)
    assert config.data.validation_split == "train"
    config.finetune.settings = ()
    path = str(tmp_path / "w")
    _workdir_with_baseline(path, config)
    main.run(config, path, "evaluate")
    out = _load(os.path.join(path, "evaluate", "predictions_baseline.npz"))
    assert sorted(set(out["sequence_id"].tolist())) == [0] and len(out["pred"]) == 4
    recs = [r for r in _records(data_dir, "train") if _text(r["sequence"]) in VALIDATION]
    assert sorted(out["frame_index"].tolist()) == sorted(int(r["frame"]) for r in recs)
    results = json.load(open(os.path.join(path, "evaluate", "results.json")))["settings"]
    assert set(results["baseline"]["per_subject"]) == {"S3"}
    assert "per_scene" not in results["baseline"]  # no scenes in this protocol


def test_without_listed_sequences_the_split_is_read_with_its_filters(data_dir):
    config = _cross_config(data_dir, unlabelled_sequences=(), unlabelled_subjects=("S2",))
    sel = datasets.selection(config, "unlabelled")
    assert len(sel.source) == 32 and sel.subjects == ("S2",) and sel.sequences is None
    assert not isinstance(sel.source, datasets.SequenceSubset)
    videos = [seq for seq, _ in pipeline.read_sequences(sel.source, subjects=sel.subjects)]
    assert videos == ["S2/Seq1/1/0", "S2/Seq1/1/4", "S2/Seq2/2/0", "S2/Seq2/2/4"]


def test_bad_selections_fail_clearly(data_dir, tmp_path):
    config = _cross_config(str(tmp_path / "empty"))  # the named dataset is the one looked for
    with pytest.raises(ValueError, match="mpi_inf_3dhp/small is not prepared"):
        datasets.selection(config, "unlabelled")
    config = _cross_config(data_dir, unlabelled_sequences=("S2/Seq1/1/4", "S9/Seq1/1/3"))
    with pytest.raises(ValueError,
                       match=r"unknown sequence id\(s\) \['S9/Seq1/1/3'\].*S2/Seq1/1/0"):
        datasets.selection(config, "unlabelled")
    config = _cross_config(data_dir, unlabelled_dataset="mpi_inf_4dhp")
    with pytest.raises(ValueError, match="unknown dataset 'mpi_inf_4dhp'"):
        datasets.selection(config, "unlabelled")
    config = _cross_config(data_dir, unlabelled_split="test")
    with pytest.raises(ValueError, match="no split 'test'; splits: train, validation"):
        datasets.selection(config, "unlabelled")
    config = _cross_config(data_dir, unlabelled_subjects=("S3",))
    with pytest.raises(ValueError, match=r"\['S2/Seq1/1/4'\] have no record left"):
        datasets.selection(config, "unlabelled")
    with pytest.raises(ValueError, match="unknown role 'labelled'"):
        datasets.selection(config, "labelled")
    # Config mistakes caught before any stage runs (main.run calls stages.check_supported).
    config = configs.get_protocol_config("mpi3dhp_subject_s1")  # a new field takes a string
    config.data.unlabelled_sequences = "S2/Seq1/1/6"
    with pytest.raises(ValueError, match="unlabelled_sequences must be a tuple.*string"):
        stages.check_supported(config)
    config = _cross_config(data_dir, unlabelled_sequences=UNLABELLED + UNLABELLED[:1])
    with pytest.raises(ValueError,
                       match="unlabelled_sequences lists .*S2/Seq1/1/4.* more than once"):
        stages.check_supported(config)
    config = _cross_config(data_dir, validation_subjects=("TS1",))
    config.evaluate.scenes = ml_collections.ConfigDict({"outdoor": ("TS5",)})
    with pytest.raises(ValueError,
                       match=r"scenes\['outdoor'\] names \['TS5'\].*validation_subjects"):
        stages.check_supported(config)
    config.evaluate.scenes = ml_collections.ConfigDict({"outdoor": ()})
    with pytest.raises(ValueError, match=r"scenes\['outdoor'\] must be a non-empty tuple"):
        stages.check_supported(config)
    out = {"subject": np.array(["TS1"]), "pred": np.zeros((1, 16, 3)), "gt": np.ones((1, 16, 3))}
    with pytest.raises(ValueError, match="scene 'outdoor': no validation frame of subjects"):
        datasets.scene_errors(out, {"outdoor": ("TS5",)})


def test_paper_protocols_pass_the_config_checks():
    for name in ("mpi3dhp_cross_h36m", "mpi3dhp_subject_s1", "h36m_subject_s1"):
        stages.check_supported(configs.get_protocol_config(name))


def test_sequence_subset_lists_metadata_without_reading_records():
    reads = []

    class Source(list):  # a plain source of example dicts that counts record reads
        def __getitem__(self, i):
            reads.append(i)
            return list.__getitem__(self, i)

    recs = [{"subject": f"S{i % 2}", "action": "a", "camera": "0", "sequence": f"S{i % 2}/a/1/0",
             "subaction": 1, "frame": i // 2, "image": np.full((2, 2, 3), i, np.uint8)}
            for i in range(6)]
    src = Source(recs)
    meta = pipeline.read_metadata(src)
    reads.clear()
    sub = datasets.SequenceSubset(src, datasets.sequence_records(meta, ["S1/a/1/0"]), meta)
    sub_meta = pipeline.read_metadata(sub)
    assert reads == []  # metadata only: no record (image) read
    assert sub_meta.sequence.tolist() == ["S1/a/1/0"] * 3 and sub_meta.frame.tolist() == [0, 1, 2]
    assert [int(sub[i]["image"][0, 0, 0]) for i in range(3)] == [1, 3, 5] and reads == [1, 3, 5]
    assert [int(r["image"][0, 0, 0]) for r in sub.__getitems__([2, 0])] == [5, 1]
    with pytest.raises(IndexError):
        sub[3]


def test_table7_rows_by_scene_and_setting():
    def errs(mpjpe, frames=None):
        return {"mpjpe": mpjpe, "nmpjpe": mpjpe - 10.0, "pmpjpe": mpjpe - 20.0,
                **({"frames": frames} if frames else {})}

    results = {"settings": {
        "baseline": {"overall": errs(150.0), "per_scene": {"gs": errs(120.0, 2),
                                                           "outdoor": errs(200.0, 1)}},
        "bone": {"overall": errs(135.0), "per_scene": {"gs": errs(108.0, 2),
                                                       "outdoor": errs(190.0, 1)}}}}
    t = report.table7(results)
    assert t["scenes"] == ["gs", "outdoor", "All"] and t["frames"] == {"gs": 2, "outdoor": 1}
    full = "gs / + bone consistency (full method)"
    assert t["rows"][full] == {"MPJPE": 108.0, "NMPJPE": 98.0, "PMPJPE": 88.0,
                               "MPJPE %": pytest.approx(-10.0)}
    assert t["rows"]["outdoor / baseline"]["MPJPE %"] == 0.0
    assert t["rows"]["All / + bone consistency (full method)"]["MPJPE"] == 135.0
    del results["settings"]["bone"]["per_scene"]["outdoor"]
    with pytest.raises(ValueError, match=r"setting 'bone' has no per_scene errors for \['outdoor'\]"):
        report.table7(results)
    del results["settings"]["baseline"]["per_scene"]
    with pytest.raises(ValueError, match=r"setting 'baseline' has no per_scene errors for \['gs'\]"):
        report.table7(results)
    results["settings"]["baseline"]["per_scene"] = {}
    for s in results["settings"].values():
        del s["per_scene"]
    with pytest.raises(ValueError, match="no setting has per_scene errors"):
        report.table7(results)


def test_a_run_stops_before_its_first_stage_when_a_later_dataset_is_missing(tmp_path):
    # H36M -> 3DHP with H36M and MPII "prepared" nowhere: the run names the first missing
    # dataset before training anything, and asks for each dataset only the stages that read it.
    config = configs.get_protocol_config("mpi3dhp_cross_h36m")
    config.data.data_dir = str(tmp_path / "tfds")
    assert datasets.required_datasets(config, ["pretrain2d", "train3d", "predict", "complete",
                                               "finetune", "evaluate"]) == [
        "mpii", "h36m", "mpi_inf_3dhp"]
    assert datasets.required_datasets(config, ["predict", "evaluate"]) == ["mpi_inf_3dhp"]
    config.pretrain2d.import_checkpoint = "hourglass.pth"  # no 2D set is read then
    assert datasets.required_datasets(config, ["pretrain2d"]) == []
    with pytest.raises(ValueError, match="h36m/full is not prepared"):
        main.run(config, str(tmp_path / "w"), "train3d,predict,complete,finetune,evaluate")
    assert not (tmp_path / "w").exists()  # nothing started
