"""The two-stage method end to end on the `quick` config: every stage, rerun, resume, bad input."""
import copy
import json
import os
import shutil
import signal

import jax
import numpy as np
import pytest

import completion
from experiments import archive, common, configs, datasets, main, provenance, seeds, stages
from experiments.workdir import STAGES, Workdir, differing_fields, flatten, parse_stages
from hourglass_jax import skeleton
from hourglass_jax.data import mocap_render, pipeline

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def quick_config():
    config = configs.get_protocol_config("quick")
    config.data.data_dir = mocap_render.cached_data_dir("tiny")
    return config


@pytest.fixture(scope="module")
def quick_run(quick_config, tmp_path_factory):
    common.enable_compilation_cache(str(tmp_path_factory.mktemp("xla")))
    workdir = str(tmp_path_factory.mktemp("quick"))
    main.run(quick_config, workdir, "all")
    return workdir


def pseudo_labels(run: str) -> dict[str, np.ndarray]:
    """The arrays of a run's complete/pseudo_labels.npz."""
    return stages._load_npz(os.path.join(run, "complete", "pseudo_labels.npz"))


def relabelled_ends(labels: dict[str, np.ndarray], setting: str, source) -> list:
    """(row, record) for the first and last unlabelled rows, relabelled as `setting` trains."""
    relabel = stages.PseudoLabels(labels, *stages.SETTINGS[setting][:2])
    rows = (0, len(labels["index"]) - 1)
    return [(r, relabel(pipeline.decode(source[int(labels["index"][r])],
                                        int(labels["index"][r])))) for r in rows]


def root_relative(pose: np.ndarray) -> np.ndarray:
    return pose - pose[skeleton.ROOT]


def test_every_stage_writes_its_outputs(quick_run):
    for stage in STAGES:
        assert os.path.exists(os.path.join(quick_run, stage, "DONE.json")), stage
    report_dir = os.path.join(quick_run, "report")
    markdown = open(os.path.join(report_dir, "report.md")).read()
    for heading in ("Table 1 analogue", "Table 3 analogue", "Table 4 analogue"):
        assert heading in markdown
    for png in ("fig3_optimisation.png", "fig4_finetuning.png", "curves_supervised.png",
                "curves_finetune.png"):
        assert os.path.getsize(os.path.join(report_dir, png)) > 5000, png
    results = json.load(open(os.path.join(quick_run, "evaluate", "results.json")))["settings"]
    assert set(results) == {"baseline", *stages.SETTINGS}
    # Each setting's loss check is recorded; 3 logged losses are too few to tell a trend.
    finetuned = json.load(open(os.path.join(quick_run, "finetune", "DONE.json")))
    assert all(finetuned[s]["loss_growth"] is None for s in stages.SETTINGS)
    for res in results.values():
        assert all(np.isfinite(v) and v > 0 for v in res["overall"].values())
        assert set(res["per_subject"]) == {"S9", "S11"}


def test_labelled_control_trains_on_the_labelled_ground_truth(quick_run, quick_config):
    """The `labelled` control reads only the labelled split, keeps its true poses, and carries
    confidence 1 and the bone lengths of those poses; the pseudo-label settings read only the
    unlabelled videos."""
    labels = pseudo_labels(quick_run)
    control = stages.finetune_pipeline(quick_config, "labelled", labels)
    pseudo = stages.finetune_pipeline(quick_config, "bone", labels)
    for pipe, subjects in ((control, quick_config.data.labelled_subjects),
                           (pseudo, quick_config.data.unlabelled_subjects)):
        meta = pipeline.read_metadata(mocap_render.load("tiny", quick_config.data.data_dir)["train"])
        assert set(meta.subject[pipe.indices].tolist()) == set(subjects)
    batch = control.batch_at(0)
    np.testing.assert_array_equal(batch["confidence"], 1.0)
    # Augmentation rotates and mirrors the pose; bone lengths survive both.
    np.testing.assert_allclose(batch["bone_lengths"],
                               skeleton.bone_lengths(batch["pose3d"].astype(np.float64)),
                               rtol=1e-4, atol=0.05)
    # The oracle control relabels an unlabelled record with its own true pose (root-relative).
    source = mocap_render.load("tiny", quick_config.data.data_dir)["train"]
    for row, sample in relabelled_ends(labels, "oracle", source):
        true = np.asarray(source[int(labels["index"][row])]["pose3d"], np.float64)
        np.testing.assert_allclose(root_relative(sample["pose3d"]), root_relative(true),
                                   atol=1e-2)


def test_shuffled_error_labels_carry_another_frames_prediction_error():
    """Each label of the `shuffled_error` control is its frame's true pose plus the raw
    prediction error of exactly one other frame; every error is used once, along one cycle
    through all frames, so the labels are as far from the truth as the predictions."""
    rng = np.random.default_rng(3)
    n = 40
    gt = rng.normal(0.0, 300.0, (n, 16, 3))
    pred = gt + rng.normal(0.0, 100.0, (n, 16, 3))
    labels = stages.shuffled_prediction_errors({"gt": gt, "pred": pred}, seed=7)
    moved, own = labels - gt, pred - gt
    donor = []
    for i in range(n):
        matches = [j for j in range(n) if np.allclose(moved[i], own[j], atol=1e-9)]
        assert len(matches) == 1 and matches[0] != i, (i, matches)
        donor.append(matches[0])
    assert sorted(donor) == list(range(n))
    visited, frame = set(), 0
    while frame not in visited:
        visited.add(frame)
        frame = donor[frame]
    assert len(visited) == n  # one cycle: no two frames just swap their errors
    per_frame = lambda poses: np.sort(np.linalg.norm(poses - gt, axis=-1).mean(axis=1))
    np.testing.assert_allclose(per_frame(labels), per_frame(pred), rtol=1e-12)
    np.testing.assert_array_equal(
        labels, stages.shuffled_prediction_errors({"gt": gt, "pred": pred}, seed=7))
    assert not np.allclose(labels, stages.shuffled_prediction_errors({"gt": gt, "pred": pred},
                                                                     seed=8))
    with pytest.raises(ValueError, match="N >= 2"):
        stages.shuffled_prediction_errors({"gt": gt[:1], "pred": pred[:1]}, seed=0)
    with pytest.raises(ValueError, match="same shape"):
        stages.shuffled_prediction_errors({"gt": gt, "pred": pred[:, :15]}, seed=0)


def test_shuffled_error_control_trains_on_those_labels(quick_run, quick_config):
    """The quick run fine-tunes the `shuffled_error` control, and its records carry the labels
    `shuffled_prediction_errors` gives with the config's seed."""
    labels = pseudo_labels(quick_run)
    assert os.path.exists(os.path.join(quick_run, "finetune", "shuffled_error", "model",
                                       "model_config.json"))
    expected = stages.shuffled_prediction_errors(labels, quick_config.seed)
    labels["shuffled_error"] = expected
    source = mocap_render.load("tiny", quick_config.data.data_dir)["train"]
    for row, sample in relabelled_ends(labels, "shuffled_error", source):
        np.testing.assert_allclose(root_relative(sample["pose3d"]), root_relative(expected[row]),
                                   atol=1e-2)
        np.testing.assert_array_equal(sample["confidence"], 1.0)


def test_unweighted_bone_is_the_bone_setting_without_eq4_weights(quick_run, quick_config):
    """The `unweighted_bone` ablation trains on the completed labels with confidence 1 (no Eq. 4
    weights) where `bone` carries the raw confidences, and both add gamma times the bone term:
    every logged loss is fidelity + gamma * bone, where optimised supervision's is fidelity."""
    labels = pseudo_labels(quick_run)
    source = mocap_render.load("tiny", quick_config.data.data_dir)["train"]
    for setting in ("unweighted_bone", "bone"):
        for row, sample in relabelled_ends(labels, setting, source):
            np.testing.assert_allclose(root_relative(sample["pose3d"]),
                                       root_relative(labels["completed"][row]), atol=1e-2)
            if setting == "unweighted_bone":
                np.testing.assert_array_equal(sample["confidence"], 1.0)
            else:
                np.testing.assert_allclose(sample["confidence"], labels["confidence"][row])
    gamma = quick_config.finetune.gamma
    assert gamma > 0
    for setting, weight in (("unweighted_bone", gamma), ("bone", gamma), ("optimised", 0.0)):
        with open(os.path.join(quick_run, "finetune", setting, "metrics.jsonl")) as f:
            logged = [r for r in map(json.loads, f) if r.get("kind") == "train"]
        assert logged, setting
        for r in logged:
            np.testing.assert_allclose(r["loss"], r["fidelity"] + weight * r["bone"], rtol=1e-4)


