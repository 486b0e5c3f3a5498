r"""The report stage: the paper's tables and figures from the stage outputs of a work directory.

  python -m experiments.report --workdirs=runs/s1_seed0[,runs/s1_seed1,runs/s15_seed0,...] [--out=DIR]

One work directory: writes W/report/{report.md, report.json, *.png} and prints the markdown. Several:
writes each one's report, then a combined report in --out (default: `report_combined` beside them)
with the mean and spread over seeds and the Figure 5 analogue (error against labelled subjects).

Analogues of the paper (Sec. 4.2-4.3): Table 1 (predictions vs optimisations on the unlabelled
videos, all joints and joints with confidence > tau), Table 3 (baseline and the loss settings, three
metrics), Table 4 (per action), Table 5/6 (action-wise protocols: the unlabelled actions), Fig. 3
(ground truth / prediction / optimisation), Fig. 4 (validation before/after fine-tuning), Fig. 5,
training curves, and Table 7 (per scene) when the protocol names scenes. Inputs are the formats the
stages write (experiments/stages.py); all poses are (N, 16, 3) float32 mm, camera frame,
root-relative.
"""
from __future__ import annotations

import glob
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from experiments import divergence
from experiments.table_rows import SETTING_LABELS, SETTING_ORDER
from experiments.workdir import effective_finetune_seed, with_added_fields, write_atomic
from hourglass_jax import metrics, progress, skeleton, viz

METRICS: tuple[str, ...] = ("mpjpe", "nmpjpe", "pmpjpe")
METRIC_NAMES: dict[str, str] = {"mpjpe": "MPJPE", "nmpjpe": "NMPJPE", "pmpjpe": "PMPJPE"}
FULL_METHOD = "bone"
TAU = "\u03c4"

# Paper figures quoted beside ours (H36M, subject-wise protocol S1; DESIGN.md, paper Tables 1 and 3).
PAPER_TABLE1 = "MPJPE 91.20 -> 81.67 (all), 71.12 -> 64.16 (scores > 0.7, 86.38% of the predictions)"
PAPER_TABLE3 = "MPJPE 97.7 -> 88.8 (-9.1%), NMPJPE 93.4 -> 80.1, PMPJPE 75.6 -> 66.5"

_POSE_KEYS = ("pred", "gt", "completed", "interp")
_PRODUCERS = {
    "config.json": "experiments.main (written when the work directory is created)",
    "evaluate/results.json": "stage 'evaluate'",
    "complete/pseudo_labels.npz": "stage 'complete'",
    "complete/solver_stats.json": "stage 'complete'",
}


# ----------------------------------------------------------------------------------------------
# Loading and checking the stage outputs


def _require(workdir: str, rel: str) -> str:
    path = os.path.join(workdir, rel)
    if not os.path.exists(path):
        producer = _PRODUCERS.get(rel, "stage '" + rel.split("/")[0] + "'")
        raise FileNotFoundError(
            f"missing {path}: it is written by {producer}; run the pipeline first "
            f"(python -m experiments.main --config=... --workdir={workdir} --stages=all)")
    return path


def _load_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON (cut short?): {e}") from e


