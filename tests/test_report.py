"""experiments/report.py on synthetic work directories whose table values are known in closed form.

Poses are a rigid MPII-16 skeleton turning about the vertical axis (bone lengths constant per video).
Predictions and optimisations are the ground truth plus offsets of known lengths, the interpolation
control is the ground truth turned by a known angle, so MPJPE values are closed forms; NMPJPE and
PMPJPE are checked against float64 references written here (least squares by numpy.linalg.lstsq,
rotations by SciPy's Kabsch), independent of hourglass_jax.metrics.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from scipy.spatial.transform import Rotation

from experiments import report
from hourglass_jax.skeleton import BONES, ROOT

TAU = 0.7
# A standing skeleton, camera frame (x right, y down, z forward), mm, pelvis at the origin.
REST = np.array([
    [-100, 850, 0], [-100, 450, 20], [-100, 0, 0], [100, 0, 0], [100, 450, 20], [100, 850, 0],
    [0, 0, 0], [0, -500, 0], [0, -580, 10], [0, -780, 0],
    [-210, -20, 60], [-195, -260, 30], [-180, -500, 0], [180, -500, 0], [195, -260, 30],
    [210, -20, 60]], dtype=np.float64)
TRAIN_ACTIONS = ("walk", "run", "jump")


def _yaw(deg):
    return Rotation.from_euler("y", deg, degrees=True).as_matrix()


def _videos(rng, subjects, actions, frames):
    """Ground-truth videos: per video a rest pose scaled by a subject factor, turning in time."""
    seq, fidx, subj, act, gt = [], [], [], [], []
    sid = 0
    for s_i, s in enumerate(subjects):
        for a, n in zip(actions, frames):
            scale = 0.9 + 0.05 * s_i
            start = rng.uniform(0, 360)
            for f in range(n):
                gt.append(scale * REST @ _yaw(start + 3.0 * f).T)
                seq.append(sid)
                fidx.append(f)
                subj.append(s)
                act.append(a)
            sid += 1
    return (np.array(seq, np.int32), np.array(fidx, np.int32), np.array(subj), np.array(act),
            np.array(gt))


def _offsets(rng, lengths):
    """Displacements of the given lengths (N, 16) in random directions."""
    d = rng.normal(size=lengths.shape + (3,))
    return d / np.linalg.norm(d, axis=-1, keepdims=True) * lengths[..., None]


def _ref_nmpjpe_joints(p, g):
    pr, gr = p - p[ROOT], g - g[ROOT]
    s = np.linalg.lstsq(pr.reshape(-1, 1), gr.reshape(-1), rcond=None)[0][0]
    return np.linalg.norm(s * pr - gr, axis=-1)


def _ref_pmpjpe_joints(p, g):
    p0, g0 = p - p.mean(0), g - g.mean(0)
    rot, _ = Rotation.align_vectors(g0, p0)
    rp = rot.apply(p0)
    return np.linalg.norm(np.sum(rp * g0) / np.sum(p0 * p0) * rp - g0, axis=-1)


def _ref_joints(poses, gt):
    """{"MPJPE", "NMPJPE", "PMPJPE"}: (N, 16) float64 per-joint errors of the references."""
    return {"MPJPE": np.linalg.norm((poses - poses[:, ROOT:ROOT + 1]) - (gt - gt[:, ROOT:ROOT + 1]),
                                    axis=-1),
            "NMPJPE": np.stack([_ref_nmpjpe_joints(p, g) for p, g in zip(poses, gt)]),
            "PMPJPE": np.stack([_ref_pmpjpe_joints(p, g) for p, g in zip(poses, gt)])}


def _pseudo_labels(seed=0):
    rng = np.random.default_rng(seed)
    seq, fidx, subj, act, gt = _videos(rng, ("S5", "S6"), TRAIN_ACTIONS, (12, 10, 8))
    n = len(seq)
    a = rng.uniform(10.0, 80.0, (n, 16))
    a[:, ROOT] = 0.0                                    # the root exact: MPJPE is the mean length
    conf = rng.uniform(0.0, 1.0, (n, 16))
    bl_true = np.linalg.norm(gt[:, [b[0] for b in BONES]] - gt[:, [b[1] for b in BONES]], axis=-1)
    pl = {"sequence_id": seq, "frame_index": fidx, "subject": subj, "action": act,
          "gt": gt, "pred": gt + _offsets(rng, a), "completed": gt + _offsets(rng, 0.5 * a),
          "interp": gt @ _yaw(10.0).T,                  # turned 10 deg about the root's vertical
          "confidence": conf, "observed": conf > TAU, "bone_lengths": bl_true + 5.0}
    pl = {k: (v.astype(np.float32) if v.dtype == np.float64 else v) for k, v in pl.items()}
    return pl, a


# Validation offsets per (setting, action): every non-root joint is c mm off, so MPJPE = 15 c / 16.
VAL_OFFSET = {"baseline": {"walk": 40.0, "run": 64.0, "jump": 80.0},
              "optimised": {"walk": 28.0, "run": 56.0, "jump": 72.0},
              "bone": {"walk": 32.0, "run": 48.0, "jump": 96.0}}
VAL_FRAMES = (6, 4, 3)   # frames per video of walk, run, jump: unequal, so averages are weighted
OTHER = {"baseline": (90.0, 70.0), "optimised": (85.0, 65.0), "bone": (80.0, 61.0)}  # NMPJPE, PMPJPE


def _validation(rng):
    seq, fidx, subj, act, gt = _videos(rng, ("S9", "S11"), TRAIN_ACTIONS, VAL_FRAMES)
    out = {}
    for name, by_action in VAL_OFFSET.items():
        c = np.array([by_action[x] for x in act])[:, None] * np.ones((1, 16))
        c[:, ROOT] = 0.0
        out[name] = {"sequence_id": seq, "frame_index": fidx, "subject": subj, "action": act,
                     "gt": gt.astype(np.float32), "pred": (gt + _offsets(rng, c)).astype(np.float32)}
    return out


def _expected_mpjpe(name, actions=TRAIN_ACTIONS):
    w = np.array([VAL_FRAMES[TRAIN_ACTIONS.index(a)] for a in actions], float)
    c = np.array([VAL_OFFSET[name][a] for a in actions])
    return 15.0 / 16.0 * float(np.sum(w * c) / np.sum(w))


def _results():
    settings = {}
    for name in VAL_OFFSET:
        nm, pm = OTHER[name]
        settings[name] = {
            "overall": {"mpjpe": _expected_mpjpe(name), "nmpjpe": nm, "pmpjpe": pm},
            "per_action": {a: {"mpjpe": 15.0 / 16.0 * VAL_OFFSET[name][a], "nmpjpe": nm, "pmpjpe": pm}
                           for a in TRAIN_ACTIONS},
            "per_subject": {s: {"mpjpe": _expected_mpjpe(name) + d, "nmpjpe": nm, "pmpjpe": pm}
                            for s, d in (("S9", -1.0), ("S11", 1.0))}}
    return {"settings": settings}


def _write_jsonl(path, records):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def _make_workdir(root, labelled=("S1",), unlabelled_actions=(), full=True, seed=0, results=None):
    """A work directory in the stage formats; full=False leaves out every optional input."""
    w = str(root)
    os.makedirs(os.path.join(w, "evaluate"), exist_ok=True)
    config = {"protocol": "subject_s%d" % len(labelled) if not unlabelled_actions else "action_half",
              "seed": seed,
              "data": {"labelled_subjects": list(labelled), "unlabelled_subjects": ["S5", "S6"],
                       "validation_subjects": ["S9", "S11"], "unlabelled_actions": list(unlabelled_actions)},
              "complete": {"tau": TAU}}
    with open(os.path.join(w, "config.json"), "w") as f:
        json.dump(config, f)
    with open(os.path.join(w, "evaluate", "results.json"), "w") as f:
        json.dump(results or _results(), f)
    if not full:
        return w
    rng = np.random.default_rng(seed + 100)
    pl, _ = _pseudo_labels(seed)
    os.makedirs(os.path.join(w, "complete"), exist_ok=True)
    np.savez(os.path.join(w, "complete", "pseudo_labels.npz"), **pl)
    with open(os.path.join(w, "complete", "solver_stats.json"), "w") as f:
        json.dump({"videos": 6, "frames": 60, "iterations_mean": 123.4, "converged": 6, "seconds": 1.5}, f)
    for name, d in _validation(rng).items():
        np.savez(os.path.join(w, "evaluate", f"predictions_{name}.npz"), **d)
    for stage, scale in (("pretrain2d", 1e-3), ("train3d", 5e-3), ("finetune/optimised", 1.0),
                         ("finetune/bone", 1.2)):
        recs = [{"kind": "train", "step": s, "loss": scale * np.exp(-s / 40.0) + 1e-4 * scale}
                for s in range(10, 201, 10)]
        if stage == "train3d":
            recs += [{"kind": "eval", "step": s, "val_mpjpe": 200.0 - 0.3 * s} for s in (100, 200)]
        _write_jsonl(os.path.join(w, stage, "metrics.jsonl"), recs)
    return w


def _colour_pixels(path, rgb, tol=40):
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return int(np.sum(np.abs(img - np.array(rgb)).sum(-1) < tol))


def _assert_png(path, colours=()):
    assert os.path.getsize(path) > 10_000, path
    img = np.asarray(Image.open(path).convert("L"))
    assert img.std() > 5.0 and np.mean(img < 200) > 0.005, f"{path} looks blank"
    for rgb in colours:
        assert _colour_pixels(path, rgb) > 200, f"{path}: too few pixels of colour {rgb}"


TAB_RED, TAB_GREEN, TAB_BLUE = (214, 39, 40), (44, 160, 44), (31, 119, 180)


def test_table1_equals_closed_forms_and_references():
    pl, a = _pseudo_labels()
    t = report.table1(pl, TAU)
    f64 = {k: np.asarray(v, np.float64) for k, v in pl.items() if k in ("gt", "pred", "completed", "interp")}
    sel = pl["confidence"] > TAU
    rows = t["rows"]
    assert list(rows) == ["Predictions (all)", "Optimisations (all)", "Interpolation (all)",
                          "Preds (scores > \u03c4)", "Optis (scores > \u03c4)", "Interp (scores > \u03c4)"]
    # MPJPE closed forms (float32 storage: 1e-3 mm).
    assert rows["Predictions (all)"]["MPJPE"] == pytest.approx(a.mean(), abs=1e-3)
    assert rows["Optimisations (all)"]["MPJPE"] == pytest.approx(0.5 * a.mean(), abs=1e-3)
    assert rows["Preds (scores > \u03c4)"]["MPJPE"] == pytest.approx(a[sel].mean(), abs=1e-3)
    assert rows["Optis (scores > \u03c4)"]["MPJPE"] == pytest.approx(0.5 * a[sel].mean(), abs=1e-3)
    # A rotation by 10 deg about the root's vertical moves each joint by 2 sin(5 deg) times its
    # horizontal distance from that axis; Procrustes undoes it entirely.
    gt_rel = f64["gt"] - f64["gt"][:, ROOT:ROOT + 1]
    radial = 2 * np.sin(np.radians(5.0)) * np.linalg.norm(gt_rel[..., [0, 2]], axis=-1)
    assert rows["Interpolation (all)"]["MPJPE"] == pytest.approx(radial.mean(), abs=1e-3)
    assert rows["Interp (scores > \u03c4)"]["MPJPE"] == pytest.approx(radial[sel].mean(), abs=1e-3)
    assert rows["Interpolation (all)"]["PMPJPE"] == pytest.approx(0.0, abs=1e-2)
    # NMPJPE and PMPJPE against the independent references, all joints and the confident ones.
    for long_name, short_name, key in (("Predictions", "Preds", "pred"),
                                       ("Optimisations", "Optis", "completed"),
                                       ("Interpolation", "Interp", "interp")):
        ref = _ref_joints(f64[key], f64["gt"])
        for metric in ("NMPJPE", "PMPJPE"):
            assert rows[f"{long_name} (all)"][metric] == pytest.approx(ref[metric].mean(), abs=1e-3)
            assert rows[f"{short_name} (scores > \u03c4)"][metric] == pytest.approx(
                ref[metric][sel].mean(), abs=1e-3)
    assert t["share_above_tau"] == pytest.approx(np.mean(pl["confidence"] > TAU))
    assert t["joints"] == sel.size and t["joints_above_tau"] == sel.sum() and t["frames"] == len(a)
    assert t["change_percent"]["all"]["MPJPE"] == pytest.approx(-50.0, abs=1e-3)
    assert t["change_percent"]["above_tau"]["MPJPE"] == pytest.approx(-50.0, abs=1e-3)
    # Bone lengths: the pseudo-labels' are the truth + 5 mm; the predictions' measured per frame.
    bones = t["bone_length_error_mm"]
    assert bones["pseudo-label bone lengths (per video)"] == pytest.approx(5.0, abs=1e-3)
    ia, ib = [b[0] for b in BONES], [b[1] for b in BONES]
    pred_bl = np.linalg.norm(f64["pred"][:, ia] - f64["pred"][:, ib], axis=-1)
    true_bl = np.linalg.norm(f64["gt"][:, ia] - f64["gt"][:, ib], axis=-1)
    assert bones["predictions (per frame)"] == pytest.approx(np.abs(pred_bl - true_bl).mean(), abs=1e-3)


def test_table1_bad_input():
    pl, _ = _pseudo_labels()
    with pytest.raises(ValueError, match="lack 'completed'"):
        report.table1({k: v for k, v in pl.items() if k != "completed"}, TAU)
    bad = dict(pl, pred=pl["pred"].copy())
    bad["pred"][3, 2, 1] = np.nan
    with pytest.raises(ValueError, match="pred holds 1 non-finite"):
        report.table1(bad, TAU)
    with pytest.raises(ValueError, match=r"confidence must be finite and in \[0, 1\]"):
        report.table1(dict(pl, confidence=pl["confidence"] * 2), TAU)
    with pytest.raises(ValueError, match="completed must be"):
        report.table1(dict(pl, completed=pl["completed"][:, :15]), TAU)
    with pytest.raises(ValueError, match="tau"):
        report.table1(pl, 1.5)


def test_table1_without_confident_joints_or_interpolation():
    pl, a = _pseudo_labels()
    pl = {k: v for k, v in pl.items() if k != "interp"}
    t = report.table1(dict(pl, confidence=np.zeros_like(pl["confidence"])), TAU)
    assert list(t["rows"]) == ["Predictions (all)", "Optimisations (all)"]
    assert t["share_above_tau"] == 0.0 and list(t["change_percent"]) == ["all"]
    assert t["rows"]["Predictions (all)"]["MPJPE"] == pytest.approx(a.mean(), abs=1e-3)


def test_table3_and_table4_values():
    res = _results()
    t3 = report.table3(res)
    assert list(t3["rows"]) == ["baseline", "optimised supervision", "+ bone consistency (full method)"]
    base, bone = t3["rows"]["baseline"], t3["rows"]["+ bone consistency (full method)"]
    # 15/16 of the frame-weighted offsets: baseline (6*40 + 4*64 + 3*80)/13, bone (6*32+4*48+3*96)/13.
    assert base["MPJPE"] == pytest.approx(15 / 16 * 736 / 13)
    assert bone["MPJPE"] == pytest.approx(15 / 16 * 672 / 13)
    assert bone["MPJPE %"] == pytest.approx(100 * (672 - 736) / 736)
    assert bone["NMPJPE %"] == pytest.approx(100 * (80 - 90) / 90)
    assert bone["PMPJPE %"] == pytest.approx(100 * (61 - 70) / 70)
    assert base["MPJPE %"] == 0.0
    # Every cell: MPJPE from the offsets' closed form, NMPJPE/PMPJPE as written, % vs baseline.
    for name, label in (("baseline", "baseline"), ("optimised", "optimised supervision"),
                        ("bone", "+ bone consistency (full method)")):
        row = t3["rows"][label]
        want = {"MPJPE": _expected_mpjpe(name), "NMPJPE": OTHER[name][0], "PMPJPE": OTHER[name][1]}
        want_base = {"MPJPE": _expected_mpjpe("baseline"), "NMPJPE": OTHER["baseline"][0],
                     "PMPJPE": OTHER["baseline"][1]}
        for k, v in want.items():
            assert row[k] == pytest.approx(v)
            assert row[f"{k} %"] == pytest.approx(100 * (v - want_base[k]) / want_base[k])
        assert len(row) == 6
    t4 = report.table4(res)
    assert list(t4["rows"]) == ["walk", "run", "jump", "Average"]
    for action in TRAIN_ACTIONS:
        assert t4["rows"][action] == {n: pytest.approx(15 / 16 * VAL_OFFSET[n][action]) for n in VAL_OFFSET}
    assert t4["rows"]["Average"] == {n: pytest.approx(_expected_mpjpe(n)) for n in VAL_OFFSET}
    assert t4["rows"]["jump"] == {"baseline": 75.0, "optimised": 67.5, "bone": 90.0}
    assert t4["rows"]["Average"]["optimised"] == pytest.approx(15 / 16 * 608 / 13)
    assert t4["best"] == {"walk": "optimised", "run": "bone", "jump": "optimised", "Average": "optimised"}
    md = report._format_table4(t4)
    assert "| jump | 75.0 | **67.5** | 90.0 |" in md
    # An "all" group (as metrics.aggregate adds) is not a row; by subject works the same way.
    with_all = json.loads(json.dumps(res))
    for v in with_all["settings"].values():
        v["per_action"]["all"] = v["overall"]
    assert list(report.table4(with_all)["rows"]) == ["walk", "run", "jump", "Average"]
    ts = report.table4(res, by="per_subject")
    assert list(ts["rows"]) == ["S9", "S11", "Average"]
    assert ts["rows"]["S11"]["bone"] == pytest.approx(15 / 16 * 672 / 13 + 1.0)
    assert "| subject | baseline |" in report._format_table4(ts)
    with pytest.raises(ValueError, match="baseline"):
        report.table3({"settings": {"bone": res["settings"]["bone"]}})
    broken = json.loads(json.dumps(res))
    del broken["settings"]["bone"]["overall"]["pmpjpe"]
    with pytest.raises(ValueError, match="'bone' lacks overall"):
        report.table3(broken)
    broken["settings"]["bone"]["overall"]["pmpjpe"] = None
    with pytest.raises(ValueError, match="'bone' has non-numeric or non-finite"):
        report.table3(broken)


def test_write_report_full(tmp_path):
    w = _make_workdir(tmp_path / "w")
    md = report.write_report(w)
    out = os.path.join(w, "report")
    with open(os.path.join(out, "report.md")) as f:
        assert f.read() == md
    with open(os.path.join(out, "report.json")) as f:
        rep = json.load(f)
    pl, a = _pseudo_labels(0)
    assert rep["table1"]["rows"]["Predictions (all)"]["MPJPE"] == pytest.approx(a.mean(), abs=1e-3)
    assert rep["table3"]["rows"]["baseline"]["MPJPE"] == pytest.approx(_expected_mpjpe("baseline"))
    assert rep["solver_stats"]["iterations_mean"] == 123.4
    for heading in ("Table 1 analogue", "Table 3 analogue", "Table 4 analogue", "Figure 4 analogue",
                    "Training curves", "| Optis (scores > \u03c4) |", "Solver: 6 videos"):
        assert heading in md, heading
    assert "Table 5" not in md                      # subject-wise protocol
    # results.json agrees with the predictions files: no disagreement note.
    assert not any("disagree" in n for n in rep["notes"]), rep["notes"]
    f3 = rep["figures"]["fig3"]
    assert [f["why"] for f in f3["frames"]] == ["most changed"] * 4 + ["random"] * 4
    change = np.linalg.norm(pl["completed"].astype(float) - pl["pred"].astype(float), axis=-1).mean(-1)
    top = [f["index"] for f in f3["frames"][:4]]
    assert len({int(pl["sequence_id"][i]) for i in top}) == 4        # from distinct videos
    assert change[top[0]] == pytest.approx(change.max(), rel=1e-6)   # the largest change first
    f4 = rep["figures"]["fig4"]
    assert f4["setting"] == "bone"
    assert f4["frames"][0]["baseline_mm"] - f4["frames"][0]["tuned_mm"] == pytest.approx(
        15 / 16 * (64 - 48), abs=1e-3)              # run improves most (walk by 8, jump gets worse)
    _assert_png(os.path.join(out, "fig3_optimisation.png"), (TAB_RED, TAB_GREEN, TAB_BLUE))
    _assert_png(os.path.join(out, "fig4_finetuning.png"), (TAB_RED, TAB_GREEN, TAB_BLUE))
    assert set(rep["figures"]) == {"fig3", "fig4", "curves_supervised", "curves_finetune",
                                   "curves_validation"}
    for name in ("curves_supervised", "curves_finetune", "curves_validation"):
        _assert_png(rep["figures"][name])
    # Falling fine-tuning losses: nothing flagged.
    assert rep["finetune_diverged"] == [] and "diverged" not in md
    assert set(rep["finetune_loss_growth"]) == {"optimised", "bone"}
    assert all(g < 1.0 for g in rep["finetune_loss_growth"].values())


def test_report_flags_a_diverged_fine_tuning(tmp_path):
    w = _make_workdir(tmp_path / "w")
    losses = [3e5 if s < 70 else 2e6 + 1e3 * s for s in range(10, 201, 10)]
    _write_jsonl(os.path.join(w, "finetune", "optimised", "metrics.jsonl"),
                 [{"kind": "train", "step": s, "loss": v} for s, v in zip(range(10, 201, 10), losses)])
    md = report.write_report(w)
    with open(os.path.join(w, "report", "report.json")) as f:
        rep = json.load(f)
    expected = np.median(losses[-4:]) / np.median(losses[:4])    # a fifth of 20 logged losses
    assert rep["finetune_loss_growth"]["optimised"] == pytest.approx(expected)
    assert rep["finetune_diverged"] == ["optimised"]
    warning = f"WARNING: the fine-tuning of `optimised` diverged: its loss ended {expected:.1f} times"
    assert warning in md and "`bone` diverged" not in md
    assert md.index(warning) < md.index("Table 3 analogue")       # read before the table it spoils


def test_report_names_the_fine_tuning_schedule(tmp_path):
    """Table 3 says how the settings were fine-tuned, the labelled share, the loss, frozen
    BatchNorm and a zero rate included; a config without a finetune field (older runs) gets no
    sentence."""
    paper = {"steps": 200, "batch_size": 32, "learning_rate": 2.5e-5, "loss": "eq2"}
    assert report.finetune_schedule({"finetune": paper}) == (
        "Fine-tuning: 200 steps at batch 32, learning rate 2.5e-05, with Eq. 2, on the "
        "pseudo-labels alone, as in the paper.")
    mixed = dict(paper, steps=0, epochs=2.0, loss="supervised", labelled_fraction=0.5)
    text = report.finetune_schedule({"finetune": mixed})
    assert text.startswith("Fine-tuning: 2.0 epochs at batch 32")
    assert "heatmap loss" in text and "0.5 of every batch labelled frames" in text
    assert "half cosine" not in text and "not augmented" not in text
    probe = dict(paper, lr_schedule="cosine", augment_unlabelled=False)
    assert report.finetune_schedule({"finetune": probe}) == (
        "Fine-tuning: 200 steps at batch 32, learning rate 2.5e-05 decayed along a half "
        "cosine, with Eq. 2, on the pseudo-labels alone, as in the paper; the pseudo-labelled "
        "frames not augmented (`finetune.augment_unlabelled=False`, our probe).")
    frozen = dict(paper, augment_unlabelled=False, freeze_batchnorm=True)
    assert report.finetune_schedule({"finetune": frozen}).endswith(
        "not augmented (`finetune.augment_unlabelled=False`, our probe); the lifter's BatchNorm "
        "on its running averages (`finetune.freeze_batchnorm=True`).")
    statistics = report.finetune_schedule({"finetune": dict(paper, learning_rate=0.0)})
    assert ("learning rate 0 (no weight moves: only the lifter's BatchNorm statistics are "
            "re-estimated on the fine-tuning batches), with Eq. 2") in statistics
    assert "nothing is trained" in report.finetune_schedule(
        {"finetune": dict(paper, learning_rate=0, freeze_batchnorm=True)})
    assert report.finetune_schedule({}) is None
    w = _make_workdir(tmp_path / "w", full=False)
    config = json.load(open(os.path.join(w, "config.json")))
    assert "Fine-tuning:" not in report.write_report(w)
    config["finetune"] = dict(paper, labelled_fraction=0.25)
    with open(os.path.join(w, "config.json"), "w") as f:
        json.dump(config, f)
    md = report.write_report(w)
    assert "learning rate 2.5e-05, with Eq. 2, on 0.25 of every batch labelled frames" in md
    rep = json.load(open(os.path.join(w, "report", "report.json")))
    assert rep["finetune_schedule"] in md


def test_write_report_optional_inputs_missing(tmp_path):
    w = _make_workdir(tmp_path / "w", full=False)
    md = report.write_report(w)
    rep = json.load(open(os.path.join(w, "report", "report.json")))
    assert "table1" not in rep and "fig3" not in rep["figures"] and "fig4" not in rep["figures"]
    assert "table3" in rep and "table4" in rep
    assert "Omitted: no complete/pseudo_labels.npz" in md
    notes = " ".join(rep["notes"])
    assert "Fig. 4 omitted" in notes and "no training curves" in notes
    assert "evaluate stage is not marked done" in notes
    assert sorted(os.listdir(os.path.join(w, "report"))) == ["report.json", "report.md"]
    # Only the baseline evaluated: its row alone, and a note.
    only = {"settings": {"baseline": _results()["settings"]["baseline"]}}
    w2 = _make_workdir(tmp_path / "w2", full=False, results=only)
    md = report.write_report(w2)
    assert "Only the baseline was evaluated" in md and "| walk | **37.5** |" in md


def test_missing_required_inputs(tmp_path):
    w = _make_workdir(tmp_path / "w", full=False)
    os.remove(os.path.join(w, "evaluate", "results.json"))
    with pytest.raises(FileNotFoundError, match=r"evaluate/results.json.*stage 'evaluate'"):
        report.write_report(w)
    os.remove(os.path.join(w, "config.json"))
    with pytest.raises(FileNotFoundError, match="config.json.*experiments.main"):
        report.write_report(w)
    w2 = _make_workdir(tmp_path / "w2", full=False)
    with open(os.path.join(w2, "evaluate", "results.json"), "w") as f:
        f.write('{"settings": {"baseline": ')       # cut short
    with pytest.raises(ValueError, match="not valid JSON"):
        report.write_report(w2)


def test_action_wise_table5(tmp_path):
    w = _make_workdir(tmp_path / "a", labelled=("S1", "S5", "S6", "S7", "S8"),
                      unlabelled_actions=("run", "jump"), full=False)
    for name, d in _validation(np.random.default_rng(3)).items():   # only what Table 5 needs
        np.savez(os.path.join(w, "evaluate", f"predictions_{name}.npz"), **d)
    md = report.write_report(w)
    t5 = json.load(open(os.path.join(w, "report", "report.json")))["table5"]
    assert t5["frames"] == {"run": 2 * VAL_FRAMES[1], "jump": 2 * VAL_FRAMES[2]}
    for name in VAL_OFFSET:
        for action in ("run", "jump"):
            assert t5["rows"][name][action] == pytest.approx(15 / 16 * VAL_OFFSET[name][action], abs=1e-3)
        # Frame-weighted over the unlabelled actions only: (4 run + 3 jump frames per video).
        assert t5["rows"][name]["Average"] == pytest.approx(
            _expected_mpjpe(name, ("run", "jump")), abs=1e-3)
        assert "walk" not in t5["rows"][name]
    assert "Table 5/6 analogue" in md


def test_figure5_and_combined_report(tmp_path):
    def res(base, bone):
        r = _results()
        r["settings"]["baseline"]["overall"] = {"mpjpe": base, "nmpjpe": base - 5, "pmpjpe": base - 20}
        r["settings"]["bone"]["overall"] = {"mpjpe": bone, "nmpjpe": bone - 5, "pmpjpe": bone - 20}
        return r
    w1 = _make_workdir(tmp_path / "s1_a", ("S1",), full=False, seed=0, results=res(100.0, 90.0))
    w1b = _make_workdir(tmp_path / "s1_b", ("S1",), full=False, seed=1, results=res(104.0, 88.0))
    w2 = _make_workdir(tmp_path / "s15", ("S1", "S5"), full=False, results=res(80.0, 75.0))
    wa = _make_workdir(tmp_path / "act", ("S1", "S5", "S6", "S7", "S8"), unlabelled_actions=("run",),
                       full=False, results=res(70.0, 60.0))
    f5 = report.figure5([w1, w1b, w2, wa], str(tmp_path / "f5" / "fig5.png"))
    sd = float(np.std([100.0, 104.0], ddof=1))
    # Seeds averaged: [labelled subjects, mean, sample std (None for one run), runs].
    assert f5["points"]["MPJPE"]["baseline"] == [[1, 102.0, pytest.approx(sd), 2], [2, 80.0, None, 1]]
    assert f5["points"]["MPJPE"]["fine-tuned"] == [[1, 89.0, pytest.approx(np.std([90, 88], ddof=1)), 2],
                                                   [2, 75.0, None, 1]]
    assert f5["points"]["PMPJPE"]["fine-tuned"][1] == [2, 55.0, None, 1]
    assert len(f5["runs"]) == 3 and "action-wise" in f5["notes"][0]
    _assert_png(f5["path"], (TAB_RED, TAB_BLUE))   # baseline red, fine-tuned blue, as in Fig. 4
    seeds = report.seeds_table(report.collect_runs([w1, w1b, w2]))
    row = seeds["subject_s1 / baseline"]
    assert row["runs"] == 2 and row["MPJPE mean"] == 102.0
    assert row["MPJPE std"] == pytest.approx(sd)
    bone = seeds["subject_s1 / bone"]
    assert bone["MPJPE % mean"] == pytest.approx((-10.0 + 100 * (88 - 104) / 104) / 2)
    assert bone["MPJPE % std"] == pytest.approx(np.std([-10.0, 100 * (88 - 104) / 104], ddof=1))
    assert seeds["subject_s2 / bone"]["MPJPE std"] is None
    assert seeds["subject_s2 / bone"]["PMPJPE % mean"] == pytest.approx(100 * (55 - 60) / 60)
    # The CLI: per-run reports plus the combined one.
    out = tmp_path / "combined"
    proc = subprocess.run([sys.executable, "-m", "experiments.report", f"--workdirs={w1},{w1b},{w2}",
                           f"--out={out}"], capture_output=True, text=True, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "# Combined report" in proc.stdout and "102.0 ± 2.8" in proc.stdout
    for w in (w1, w1b, w2):
        assert os.path.exists(os.path.join(w, "report", "report.md"))
    _assert_png(str(out / "fig5_labelled_subjects.png"))
    assert json.load(open(out / "report.json"))["fig5"]["points"]["MPJPE"]["baseline"][1] == [2, 80.0, None, 1]
    assert "| subject_s2 / bone | 1 | 75.0 | 70.0 | 55.0 | -6.2% |" in proc.stdout
    # One work directory: its own report is the text shown. One without results: an error naming
    # the file, after the reports before it.
    assert report.report_workdirs([w1]).startswith("# Report: protocol subject_s1, seed 0")
    os.remove(os.path.join(w2, "evaluate", "results.json"))
    with pytest.raises(FileNotFoundError, match="s15/evaluate/results.json"):
        report.report_workdirs([w1, w2])
    with pytest.raises(FileNotFoundError, match="s15/evaluate/results.json"):
        report.figure5([w1, w2], str(tmp_path / "x.png"))


def test_figure4_without_full_method_shows_best_setting(tmp_path):
    w = _make_workdir(tmp_path / "w", full=False)
    val = _validation(np.random.default_rng(5))
    for name in ("baseline", "optimised"):
        np.savez(os.path.join(w, "evaluate", f"predictions_{name}.npz"), **val[name])
    report.write_report(w)
    rep = json.load(open(os.path.join(w, "report", "report.json")))
    assert rep["figures"]["fig4"]["setting"] == "optimised"
    assert any("'bone' absent" in n for n in rep["notes"])
    _assert_png(os.path.join(w, "report", "fig4_finetuning.png"), (TAB_RED, TAB_GREEN, TAB_BLUE))
    # Frames are matched by (sequence_id, frame_index), not by position: a shuffled file agrees.
    perm = np.random.default_rng(0).permutation(len(val["optimised"]["pred"]))
    shuffled = {k: v[perm] for k, v in val["optimised"].items()}
    f4 = report.figure4(val["baseline"], shuffled, str(tmp_path / "f4.png"), n_improved=1, n_random=0)
    # Walk frames improve most here: 40 -> 28 mm offsets.
    assert f4["frames"][0]["baseline_mm"] - f4["frames"][0]["tuned_mm"] == pytest.approx(
        15 / 16 * (40 - 28), abs=1e-3)
    with pytest.raises(ValueError, match="missing in the other"):
        report.figure4(val["baseline"], {k: v[1:] for k, v in val["optimised"].items()},
                       str(tmp_path / "f4b.png"))