def test_labelled_fraction_mixes_labelled_frames_into_pseudo_label_batches(quick_run, tmp_path):
    """`finetune.labelled_fraction` ends every pseudo-label batch with that share of labelled
    frames carrying their own ground truth; `finetune.augment_unlabelled=False` leaves the
    pseudo-labelled rows unaugmented, their labels exact, and the labelled rows augmented; the
    `labelled` control stays all labelled; a fraction that leaves no row of either kind is a
    clear error."""
    config = configs.get_protocol_config("quick")
    config.data.data_dir = mocap_render.cached_data_dir("tiny")
    config.finetune.labelled_fraction = 0.25
    labels = pseudo_labels(quick_run)
    pipe = stages.finetune_pipeline(config, "optimised", labels)
    assert isinstance(pipe, pipeline.MixedPipeline) and pipe.global_batch_size == 8
    source = mocap_render.load("tiny", config.data.data_dir)["train"]
    row_of = {int(i): r for r, i in enumerate(labels["index"])}
    batch = pipe.batch_at(1)
    pseudo, truth = slice(0, 6), slice(6, 8)
    assert set(batch["subject"][pseudo]) <= set(config.data.unlabelled_subjects)
    assert set(batch["subject"][truth]) <= set(config.data.labelled_subjects)
    np.testing.assert_array_equal(batch["confidence"][truth], 1.0)
    # Augmentation mirrors (swapping left and right), turns and scales poses: compare what
    # survives it, the bone lengths of the pose with its sides swapped back.
    for i in range(8):
        pose = batch["pose3d"][i].astype(np.float64)
        pose = skeleton.flip_joints(pose) if batch["flipped"][i] else pose
        index = int(batch["index"][i])
        if i < 6:  # the pseudo-label of that frame, not its truth
            expected = labels["completed"][row_of[index]]
        else:
            expected = np.asarray(source[index]["pose3d"], np.float64)
        np.testing.assert_allclose(skeleton.bone_lengths(pose),
                                   skeleton.bone_lengths(expected), rtol=1e-3, atol=0.05)
    augmented = [pipe.batch_at(step) for step in range(4)]
    assert any(b["flipped"][pseudo].any() or (b["rotation"][pseudo] != 0).any()
               for b in augmented)
    # finetune.augment_unlabelled=False: the pseudo-labelled rows as predicted, their labels
    # as they are; the labelled rows stay augmented.
    config.finetune.augment_unlabelled = False
    plain = stages.finetune_pipeline(config, "optimised", labels)
    plain_batches = [plain.batch_at(step) for step in range(4)]
    for b in plain_batches:
        assert not b["flipped"][pseudo].any()
        np.testing.assert_array_equal(b["rotation"][pseudo], 0.0)
        np.testing.assert_array_equal(b["scale_factor"][pseudo], 1.0)
        pose = b["pose3d"][pseudo].astype(np.float64)
        expected = labels["completed"][[row_of[int(i)] for i in b["index"][pseudo]]]
        np.testing.assert_allclose(pose - pose[:, skeleton.ROOT:skeleton.ROOT + 1], expected,
                                   atol=1e-2)
    assert any(b["flipped"][truth].any() or (b["rotation"][truth] != 0).any()
               for b in plain_batches)
    config.finetune.augment_unlabelled = True
    assert not isinstance(stages.finetune_pipeline(config, "labelled", labels),
                          pipeline.MixedPipeline)
    config.finetune.labelled_fraction = 0.0
    assert not isinstance(stages.finetune_pipeline(config, "bone", labels),
                          pipeline.MixedPipeline)
    for bad, message in ((1.0, r"must be in \[0, 1\)"), (-0.1, r"must be in \[0, 1\)"),
                         (0.05, "gives 0 labelled rows"), (0.95, "gives 8 labelled rows")):
        config.finetune.labelled_fraction = bad
        with pytest.raises(ValueError, match=message):
            stages.finetune(config, Workdir(str(tmp_path / f"fraction_{bad}"), config))


def _finetune_quick_copy(quick_run: str, workdir: str, **finetune_fields) -> str:
    """`original` fine-tuned for one step in a copy of the quick run's first four stages, with
    the given `finetune` fields; returns the setting's directory."""
    shutil.copytree(quick_run, workdir, ignore=shutil.ignore_patterns(
        "finetune", "evaluate", "report", "config.json"))
    config = configs.get_protocol_config("quick")
    config.data.data_dir = mocap_render.cached_data_dir("tiny")
    config.finetune.settings = ("original",)
    config.finetune.steps = 1
    for field, value in finetune_fields.items():
        config.finetune[field] = value
    main.run(config, workdir, "finetune")
    return os.path.join(workdir, "finetune", "original")


def test_own_predictions_are_a_fixed_point_of_fine_tuning_with_frozen_batchnorm(quick_run,
                                                                              tmp_path):
    """Labelled with the baseline's own raw predictions (`original`), shown unaugmented, and run
    with the lifter's BatchNorm on its running averages, the network already predicts its labels:
    Eq. 3 is 0 before the first update. So the predict stage and the fine-tuning pipeline agree
    on every frame's crop, camera and root, and in this mode any gain of another setting comes
    from where its labels differ from the predictions. Train-mode BatchNorm or the paper's
    augmentation each make the same labels differ from what the network predicts."""

    def first_fidelity(name: str, *, freeze: bool, augment: bool) -> float:
        setting_dir = _finetune_quick_copy(quick_run, str(tmp_path / name),
                                           freeze_batchnorm=freeze, augment_unlabelled=augment)
        with open(os.path.join(setting_dir, "metrics.jsonl")) as f:
            train = [r for r in map(json.loads, f) if r.get("kind") == "train"]
        return float(train[0]["fidelity"])

    fixed = first_fidelity("frozen_plain", freeze=True, augment=False)
    batch_statistics = first_fidelity("batch_statistics", freeze=False, augment=False)
    augmented = first_fidelity("frozen_augmented", freeze=True, augment=True)
    # mm^2 summed over 16 joints: float32 rounding of poses ~1e3 mm leaves ~1e-4 mm per joint.
    assert fixed < 1e-3, fixed
    assert batch_statistics > 1.0 and augmented > 1.0, (batch_statistics, augmented)