def load_npz(path: str, required: Sequence[str]) -> dict[str, np.ndarray]:
    """Reads a stage's .npz into a dict, checking keys, pose shapes and finiteness.

    Args:
      path: the .npz file.
      required: keys that must be present. Pose keys (pred, gt, completed, interp) must be
        (N, 16, 3) and finite, every array must have the same first dimension N.
    Raises:
      FileNotFoundError: no such file. ValueError: a missing key, a bad shape or non-finite poses.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"missing {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except ValueError as e:  # object arrays need pickle: the stages write str arrays instead
        raise ValueError(f"{path}: cannot read without pickle ({e}); store strings as str arrays") from e
    missing = [k for k in required if k not in data]
    if missing:
        raise ValueError(f"{path} lacks the arrays {missing}; it holds {sorted(data)}")
    _check_arrays(data, path)
    return data


def _check_arrays(data: Mapping[str, np.ndarray], where: str) -> int:
    sizes = {k: np.shape(v)[0] for k, v in data.items() if np.ndim(v) >= 1}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"{where}: arrays disagree on the number of frames: {sizes}")
    for k in _POSE_KEYS:
        if k in data:
            a = np.asarray(data[k])
            if a.ndim != 3 or a.shape[1:] != (skeleton.NUM_JOINTS, 3):
                raise ValueError(f"{where}: {k} must be (N, 16, 3) mm, got {a.shape}")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"{where}: {k} holds {int(np.sum(~np.isfinite(a)))} non-finite values")
    if "confidence" in data:
        c = np.asarray(data["confidence"])
        if c.ndim != 2 or c.shape[1] != skeleton.NUM_JOINTS:
            raise ValueError(f"{where}: confidence must be (N, 16), got {c.shape}")
        if not np.all(np.isfinite(c)) or c.min() < 0 or c.max() > 1:
            raise ValueError(f"{where}: confidence must be finite and in [0, 1]")
    n = next(iter(sizes.values()), 0)
    if n == 0:
        raise ValueError(f"{where}: no frames")
    return n


def _cfg(config: Mapping[str, Any], dotted: str, default: Any = KeyError) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            if default is KeyError:
                raise ValueError(f"config.json has no field {dotted!r}")
            return default
        node = node[part]
    return node


def _check_results(results: Mapping[str, Any], where: str = "results") -> dict[str, Any]:
    settings = results.get("settings") if isinstance(results, Mapping) else None
    if not isinstance(settings, Mapping) or "baseline" not in settings:
        raise ValueError(f"{where}: expected {{'settings': {{'baseline': ..., ...}}}}")
    for name, s in settings.items():
        overall = s.get("overall", {}) if isinstance(s, Mapping) else {}
        missing = [k for k in METRICS if k not in overall]
        if missing:
            raise ValueError(f"{where}: setting {name!r} lacks overall {missing}")
        bad = [k for k in METRICS
               if not isinstance(overall[k], (int, float)) or not np.isfinite(overall[k])]
        if bad:
            raise ValueError(f"{where}: setting {name!r} has non-numeric or non-finite {bad}")
    return dict(settings)


def _ordered_settings(settings: Mapping[str, Any]) -> list[str]:
    known = [s for s in SETTING_ORDER if s in settings]
    return known + [s for s in settings if s not in SETTING_ORDER]


# ----------------------------------------------------------------------------------------------
# Tables (pure functions over the stage outputs)


def table1(pseudo_labels: Mapping[str, np.ndarray], tau: float) -> dict[str, Any]:
    """Table 1 analogue: predictions vs optimisations (and the interpolation control) on the
    unlabelled videos, over all joints and over the joints whose confidence is above tau.

    Args:
      pseudo_labels: arrays of complete/pseudo_labels.npz: pred, completed, gt (N, 16, 3) mm,
        confidence (N, 16) in [0, 1]; optional interp (N, 16, 3) mm and bone_lengths (N, 11) mm.
      tau: confidence threshold.
    Returns:
      {"rows": {row: {"MPJPE", "NMPJPE", "PMPJPE"} in mm}, "share_above_tau": fraction of the
      N x 16 joint predictions with confidence > tau, "joints_above_tau", "joints", "frames",
      "tau", "change_percent": relative change of each metric from predictions to optimisations
      ({"all": {...}, "above_tau": {...}}), and "bone_length_error_mm" when bone_lengths is given.
      "scores > tau" rows average the per-joint errors (metrics.joint_errors) of those joints only,
      the NMPJPE/PMPJPE alignment still being fitted on the whole pose.
    """
    for k in ("pred", "completed", "gt", "confidence"):
        if k not in pseudo_labels:
            raise ValueError(f"pseudo-labels lack {k!r}; they hold {sorted(pseudo_labels)}")
    if not np.isfinite(tau) or not 0.0 <= tau < 1.0:
        raise ValueError(f"tau must be in [0, 1), got {tau}")
    n = _check_arrays(pseudo_labels, "pseudo-labels")
    gt = np.asarray(pseudo_labels["gt"], np.float64)
    above = np.asarray(pseudo_labels["confidence"]) > tau
    sources = [("Predictions", "Preds", "pred"), ("Optimisations", "Optis", "completed")]
    if "interp" in pseudo_labels:
        sources.append(("Interpolation", "Interp", "interp"))
    rows: dict[str, dict[str, float]] = {}
    above_rows: dict[str, dict[str, float]] = {}
    for long_name, short_name, key in sources:
        poses = np.asarray(pseudo_labels[key], np.float64)
        errs = {m: metrics.joint_errors(poses, gt, m) for m in METRICS}   # (N, 16) each
        rows[f"{long_name} (all)"] = {METRIC_NAMES[m]: float(e.mean()) for m, e in errs.items()}
        if above.any():
            above_rows[f"{short_name} (scores > {TAU})"] = {
                METRIC_NAMES[m]: float(e[above].mean()) for m, e in errs.items()}
    rows.update(above_rows)

    def change(before: str, after: str) -> dict[str, float]:
        return {k: 100.0 * (rows[after][k] - rows[before][k]) / rows[before][k]
                for k in rows[before] if rows[before][k] > 0}

    out: dict[str, Any] = {
        "rows": rows, "tau": float(tau), "frames": n, "joints": int(above.size),
        "joints_above_tau": int(above.sum()), "share_above_tau": float(above.mean()),
        "change_percent": {"all": change("Predictions (all)", "Optimisations (all)")},
    }
    if above.any():
        out["change_percent"]["above_tau"] = change(f"Preds (scores > {TAU})", f"Optis (scores > {TAU})")
    if "bone_lengths" in pseudo_labels:
        bl = np.asarray(pseudo_labels["bone_lengths"], np.float64)
        if bl.shape != (n, skeleton.NUM_BONES) or not np.all(np.isfinite(bl)):
            raise ValueError(f"bone_lengths must be finite (N, 11) mm, got {bl.shape}")
        true_bl = skeleton.bone_lengths(gt)
        out["bone_length_error_mm"] = {
            "predictions (per frame)": float(np.abs(
                skeleton.bone_lengths(np.asarray(pseudo_labels["pred"], np.float64)) - true_bl).mean()),
            "pseudo-label bone lengths (per video)": float(np.abs(bl - true_bl).mean()),
        }
    return out


def table3(results: Mapping[str, Any]) -> dict[str, Any]:
    """Table 3 analogue: validation errors of the baseline and each fine-tuning setting.

    Args:
      results: the content of evaluate/results.json ({"settings": {name: {"overall": {...}}}}).
    Returns:
      {"rows": {label: {"MPJPE", "NMPJPE", "PMPJPE" (mm), "MPJPE %", "NMPJPE %", "PMPJPE %"
      (relative change vs the baseline, percent; negative is better)}}, "settings": [names in row
      order]}. Row labels are SETTING_LABELS (unknown settings keep their name).
    """
    settings = _check_results(results)
    base = settings["baseline"]["overall"]
    rows: dict[str, dict[str, float]] = {}
    order = _ordered_settings(settings)
    for name in order:
        overall = settings[name]["overall"]
        row = {METRIC_NAMES[m]: float(overall[m]) for m in METRICS}
        for m in METRICS:
            row[f"{METRIC_NAMES[m]} %"] = 100.0 * (float(overall[m]) - float(base[m])) / float(base[m])
        rows[SETTING_LABELS.get(name, name)] = row
    return {"rows": rows, "settings": order}


def table4(results: Mapping[str, Any], metric: str = "mpjpe", by: str = "per_action") -> dict[str, Any]:
    """Table 4 analogue: validation error per action (rows) for each setting (columns).

    Args:
      results: the content of evaluate/results.json (per_action entries needed).
      metric: "mpjpe" (the paper's table), "nmpjpe" or "pmpjpe".
      by: "per_action" (the paper's table) or "per_subject" (the same table by validation subject).
    Returns:
      {"rows": {action: {setting: mm}, ..., "Average": {setting: overall mm}}, "best": {action:
      setting with the lowest error}, "metric": metric}. Actions in order of first appearance
      (baseline first); the Average row is the overall (frame-weighted) error of results.json.
      A group named "all" (an overall entry some aggregations add) is not repeated as a row.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose from {METRICS}")
    if by not in ("per_action", "per_subject"):
        raise ValueError(f"by must be 'per_action' or 'per_subject', got {by!r}")
    settings = _check_results(results)
    order = _ordered_settings(settings)
    groups: list[str] = []
    for name in order:
        per_group = settings[name].get(by)
        if not isinstance(per_group, Mapping) or not per_group:
            raise ValueError(f"results: setting {name!r} has no {by} errors")
        groups += [g for g in per_group if g not in groups and g != "all"]
    rows: dict[str, dict[str, float]] = {}
    for group in groups + ["Average"]:
        row = {}
        for name in order:
            src = (settings[name]["overall"] if group == "Average"
                   else settings[name][by].get(group))
            if isinstance(src, Mapping) and metric in src:
                row[name] = float(src[metric])
        rows[group] = row
    best = {g: min(r, key=r.get) for g, r in rows.items() if r}
    return {"rows": rows, "best": best, "metric": metric, "by": by}


def table5(predictions: Mapping[str, Mapping[str, np.ndarray]], actions: Sequence[str]) -> dict[str, Any]:
    """Table 5/6 analogue (action-wise protocols): validation MPJPE on the unlabelled actions.

    Args:
      predictions: {setting: arrays of evaluate/predictions_<setting>.npz (action, pred, gt)}.
      actions: the unlabelled actions (config data.unlabelled_actions).
    Returns:
      {"rows": {setting: {action: mm, ..., "Average": mm}}, "frames": {action: count}}; the
      Average is over the frames of those actions (frame-weighted, as the paper's tables are).
    """
    if not actions:
        raise ValueError("table5 needs the unlabelled actions of an action-wise protocol")
    rows: dict[str, dict[str, float]] = {}
    frames: dict[str, int] = {}
    for name in _ordered_settings(predictions):
        d = predictions[name]
        act = np.asarray(d["action"]).astype(str)
        err = metrics.mpjpe(np.asarray(d["pred"], np.float64), np.asarray(d["gt"], np.float64))
        row = {}
        for a in actions:
            sel = act == a
            if sel.any():
                row[a] = float(err[sel].mean())
                frames[a] = int(sel.sum())
        sel = np.isin(act, list(actions))
        if not sel.any():
            raise ValueError(f"setting {name!r}: no validation frame of the actions {list(actions)}")
        row["Average"] = float(err[sel].mean())
        rows[name] = row
    return {"rows": rows, "frames": frames}


def table7(results: Mapping[str, Any]) -> dict[str, Any]:
    """Table 7 analogue: validation errors per scene (MPI-INF-3DHP: studio with green screen,
    studio without, outdoor), for the baseline and each fine-tuned network.

    Args:
      results: the content of evaluate/results.json with "per_scene" entries ({scene: {"mpjpe",
        "nmpjpe", "pmpjpe": mm, "frames": int}}), written when the config sets evaluate.scenes.
    Returns:
      {"rows": {"<scene> / <setting label>": {"MPJPE", "NMPJPE", "PMPJPE" (mm), "MPJPE %"
      (change against the baseline in that scene)}}, "scenes": [scene names, then "All"],
      "frames": {scene: validation frames}}. The "All" rows are the overall errors.
    Raises ValueError if no setting has per-scene errors, or a setting lacks a scene.
    """
    settings = _check_results(results)
    order = _ordered_settings(settings)
    per_scene = {name: settings[name].get("per_scene") for name in order}
    if not any(isinstance(v, Mapping) and v for v in per_scene.values()):
        raise ValueError("results: no setting has per_scene errors (config evaluate.scenes unset)")
    scenes = list(dict.fromkeys(sc for v in per_scene.values() if isinstance(v, Mapping)
                                for sc in v))
    for name, by_scene in per_scene.items():
        missing = [sc for sc in scenes if not isinstance(by_scene, Mapping) or sc not in by_scene]
        if missing:
            raise ValueError(f"results: setting {name!r} has no per_scene errors for {missing}")
    rows: dict[str, dict[str, float]] = {}
    for scene in scenes + ["All"]:
        base = (settings["baseline"]["overall"] if scene == "All"
                else per_scene["baseline"][scene])
        for name in order:
            errs = settings[name]["overall"] if scene == "All" else per_scene[name][scene]
            row = {METRIC_NAMES[m]: float(errs[m]) for m in METRICS}
            change = (float(errs["mpjpe"]) - float(base["mpjpe"])) / float(base["mpjpe"])
            row["MPJPE %"] = 100.0 * change
            rows[f"{scene} / {SETTING_LABELS.get(name, name)}"] = row
    frames = {sc: int(per_scene["baseline"][sc].get("frames", 0)) for sc in scenes}
    return {"rows": rows, "scenes": scenes + ["All"], "frames": frames}


def _format_table4(t4: Mapping[str, Any]) -> str:
    """Markdown with the best setting of each row in bold, as the paper marks it."""
    cells = {a: {s: (f"**{v:.1f}**" if t4["best"].get(a) == s else f"{v:.1f}") for s, v in r.items()}
             for a, r in t4["rows"].items()}
    return metrics.markdown_table(cells, "subject" if t4.get("by") == "per_subject" else "action")


# ----------------------------------------------------------------------------------------------
# Figures


def _frame_title(d: Mapping[str, np.ndarray], i: int, reason: str) -> str:
    parts = [str(np.asarray(d[k][i]).astype(str)) for k in ("subject", "action") if k in d]
    if "frame_index" in d:
        parts.append(f"f{int(d['frame_index'][i])}")
    return " ".join(parts) + "\n" + reason


def _pick_frames(score: np.ndarray, groups: np.ndarray, n_top: int, n_random: int,
                 seed: int) -> list[tuple[int, str]]:
    """The n_top highest-scoring frames from distinct groups (videos), then n_random others."""
    picked: list[tuple[int, str]] = []
    seen: set = set()
    for i in np.argsort(-score, kind="stable"):
        if len(picked) == n_top:
            break
        if groups[i] not in seen:
            seen.add(groups[i])
            picked.append((int(i), "top"))
    rest = np.setdiff1d(np.arange(score.size), [i for i, _ in picked])
    rng = np.random.default_rng(seed)
    for i in rng.choice(rest, size=min(n_random, rest.size), replace=False):
        picked.append((int(i), "random"))
    return picked


def figure3(pseudo_labels: Mapping[str, np.ndarray], path: str, n_changed: int = 4,
            n_random: int = 4, seed: int = 0) -> dict[str, Any]:
    """Fig. 3 analogue: ground truth (green dashed), prediction (red), optimisation (blue).

    Shows the n_changed frames (from distinct videos) whose mean joint displacement
    |completed - pred| is largest, then n_random frames drawn uniformly (seeded).
    Returns {"path", "frames": [{"index", "why", "change_mm"}]}.
    """
    n = _check_arrays(pseudo_labels, "pseudo-labels")
    pred, comp, gt = (np.asarray(pseudo_labels[k], np.float64) for k in ("pred", "completed", "gt"))
    change = np.linalg.norm(comp - pred, axis=-1).mean(axis=-1)   # (N,) mm
    groups = np.asarray(pseudo_labels.get("sequence_id", np.arange(n)))
    picked = _pick_frames(change, groups, n_changed, n_random, seed)
    examples, titles, frames = [], [], []
    for i, why in picked:
        examples.append({"ground truth": gt[i], "prediction": pred[i], "optimisation": comp[i]})
        reason = "most changed" if why == "top" else "random"
        titles.append(_frame_title(pseudo_labels, i, f"{reason}, moved {change[i]:.0f} mm"))
        frames.append({"index": i, "why": reason, "change_mm": float(change[i])})
    viz.skeleton_grid(examples, path, titles=titles)
    return {"path": path, "frames": frames}


def _match_frames(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> np.ndarray:
    """Index into b of each frame of a, matched by (sequence_id, frame_index)."""
    key = lambda d: [(int(s), int(f)) for s, f in zip(d["sequence_id"], d["frame_index"])]  # noqa: E731
    where = {k: i for i, k in enumerate(key(b))}
    ka = key(a)
    missing = [k for k in ka if k not in where]
    if missing:
        raise ValueError(f"{len(missing)} validation frames of one setting are missing in the other, "
                         f"e.g. (sequence_id, frame_index) {missing[0]}")
    return np.asarray([where[k] for k in ka])


def figure4(baseline: Mapping[str, np.ndarray], tuned: Mapping[str, np.ndarray], path: str,
            n_improved: int = 4, n_random: int = 4, seed: int = 0) -> dict[str, Any]:
    """Fig. 4 analogue on validation frames: ground truth, baseline (red), fine-tuned (blue).

    Frames are matched by (sequence_id, frame_index). Shows the n_improved frames (distinct
    videos) whose MPJPE the fine-tuning lowered most, then n_random frames drawn uniformly.
    Returns {"path", "frames": [{"index", "why", "baseline_mm", "tuned_mm"}]}.
    """
    _check_arrays(baseline, "baseline predictions")
    _check_arrays(tuned, "fine-tuned predictions")
    j = _match_frames(baseline, tuned)
    gt = np.asarray(baseline["gt"], np.float64)
    if np.abs(np.asarray(tuned["gt"], np.float64)[j] - gt).max() > 1e-3:
        raise ValueError("baseline and fine-tuned predictions disagree on the ground truth")
    pb = np.asarray(baseline["pred"], np.float64)
    pt = np.asarray(tuned["pred"], np.float64)[j]
    eb, et = metrics.mpjpe(pb, gt), metrics.mpjpe(pt, gt)
    groups = np.asarray(baseline["sequence_id"])
    picked = _pick_frames(eb - et, groups, n_improved, n_random, seed)
    examples, titles, frames = [], [], []
    for i, why in picked:
        examples.append({"ground truth": gt[i], "baseline": pb[i], "fine-tuned": pt[i]})
        reason = "most improved" if why == "top" else "random"
        titles.append(_frame_title(baseline, i, f"{reason}: {eb[i]:.0f} -> {et[i]:.0f} mm"))
        frames.append({"index": i, "why": reason, "baseline_mm": float(eb[i]),
                       "tuned_mm": float(et[i])})
    viz.skeleton_grid(examples, path, titles=titles)
    return {"path": path, "frames": frames}


def metrics_files(workdir: str) -> dict[str, str]:
    """{stage label: metrics.jsonl} of the training stages present: pretrain2d, train3d and
    finetune/<setting>, each only if it holds at least one training record with a loss."""
    found = {"pretrain2d": os.path.join(workdir, "pretrain2d", "metrics.jsonl"),
             "train3d": os.path.join(workdir, "train3d", "metrics.jsonl")}
    for p in sorted(glob.glob(os.path.join(workdir, "finetune", "*", "metrics.jsonl"))):
        found["finetune/" + os.path.basename(os.path.dirname(p))] = p
    return {k: p for k, p in found.items() if os.path.exists(p)
            and any("loss" in r and "step" in r for r in progress.read_jsonl(p))}


def training_curve_figures(workdir: str, out_dir: str) -> dict[str, str]:
    """Loss curves (supervised stages; fine-tuning settings) and the validation curve if logged.

    Losses of the stages differ in kind (2D heatmaps, 3D heatmaps, pseudo-label losses), so the
    supervised stages and the fine-tuning runs get separate plots. Returns {figure name: PNG path}.
    """
    files = metrics_files(workdir)
    figs: dict[str, str] = {}
    supervised = {k: p for k, p in files.items() if not k.startswith("finetune/")}
    finetune = {k: p for k, p in files.items() if k.startswith("finetune/")}
    if supervised:
        figs["curves_supervised"] = viz.training_curves(
            supervised, os.path.join(out_dir, "curves_supervised.png"))
    if finetune:
        figs["curves_finetune"] = viz.training_curves(
            finetune, os.path.join(out_dir, "curves_finetune.png"))
    eval_keys = sorted({k for p in files.values() for r in progress.read_jsonl(p)
                        if r.get("kind") == "eval" for k in r if "mpjpe" in k})
    if eval_keys:
        figs["curves_validation"] = viz.training_curves(
            files, os.path.join(out_dir, "curves_validation.png"), key=eval_keys[0])
    return figs


# ----------------------------------------------------------------------------------------------
# One work directory


class _Report:
    """Accumulates the markdown lines, the JSON content and the notes of one report."""

    def __init__(self, workdir: str, out_dir: str, config: Mapping[str, Any]):
        self.workdir, self.out_dir, self.config = workdir, out_dir, config
        self.md: list[str] = []
        self.notes: list[str] = []
        self.json: dict[str, Any] = {"workdir": workdir, "figures": {}, "notes": self.notes}
        self.seed = int(_cfg(config, "seed", 0) or 0)

    def add(self, *lines: str) -> None:
        self.md += list(lines)

    def omit(self, note: str) -> None:
        self.notes.append(note)


def _labels_of(config: Mapping[str, Any], field: str) -> list[str]:
    return [str(x) for x in _cfg(config, field, ())]


def _num(d: Mapping[str, Any], key: str, fmt: str) -> str:
    v = d.get(key)
    return format(float(v), fmt) if isinstance(v, (int, float)) else "?"


def _section_header(r: _Report) -> None:
    c = r.config
    info = {"protocol": str(_cfg(c, "protocol", "?")), "seed": _cfg(c, "seed", None),
            **{f"{k}_{kind}": _labels_of(c, f"data.{k}_{kind}") for k, kind in (
                ("labelled", "subjects"), ("unlabelled", "subjects"), ("validation", "subjects"),
                ("unlabelled", "actions"))}}
    info["finetune_seed"] = effective_finetune_seed(
        info["seed"], _cfg(c, "finetune.seed", -1))
    copied = str(_cfg(c, "finetune.from_workdir", "") or "")
    r.json.update(info)
    join = lambda xs: ", ".join(xs) or "-"  # noqa: E731
    seeds = (f"seed {info['seed']}" if info["finetune_seed"] == info["seed"] else
             f"seed {info['seed']}, fine-tuning seed {info['finetune_seed']}")
    r.add(f"# Report: protocol {info['protocol']}, {seeds}", "",
          (f"Stages pretrain2d to complete copied from `{copied}`. " if copied else "") +
          f"Work directory `{r.workdir}`. Labelled subjects: {join(info['labelled_subjects'])}; "
          f"unlabelled: {join(info['unlabelled_subjects'])}; "
          f"validation: {join(info['validation_subjects'])}."
          + (f" Unlabelled actions: {join(info['unlabelled_actions'])}."
             if info["unlabelled_actions"] else ""), "")


def _section_optimisation(r: _Report) -> None:
    """Table 1 and Fig. 3: the unlabelled videos before and after the trajectory optimisation."""
    r.add("## Table 1 analogue: trajectory optimisation of the unlabelled predictions", "")
    pl_path = os.path.join(r.workdir, "complete", "pseudo_labels.npz")
    if not os.path.exists(pl_path):
        r.omit("no complete/pseudo_labels.npz (stage 'complete'): Table 1 and Fig. 3 omitted")
        r.add("_Omitted: no complete/pseudo_labels.npz (stage 'complete' has not run)._", "")
        return
    pl = load_npz(pl_path, ("pred", "completed", "gt", "confidence"))
    tau = float(_cfg(r.config, "complete.tau"))
    t1 = table1(pl, tau)
    r.json["table1"] = t1
    changes = ", ".join(f"{k.replace('above_tau', 'scores > ' + TAU)} {v['MPJPE']:+.1f}%"
                        for k, v in t1["change_percent"].items() if "MPJPE" in v)
    r.add(metrics.markdown_table(t1["rows"], "", precision=2),
          f"{100 * t1['share_above_tau']:.2f}% of the joint predictions ({t1['joints_above_tau']} of "
          f"{t1['joints']} = {t1['frames']} frames x 16) have a confidence above {TAU} = {tau:g}. "
          f"Rows \"scores > {TAU}\" average the per-joint errors of those joints only (NMPJPE and "
          "PMPJPE still align whole poses). Interpolation: the confident entries linearly "
          "interpolated over time, our control (not in the paper).", "",
          f"Change of MPJPE by the optimisation: {changes}. Paper (H36M S1): {PAPER_TABLE1}.", "")
    if "bone_length_error_mm" in t1:
        r.add("Mean absolute bone-length error against the ground truth (mm): "
              + ", ".join(f"{k} {v:.1f}" for k, v in t1["bone_length_error_mm"].items()) + ".", "")
    stats_path = os.path.join(r.workdir, "complete", "solver_stats.json")
    if os.path.exists(stats_path):
        st = _load_json(stats_path)
        r.json["solver_stats"] = st
        r.add(f"Solver: {st.get('videos')} videos, {st.get('frames')} frames, "
              f"{_num(st, 'iterations_mean', '.0f')} iterations on average, {st.get('converged')} "
              f"of {st.get('videos')} converged, {_num(st, 'seconds', '.1f')} s.", "")
    f3 = figure3(pl, os.path.join(r.out_dir, "fig3_optimisation.png"), seed=r.seed)
    r.json["figures"]["fig3"] = f3
    r.add("![Fig. 3 analogue](fig3_optimisation.png)", "",
          "Fig. 3 analogue: ground truth green dashed, prediction red, optimisation blue. The first "
          f"{sum(f['why'] != 'random' for f in f3['frames'])} panels are the frames (of distinct "
          "videos) the optimisation moved most; the others are drawn at random.", "")


def finetune_schedule(config: Mapping[str, Any]) -> str | None:
    """One sentence on how the fine-tuning settings were trained (steps, batch, rate and its
    schedule, loss, the labelled share of each batch, whether the pseudo-labelled frames were
    augmented and whether the lifter's BatchNorm was frozen), from a config.json; None when it
    has no finetune field."""
    ft = _cfg(with_added_fields(config), "finetune", None)
    if not isinstance(ft, Mapping):
        return None
    length = (f"{ft['steps']} steps" if ft.get("steps") else f"{ft.get('epochs', '?')} epochs")
    loss = ("the supervised stage's heatmap loss (`finetune.loss=supervised`, our probe)"
            if ft["loss"] == "supervised" else "Eq. 2")
    fraction = float(ft["labelled_fraction"])
    mix = (f"{fraction:g} of every batch labelled frames with their ground truth "
           "(`finetune.labelled_fraction`, our extension)" if fraction > 0
           else "the pseudo-labels alone, as in the paper")
    frozen = bool(ft["freeze_batchnorm"])
    rate = ft.get("learning_rate")
    if rate == 0 and frozen:
        rate = "0 (no weight moves; nothing is trained)"
    elif rate == 0:  # RMSprop moves no weight; train-mode BatchNorm still updates its averages
        rate = ("0 (no weight moves: only the lifter's BatchNorm statistics are re-estimated on "
                "the fine-tuning batches)")
    else:
        rate = f"{rate:g}" if isinstance(rate, (int, float)) else "?"
        if ft.get("lr_schedule") == "cosine":
            rate += " decayed along a half cosine"
    plain = ("; the pseudo-labelled frames not augmented (`finetune.augment_unlabelled=False`, "
             "our probe)" if not ft["augment_unlabelled"] else "")
    statistics = ("; the lifter's BatchNorm on its running averages "
                  "(`finetune.freeze_batchnorm=True`)" if frozen else "")
    return (f"Fine-tuning: {length} at batch {ft.get('batch_size', '?')}, learning rate {rate}, "
            f"with {loss}, on {mix}{plain}{statistics}.")


def _section_finetuning(r: _Report, results: Mapping[str, Any]) -> None:
    """Tables 3 and 4: validation errors of the baseline and each fine-tuning setting."""
    t3 = table3(results)
    r.json["table3"] = t3
    schedule = finetune_schedule(r.config)
    if schedule:
        r.json["finetune_schedule"] = schedule
    r.add("## Table 3 analogue: validation errors after fine-tuning", "",
          metrics.markdown_table(t3["rows"], "setting", precision=1),
          "Errors in mm; \"%\" columns: relative change against the baseline (negative is better). "
          f"Paper (H36M S1): {PAPER_TABLE3}." + (f" {schedule}" if schedule else ""), "")
    if len(t3["settings"]) == 1:
        r.omit("no fine-tuning setting was evaluated: Tables 3-4 show the baseline only")
        r.add("_Only the baseline was evaluated (no fine-tuning setting in results.json)._", "")
    try:
        t4 = table4(results)
    except ValueError as e:
        r.omit(f"Table 4 omitted: {e}")
        return
    r.json["table4"] = t4
    r.add("## Table 4 analogue: validation MPJPE per action", "", _format_table4(t4),
          "Best setting of each row in bold; Average: over all validation frames.", "")
    try:
        ts = table4(results, by="per_subject")
    except ValueError as e:
        r.omit(f"per-subject table omitted: {e}")
        return
    r.json["table_subjects"] = ts
    r.add("Validation MPJPE per subject (not in the paper):", "", _format_table4(ts), "")


def _section_finetune_health(r: _Report) -> None:
    """Flags the fine-tuning settings whose loss diverged, above Table 3, whose rows they mislead."""
    growth = divergence.finetune_loss_growth(r.workdir)
    if not growth:
        return
    r.json["finetune_loss_growth"] = growth
    diverged = divergence.diverged_settings(growth)
    r.json["finetune_diverged"] = diverged
    for setting in diverged:
        r.add(f"**{divergence.diverged_warning(setting, growth[setting])}**", "")


def _section_scenes(r: _Report, results: Mapping[str, Any]) -> None:
    """Table 7 (per-scene errors), when evaluate wrote them (config evaluate.scenes)."""
    settings = _check_results(results)
    if not any(isinstance(s, Mapping) and s.get("per_scene") for s in settings.values()):
        return  # a protocol without scenes: nothing to say
    try:
        t7 = table7(results)
    except ValueError as e:
        r.omit(f"Table 7 omitted: {e}")
        return
    r.json["table7"] = t7
    r.add("## Table 7 analogue: validation errors per scene", "",
          metrics.markdown_table(t7["rows"], "scene / setting", precision=1),
          "Errors in mm; \"MPJPE %\": change against the baseline in the same scene. Frames per "
          "scene: " + ", ".join(f"{k} {v}" for k, v in t7["frames"].items()) + ".", "")


def _section_validation_poses(r: _Report, settings: Mapping[str, Any]) -> None:
    """Table 5/6 (action-wise protocols) and Fig. 4, from evaluate/predictions_<setting>.npz."""
    preds: dict[str, dict[str, np.ndarray]] = {}
    for name in settings:
        p = os.path.join(r.workdir, "evaluate", f"predictions_{name}.npz")
        if not os.path.exists(p):
            continue
        preds[name] = d = load_npz(p, ("sequence_id", "frame_index", "action", "pred", "gt"))
        # The figures and Table 5 recompute errors from these files: say if they do not match.
        diff = abs(float(metrics.mpjpe(np.asarray(d["pred"], np.float64),
                                       np.asarray(d["gt"], np.float64)).mean())
                   - float(settings[name]["overall"]["mpjpe"]))
        if diff > 0.05:
            r.omit(f"results.json and predictions_{name}.npz disagree on MPJPE by {diff:.2f} mm")
    actions = r.json.get("unlabelled_actions") or []
    if actions and preds:
        t5 = table5(preds, actions)
        r.json["table5"] = t5
        r.add("## Table 5/6 analogue: validation MPJPE of the unlabelled actions", "",
              metrics.markdown_table({SETTING_LABELS.get(k, k): v for k, v in t5["rows"].items()},
                                     "setting"),
              "Average: over the validation frames of these actions.", "")
    elif actions:
        r.omit("action-wise protocol but no evaluate/predictions_*.npz: Table 5 omitted")
    tuned = FULL_METHOD if FULL_METHOD in preds else None
    others = [s for s in preds if s != "baseline"]
    if tuned is None and others:  # no full-method run: show the best evaluated setting, and say so
        tuned = min(others, key=lambda s: float(settings[s]["overall"]["mpjpe"]))
        r.omit(f"Fig. 4 shows setting {tuned!r} (the best evaluated): {FULL_METHOD!r} absent")
    if "baseline" not in preds or tuned is None:
        r.omit("Fig. 4 omitted: it needs evaluate/predictions_baseline.npz and the predictions "
               "of a fine-tuned setting")
        return
    f4 = figure4(preds["baseline"], preds[tuned], os.path.join(r.out_dir, "fig4_finetuning.png"),
                 seed=r.seed)
    f4["setting"] = tuned
    r.json["figures"]["fig4"] = f4
    r.add("## Figure 4 analogue: validation poses before and after fine-tuning", "",
          "![Fig. 4 analogue](fig4_finetuning.png)", "",
          f"Ground truth green dashed, baseline red, fine-tuned with setting '{tuned}' blue. The "
          f"first {sum(f['why'] != 'random' for f in f4['frames'])} panels are the frames (of "
          "distinct videos) whose MPJPE fell most; the others are drawn at random.", "")


def _section_curves(r: _Report) -> None:
    curves = training_curve_figures(r.workdir, r.out_dir)
    r.json["figures"].update(curves)
    if not curves:
        r.omit("no metrics.jsonl with losses under pretrain2d/, train3d/ or finetune/*/: "
               "no training curves")
        return
    r.add("## Training curves", "", *[f"![{k}]({os.path.basename(p)})" for k, p in curves.items()], "")


def write_report(workdir: str) -> str:
    """Writes W/report/report.md, W/report/report.json and the PNG figures; returns the markdown.

    Required: W/config.json and W/evaluate/results.json (FileNotFoundError naming the file and the
    stage that writes it). Optional inputs (pseudo-labels, per-setting predictions, metrics.jsonl)
    add their tables and figures; when absent, the section is left out and a note says why.
    """
    workdir = os.path.abspath(workdir)
    config = _load_json(_require(workdir, "config.json"))
    results_path = _require(workdir, "evaluate/results.json")
    results = _load_json(results_path)
    settings = _check_results(results, results_path)
    out_dir = os.path.join(workdir, "report")
    os.makedirs(out_dir, exist_ok=True)
    r = _Report(workdir, out_dir, config)
    if not os.path.exists(os.path.join(workdir, "evaluate", "DONE.json")):
        r.omit("the evaluate stage is not marked done: its results may be partial")
    _section_header(r)
    _section_optimisation(r)
    _section_finetune_health(r)
    _section_finetuning(r, results)
    _section_scenes(r, results)
    _section_validation_poses(r, settings)
    _section_curves(r)
    if r.notes:
        r.add("## Notes", "", *[f"- {n}" for n in r.notes], "")
    text = "\n".join(r.md)
    write_atomic(os.path.join(out_dir, "report.md"), text)
    write_atomic(os.path.join(out_dir, "report.json"), json.dumps(r.json, indent=2))
    return text


# ----------------------------------------------------------------------------------------------
# Several work directories: seeds and the number of labelled subjects (Fig. 5)


def collect_runs(workdirs: Sequence[str]) -> list[dict[str, Any]]:
    """Per work directory: protocol, seed, labelled subjects and the overall validation errors.

    Returns [{"workdir", "protocol", "seed", "n_labelled", "action_wise", "overall": {setting:
    {metric: mm}}}]. Raises FileNotFoundError for a work directory without config.json or
    evaluate/results.json.
    """
    if not workdirs:
        raise ValueError("no work directories given")
    runs = []
    for w in workdirs:
        w = os.path.abspath(w)
        config = _load_json(_require(w, "config.json"))
        path = _require(w, "evaluate/results.json")
        settings = _check_results(_load_json(path), path)
        runs.append({
            "workdir": w, "protocol": str(_cfg(config, "protocol", "?")),
            "seed": _cfg(config, "seed", None),
            "n_labelled": len(_cfg(config, "data.labelled_subjects")),
            "action_wise": bool(_cfg(config, "data.unlabelled_actions", ())),
            "overall": {s: {m: float(v["overall"][m]) for m in METRICS} for s, v in settings.items()},
        })
    return runs


def _mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof 1; None for a single value)."""
    x = np.asarray(values, np.float64)
    return float(x.mean()), (float(x.std(ddof=1)) if x.size > 1 else None)


def seeds_table(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean and spread over the runs (seeds) of each protocol and setting.

    Returns {"<protocol> / <setting>": {"runs": n, "<METRIC> mean": mm, "<METRIC> std": mm or None,
    "<METRIC> % mean", "<METRIC> % std": change against the same run's baseline, percent}}. The
    std is the sample standard deviation (ddof 1), None for a single run.
    """
    groups: dict[str, list[tuple[dict[str, float], dict[str, float]]]] = {}
    for r in runs:
        for s in _ordered_settings(r["overall"]):
            groups.setdefault(f"{r['protocol']} / {s}", []).append(
                (r["overall"][s], r["overall"]["baseline"]))
    out = {}
    for key, vals in groups.items():
        row: dict[str, Any] = {"runs": len(vals)}
        for m in METRICS:
            name = METRIC_NAMES[m]
            row[f"{name} mean"], row[f"{name} std"] = _mean_std([v[m] for v, _ in vals])
            row[f"{name} % mean"], row[f"{name} % std"] = _mean_std(
                [100.0 * (v[m] - b[m]) / b[m] for v, b in vals])
        out[key] = row
    return out


def figure5(workdirs: Sequence[str], path: str) -> dict[str, Any]:
    """Fig. 5 analogue: validation error against the number of labelled subjects, for the baseline
    and the full method ("bone"), one panel per metric; runs with the same number of labelled
    subjects (seeds) are averaged, their sample standard deviation drawn as error bars. Action-wise
    runs are left out (their labelled subjects do not measure the amount of labelled data).

    Args:
      workdirs: work directories of subject-wise runs (S1, S15, S156, S1567, seeds...).
      path: the PNG to write.
    Returns:
      {"path", "points": {metric: {"baseline" | "fine-tuned": [[n_labelled, mean mm, std mm or
      None, runs], ...]}}, "runs": [workdir, ...], "notes": [...]}.
    """
    runs = collect_runs(workdirs)
    notes = []
    acc: dict[str, dict[str, dict[int, list[float]]]] = {}
    used = []
    for r in runs:
        if r["action_wise"]:
            notes.append(f"{r['workdir']}: action-wise protocol {r['protocol']}, left out")
            continue
        used.append(r["workdir"])
        for setting, label in (("baseline", "baseline"), (FULL_METHOD, "fine-tuned")):
            if setting not in r["overall"]:
                notes.append(f"{r['workdir']}: no {setting!r} results")
                continue
            for m in METRICS:
                acc.setdefault(METRIC_NAMES[m], {}).setdefault(label, {}).setdefault(
                    r["n_labelled"], []).append(r["overall"][setting][m])
    if not acc:
        raise ValueError("figure5: no subject-wise run among the work directories")
    points = {metric: {label: sorted([n, *_mean_std(v), len(v)] for n, v in by_n.items())
                       for label, by_n in series.items()} for metric, series in acc.items()}
    viz.error_panels_vs_labelled(
        {metric: {label: [(p[0], p[1], p[2] or 0.0) for p in pts] for label, pts in series.items()}
         for metric, series in points.items()}, path, ylabel="validation error (mm)")
    return {"path": path, "points": points, "runs": used, "notes": notes}


def _pm(mean: float, std: float | None, unit: str = "") -> str:
    return f"{mean:.1f}{unit}" if std is None else f"{mean:.1f} ± {std:.1f}{unit}"


def write_combined_report(workdirs: Sequence[str], out_dir: str) -> str:
    """Report of several runs in out_dir (report.md, report.json, fig5_labelled_subjects.png):
    each run's overall errors, mean and spread per protocol and setting, and Fig. 5 when the
    runs differ in their number of labelled subjects. Returns the markdown."""
    runs = collect_runs(workdirs)
    os.makedirs(out_dir, exist_ok=True)
    per_run = {}
    for r in runs:
        name = f"{os.path.basename(r['workdir'])} ({r['protocol']}, seed {r['seed']})"
        while name in per_run:  # two directories of the same name elsewhere
            name += "'"
        per_run[name] = {SETTING_LABELS.get(s, s): r["overall"][s]["mpjpe"]
                         for s in _ordered_settings(r["overall"])}
    seeds = seeds_table(runs)
    seeds_md = {k: {"runs": str(v["runs"]),
                    **{n: _pm(v[f"{n} mean"], v[f"{n} std"]) for n in METRIC_NAMES.values()},
                    "MPJPE vs baseline": _pm(v["MPJPE % mean"], v["MPJPE % std"], "%")}
                for k, v in seeds.items()}
    md = ["# Combined report", "", f"{len(runs)} work directories.", "",
          "## Validation MPJPE of each run (mm)", "", metrics.markdown_table(per_run, "run"),
          "## Mean ± sample standard deviation over runs", "",
          metrics.markdown_table(seeds_md, "protocol / setting"),
          "Errors in mm; \"vs baseline\": change against the same run's baseline, averaged over "
          "runs. No ± where there is a single run.", ""]
    rep: dict[str, Any] = {"runs": runs, "seeds": seeds}
    subject_wise = {r["n_labelled"] for r in runs if not r["action_wise"]}
    if len(subject_wise) > 1:
        f5 = figure5(workdirs, os.path.join(out_dir, "fig5_labelled_subjects.png"))
        rep["fig5"] = f5
        table = {f"{label} {metric}": {str(p[0]): _pm(p[1], p[2]) for p in pts}
                 for metric, series in f5["points"].items() for label, pts in series.items()}
        md += ["## Figure 5 analogue: error against the number of labelled subjects", "",
               "![Fig. 5 analogue](fig5_labelled_subjects.png)", "",
               metrics.markdown_table(table, "series / labelled subjects"), ""]
        md += [f"- {n}" for n in f5["notes"]]
    else:
        md += ["_Fig. 5 omitted: the subject-wise runs do not differ in their number of labelled "
               "subjects._", ""]
    text = "\n".join(md)
    write_atomic(os.path.join(out_dir, "report.md"), text)
    write_atomic(os.path.join(out_dir, "report.json"), json.dumps(rep, indent=2))
    return text


def report_workdirs(workdirs: Sequence[str], out: str = "") -> str:
    """What the CLI does: each work directory's report, then (several, or `out` given) the combined
    report in `out` (default `report_combined` in their common parent). Prints progress lines;
    returns the markdown to show (the single report, or the combined one)."""
    workdirs = [w for w in workdirs if w]
    if not workdirs:
        raise ValueError("no work directories given")
    text = ""
    for i, w in enumerate(workdirs):
        text = write_report(w)
        print(f"[report {i + 1}/{len(workdirs)}] {os.path.join(os.path.abspath(w), 'report', 'report.md')}",
              flush=True)
    if len(workdirs) > 1 or out:
        out = out or os.path.join(os.path.commonpath([os.path.abspath(w) for w in workdirs]),
                                  "report_combined")
        text = write_combined_report(workdirs, out)
        print(f"[report] combined report in {out}", flush=True)
    return text


def main(argv: Sequence[str]) -> None:
    from absl import app

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not _WORKDIRS.value:
        raise app.UsageError("--workdirs is required, e.g. --workdirs=runs/s1,runs/s15")
    print(report_workdirs(_WORKDIRS.value, _OUT.value))


if __name__ == "__main__":
    from absl import app, flags

    _WORKDIRS = flags.DEFINE_list("workdirs", None, "Comma-separated work directories.")
    _OUT = flags.DEFINE_string("out", "", "Directory of the combined report (several workdirs).")
    app.run(main)