def test_learning_rate_zero_only_reestimates_batchnorm_statistics(quick_run, tmp_path):
    """`finetune.learning_rate=0` (docs/experiments.md's BatchNorm-only probe): the fine-tuned
    network's weights are the baseline's, bit for bit, the detector's statistics too, and only the
    lifter's BatchNorm running averages move toward the fine-tuning batches."""
    import jax
    from hourglass_jax import export
    setting_dir = _finetune_quick_copy(quick_run, str(tmp_path / "statistics"),
                                       learning_rate=0.0, augment_unlabelled=False)
    _, _, tuned = export.load_model(os.path.join(setting_dir, "model"))
    _, _, base = export.load_model(os.path.join(quick_run, "train3d", "model"))
    for a, b in zip(jax.tree_util.tree_leaves(tuned["params"]),
                    jax.tree_util.tree_leaves(base["params"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    moved = {}
    for part in ("detector", "lifter"):
        pairs = zip(jax.tree_util.tree_leaves(tuned["batch_stats"][part]),
                    jax.tree_util.tree_leaves(base["batch_stats"][part]))
        moved[part] = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                          for a, b in pairs)
    assert moved["detector"] == 0.0 and moved["lifter"] > 0.0, moved


def test_probe_on_labelled_videos_reads_only_the_labelled_split(quick_run, quick_config):
    """`soft_fidelity_probe --videos=labelled` chooses lambda_o on the baseline's predictions of
    the labelled videos: every labelled frame once, no other subject, the true poses beside."""
    from experiments.soft_fidelity_probe import labelled_predictions
    preds = labelled_predictions(quick_run)
    meta = pipeline.read_metadata(mocap_render.load("tiny", quick_config.data.data_dir)["train"])
    labelled = pipeline.select(meta, quick_config.data.labelled_subjects, None)
    assert set(preds["subject"].astype(str).tolist()) == set(quick_config.data.labelled_subjects)
    assert len(preds["pred"]) == len(labelled)
    assert np.isfinite(preds["pred"]).all()
    np.testing.assert_allclose(preds["gt"][:, skeleton.ROOT], 0.0, atol=1e-3)


def test_pseudo_labels_are_what_the_solver_returns(quick_run, quick_config):
    labels = pseudo_labels(quick_run)
    n = len(labels["pred"])
    assert labels["completed"].shape == labels["pred"].shape == (n, 16, 3)
    tau = quick_config.complete.tau
    solver = stages.solver_config(quick_config)
    np.testing.assert_array_equal(labels["observed"], labels["confidence"] > tau)
    # The stored pseudo-labels are the batched solve of the stored predictions.
    completed, interp, _, _ = stages.complete_videos(labels, tau, solver, 256)
    np.testing.assert_allclose(labels["completed"], completed, atol=1e-4)
    np.testing.assert_allclose(labels["interp"], interp, atol=1e-4)
    # And the batched solve over all videos equals the solver run on each video alone. The quick
    # network's predictions are nearly constant, so use noisy ground truth as predictions here,
    # with random confidences, where the solver converges.
    rng = np.random.default_rng(0)
    labels["pred"] = (labels["gt"] + rng.normal(scale=20.0, size=labels["gt"].shape)
                      ).astype(np.float32)
    labels["confidence"] = rng.uniform(size=labels["confidence"].shape).astype(np.float32)
    solver = solver.replace(max_iters=2000)  # converged, so batching cannot change the result
    completed, _, observed, stats = stages.complete_videos(labels, tau, solver, 256)
    assert stats["videos_solved"] > 0
    checked = 0
    for vid in np.unique(labels["sequence_id"])[:4]:
        rows = np.flatnonzero(labels["sequence_id"] == vid)
        rows = rows[np.argsort(labels["frame_index"][rows])]
        obs = labels["confidence"][rows] > tau
        if not obs.any():
            continue
        alone = completion.complete(labels["pred"][rows], obs, solver)
        assert bool(alone.converged)
        np.testing.assert_allclose(completed[rows], np.asarray(alone.X), atol=0.05)
        np.testing.assert_array_equal(observed[rows], obs)
        if solver.lambda_o == 0:  # Eq. 1 as printed: observed entries are kept exactly
            np.testing.assert_allclose(completed[rows][obs], labels["pred"][rows][obs], atol=1e-3)
        else:  # the soft data term (lambda_o > 0) lets them move
            moved = np.abs(completed[rows][obs] - labels["pred"][rows][obs]).max()
            assert moved > 1.0, moved
        checked += 1
    assert checked > 0


def test_bone_lengths_are_per_video(quick_run):
    with np.load(os.path.join(quick_run, "complete", "pseudo_labels.npz")) as f:
        bones, seq, completed = f["bone_lengths"], f["sequence_id"], f["completed"]
    assert bones.shape == (len(seq), skeleton.NUM_BONES)
    medians = []
    for vid in np.unique(seq):
        rows = seq == vid
        np.testing.assert_allclose(bones[rows], bones[rows][:1].repeat(rows.sum(), 0))
        expected = np.median(skeleton.bone_lengths(completed[rows].astype(np.float64)), axis=0)
        np.testing.assert_allclose(bones[rows][0], expected, rtol=1e-5)
        medians.append(bones[rows][0])
    assert len({tuple(np.round(m, 3)) for m in medians}) > 1  # videos get their own lengths


def test_rescaled_to_predictions_undoes_a_per_video_shrink():
    """Completed poses that are the predictions shrunk about the root by a factor of their
    video's (0.85, 0.9) come back as the predictions exactly; other videos' factors do not leak,
    and the pose shapes (directions from the root) are kept."""
    rng = np.random.default_rng(2)
    pred = rng.normal(0.0, 300.0, (9, 16, 3)) + [0.0, 0.0, 4000.0]
    sequence_id = np.array([3, 3, 3, 3, 7, 7, 7, 7, 7])
    shrink = np.where(sequence_id == 3, 0.85, 0.9)[:, None, None]
    root = pred[:, skeleton.ROOT:skeleton.ROOT + 1]
    completed = root + shrink * (pred - root)
    np.testing.assert_allclose(stages.rescaled_to_predictions(completed, pred, sequence_id),
                               pred, atol=1e-2)
    # A video whose completion kept the size is left alone.
    mixed = completed.copy()
    mixed[sequence_id == 7] = pred[sequence_id == 7]
    out = stages.rescaled_to_predictions(mixed, pred, sequence_id)
    np.testing.assert_allclose(out[sequence_id == 7], pred[sequence_id == 7], atol=1e-2)
    np.testing.assert_allclose(out[sequence_id == 3], pred[sequence_id == 3], atol=1e-2)


def test_bone_lengths_from_the_raw_predictions(quick_run, quick_config, tmp_path):
    """`complete.bone_lengths_from="pred"` keeps the completed labels and takes each video's bone
    lengths from its raw predictions (medians, as from the completed poses); an unknown source
    is a ValueError naming the field before anything is solved."""
    run = str(tmp_path / "run")
    shutil.copytree(quick_run, run, ignore=shutil.ignore_patterns(
        "complete", "finetune", "evaluate", "report", "config.json"))
    config = copy.deepcopy(quick_config)
    config.complete.bone_lengths_from = "pred"
    main.run(config, run, "complete")
    labels, paper = pseudo_labels(run), pseudo_labels(quick_run)
    np.testing.assert_array_equal(labels["completed"], paper["completed"])
    for vid in np.unique(labels["sequence_id"]):
        rows = np.flatnonzero(labels["sequence_id"] == vid)
        expected = [np.median([np.linalg.norm(labels["pred"][r, a].astype(np.float64)
                                              - labels["pred"][r, b]) for r in rows])
                    for a, b in skeleton.BONES]
        np.testing.assert_allclose(labels["bone_lengths"][rows],
                                   np.tile(expected, (len(rows), 1)), rtol=1e-5)
    config.complete.bone_lengths_from = "truth"
    with pytest.raises(ValueError, match="complete.bone_lengths_from 'truth'"):
        stages.complete(config, Workdir(str(tmp_path / "other"), config))


def test_diagnostics_match_numpy(quick_run, quick_config):
    from experiments import diagnose
    workdir = Workdir(quick_run, quick_config)
    det = diagnose.detector_errors(quick_config, workdir, frames=8)
    assert set(det) == {"own_training_set", "labelled", "validation"}
    for split in det.values():
        assert 0 <= split["pck_1px"] <= split["pck_2px"] <= 1 and split["error_px"] >= 0
    with np.load(os.path.join(quick_run, "predict", "predictions.npz")) as f:
        preds = {k: f[k] for k in f.files}
    # Error components against a per-joint loop: a known offset lands on the axes it was put on.
    rng = np.random.default_rng(0)
    gt = rng.normal(0, 300, (5, 16, 3))
    offset = np.array([30.0, -40.0, 120.0])
    parts = diagnose.error_components(gt + offset, gt)
    assert parts["image_plane"] == pytest.approx(50.0) and parts["depth"] == pytest.approx(120.0)
    assert parts["mpjpe"] == pytest.approx(130.0)
    assert [parts[f"rms_{a}"] for a in "xyz"] == pytest.approx([30.0, 40.0, 120.0])
    comp = diagnose.error_components(preds["pred"], preds["gt"])
    diffs = [(p - g) for p, g in zip(preds["pred"].astype(np.float64).reshape(-1, 3),
                                       preds["gt"].astype(np.float64).reshape(-1, 3))]
    assert comp["image_plane"] == pytest.approx(np.mean([np.hypot(d[0], d[1]) for d in diffs]))
    assert comp["depth"] == pytest.approx(np.mean([abs(d[2]) for d in diffs]))
    with pytest.raises(ValueError, match=r"\(N, J, 3\)"):
        diagnose.error_components(gt[..., :2], gt[..., :2])
    out = diagnose.completion_checks(quick_config, preds, [0.0, 1.0], every=1)
    # The moving average, recomputed per video with NumPy.
    smooth = preds["pred"].astype(np.float64).copy()
    for vid in np.unique(preds["sequence_id"]):
        rows = np.flatnonzero(preds["sequence_id"] == vid)
        rows = rows[np.argsort(preds["frame_index"][rows])]
        for i in range(1, len(rows) - 1):
            smooth[rows[i]] = preds["pred"][rows[i - 1:i + 2]].astype(np.float64).mean(0)
    err = np.linalg.norm(smooth - preds["gt"], axis=-1).mean()
    assert out["moving_average_mpjpe"] == pytest.approx(err, rel=1e-4)
    # tau 0: every joint with a positive score is confident; tau 1: none, nothing to complete.
    assert out["taus"]["0"]["share_confident"] == pytest.approx(np.mean(preds["confidence"] > 0))
    assert out["taus"]["1"]["share_confident"] == 0.0
    assert out["taus"]["1"]["completed_mpjpe"] == pytest.approx(out["predictions_mpjpe"],
                                                                rel=1e-5)



def _spearman_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho by hand: Pearson's correlation of the ranks, ties at their mean rank."""
    def ranks(x):
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(1, len(x) + 1)
        for value in np.unique(x):
            r[x == value] = r[x == value].mean()
        return r
    ra, rb = ranks(np.ravel(a)), ranks(np.ravel(b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / np.sqrt((ra * ra).sum() * (rb * rb).sum()))


def test_label_weights_and_bone_targets_against_loops():
    """`label_weights` against per-joint float64 loops on labels whose joint errors have known
    sizes, falling with the confidence (a rank correlation of exactly -1); `bone_targets` on
    labels that are scaled copies of the truth (ratios 0.9 and 1.1 exactly)."""
    from experiments import diagnose
    rng = np.random.default_rng(5)
    n, root = 12, skeleton.ROOT
    gt = rng.normal(0.0, 300.0, (n, 16, 3))
    conf = rng.uniform(0.01, 0.99, (n, 16))
    conf[:, root] = 1.0
    size = 60.0 * (1.0 - conf)  # mm; the root is exact, so root-relative errors keep their size
    direction = rng.normal(size=(n, 16, 3))
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    labels = {"gt": gt, "completed": gt + size[..., None] * direction, "confidence": conf}
    tau = 0.5
    out = diagnose.label_weights(labels, tau, taus=(0.0, 0.5, 1.0))
    above = [size[i, j] for i in range(n) for j in range(16) if conf[i, j] > tau]
    below = [size[i, j] for i in range(n) for j in range(16) if conf[i, j] <= tau]
    assert out["joints"] == n * 16
    assert out["error_above_tau"] == pytest.approx(np.mean(above))
    assert out["error_at_or_below_tau"] == pytest.approx(np.mean(below))
    assert out["share_weighted_down"] == pytest.approx(len(below) / (n * 16))
    assert out["rank_correlation"] == pytest.approx(-1.0)
    noisy = conf + rng.normal(0.0, 0.2, conf.shape)
    assert diagnose._rank_correlation(noisy, size) == pytest.approx(
        _spearman_reference(noisy, size))
    for t in (0.0, 0.5, 1.0):
        weights = [[1.0 if conf[i, j] > t else conf[i, j] for j in range(16)] for i in range(n)]
        num = sum(weights[i][j] * size[i, j] ** 2 for i in range(n) for j in range(16))
        den = sum(weights[i][j] for i in range(n) for j in range(16))
        plain = np.mean(size ** 2)
        assert out["taus"][str(t)]["weighted_mse_ratio"] == pytest.approx(num / den / plain)
    assert out["taus"]["0.0"]["weighted_mse_ratio"] == pytest.approx(1.0)  # nothing weighed down
    assert out["taus"]["1.0"]["weighted_mse_ratio"] < 1.0  # confidence-weighted: the bad go down
    with pytest.raises(ValueError, match="confidence must be"):
        diagnose.label_weights({**labels, "confidence": conf[:, :15]}, tau)

    sequence_id = np.repeat([0, 1, 2], 4)
    completed = diagnose.scaled_about_root(gt, 0.9)
    targets = stages.video_bone_lengths(completed, sequence_id)
    bones = diagnose.bone_targets({"gt": gt, "pred": diagnose.scaled_about_root(gt, 1.1),
                                   "completed": completed, "bone_lengths": targets})
    true = skeleton.bone_lengths(gt)
    assert bones["truth_mean_length"] == pytest.approx(true.mean())
    assert bones["completed"]["ratio_to_truth"] == pytest.approx(0.9)
    assert bones["pred"]["ratio_to_truth"] == pytest.approx(1.1)
    assert bones["completed"]["abs_error"] == pytest.approx(0.1 * true.mean())
    assert bones["video_targets"]["abs_error"] == pytest.approx(np.mean(
        [abs(targets[i, b] - true[i, b]) for i in range(n) for b in range(skeleton.NUM_BONES)]),
        rel=1e-5)


def test_pose_scale_closed_forms_and_section(quick_run, quick_config):
    """`pose_size` is the mean joint distance from the pelvis; scaling about the root scales it
    exactly and keeps the root; `best_scale` recovers the factor of predictions that are a
    scaled copy of the truth; the `pose_scale` section holds every evaluated network's size,
    MPJPE and best factor against float64 NumPy, and 0% change at factor 1."""
    from experiments import diagnose
    rng = np.random.default_rng(1)
    gt = rng.normal(0.0, 300.0, (40, 16, 3))
    rel = gt - gt[:, skeleton.ROOT:skeleton.ROOT + 1]
    assert diagnose.pose_size(gt) == pytest.approx(
        np.mean([[np.sqrt(sum(c * c for c in rel[n, j])) for j in range(16)] for n in range(40)]))
    shrunk = diagnose.scaled_about_root(gt, 0.9)
    np.testing.assert_allclose(shrunk[:, skeleton.ROOT], gt[:, skeleton.ROOT])
    assert diagnose.pose_size(shrunk) == pytest.approx(0.9 * diagnose.pose_size(gt))
    # Predictions 1/0.87 times the truth's size: scaling them by 0.87 gives it back exactly.
    pred = diagnose.scaled_about_root(gt, 1 / 0.87)
    factor, err = diagnose.best_scale(pred, gt)
    assert factor == pytest.approx(0.87) and err == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match=r"\(N, 16, 3\)"):
        diagnose.pose_size(gt[..., :2])
    workdir = Workdir(quick_run, quick_config)
    out = diagnose.pose_scale(workdir)
    assert set(out["networks"]) == {"baseline", *stages.SETTINGS}
    for name, row in out["networks"].items():
        d = np.load(os.path.join(quick_run, "evaluate", f"predictions_{name}.npz"))
        p64, g64 = d["pred"].astype(np.float64), d["gt"].astype(np.float64)
        size = np.linalg.norm(p64 - p64[:, skeleton.ROOT:skeleton.ROOT + 1], axis=-1).mean()
        assert row["size"] == pytest.approx(size, rel=1e-9)
        assert row["mpjpe"] == pytest.approx(np.linalg.norm(p64 - g64, axis=-1).mean(), rel=1e-5)
        grid = [np.linalg.norm(diagnose.scaled_about_root(p64, f) - g64, axis=-1).mean()
                for f in diagnose.FIT_FACTORS]
        assert row["mpjpe_at_best_factor"] == pytest.approx(min(grid), rel=1e-5)
        assert row["mpjpe_at_best_factor"] <= row["mpjpe"] + 1e-6
    assert out["baseline_scaled_mpjpe_change"]["1.0"] == pytest.approx(0.0, abs=1e-4)  # float32 in
    assert set(out["pseudo_label_sizes"]) == {"gt", "pred", "completed", "interp"}
    assert "## Pose size" in diagnose.markdown({"workdir": quick_run, "pose_scale": out})


def test_validation_bones_closed_forms_and_section(quick_run, quick_config):
    """`bone_consistency`: a skeleton that keeps its size within each video has no spread, and
    a copy of the truth scaled by 1.1 has ratio 1.1 and error 0.1 of the true bones; per-frame
    jitter gives the spread of a float64 loop over videos and bones. The section holds every
    evaluated network of the quick run, computed here again with plain loops."""
    from experiments import diagnose
    rng = np.random.default_rng(2)
    videos, frames = 3, 10
    gt = np.repeat(rng.normal(0.0, 300.0, (videos, 1, 16, 3)), frames, axis=1)
    gt = gt.reshape(-1, 16, 3)
    sequence_id = np.repeat(np.arange(videos), frames)
    true = skeleton.bone_lengths(gt)
    still = diagnose.bone_consistency(diagnose.scaled_about_root(gt, 1.1), gt, sequence_id)
    assert still["spread"] == pytest.approx(0.0, abs=1e-9)
    assert still["ratio_to_truth"] == pytest.approx(1.1)
    assert still["abs_error"] == pytest.approx(0.1 * true.mean())
    jittered = gt + rng.normal(0.0, 20.0, gt.shape)
    got = diagnose.bone_consistency(jittered, gt, sequence_id)

    def loop_spread(pred, ids):
        lengths = skeleton.bone_lengths(pred)
        out = []
        for v in np.unique(ids):
            rows = lengths[ids == v]
            out += [abs(rows[i, b] - np.median(rows[:, b])) for i in range(len(rows))
                    for b in range(skeleton.NUM_BONES)]
        return np.mean(out)

    assert got["spread"] == pytest.approx(loop_spread(jittered, sequence_id))
    assert got["spread"] > 1.0
    out = diagnose.validation_bones(Workdir(quick_run, quick_config))
    assert set(out) == {"baseline", *stages.SETTINGS}
    for name, row in out.items():
        d = np.load(os.path.join(quick_run, "evaluate", f"predictions_{name}.npz"))
        p64, g64 = d["pred"].astype(np.float64), d["gt"].astype(np.float64)
        assert row["spread"] == pytest.approx(loop_spread(p64, d["sequence_id"]), rel=1e-9)
        assert row["abs_error"] == pytest.approx(
            np.abs(skeleton.bone_lengths(p64) - skeleton.bone_lengths(g64)).mean(), rel=1e-9)
    assert "## Bone lengths of each network" in diagnose.markdown(
        {"workdir": quick_run, "validation_bones": out})


def test_own_error_share_closed_forms(quick_run, quick_config):
    """`own_error_share` is 1 for labels that shrink the prediction error, 0 for errors
    orthogonal to it, 1/2 for an orthogonal part as large as the shared one, and the projection
    formula against a float64 loop on arbitrary errors."""
    from experiments import diagnose
    rng = np.random.default_rng(0)
    gt = rng.normal(0.0, 300.0, (30, 16, 3))
    own = rng.normal(0.0, 80.0, (30, 16, 3))
    pred = gt + own
    other = rng.normal(0.0, 80.0, (30, 16, 3))
    flat_own, flat_other = own.reshape(30, -1), other.reshape(30, -1)
    ortho = flat_other - ((flat_other * flat_own).sum(1) / (flat_own ** 2).sum(1))[:, None] * flat_own
    ortho = ortho.reshape(own.shape)
    ortho *= (np.linalg.norm(own.reshape(30, -1), axis=1)
              / np.linalg.norm(ortho.reshape(30, -1), axis=1))[:, None, None]
    assert diagnose.own_error_share(gt + 0.3 * own, pred, gt) == pytest.approx(1.0)
    assert diagnose.own_error_share(gt + ortho, pred, gt) == pytest.approx(0.0, abs=1e-12)
    assert diagnose.own_error_share(gt + 0.5 * own + 0.5 * ortho, pred, gt) == pytest.approx(0.5)
    labels = gt + other
    shared = sum(float(np.dot(o, e)) ** 2 / float(np.dot(o, o))
                 for o, e in zip(flat_own, flat_other))
    assert diagnose.own_error_share(labels, pred, gt) == pytest.approx(
        shared / float((flat_other ** 2).sum()), rel=1e-10)
    with pytest.raises(ValueError, match="no error"):
        diagnose.own_error_share(gt, pred, gt)
    with pytest.raises(ValueError, match="must all be"):
        diagnose.own_error_share(gt[:, :15], pred, gt)
    # On a run: the predictions share all of their error with themselves.
    workdir = Workdir(quick_run, quick_config)
    shares = diagnose.pseudo_label_own_error_share(workdir, quick_run)
    assert shares["pred"] == pytest.approx(1.0)
    assert all(0.0 <= shares[k] <= 1.0 for k in ("completed", "interp", "shuffled_error"))


def test_error_persistence_closed_forms(quick_run, quick_config):
    """`error_persistence`: a per-video constant is all constant share with nothing left to
    correlate; a constant plus a per-frame sign flip splits the squared error in closed form and
    correlates -1 / +1 at odd / even lags; arbitrary errors in shuffled row order match a
    float64 loop over each video's frames in time order."""
    from experiments import diagnose
    rng = np.random.default_rng(0)
    lengths = (6, 10, 4)  # even: the sign flip has zero mean over each video
    seq = np.concatenate([np.full(n, v) for v, n in enumerate(lengths)])
    frame = np.concatenate([np.arange(n) for n in lengths])
    offsets = rng.normal(0.0, 50.0, (len(lengths), 16, 3))
    constant = offsets[seq]
    out = diagnose.error_persistence(constant, seq, frame)
    assert out["frames"] == 20 and out["videos"] == 3
    assert out["video_constant_share"] == pytest.approx(1.0)
    assert all(r is None for r in out["lag_correlation"].values())

    flip = rng.normal(0.0, 30.0, (16, 3)) * np.where(frame % 2, -1.0, 1.0)[:, None, None]
    out = diagnose.error_persistence(constant + flip, seq, frame, lags=(1, 2, 3, 8))
    expected = (constant ** 2).sum() / ((constant ** 2).sum() + (flip ** 2).sum())
    assert out["video_constant_share"] == pytest.approx(expected, rel=1e-12)
    assert out["lag_correlation"][1] == pytest.approx(-1.0)
    assert out["lag_correlation"][2] == pytest.approx(1.0)
    assert out["lag_correlation"][3] == pytest.approx(-1.0)
    assert out["lag_correlation"][8] == pytest.approx(1.0)  # only the 10-frame video is longer

    error = rng.normal(0.0, 40.0, (20, 16, 3))
    order = rng.permutation(20)
    out = diagnose.error_persistence(error[order], seq[order], frame[order], lags=(1, 5))
    const_sq, dot, first_sq, second_sq = 0.0, {1: 0.0, 5: 0.0}, {1: 0.0, 5: 0.0}, {1: 0.0, 5: 0.0}
    for v in range(len(lengths)):
        e = error[seq == v].reshape(lengths[v], -1)  # seq/frame are already in time order here
        m = e.mean(axis=0)
        const_sq += lengths[v] * float(m @ m)
        c = e - m
        for lag in (1, 5):
            for t in range(lengths[v] - lag):
                dot[lag] += float(c[t] @ c[t + lag])
                first_sq[lag] += float(c[t] @ c[t])
                second_sq[lag] += float(c[t + lag] @ c[t + lag])
    assert out["video_constant_share"] == pytest.approx(const_sq / (error ** 2).sum(), rel=1e-10)
    for lag in (1, 5):
        assert out["lag_correlation"][lag] == pytest.approx(
            dot[lag] / np.sqrt(first_sq[lag] * second_sq[lag]), rel=1e-10)

    with pytest.raises(ValueError, match="NaN"):
        diagnose.error_persistence(np.full((20, 16, 3), np.nan), seq, frame)
    with pytest.raises(ValueError, match=r"\(N, J, 3\)"):
        diagnose.error_persistence(error[..., :2], seq, frame)
    with pytest.raises(ValueError, match="one entry per frame"):
        diagnose.error_persistence(error, seq[:-1], frame)
    with pytest.raises(ValueError, match="zero everywhere"):
        diagnose.error_persistence(np.zeros((20, 16, 3)), seq, frame)
    # On a run: one result per label kind, over the predict stage's frames.
    out = diagnose.pseudo_label_persistence(Workdir(quick_run, quick_config))
    with np.load(os.path.join(quick_run, "predict", "predictions.npz")) as f:
        frames = len(f["pred"])
    for kind in ("pred", "completed", "motion"):
        assert out[kind]["frames"] == frames
        assert 0.0 <= out[kind]["video_constant_share"] <= 1.0
        assert all(r is None or -1.0 <= r <= 1.0 for r in out[kind]["lag_correlation"].values())


def test_diagnose_program_writes_json_and_markdown(quick_run, tmp_path):
    """`python -m experiments.diagnose` on a copy of a finished run writes diagnose.json and
    diagnose.md; every section of the JSON has its table, with the JSON's numbers; --sections
    recomputes only the named ones and keeps the rest; a directory that is not a run, or an
    unknown section, is a clear error."""
    import subprocess
    import sys
    run = tmp_path / "run"
    shutil.copytree(quick_run, run)
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.diagnose", f"--workdir={run}", "--taus=0.16",
         "--every=1", "--frames=8", "--view_frames=4", "--fit_frames=4"],
        capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(run / "diagnose.json") as f:
        result = json.load(f)
    text = (run / "diagnose.md").read_text()
    assert text in proc.stdout
    for heading in ("## 2D detector", "## The baseline's error on the unlabelled frames",
                    "## Completion on", "## Share of the labels' error", "## Error over time",
                    "## Test-time views on 4", "## Eq. 4's weights and the completed labels'",
                    "## Bone lengths against the truth's"):
        assert heading in text
    completion_row = result["completion"]["taus"]["0.16"]
    assert f"| 0.16 | {completion_row['share_confident']:.2f} | " \
           f"{completion_row['completed_mpjpe']:.1f} |" in text
    assert f"| {result['unlabelled_error_components']['mpjpe']:.1f} | " in text
    completed = result["error_persistence"]["completed"]
    assert (f"| completed | {completed['video_constant_share']:.2f} | "
            f"{completed['lag_correlation']['1']:.2f} |") in text
    assert f"| average of the views | {result['test_time_views']['view_average_mpjpe']:.1f} |" \
        in text
    weights = result["label_weights"]["taus"]["0.7"]
    assert f"| 0.7 | {weights['share_weighted_down']:.1%} | {weights['weighted_mse_ratio']:.3f} |" \
        in text
    bones = result["bone_targets"]["video_targets"]
    assert f"| video_targets | {bones['abs_error']:.1f} | {bones['ratio_to_truth']:.2f} |" in text

    assert "## Fit:" in text
    assert result["fit"]["frames"] == {"labelled": 4, "unlabelled": 4, "validation": 4}

    # --sections recomputes only the fit, with other flags, and keeps every other section.
    again = subprocess.run(
        [sys.executable, "-m", "experiments.diagnose", f"--workdir={run}", "--sections=fit",
         "--fit_frames=3"], capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert again.returncode == 0, again.stderr[-3000:]
    with open(run / "diagnose.json") as f:
        merged = json.load(f)
    assert merged["fit"]["frames"] == {"labelled": 3, "unlabelled": 3, "validation": 3}
    assert {k: v for k, v in merged.items() if k != "fit"} == \
        {k: v for k, v in result.items() if k != "fit"}
    oracle = merged["fit"]["networks"]["oracle"]
    assert f"| oracle | {oracle['labelled']['mpjpe']:.1f} | " in (run / "diagnose.md").read_text()

    for args, message in (([f"--workdir={tmp_path / 'nothing'}"], "is not a work directory"),
                          ([f"--workdir={run}", "--sections=fit,detectors"],
                           "--sections: unknown detectors")):
        bad = subprocess.run([sys.executable, "-m", "experiments.diagnose", *args],
                             capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
        assert bad.returncode != 0 and message in bad.stderr, bad.stderr[-2000:]


def test_test_time_views_match_the_predict_stage(quick_run, quick_config):
    """The identity view is the predict stage's prediction (another code path: its MPJPE on the
    same frames must agree); the average over views can only lower the mean error (the norm is
    convex); the flipped view really differs."""
    from experiments import diagnose
    workdir = Workdir(quick_run, quick_config)
    out = diagnose.test_time_views(quick_config, workdir, frames=6, seed=1)
    assert out["frames"] == 6 and set(out["views"]) == {
        "identity", "flip", "rotate-20", "rotate-10", "rotate+10", "rotate+20", "scale0.85",
        "scale1.15"}
    with np.load(os.path.join(quick_run, "predict", "predictions.npz")) as f:
        preds = {k: f[k] for k in f.files}
    rows = [int(np.flatnonzero(preds["index"] == i)[0]) for i in out["index"]]
    expected = np.linalg.norm(preds["pred"][rows].astype(np.float64)
                              - preds["gt"][rows].astype(np.float64), axis=-1).mean()
    assert out["views"]["identity"] == pytest.approx(expected, rel=1e-3)
    assert out["view_average_mpjpe"] <= np.mean(list(out["views"].values())) + 1e-6
    assert out["identity_vs_flip_mm"] > 0

def test_fit_of_every_network_against_the_stage_outputs(quick_run, quick_config, tmp_path):
    """`run_fit` covers the baseline and every fine-tuned network. The baseline's unlabelled and
    validation errors equal the predict and evaluate stages' on the same frames (another code
    path: whole videos); the labelled frames are the labelled subjects' training frames; the
    distances to the labels hold their closed forms: `original`'s labels are the baseline's own
    predictions (distance 0 from it), the oracle's are the truth (error 0, distance = the
    network's error). A record without a pseudo-label is a clear error."""
    from experiments import datasets, diagnose
    workdir = Workdir(quick_run, quick_config)
    out = diagnose.run_fit(quick_config, workdir, frames=5, seed=2)
    assert list(out["networks"]) == ["baseline", *stages.SETTINGS]  # quick runs every setting
    assert out["frames"] == {"labelled": 5, "unlabelled": 5, "validation": 5}

    def reference(npz_path, rows_of):
        with np.load(npz_path) as f:
            table = {k: f[k] for k in f.files}
        rows = rows_of(table)
        return np.linalg.norm(table["pred"][rows].astype(np.float64)
                              - table["gt"][rows].astype(np.float64), axis=-1).mean()

    baseline = out["networks"]["baseline"]
    predicted = reference(os.path.join(quick_run, "predict", "predictions.npz"),
                          lambda t: [int(np.flatnonzero(t["index"] == i)[0])
                                     for i in out["index"]["unlabelled"]])
    assert baseline["unlabelled"]["mpjpe"] == pytest.approx(predicted, rel=1e-3)
    # evaluate keeps no record numbers: its rows are found by their true pose.
    source = datasets.selection(quick_config, "validation").source
    truth = [pipeline.decode(source[i], i)["pose3d"] for i in out["index"]["validation"]]
    truth = [t - t[skeleton.ROOT] for t in truth]
    evaluated = reference(
        os.path.join(quick_run, "evaluate", "predictions_baseline.npz"),
        lambda t: [int(np.argmin(np.abs(t["gt"] - g).sum(axis=(1, 2)))) for g in truth])
    assert baseline["validation"]["mpjpe"] == pytest.approx(evaluated, rel=1e-3)
    labelled_source = common.sources(quick_config)["train"]
    assert {str(pipeline.decode(labelled_source[i], i)["subject"])
            for i in out["index"]["labelled"]} <= set(quick_config.data.labelled_subjects)

    assert "to_labels" not in baseline and "to_labels" not in out["networks"]["labelled"]
    assert out["networks"]["original"]["baseline_to_labels"] == pytest.approx(0.0, abs=1e-3)
    oracle = out["networks"]["oracle"]
    assert oracle["labels_error"] == pytest.approx(0.0, abs=1e-4)
    assert oracle["to_labels"] == pytest.approx(oracle["unlabelled"]["mpjpe"], rel=1e-6)
    assert oracle["baseline_to_labels"] == pytest.approx(baseline["unlabelled"]["mpjpe"],
                                                         rel=1e-6)

    text = diagnose.markdown({"workdir": quick_run, "fit": out})
    assert f"| oracle | {oracle['labelled']['mpjpe']:.1f} | " in text
    assert f"| original | {out['networks']['original']['labels_error']:.1f} | " in text
    with pytest.raises(ValueError, match="record 7 has no pseudo-label"):
        diagnose._rows_of(np.array([3, 1, 5]), np.array([5, 7]))

    # A baseline-only run (no complete stage): the errors, on the same frames, and no labels.
    for item in ("config.json", "pretrain2d", "train3d"):
        copy = shutil.copytree if os.path.isdir(os.path.join(quick_run, item)) else shutil.copy
        copy(os.path.join(quick_run, item), str(tmp_path / item))
    alone = diagnose.run_fit(quick_config, Workdir(str(tmp_path), quick_config), frames=5, seed=2)
    assert list(alone["networks"]) == ["baseline"]
    assert alone["networks"]["baseline"] == baseline


def test_predict_with_averaged_views(quick_run, tmp_path):
    """`predict.average_views` stores, per frame, the mean over the test-time views of the
    root-relative predictions (each mapped back) and of the confidences, at the single view's
    root; computed here from records read one by one instead of whole videos."""
    from hourglass_jax import export, predictor
    workdir = str(tmp_path / "views")
    shutil.copytree(quick_run, workdir, ignore=shutil.ignore_patterns(
        "predict", "complete", "finetune", "evaluate", "report", "config.json"))
    config = configs.get_protocol_config("quick")
    config.data.data_dir = mocap_render.cached_data_dir("tiny")
    config.predict.average_views = True
    main.run(config, workdir, "predict")
    with np.load(os.path.join(workdir, "predict", "predictions.npz")) as f:
        averaged = {k: f[k] for k in f.files}
    with np.load(os.path.join(quick_run, "predict", "predictions.npz")) as f:
        single = {k: f[k] for k in f.files}
    np.testing.assert_array_equal(averaged["index"], single["index"])
    np.testing.assert_allclose(averaged["pred_root"], single["pred_root"], atol=1e-3)
    _, cfg, variables = export.load_model(os.path.join(quick_run, "train3d", "model"),
                                          bn_axis_name=None)
    predict = predictor.make_predictor(cfg, config.model.softargmax_k)
    source = mocap_render.load("tiny", config.data.data_dir)["train"]
    rows = [0, 7, len(single["index"]) - 1]
    samples = [pipeline.finish(pipeline.decode(source[int(single["index"][r])],
                                               int(single["index"][r]))) for r in rows]
    views = predictor.predict_views(predict, variables, samples, 4)
    assert len(views) == len(predictor.TEST_TIME_VIEWS) == 8
    poses = np.stack([p.astype(np.float64) for p, _ in views.values()])
    relative = poses - poses[:, :, skeleton.ROOT:skeleton.ROOT + 1]
    np.testing.assert_allclose(averaged["pred"][rows], relative.mean(0), atol=0.05)
    np.testing.assert_allclose(averaged["confidence"][rows],
                               np.mean([c for _, c in views.values()], axis=0), atol=1e-5)
    np.testing.assert_allclose(views["identity"][0], single["pred"][rows] + single["pred_root"][rows][:, None],
                               atol=0.05)
    assert not np.allclose(averaged["pred"][rows], single["pred"][rows], atol=1.0)


def test_teacher_baselines_predict_the_pseudo_labels(quick_run, tmp_path):
    """`predict.teacher_workdirs` stores the mean of those runs' baseline predictions (poses,
    roots, confidences), each as that run's own predict stage made it; a teacher without a
    finished baseline, or trained on another labelled split, is a clear error."""
    def quick(**predict_fields):
        config = configs.get_protocol_config("quick")
        config.data.data_dir = mocap_render.cached_data_dir("tiny")
        for key, value in predict_fields.items():
            config.predict[key] = value
        return config

    other = str(tmp_path / "other")  # another baseline: seed 1, its own detector
    seed1 = quick()
    seed1.seed = 1
    main.run(seed1, other, "pretrain2d,train3d,predict")

    def predictions(path):
        return stages._load_npz(os.path.join(path, "predict", "predictions.npz"))

    own, theirs = predictions(quick_run), predictions(other)
    assert not np.allclose(own["pred"], theirs["pred"], atol=1.0)
    for name, teachers, expected in (
            ("pair", (quick_run, other), lambda k: (own[k].astype(np.float64) + theirs[k]) / 2),
            ("single", (other,), lambda k: theirs[k])):
        student = str(tmp_path / name)
        shutil.copytree(quick_run, student, ignore=shutil.ignore_patterns(
            "predict", "complete", "finetune", "evaluate", "report", "config.json"))
        main.run(quick(teacher_workdirs=teachers), student, "predict")
        got = predictions(student)
        np.testing.assert_array_equal(got["index"], own["index"])
        np.testing.assert_array_equal(got["gt"], own["gt"])
        for key in ("pred", "pred_root", "confidence"):
            np.testing.assert_allclose(got[key], expected(key), rtol=1e-5, atol=1e-3)

    moved = str(tmp_path / "moved")  # the other baseline, relabelled as trained on S5
    shutil.copytree(other, moved)
    with open(os.path.join(moved, "config.json")) as f:
        stored = json.load(f)
    stored["data"]["labelled_subjects"] = ["S5"]
    with open(os.path.join(moved, "config.json"), "w") as f:
        json.dump(stored, f)
    for name, teacher, error, message in (
            ("bad_split", moved, ValueError, "data.labelled_subjects"),
            ("bad_path", str(tmp_path / "nowhere"), FileNotFoundError, "no finished train3d")):
        bad = str(tmp_path / name)
        shutil.copytree(quick_run, bad, ignore=shutil.ignore_patterns(
            "predict", "complete", "finetune", "evaluate", "report", "config.json"))
        with pytest.raises(error, match=message):
            main.run(quick(teacher_workdirs=(teacher,)), bad, "predict")


def test_second_run_skips_every_stage(quick_run, quick_config, capsys):
    main.run(quick_config, quick_run, "all")
    out = capsys.readouterr().out
    for stage in STAGES:
        assert f"[{stage}] done already, skipped" in out


def test_settings_that_share_a_loss_share_one_compiled_step(quick_run, tmp_path, monkeypatch):
    """`finetune` compiles one step per distinct loss (gamma), and a setting trained with the
    step compiled for another gives exactly the network it gives trained alone."""
    from hourglass_jax import export
    built = []
    real_make_train_step = stages.make_train_step

    def counting_make_train_step(*args, **kwargs):
        built.append(args[1])  # the loss function
        return real_make_train_step(*args, **kwargs)

    monkeypatch.setattr(stages, "make_train_step", counting_make_train_step)
    config = configs.get_protocol_config("quick")
    config.data.data_dir = mocap_render.cached_data_dir("tiny")
    models = {}
    for name, settings in (("shared", ("original", "optimised", "bone")),
                           ("alone", ("optimised",))):
        workdir = str(tmp_path / name)
        shutil.copytree(quick_run, workdir)
        shutil.rmtree(os.path.join(workdir, "finetune"))
        config.finetune.settings = settings
        built.clear()
        main.run(config, workdir, "finetune")
        assert len(built) == (2 if name == "shared" else 1), name  # gamma = 0 and gamma > 0
        _, _, models[name] = export.load_model(
            os.path.join(workdir, "finetune", "optimised", "model"))
    shared, alone = (jax.tree_util.tree_leaves(models[k]) for k in ("shared", "alone"))
    assert len(shared) == len(alone)
    for a, b in zip(shared, alone):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_rerun_with_more_loss_settings_completes_them(quick_run, tmp_path, capsys):
    """`finetune.settings` may change between runs of one work directory: a finished finetune,
    evaluate or report that lacks a setting the config now asks for runs again (finetune only
    trains what is missing), and a config asking fewer settings skips them all."""
    workdir = str(tmp_path / "copy")
    shutil.copytree(quick_run, workdir)
    shutil.rmtree(os.path.join(workdir, "finetune", "oracle"))
    for stage in stages.SETTINGS_STAGES:
        os.remove(os.path.join(workdir, stage, "DONE.json"))
    config = configs.get_protocol_config("quick")
    config.data.data_dir = mocap_render.cached_data_dir("tiny")
    config.finetune.settings = ("bone",)
    main.run(config, workdir, "finetune,evaluate,report")
    results = json.load(open(os.path.join(workdir, "evaluate", "results.json")))["settings"]
    assert set(results) == {"baseline", "bone"}
    capsys.readouterr()

    config.finetune.settings = ("bone", "oracle")
    main.run(config, workdir, "finetune,evaluate,report")
    out = capsys.readouterr().out
    for stage in stages.SETTINGS_STAGES:
        assert f"[{stage}] done without the loss setting(s) oracle; running again" in out
    assert "finetune/bone: done already, skipped" in out
    assert "finetune/oracle: " in out and "finetune/oracle: done already" not in out
    assert os.path.exists(os.path.join(workdir, "finetune", "oracle", "model",
                                       "model_config.json"))
    results = json.load(open(os.path.join(workdir, "evaluate", "results.json")))["settings"]
    assert set(results) == {"baseline", "bone", "oracle"}
    assert "unlabelled ground truth (oracle control)" in open(
        os.path.join(workdir, "report", "report.md")).read()

    config.finetune.settings = ("oracle",)
    main.run(config, workdir, "finetune,evaluate,report")
    out = capsys.readouterr().out
    for stage in stages.SETTINGS_STAGES:
        assert f"[{stage}] done already, skipped" in out
    # A DONE marker of an older version (no recorded settings): evaluate's networks count.
    assert stages.missing_settings(config, "evaluate", {"mpjpe": {"baseline": 1.0,
                                                                  "oracle": 2.0}}) == []
    assert stages.missing_settings(config, "report", {}) == ["oracle"]
    assert stages.missing_settings(config, "train3d", {}) == []


def test_finetune_with_the_supervised_loss(quick_run, tmp_path):
    """`finetune.loss="supervised"` trains a setting with the supervised stage's heatmap loss
    (its metrics are train3d's, not Eq. 2's); an unknown loss is a clear error."""
    workdir = str(tmp_path / "copy")
    shutil.copytree(quick_run, workdir, ignore=shutil.ignore_patterns("finetune", "evaluate",
                                                                      "report", "config.json"))
    config = configs.get_protocol_config("quick")
    config.data.data_dir = mocap_render.cached_data_dir("tiny")
    config.finetune.settings = ("oracle",)
    config.finetune.loss = "supervised"
    main.run(config, workdir, "finetune")
    with open(os.path.join(workdir, "finetune", "oracle", "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    train = [r for r in records if r.get("kind") == "train"]
    assert train and all({"heatmap", "coordinates"} <= set(r) for r in train)
    assert not any("fidelity" in r for r in train)
    config.finetune.loss = "mse"
    with pytest.raises(ValueError, match="unknown finetune.loss 'mse'"):
        stages.finetune(config, Workdir(str(tmp_path / "other"), config))
    # A work directory written before `finetune.loss` existed holds Eq. 2's fine-tuning: it
    # accepts the default and refuses the probe.
    stored = json.load(open(os.path.join(quick_run, "config.json")))
    del stored["finetune"]["loss"]
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_text(json.dumps(stored))
    default = configs.get_protocol_config("quick")
    default.data.data_dir = stored["data"]["data_dir"]
    Workdir(str(old), default)
    default.finetune.loss = "supervised"
    with pytest.raises(ValueError, match="another config.*finetune.loss"):
        Workdir(str(old), default)


def test_killed_finetune_resumes_from_its_checkpoint(quick_run, quick_config, capsys):
    # A run killed inside fine-tuning leaves checkpoints but no export and no DONE marker.
    setting_dir = os.path.join(quick_run, "finetune", "bone")
    shutil.rmtree(os.path.join(setting_dir, "model"))
    os.remove(os.path.join(quick_run, "finetune", "DONE.json"))
    ckpts = sorted(int(d) for d in os.listdir(os.path.join(setting_dir, "checkpoints"))
                   if d.isdigit())
    assert ckpts and ckpts[-1] == quick_config.finetune.steps
    main.run(quick_config, quick_run, "finetune")
    out = capsys.readouterr().out
    assert f"resuming from checkpoint step {ckpts[-1]}" in out
    assert "finetune/original: done already, skipped" in out
    assert os.path.exists(os.path.join(setting_dir, "model", "model_config.json"))


def test_sigterm_in_a_training_stage_stops_the_run_unfinished_and_resumes(
        quick_run, quick_config, tmp_path, monkeypatch, capsys):
    """SIGTERM (preemption) inside train3d: a checkpoint of the step it stopped at, no DONE
    marker and no later stage run on the partly trained network; the same call then resumes."""
    config = copy.deepcopy(quick_config)
    config.pretrain2d.from_workdir = quick_run  # the detector is copied, not trained
    workdir = str(tmp_path / "preempted")
    real_device_batch = common.device_batch
    calls = []

    def device_batch_then_sigterm(batch):
        calls.append(1)
        if len(calls) == 1:  # during the first step, as a scheduler's notice would arrive
            os.kill(os.getpid(), signal.SIGTERM)
        return real_device_batch(batch)

    monkeypatch.setattr(common, "device_batch", device_batch_then_sigterm)
    with pytest.raises(stages.Preempted, match=r"SIGTERM at step 1 of 3 .*train3d.*again to "
                                               r"resume") as stop:
        main.run(config, workdir, "pretrain2d,train3d,predict")
    assert (stop.value.step, stop.value.total_steps) == (1, config.train3d.steps)
    assert os.path.exists(os.path.join(workdir, "pretrain2d", "DONE.json"))
    assert not os.path.exists(os.path.join(workdir, "train3d", "DONE.json"))
    assert not os.path.exists(os.path.join(workdir, "train3d", "model"))
    assert not os.path.exists(os.path.join(workdir, "predict"))
    ckpts = [int(d) for d in os.listdir(os.path.join(workdir, "train3d", "checkpoints"))
             if d.isdigit()]
    assert max(ckpts) == 1
    capsys.readouterr()
    main.run(config, workdir, "pretrain2d,train3d")
    out = capsys.readouterr().out
    assert "[pretrain2d] done already, skipped" in out
    assert "resuming from checkpoint step 1" in out
    done = json.load(open(os.path.join(workdir, "train3d", "DONE.json")))
    assert done["steps"] == config.train3d.steps
    assert os.path.exists(os.path.join(workdir, "train3d", "model", "model_config.json"))


def fields_changed_from(parent_protocol, child_config):
    """{dotted field: child's value} where a protocol's config differs from the one it is built
    on; both must have the same fields (a new field would be another experiment's)."""
    parent = flatten(configs.get_protocol_config(parent_protocol).to_dict())
    child = flatten(child_config.to_dict())
    assert set(child) == set(parent)
    return {k: child[k] for k in differing_fields(parent, child)}


def test_long_schedule_config_changes_only_the_schedule():
    """subject_s1_long is the S1 protocol (same split, network and losses) with the schedule of
    docs/experiments.md's frozen-BatchNorm runs; any other difference would make it another
    experiment."""
    long_config = configs.get_protocol_config("subject_s1_long")
    changed = fields_changed_from("subject_s1", long_config)
    assert changed == {"protocol": "subject_s1_long", "train3d.steps": 9600,
                       "finetune.freeze_batchnorm": True, "finetune.augment_unlabelled": False,
                       "finetune.labelled_fraction": 0.5, "finetune.steps": 2400,
                       "finetune.learning_rate": 2.5e-4, "finetune.lr_schedule": "cosine"}
    stages.check_supported(long_config)


def test_styled_config_changes_only_the_data_and_the_supervised_schedule():
    """subject_s1_styled is subject_s1_long on `small_styled` with 19200 train3d steps: the
    README's styled runs, made with these two overrides of subject_s1_long, are this protocol."""
    styled_config = configs.get_protocol_config("subject_s1_styled")
    changed = fields_changed_from("subject_s1_long", styled_config)
    assert changed == {"protocol": "subject_s1_styled", "data.builder_config": "small_styled",
                       "train3d.steps": 19200}
    assert "small_styled" in [c.name for c in mocap_render.MocapRender.BUILDER_CONFIGS]
    stages.check_supported(styled_config)


@pytest.mark.parametrize("protocol,builder_config,strength", [
    ("subject_s1_styled_wide", "small_styled_wide", 2.0),
    ("subject_s1_styled_xwide", "small_styled_xwide", 3.0)])
def test_stronger_style_configs_change_only_the_data(protocol, builder_config, strength):
    """subject_s1_styled_wide / _xwide are subject_s1_styled on builder configs whose styles
    are drawn two / three times as far: docs/experiments.md's runs with that builder-config
    override."""
    config = configs.get_protocol_config(protocol)
    changed = fields_changed_from("subject_s1_styled", config)
    assert changed == {"protocol": protocol, "data.builder_config": builder_config}
    builder_configs = {c.name: c for c in mocap_render.MocapRender.BUILDER_CONFIGS}
    assert builder_configs[builder_config].motion_style == strength
    stages.check_supported(config)


@pytest.mark.parametrize("mixed", ["subject_s1_styled_wide", "subject_s1_styled_xwide"])
def test_unmixed_configs_change_only_the_labelled_share(mixed):
    """<protocol>_unmixed is <protocol> with no labelled rows in the fine-tuning batches (the
    paper's fine-tuning): docs/experiments.md's runs with that one override."""
    unmixed_config = configs.get_protocol_config(mixed + "_unmixed")
    changed = fields_changed_from(mixed, unmixed_config)
    assert changed == {"protocol": mixed + "_unmixed", "finetune.labelled_fraction": 0.0}
    assert configs.get_protocol_config(mixed).finetune.labelled_fraction == 0.5
    stages.check_supported(unmixed_config)


def test_bad_inputs_fail_clearly(quick_run, quick_config, tmp_path):
    with pytest.raises(ValueError, match="unknown protocol 'nope'.*subject_s1"):
        configs.get_protocol_config("nope")
    other = configs.get_protocol_config("quick")
    other.finetune.gamma = 123.0
    with pytest.raises(ValueError, match="another config.*finetune.gamma"):
        Workdir(quick_run, other)
    with pytest.raises(FileNotFoundError, match="stage 'complete' has not completed"):
        stages.finetune(quick_config, Workdir(str(tmp_path / "fresh"), quick_config))
    with pytest.raises(ValueError, match="unknown stage"):
        parse_stages("train3d,teleport")
    bad = configs.get_protocol_config("quick")
    bad.data.data_dir = quick_config.data.data_dir
    bad.finetune.settings = ("bone", "magic")
    with pytest.raises(ValueError, match="unknown finetune setting"):
        stages.finetune(bad, Workdir(quick_run, bad))


def _tree_files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, files in os.walk(root) for f in files)


def test_detector_is_copied_from_a_run_of_the_same_detector_config(quick_run, quick_config,
                                                                   tmp_path):
    """`pretrain2d.from_workdir`: another protocol (other labelled subjects) takes the finished
    detector of a run byte for byte, reads no 2D set, and refuses a source whose detector was
    trained with another config or that has no finished pretrain2d stage."""
    source_model = os.path.join(quick_run, "pretrain2d", stages.MODEL_DIR)
    other = configs.get_protocol_config("quick")
    other.data.data_dir = quick_config.data.data_dir
    other.data.labelled_subjects = ("S1", "S5")  # a 3D field: the detector does not read it
    other.data.unlabelled_subjects = ("S6", "S7", "S8")
    other.pretrain2d.from_workdir = quick_run
    assert datasets.required_datasets(other, ["pretrain2d"]) == []  # no 2D set is read
    target = str(tmp_path / "s15")
    main.run(other, target, "pretrain2d")
    copied = os.path.join(target, "pretrain2d", stages.MODEL_DIR)
    assert _tree_files(copied) == _tree_files(source_model)
    for name in _tree_files(source_model):
        with open(os.path.join(copied, name), "rb") as a, \
                open(os.path.join(source_model, name), "rb") as b:
            assert a.read() == b.read(), name
    assert not [f for f in os.listdir(target) if f.endswith(".tmp")]  # config.json written whole
    info = json.load(open(os.path.join(target, "pretrain2d", "DONE.json")))
    assert info["copied_from"] == os.path.abspath(quick_run)

    mismatched = configs.get_protocol_config("quick")
    mismatched.data.data_dir = quick_config.data.data_dir
    mismatched.pretrain2d.steps = quick_config.pretrain2d.steps + 1
    mismatched.pretrain2d.from_workdir = quick_run
    with pytest.raises(ValueError, match=r"another config.*pretrain2d\.steps: 3 \(there\) vs 4"):
        main.run(mismatched, str(tmp_path / "mismatched"), "pretrain2d")
    mismatched.pretrain2d.steps = quick_config.pretrain2d.steps
    # Another width is another network: `model.channels` overrides the preset's, and a detector
    # of the preset's width does not fit it.
    from hourglass_jax.model import model_config
    assert common.network_config(mismatched).channels == model_config("test").channels
    mismatched.model.channels = 24
    wide = common.network_config(mismatched)
    assert wide.channels == 24 and wide.depth_bins == model_config("test").depth_bins
    with pytest.raises(ValueError, match=r"another config.*model\.channels: 0 \(there\) vs 24"):
        main.run(mismatched, str(tmp_path / "wider"), "pretrain2d")
    mismatched.model.channels = 0
    mismatched.pretrain2d.from_workdir = str(tmp_path / "nothing_here")
    with pytest.raises(FileNotFoundError, match="no finished pretrain2d stage"):
        main.run(mismatched, str(tmp_path / "unfinished"), "pretrain2d")


def test_paper_scale_protocols_stop_with_a_clear_message(tmp_path):
    config = configs.get_protocol_config("h36m_subject_s1")
    config.data.data_dir = str(tmp_path / "tfds")
    assert config.finetune.steps == 0 and config.finetune.epochs == 2.0  # paper: 2 epochs
    with pytest.raises(ValueError, match="mpii/full is not prepared.*manual download"):
        main.run(config, str(tmp_path / "w"), "pretrain2d")
    # The cross-dataset protocol reads its unlabelled videos from MPI-INF-3DHP: predict names it.
    cross = configs.get_protocol_config("mpi3dhp_cross_h36m")
    cross.data.data_dir = str(tmp_path / "tfds")
    with pytest.raises(ValueError, match="mpi_inf_3dhp/full is not prepared"):
        main.run(cross, str(tmp_path / "w2"), "predict")


def test_action_wise_protocols_partition_the_actions():
    from hourglass_jax.data.mocap import CLIP_NAMES
    for name, n_unlabelled in (("action_half", 7), ("action_hard", 4)):
        c = configs.get_protocol_config(name)
        labelled, unlabelled = set(c.data.labelled_actions), set(c.data.unlabelled_actions)
        assert labelled | unlabelled == set(CLIP_NAMES) and not labelled & unlabelled
        assert len(unlabelled) == n_unlabelled
        assert set(c.data.labelled_subjects) == set(c.data.unlabelled_subjects) == {
            "S1", "S5", "S6", "S7", "S8"}


def test_stage_optimizer_schedules():
    import jax.numpy as jnp
    import ml_collections
    stage = ml_collections.ConfigDict({"learning_rate": 1e-3, "lr_schedule": "cosine"})
    params = {"w": jnp.ones(3)}
    grads = {"w": jnp.ones(3)}

    def step_size(tx, steps_done):
        # RMSprop's first update on a unit gradient is lr / sqrt(0.01) (v = 0.01 g^2): read the
        # learning rate off the update after `steps_done` zero-gradient steps.
        state = tx.init(params)
        for _ in range(steps_done):
            _, state = tx.update({"w": jnp.zeros(3)}, state, params)
        update, _ = tx.update(grads, state, params)
        return -float(update["w"][0])

    cosine = stages._optimizer(stage, steps=100)
    first, last = step_size(cosine, 0), step_size(cosine, 100)
    np.testing.assert_allclose(first, 1e-3 / np.sqrt(0.01), rtol=1e-4)
    # Zero gradients leave v at 0, so the ratio of the two updates is the ratio of the rates.
    np.testing.assert_allclose(last / first, 0.01, rtol=1e-3)  # cosine ends at 1% of the peak
    constant = stages._optimizer(ml_collections.ConfigDict(
        {"learning_rate": 1e-3, "lr_schedule": "constant"}), steps=100)
    np.testing.assert_allclose(step_size(constant, 100), first, rtol=1e-4)
    # `max_normalised_step` bounds that first step (ratio 10) at lr * bound, on either schedule.
    for schedule in ("constant", "cosine"):
        clipped = stages._optimizer(ml_collections.ConfigDict(
            {"learning_rate": 1e-3, "lr_schedule": schedule, "max_normalised_step": 2.0}),
            steps=100)
        np.testing.assert_allclose(step_size(clipped, 0), 2e-3, rtol=1e-4)
    stage.lr_schedule = "linear"
    with pytest.raises(ValueError, match="lr_schedule"):
        stages._optimizer(stage, steps=100)


def test_video_rows_are_each_videos_rows_in_frame_order():
    # Against the plain scan the stages used to do per video: rows of that id, sorted by frame.
    rng = np.random.default_rng(3)
    sequence_id = rng.integers(0, 7, size=200)
    frame_index = rng.permutation(200)
    got = common.video_rows(sequence_id, frame_index)
    want = []
    for vid in np.unique(sequence_id):
        rows = np.flatnonzero(sequence_id == vid)
        want.append(rows[np.argsort(frame_index[rows])])
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert common.video_rows(np.zeros(0, int), np.zeros(0, int)) == []


def test_fine_tuning_variant_copies_a_runs_first_four_stages(quick_run, quick_config, tmp_path):
    """`finetune.from_workdir` with `finetune.seed`: a second fine-tuning of one baseline in a
    directory of its own. The stages before fine-tuning are copied (added to the asked stages),
    fine-tuning draws its batches from its own seed, and a source made with another config, an
    unfinished one or the directory itself is refused."""
    variant = copy.deepcopy(quick_config)
    variant.protocol = "quick_second_fine_tuning"  # the protocol's name may differ
    variant.finetune.from_workdir = quick_run
    variant.finetune.seed = 1
    variant.finetune.settings = ("optimised",)
    variant.finetune.labelled_fraction = 0.25  # a fine-tuning field: may differ too
    # The copied stages read no data: only fine-tuning's and evaluation's sets must be ready.
    assert datasets.required_datasets(variant, ["pretrain2d", "train3d", "predict"]) == []
    target = str(tmp_path / "second")
    main.run(variant, target, "finetune,evaluate")
    for stage in stages.UPSTREAM_STAGES:
        info = json.load(open(os.path.join(target, stage, "DONE.json")))
        assert info["copied_from"] == os.path.abspath(quick_run), stage
        assert not os.path.exists(os.path.join(target, stage, "checkpoints")), stage
    for path in ("pretrain2d/model", "train3d/model", "predict/predictions.npz",
                 "complete/pseudo_labels.npz"):
        source = os.path.join(quick_run, path)
        files = ([os.path.join(path, f) for f in _tree_files(source)]
                 if os.path.isdir(source) else [path])
        for name in files:
            with open(os.path.join(quick_run, name), "rb") as a, \
                    open(os.path.join(target, name), "rb") as b:
                assert a.read() == b.read(), name
    assert not os.path.exists(os.path.join(target, "report"))  # not asked for
    # One baseline: its validation errors are the source run's to the last digit.
    results = [json.load(open(os.path.join(run, "evaluate", "results.json")))["settings"]
               for run in (quick_run, target)]
    assert results[0]["baseline"]["overall"] == results[1]["baseline"]["overall"]
    assert set(results[1]) == {"baseline", "optimised"}
    # The fine-tuning seed orders the batches: as a run of seed 1 would, not as the source's.
    labels = pseudo_labels(quick_run)
    seed_one = copy.deepcopy(quick_config)
    seed_one.seed = 1
    first_batch = lambda config: stages.finetune_pipeline(  # noqa: E731
        config, "optimised", labels).batch_at(0)["index"]
    variant.finetune.labelled_fraction = 0.0
    assert stages.finetune_seed(variant) == 1 and stages.finetune_seed(quick_config) == 0
    np.testing.assert_array_equal(first_batch(variant), first_batch(seed_one))
    assert not np.array_equal(first_batch(variant), first_batch(quick_config))
    variant.finetune.labelled_fraction = 0.25

    mismatched = copy.deepcopy(variant)
    mismatched.train3d.steps = quick_config.train3d.steps + 1
    with pytest.raises(ValueError, match=r"another config.*train3d\.steps: 3 \(there\) vs 4"):
        main.run(mismatched, str(tmp_path / "mismatched"), "finetune")
    mismatched.train3d.steps = quick_config.train3d.steps
    mismatched.finetune.from_workdir = str(tmp_path / "nothing_here")
    with pytest.raises(FileNotFoundError, match="no finished pretrain2d stage"):
        main.run(mismatched, str(tmp_path / "unfinished"), "finetune")
    mismatched.finetune.from_workdir = str(tmp_path / "itself")
    with pytest.raises(ValueError, match="this work directory itself"):
        main.run(mismatched, str(tmp_path / "itself"), "finetune")
    variant.finetune.seed = -2
    with pytest.raises(ValueError, match=r"finetune.seed must be -1"):
        stages.finetune_seed(variant)


def test_every_stage_records_the_commit_and_machine_that_ran_it(quick_run):
    """Each stage's DONE.json names the checkout's commit (as git itself reports it), whether
    tracked files had changed, the JAX version and the devices."""
    import subprocess
    git = subprocess.run(["git", "-C", provenance.REPO_ROOT, "rev-parse", "HEAD"],
                         capture_output=True, text=True)
    commit = git.stdout.strip() if git.returncode == 0 else None
    for stage in STAGES:
        info = json.load(open(os.path.join(quick_run, stage, "DONE.json")))["provenance"]
        assert info["git_commit"] == commit, stage
        assert (info["git_dirty"] is None) == (commit is None), stage
        assert info["jax"] == jax.__version__
        assert info["devices"] == f"{jax.device_count()} x {jax.devices()[0].device_kind}"


def test_archive_keeps_a_runs_text_outputs_for_git(quick_run, tmp_path):
    """`experiments.archive` copies the config, every stage's DONE.json, the solver's stats,
    the evaluation, the training logs and the report, byte for byte, and no array or
    checkpoint; `experiments.seeds` reads the archive as it reads the work directory; bad input
    is refused without leaving anything behind."""
    destination = str(tmp_path / "results" / "quick_seed0")
    files = archive.archive(quick_run, destination)
    expected = {"config.json", "complete/solver_stats.json", "evaluate/results.json",
                "report/report.md", "report/report.json"}
    expected |= {f"{stage}/DONE.json" for stage in STAGES}
    expected |= {f"{stage}/metrics.jsonl" for stage in ("pretrain2d", "train3d")}
    expected |= {f"finetune/{s}/metrics.jsonl" for s in quick_run_settings(quick_run)}
    assert set(files) == expected
    on_disk = {os.path.relpath(os.path.join(d, f), destination)
               for d, _, names in os.walk(destination) for f in names}
    assert on_disk == expected | {archive.MANIFEST}
    for rel in files:
        with open(os.path.join(quick_run, rel), "rb") as a, \
                open(os.path.join(destination, rel), "rb") as b:
            assert a.read() == b.read(), rel
    manifest = json.load(open(os.path.join(destination, archive.MANIFEST)))
    assert manifest["source"] == os.path.abspath(quick_run) and manifest["files"] == files
    # What seeds reads of a run (report, config, fine-tuning logs) is the same from either.
    from_workdir, from_archive = seeds.load_reports([quick_run, destination])
    assert from_archive.pop("workdir") == destination
    from_workdir.pop("workdir")
    assert from_archive == from_workdir
    # --figures adds the report's PNGs and nothing else.
    with_figures = archive.archive(quick_run, str(tmp_path / "with_figures"), figures=True)
    assert set(with_figures) - set(files) == {
        os.path.join("report", f) for f in os.listdir(os.path.join(quick_run, "report"))
        if f.endswith(".png")} != set()

    with pytest.raises(FileExistsError, match="quick_seed0 exists"):
        archive.archive(quick_run, destination)
    with pytest.raises(FileNotFoundError, match="not a work directory"):
        archive.archive(str(tmp_path / "results"), str(tmp_path / "other"))
    unreported = tmp_path / "unreported"
    unreported.mkdir()
    shutil.copy(os.path.join(quick_run, "config.json"), unreported)
    with pytest.raises(FileNotFoundError, match="run its report stage first"):
        archive.archive(str(unreported), str(tmp_path / "other"))
    assert sorted(os.listdir(tmp_path / "results")) == ["quick_seed0"]  # no staging left
    assert not os.path.exists(tmp_path / "other")


def quick_run_settings(run: str) -> list[str]:
    """The loss settings the run's finetune stage trained."""
    return json.load(open(os.path.join(run, "finetune", "DONE.json")))["settings"]
