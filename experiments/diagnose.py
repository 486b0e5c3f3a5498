"""Diagnostics of a finished run: how good the 2D detector is, and what the completion can do.

    python -m experiments.diagnose --workdir=runs/demo_s1 [--taus=0.7,0.2,0.16] [--every=8]
        [--view_frames=768] [--fit_frames=512] [--reference_workdir=runs/t3d9600_s1]
        [--sections=fit,...]

Prints JSON and the same as markdown tables (and writes `<workdir>/diagnose.json` and
`<workdir>/diagnose.md`):
- detector: 2D argmax error of the pretrained detector (heatmap px) and PCK at 1 and 2 px on the
  first `--frames` frames of its own training set, of the labelled subjects and of validation
  (equal errors on training and validation frames mean the detector underfits);
- unlabelled_error_components: the baseline's error on every unlabelled frame split into its
  image-plane part (bounded by the frozen detector) and its depth part (mm);
- completion: on every `--every`-th unlabelled video, for each tau, the share of confident joints,
  the MPJPE of the raw predictions, of the completion (Eq. 1) and of linear interpolation, and
  the error of the unconfident entries before and after completion;
- moving_average: the MPJPE of the raw predictions averaged over 3 frames (a smoother that also
  moves the confident entries, which Eq. 1 holds exactly);
- pseudo_label_own_error_share: the share of the pseudo-labels' error that lies along the
  network's own (single-view) prediction error (`own_error_share`; `--reference_workdir` names
  the run whose predict stage holds those predictions, when this run's labels came from views);
- error_persistence: the raw and completed pseudo-labels' error split into its per-video constant
  part and the correlation of the rest over 1, 2, 4 and 8 frames, next to the true motion's:
  what a temporal prior could remove and what it left;
- test_time_views: the baseline's MPJPE on `--view_frames` random unlabelled frames seen as they
  are, flipped, rotated and scaled (mapped back to the original camera frame), and of the
  average over those views: how much of its error is view-dependent noise.
- fit: the MPJPE of the baseline and of every fine-tuned network of the run on `--fit_frames`
  random frames each of the labelled training frames, of the unlabelled videos and of
  validation: the baseline's gap between its own training frames and new subjects' is the
  headroom fine-tuning works in; the fine-tuned rows show how much of what a network learns on
  the unlabelled videos carries over to validation subjects.
- pose_scale: the size of the poses (mean joint distance from the pelvis, mm) that each network
  of the run predicts on validation, against the truth's, and of the pseudo-labels; and what
  shrinking the baseline's validation predictions about the pelvis alone does to their MPJPE:
  the part of a fine-tuning gain that a smaller pose, not a better one, would give.
- label_weights: whether Eq. 4's weights pick out the completed labels' bad joints: the labels'
  error above and below tau, the rank correlation of confidence and error, and the weighted
  against the unweighted label MSE, at the run's tau and at others;
- bone_targets: the per-video bone lengths the bone term (Eq. 5) trains towards, and the
  predictions' and labels' own, against the true bone lengths (error and ratio).
- validation_bones: what the bone term asks of a network, on every evaluated network's
  validation predictions: the spread of each frame's bone lengths about its video's median,
  and their error and ratio against the true bone lengths.
`--sections` computes only the named sections; the others keep what an earlier diagnose.json of
the work directory holds.
Works on the embedded dataset's protocols (it reads the `pretrain2d` split).
"""
from __future__ import annotations

import functools
import json
import os
from typing import Any, Mapping, Sequence

import jax
import ml_collections
import numpy as np
from absl import app, flags

from experiments import common, datasets, stages
from experiments import workdir as workdir_lib
from experiments.workdir import Workdir
from hourglass_jax import export, geometry, losses, metrics, predictor, skeleton
from hourglass_jax.data import pipeline

FLAGS = flags.FLAGS


def _define_flags() -> None:
    # Defined only when run as a program: importing this module next to experiments.main (which
    # has its own --workdir) must not clash.
    flags.DEFINE_string("workdir", None, "A work directory with pretrain2d and predict done.")
    flags.DEFINE_string("taus", "0.7,0.2", "Comma-separated confidence thresholds to try.")
    flags.DEFINE_integer("every", 8, "Use every n-th unlabelled video for the completion check.")
    flags.DEFINE_integer("frames", 512, "Frames per split for the detector check.")
    flags.DEFINE_string("reference_workdir", None, "Work directory whose predict stage holds the "
                        "network's own single-view predictions of the same frames, for "
                        "`pseudo_label_own_error_share` (default: this work directory's).")
    flags.DEFINE_integer("view_frames", 768, "Random unlabelled frames for the test-time view "
                         "check (0: skip it).")
    flags.DEFINE_integer("fit_frames", 512, "Random frames per split for the networks' fit "
                         "check (0: skip it).")
    flags.DEFINE_list("sections", list(SECTIONS), "The sections to compute (default: all).")


# The sections of the result, in the order they are computed and printed.
SECTIONS: tuple[str, ...] = ("detector", "unlabelled_error_components", "completion",
                             "pseudo_label_own_error_share", "error_persistence",
                             "test_time_views", "fit", "pose_scale", "label_weights",
                             "bone_targets", "validation_bones")


def detector_errors(config, workdir: Workdir, frames: int) -> dict[str, Any]:
    """2D argmax error (heatmap px) and PCK@1/2 px of the pretrained detector per split."""
    module, cfg, variables = export.load_model(workdir.require("pretrain2d", stages.MODEL_DIR),
                                               bn_axis_name=None)
    spec = predictor.volume_spec(cfg)
    heatmaps = jax.jit(lambda v, x: module.apply(v, x, train=False)[0][-1])
    srcs = common.sources(config)
    out = {}
    for name, split, subjects in (("own_training_set", "pretrain2d", None),
                                  ("labelled", "train", config.data.labelled_subjects),
                                  ("validation", "validation", config.data.validation_subjects)):
        batch = next(pipeline.eval_batches(srcs[split], frames, subjects=subjects))
        hm = np.asarray(heatmaps(variables, batch["image"]))[batch["mask"]]
        n, h, w, j = hm.shape
        flat = hm.reshape(n, h * w, j).argmax(1)
        xy = np.stack([flat % w, flat // w], -1)
        gt = np.asarray(geometry.crop_px_to_heatmap(batch["pose2d"][batch["mask"]], spec))
        err = np.linalg.norm(xy - gt, axis=-1)
        out[name] = {"frames": int(n), "error_px": float(err.mean()),
                     "pck_1px": float((err < 1).mean()), "pck_2px": float((err < 2).mean())}
    return out


def error_components(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Where the error of root-relative camera-frame poses lies: in the image plane or in depth.

    Args:
      pred, gt: (N, 16, 3) mm, camera frame (z along the optical axis), root-relative.
    Returns:
      {"mpjpe": mean 3D error, "image_plane": mean ||(dx, dy)||, "depth": mean |dz|, and the
      root-mean-square error along each camera axis "rms_x", "rms_y", "rms_z"}, mm, over every
      joint. The image-plane part is what the frozen 2D detector's features bound; the depth
      part is the volumetric stack's own.
    """
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 3:
        raise ValueError(f"pred and gt must both be (N, J, 3) mm, got {pred.shape} and {gt.shape}")
    d = pred - gt
    rms = np.sqrt((d ** 2).mean(axis=(0, 1)))
    return {"mpjpe": float(np.linalg.norm(d, axis=-1).mean()),
            "image_plane": float(np.linalg.norm(d[..., :2], axis=-1).mean()),
            "depth": float(np.abs(d[..., 2]).mean()),
            "rms_x": float(rms[0]), "rms_y": float(rms[1]), "rms_z": float(rms[2])}


def own_error_share(labels: np.ndarray, pred: np.ndarray, gt: np.ndarray) -> float:
    """How much of the labels' error is the network's own prediction error.

    Each frame's label error (labels - gt, flattened to 48 values, mm) is projected onto that
    frame's prediction error (pred - gt). Returns the projections' share of the labels' squared
    error, summed over frames: 1 for labels that err along the prediction (the raw predictions
    themselves, or any shrinking of their error), 0 for errors orthogonal to it (on average,
    errors taken from other frames). The `shuffled_error` control's labels are as far from the
    truth as the predictions with a share near 0; what the pseudo-labels teach tracks this share
    (docs/experiments.md, "Whose error the labels carry").

    Args:
      labels, pred, gt: (N, 16, 3) mm, root-relative, the same frames in the same order.
    """
    labels, pred, gt = (np.asarray(a, np.float64) for a in (labels, pred, gt))
    if not labels.shape == pred.shape == gt.shape or labels.ndim != 3:
        raise ValueError(f"labels, pred and gt must all be (N, J, 3) mm, got {labels.shape}, "
                         f"{pred.shape} and {gt.shape}")
    label_err = (labels - gt).reshape(len(gt), -1)
    own = (pred - gt).reshape(len(gt), -1)
    total = (label_err ** 2).sum()
    if total == 0:
        raise ValueError("the labels equal the true poses: they have no error to attribute")
    own_sq = (own ** 2).sum(axis=1)
    # The squared length of each frame's projection, <e_label, e_own>^2 / |e_own|^2 (0 where
    # the prediction is exact and there is no direction to project onto).
    projected = np.where(own_sq > 0, (label_err * own).sum(axis=1) ** 2
                         / np.maximum(own_sq, np.finfo(np.float64).tiny), 0.0)
    return float(projected.sum() / total)


PERSISTENCE_LAGS = (1, 2, 4, 8)


def error_persistence(error: np.ndarray, sequence_id: np.ndarray, frame_index: np.ndarray,
                      lags: Sequence[int] = PERSISTENCE_LAGS) -> dict[str, Any]:
    """How the error of a video's poses is spread over time: what a temporal prior can remove.

    Args:
      error: (N, J, 3) mm per frame, e.g. prediction - truth (or the true poses themselves, to
        see how fast the motion changes).
      sequence_id, frame_index: (N,) ints, any row order.
      lags: distances to correlate, in frames of a video taken in frame order (rows, where a
        video's frames were subsampled).

    Returns:
      video_constant_share: the share of the squared error that is each video's mean error. A
        constant offset over a whole video fits every low-rank and smoothness prior; no temporal
        completion can remove it.
      lag_correlation: {lag: r}, the pooled correlation between the per-video-centred errors of
        frames `lag` apart in the same video (sum <e_t, e_t+lag> over sqrt of both sums of
        squares); None where no video is longer than the lag or nothing varies. Error that
        decorrelates faster than the motion does can be told apart from it.
      frames, videos: how many.
    """
    error = np.asarray(error, np.float64)
    if error.ndim != 3 or error.shape[-1] != 3:
        raise ValueError(f"error must be (N, J, 3) mm, got {error.shape}")
    if not len(sequence_id) == len(frame_index) == len(error):
        raise ValueError(f"sequence_id ({len(sequence_id)}), frame_index ({len(frame_index)}) and "
                         f"error ({len(error)}) must have one entry per frame")
    if not np.isfinite(error).all():
        raise ValueError("error has NaN or infinite entries")
    flat = error.reshape(len(error), -1)
    total = float((flat ** 2).sum())
    if total == 0:
        raise ValueError("the error is zero everywhere: nothing to attribute")
    videos = common.video_rows(sequence_id, frame_index)
    centred, constant = [], 0.0
    for rows in videos:
        mean = flat[rows].mean(axis=0)
        constant += len(rows) * float((mean ** 2).sum())
        centred.append(flat[rows] - mean)
    correlation: dict[int, float | None] = {}
    for lag in lags:
        pairs = [(c[:-lag], c[lag:]) for c in centred if len(c) > lag]
        dot = sum(float((a * b).sum()) for a, b in pairs)
        norm = np.sqrt(sum(float((a ** 2).sum()) for a, _ in pairs)
                       * sum(float((b ** 2).sum()) for _, b in pairs))
        # A varying part below 1e-20 of the squared error is the mean subtraction's rounding.
        correlation[int(lag)] = dot / norm if pairs and norm > 1e-20 * total else None
    return {"frames": int(len(error)), "videos": len(videos),
            "video_constant_share": constant / total, "lag_correlation": correlation}


def pseudo_label_persistence(workdir: Workdir) -> dict[str, Any]:
    """`error_persistence` of the work directory's raw and completed pseudo-labels' error, and of
    the true motion (the poses themselves) as the reference the error's decorrelation is to be
    compared with."""
    labels = stages._load_npz(workdir.require("complete", "pseudo_labels.npz"))
    ids = (labels["sequence_id"], labels["frame_index"])
    return {"pred": error_persistence(labels["pred"] - labels["gt"], *ids),
            "completed": error_persistence(labels["completed"] - labels["gt"], *ids),
            "motion": error_persistence(labels["gt"], *ids)}


def pose_size(poses: np.ndarray) -> float:
    """Mean distance of the joints from the root (pelvis) over (N, 16, 3) mm poses, mm."""
    p = np.asarray(poses, np.float64)
    if p.ndim != 3 or p.shape[1:] != (skeleton.NUM_JOINTS, 3):
        raise ValueError(f"poses must be (N, {skeleton.NUM_JOINTS}, 3) mm, got {p.shape}")
    return float(np.linalg.norm(common.root_relative(p), axis=-1).mean())


def scaled_about_root(poses: np.ndarray, factor: float) -> np.ndarray:
    """(N, 16, 3) mm poses with every joint's offset from the root multiplied by `factor`."""
    p = np.asarray(poses, np.float64)
    offsets = common.root_relative(p)
    return p + (factor - 1.0) * offsets


SHRINK_FACTORS = (0.8, 0.85, 0.9, 0.95, 1.0)
# The grid on which each network's best single scale factor (fitted to the truth: a diagnostic,
# not a method) is searched.
FIT_FACTORS = tuple(np.round(np.arange(0.8, 1.2001, 0.01), 2).tolist())


def best_scale(pred: np.ndarray, gt: np.ndarray,
               factors: Sequence[float] = FIT_FACTORS) -> tuple[float, float]:
    """(factor, MPJPE mm) of the one factor in `factors` that, scaling every pose of `pred`
    about its root, gives the lowest MPJPE against `gt` ((N, 16, 3) mm each)."""
    errors = [float(metrics.mpjpe(scaled_about_root(pred, f), gt).mean()) for f in factors]
    i = int(np.argmin(errors))
    return float(factors[i]), errors[i]


def validation_predictions(workdir: Workdir) -> dict[str, dict[str, np.ndarray]]:
    """Every evaluated network's validation predictions (evaluate/predictions_<name>.npz), by
    name: the baseline and each fine-tuning setting."""
    evaluated = os.path.dirname(workdir.require("evaluate", "predictions_baseline.npz"))
    return {name[len("predictions_"):-len(".npz")]: stages._load_npz(os.path.join(evaluated, name))
            for name in sorted(os.listdir(evaluated))
            if name.startswith("predictions_") and name.endswith(".npz")}


def bone_consistency(pred: np.ndarray, gt: np.ndarray, sequence_id: np.ndarray
                     ) -> dict[str, float]:
    """What Eq. 5 asks of a network, measured on its predictions (N, 16, 3) mm of whole videos:
    `spread`, the mean absolute deviation (mm) of each frame's bone lengths from its video's
    median (0 for a skeleton that keeps its size); `abs_error`, the mean absolute error (mm) of
    the bone lengths against the truth's; `ratio_to_truth`, their mean ratio to the truth's."""
    lengths = skeleton.bone_lengths(np.asarray(pred, np.float64))
    truth = skeleton.bone_lengths(np.asarray(gt, np.float64))
    medians = stages.video_medians(lengths, sequence_id)
    return {"spread": float(np.abs(lengths - medians).mean()),
            "abs_error": float(np.abs(lengths - truth).mean()),
            "ratio_to_truth": float((lengths / truth).mean())}


def validation_bones(workdir: Workdir) -> dict[str, dict[str, float]]:
    """`bone_consistency` of every evaluated network's validation predictions, by name: whether
    the bone term (Eq. 5) made the fine-tuned network's skeletons keep their size within a video
    and come closer to the true bone lengths."""
    return {name: bone_consistency(d["pred"], d["gt"], d["sequence_id"])
            for name, d in validation_predictions(workdir).items()}


def pose_scale(workdir: Workdir, factors: Sequence[float] = SHRINK_FACTORS) -> dict[str, Any]:
    """Pose sizes (`pose_size`, mm) of every network's validation predictions
    (evaluate/predictions_<setting>.npz) with their ratio to the truth's, their MPJPE and
    their MPJPE at the one scale factor that fits them best (`best_scale`); the
    MPJPE change (%) of the baseline's validation predictions scaled about the root by each of
    `factors`; and the sizes of the pseudo-labels (pred, completed, interp, gt) when the
    complete stage's output is there."""
    predictions = validation_predictions(workdir)
    base = predictions["baseline"]
    truth_size = pose_size(base["gt"])  # every network predicts the same validation frames
    networks = {}
    for name, d in predictions.items():
        size = pose_size(d["pred"])
        factor, fitted = best_scale(d["pred"], d["gt"])
        networks[name] = {"size": size, "size_to_truth": size / truth_size,
                          "mpjpe": float(metrics.mpjpe(d["pred"], d["gt"]).mean()),
                          "best_factor": factor, "mpjpe_at_best_factor": fitted}
    before = networks["baseline"]["mpjpe"]
    shrunk = {str(f): 100.0 * (float(metrics.mpjpe(scaled_about_root(base["pred"], f),
                                                    base["gt"]).mean()) / before - 1.0)
              for f in factors}
    out: dict[str, Any] = {"validation_truth_size": truth_size,
                           "networks": networks, "baseline_scaled_mpjpe_change": shrunk}
    labels_path = os.path.join(workdir.path, "complete", "pseudo_labels.npz")
    if os.path.exists(labels_path):
        labels = stages._load_npz(labels_path)
        out["pseudo_label_sizes"] = {k: pose_size(labels[k]) for k in
                                     ("gt", "pred", "completed", "interp") if k in labels}
    return out


# Eq. 4 thresholds at which `label_weights` also reports what the weights would do.
WEIGHT_TAUS = (0.16, 0.3, 0.5, 0.7, 0.9, 1.0)


def _rank_correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rank correlation of two equally long samples (ties get their mean rank);
    None when either is constant."""
    from scipy import stats
    a, b = np.ravel(a), np.ravel(b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(stats.spearmanr(a, b).statistic)


def label_weights(labels: Mapping[str, np.ndarray], tau: float,
                  taus: Sequence[float] = WEIGHT_TAUS) -> dict[str, Any]:
    """What Eq. 4's weights W(s) (1 above tau, else the confidence s) do to the completed
    pseudo-labels' error: the share of joints they weigh down, the labels' mean joint error
    (mm) on the joints above and at or below tau, Spearman's rank correlation of the
    confidences with those errors (negative: the less confident joints are the worse
    labelled), and the weighted mean squared error sum(W e^2) / sum(W) against the unweighted
    one (a ratio below 1: the weights move the loss off the bad labels). The last two also for
    each of `taus`. `labels`: the complete stage's pseudo_labels.npz (completed, gt, confidence).
    """
    # Root-relative, as Eq. 2 compares them.
    err = metrics.joint_errors(np.asarray(labels["completed"], np.float64),
                               np.asarray(labels["gt"], np.float64), "mpjpe")
    conf = np.asarray(labels["confidence"], np.float64)
    if conf.shape != err.shape:
        raise ValueError(f"confidence must be {err.shape} (one per label joint), got {conf.shape}")
    squared = float(np.mean(err ** 2))

    def weighted(t: float) -> dict[str, float]:
        w = np.asarray(losses.fidelity_weights(conf, t), np.float64)
        return {"share_weighted_down": float(np.mean(conf <= t)),
                "weighted_mse_ratio": float(np.sum(w * err ** 2) / np.sum(w) / squared)}

    above = conf > tau
    return {"tau": float(tau), "joints": int(err.size),
            "error_above_tau": float(err[above].mean()) if above.any() else None,
            "error_at_or_below_tau": float(err[~above].mean()) if (~above).any() else None,
            "rank_correlation": _rank_correlation(conf, err),
            **weighted(tau),
            "taus": {str(t): weighted(t) for t in taus}}


def bone_targets(labels: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Eq. 5's targets against the truth: the per-video bone lengths the bone term trains
    towards (labels["bone_lengths"]: per-video medians of the completed poses, or of the raw
    predictions with `complete.bone_lengths_from="pred"`), and the per-frame bone
    lengths of the raw predictions, of the completed labels and of the truth. Mean absolute
    error (mm) and mean ratio to the true length, per frame and bone: a ratio below 1 means
    short bones, which the bone term then enforces."""
    truth = skeleton.bone_lengths(np.asarray(labels["gt"], np.float64))
    rows = {"video_targets": np.asarray(labels["bone_lengths"], np.float64),
            "pred": skeleton.bone_lengths(np.asarray(labels["pred"], np.float64)),
            "completed": skeleton.bone_lengths(np.asarray(labels["completed"], np.float64))}
    out: dict[str, Any] = {"truth_mean_length": float(truth.mean())}
    for name, lengths in rows.items():
        if lengths.shape != truth.shape:
            raise ValueError(f"{name} bone lengths must be {truth.shape}, got {lengths.shape}")
        out[name] = {"abs_error": float(np.abs(lengths - truth).mean()),
                     "ratio_to_truth": float((lengths / truth).mean())}
    return out


def completion_checks(config, preds: dict[str, np.ndarray], taus: Sequence[float],
                      every: int) -> dict[str, Any]:
    """Completion vs interpolation vs a 3-frame moving average on a subset of the videos."""
    keep = np.isin(preds["sequence_id"], np.unique(preds["sequence_id"])[::every])
    preds = {k: v[keep] for k, v in preds.items()}
    pred, gt = preds["pred"], preds["gt"]
    smooth = pred.copy()
    for rows in common.video_rows(preds["sequence_id"], preds["frame_index"]):
        p = pred[rows]
        if len(rows) > 2:
            smooth[rows[1:-1]] = (p[:-2] + p[1:-1] + p[2:]) / 3.0
    raw_err = np.linalg.norm(pred - gt, axis=-1)
    out = {"videos": int(len(np.unique(preds["sequence_id"]))), "frames": int(len(pred)),
           "predictions_mpjpe": float(raw_err.mean()),
           "moving_average_mpjpe": float(metrics.mpjpe(smooth, gt).mean()), "taus": {}}
    for tau in taus:
        done, interp, observed, _ = stages.complete_videos(
            preds, tau, stages.solver_config(config), config.complete.max_window)
        err = np.linalg.norm(done - gt, axis=-1)
        out["taus"][f"{tau:g}"] = {
            "share_confident": float(observed.mean()),
            "completed_mpjpe": float(err.mean()),
            "interpolation_mpjpe": float(metrics.mpjpe(interp, gt).mean()),
            "confident_error": float(raw_err[observed].mean()) if observed.any() else None,
            "unconfident_error_before": float(raw_err[~observed].mean()) if (~observed).any()
            else None,
            "unconfident_error_after": float(err[~observed].mean()) if (~observed).any()
            else None}
    return out


def _baseline(config, workdir: Workdir) -> tuple[Any, Any]:
    """(predict function, variables) of the work directory's train3d network."""
    return _network(config, workdir.require("train3d", stages.MODEL_DIR))


def _network(config, model_dir: str) -> tuple[Any, Any]:
    """(predict function, variables) of an exported network."""
    _, cfg, variables = export.load_model(model_dir, bn_axis_name=None)
    return predictor.make_predictor(cfg, config.model.softargmax_k), variables


def run_networks(config, workdir: Workdir) -> dict[str, str]:
    """{name: model directory} of the run's networks: "baseline" (train3d) and every fine-tuned
    setting whose network exists (in `stages.SETTINGS` order), whether or not the stored config
    lists it."""
    networks = {"baseline": workdir.require("train3d", stages.MODEL_DIR)}
    for setting in stages.SETTINGS:
        path = os.path.join(workdir.path, "finetune", setting, stages.MODEL_DIR)
        if os.path.isdir(path):
            networks[setting] = path
    return networks


def _random_frames(source, subjects, actions, frames: int, seed: int
                   ) -> tuple[np.ndarray, list[dict], np.ndarray]:
    """`frames` random records of `source` that pass the subjects/actions filters (all of them
    when fewer): (sorted record numbers, decoded samples, root-relative true poses (n, 16, 3) mm
    float64)."""
    candidates = pipeline.select(pipeline.read_metadata(source),
                                 **stages._filters(subjects, actions))
    rng = np.random.default_rng(seed)
    index = np.sort(rng.choice(candidates, min(frames, len(candidates)), replace=False))
    samples = [pipeline.decode(source[int(i)], int(i)) for i in index]
    gt = np.stack([s["pose3d"] for s in samples]).astype(np.float64)
    return index, samples, gt - gt[:, skeleton.ROOT:skeleton.ROOT + 1]


FIT_SPLITS: tuple[str, ...] = ("labelled", "unlabelled", "validation")


def network_fit(config, model_dirs: Mapping[str, str], frames: int, seed: int = 0,
                labels: Mapping[str, np.ndarray] | None = None,
                targets: Mapping[str, str] | None = None,
                baseline: str = "baseline") -> dict[str, Any]:
    """How well each network fits the frames the baseline was trained on, against the frames it
    was not: single-view MPJPE, NMPJPE and PMPJPE (mm) on the same `frames` random frames of
    each of the labelled split (train3d's own training frames, seen without augmentation), the
    unlabelled videos (the fine-tuning frames) and validation.

    A baseline far better on its own training frames than on new subjects' has the data
    headroom that the method's fine-tuning relies on; the fine-tuned networks' rows show how
    much of what they learn on the unlabelled videos carries over to validation.

    Args:
      model_dirs: {name: exported network directory}, e.g. `run_networks`.
      labels, targets: the pseudo-labels (the arrays of complete's pseudo_labels.npz, by
        unlabelled record number `index`) and {network: the labels column it was fine-tuned
        on}: such a network's row also gets "to_labels", the MPJPE between its predictions of
        the sampled unlabelled frames and its labels there (how closely fine-tuning made it
        follow them), "baseline_to_labels", the same for the network named `baseline` (where
        fine-tuning started), and "labels_error", the labels' own MPJPE there.
    Returns: {"frames": {split: n}, "networks": {name: {split: {"mpjpe", "nmpjpe", "pmpjpe"},
      ["labels_error", "to_labels", "baseline_to_labels"]}}, "index": {split: the frames'
      record numbers in it}}, splits as in `FIT_SPLITS`.
    """
    unlabelled, validation = (datasets.selection(config, role)
                              for role in ("unlabelled", "validation"))
    splits = {"labelled": (common.sources(config)["train"], config.data.labelled_subjects,
                           config.data.labelled_actions),
              "unlabelled": (unlabelled.source, unlabelled.subjects, unlabelled.actions),
              "validation": (validation.source, validation.subjects, validation.actions)}
    drawn = {name: _random_frames(*split, frames, seed) for name, split in splits.items()}
    # Each split's frames are stacked once, for every network.
    batches = {name: predictor.stack_samples(samples) for name, (_, samples, _) in drawn.items()}
    out: dict[str, Any] = {"frames": {k: int(len(v[0])) for k, v in drawn.items()},
                           "networks": {},
                           "index": {k: v[0].tolist() for k, v in drawn.items()}}
    unlabelled_poses = {}
    for network, model_dir in model_dirs.items():
        predict, variables = _network(config, model_dir)
        rows = out["networks"][network] = {}
        for name, (_, _, gt) in drawn.items():
            (_, pose, _), = predictor.predict_batches(predict, variables, [batches[name]],
                                                      config.evaluate.batch_size)
            pose = common.root_relative(pose).astype(np.float64)
            rows[name] = {k: float(e.mean()) for k, e in metrics.pose_errors(pose, gt).items()}
            if name == "unlabelled":
                unlabelled_poses[network] = pose
    if labels is None:
        return out
    _, _, unlabelled_gt = drawn["unlabelled"]
    at = _rows_of(labels["index"], drawn["unlabelled"][0])
    for network, target_name in (targets or {}).items():
        target = np.asarray(labels[target_name], np.float64)[at]
        rows = out["networks"][network]
        rows["labels_error"] = float(metrics.mpjpe(target, unlabelled_gt).mean())
        rows["to_labels"] = float(metrics.mpjpe(unlabelled_poses[network], target).mean())
        if baseline in unlabelled_poses:
            rows["baseline_to_labels"] = float(
                metrics.mpjpe(unlabelled_poses[baseline], target).mean())
    return out


def run_fit(config, workdir: Workdir, frames: int, seed: int = 0) -> dict[str, Any]:
    """`network_fit` of every network of the run (`run_networks`), each fine-tuned one against
    the pseudo-labels of its setting (`stages.SETTINGS`), the `shuffled_error` control's made
    with the run's seed as its fine-tuning made them. A run without the complete stage (a
    baseline alone) gets the errors only."""
    networks = run_networks(config, workdir)
    if not workdir.is_done("complete"):  # a baseline-only run: no labels to compare with
        return network_fit(config, networks, frames, seed)
    labels = stages._load_npz(workdir.require("complete", "pseudo_labels.npz"))
    if "shuffled_error" in networks:
        labels["shuffled_error"] = stages.shuffled_prediction_errors(
            labels, stages.finetune_seed(config))
    targets = {name: stages.SETTINGS[name][0] for name in networks
               if name in stages.SETTINGS and stages.SETTINGS[name][0] in labels}
    return network_fit(config, networks, frames, seed, labels, targets)


def _rows_of(index: np.ndarray, records: np.ndarray) -> np.ndarray:
    """Rows of a stage output whose `index` column holds `records`; ValueError naming the first
    record it lacks."""
    order = np.argsort(index)
    at = np.searchsorted(index, records, sorter=order)
    at = order[np.minimum(at, len(index) - 1)]
    missing = index[at] != records
    if missing.any():
        raise ValueError(f"record {int(records[missing][0])} has no pseudo-label")
    return at


def test_time_views(config, workdir: Workdir, frames: int, seed: int = 0) -> dict[str, Any]:
    """How much the baseline's prediction depends on the view: the MPJPE of its root-relative
    predictions on `frames` random unlabelled frames, seen as they are and through the training
    augmentation's flip, rotations and scales (mapped back with `augment.pose_to_unaugmented`),
    and of the average over the views. A large spread between views, and an average far below
    each view, mean the errors are noise more than bias: the network has not learnt the
    augmentation's equivariance, and training it on its own view of a frame (the `original`
    setting) mostly feeds it that noise. Not used by the method; the evaluation stays
    single-view, as the paper's.

    Returns: {"frames", "views": {name: MPJPE mm}, "view_average_mpjpe",
      "identity_vs_flip_mm": mean distance between the identity and the flipped view's joints,
      "index": the frames' dataset indices}.
    """
    predict, variables = _baseline(config, workdir)
    sel = datasets.selection(config, "unlabelled")
    index, samples, gt = _random_frames(sel.source, sel.subjects, sel.actions, frames, seed)
    views = predictor.predict_views(predict, variables, samples, config.evaluate.batch_size)
    preds = {name: pose - pose[:, skeleton.ROOT:skeleton.ROOT + 1]
             for name, (pose, _) in views.items()}
    average = np.mean(list(preds.values()), axis=0)
    return {"frames": int(len(index)),
            "views": {k: float(metrics.mpjpe(p, gt).mean()) for k, p in preds.items()},
            "view_average_mpjpe": float(metrics.mpjpe(average, gt).mean()),
            "identity_vs_flip_mm": float(np.linalg.norm(preds["identity"] - preds["flip"],
                                                        axis=-1).mean()),
            "index": index.tolist()}


def pseudo_label_own_error_share(workdir: Workdir, reference_workdir: str,
                                 seed: int = 0) -> dict[str, Any]:
    """`own_error_share` of the work directory's pseudo-labels (its predictions, completions and
    interpolations, and the `shuffled_error` control's labels with `seed`), each against the
    predictions in `reference_workdir`'s predict stage: the network being fine-tuned, seen once
    (single view), when the labels came from views or from other networks."""
    labels = stages._load_npz(workdir.require("complete", "pseudo_labels.npz"))
    reference = stages._load_npz(os.path.join(reference_workdir, "predict", "predictions.npz"))
    if not np.array_equal(reference["index"], labels["index"]):
        raise ValueError(f"{reference_workdir}'s predictions are not of the frames of "
                         f"{workdir.path}'s pseudo-labels")
    labels["shuffled_error"] = stages.shuffled_prediction_errors(labels, seed)
    return {"reference": reference_workdir,
            **{key: own_error_share(labels[key], reference["pred"], labels["gt"])
               for key in ("pred", "completed", "interp", "shuffled_error")}}


def _mm(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def markdown(result: Mapping[str, Any]) -> str:
    """The diagnostics of `main` as markdown tables (the JSON holds the same numbers, unrounded).
    Sections whose key is absent (for example `test_time_views` with --view_frames=0) are left
    out."""
    lines = [f"# Diagnostics of {result['workdir']}", ""]
    if "detector" in result:
        lines += ["## 2D detector (heatmap px)", "",
                  "| frames of | frames | argmax error (px) | PCK@1px | PCK@2px |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {split} | {d['frames']} | {d['error_px']:.2f} | {d['pck_1px']:.2f} | "
                  f"{d['pck_2px']:.2f} |" for split, d in result["detector"].items()]
        lines.append("")
    if "unlabelled_error_components" in result:
        c = result["unlabelled_error_components"]
        lines += ["## The baseline's error on the unlabelled frames (mm)", "",
                  "| MPJPE | image plane | depth | RMS x | RMS y | RMS z |",
                  "|---:|---:|---:|---:|---:|---:|",
                  "| " + " | ".join(_mm(c[k]) for k in ("mpjpe", "image_plane", "depth", "rms_x",
                                                         "rms_y", "rms_z")) + " |", ""]
    if "completion" in result:
        c = result["completion"]
        lines += [f"## Completion on {c['videos']} videos ({c['frames']} frames), MPJPE (mm)", "",
                  f"Raw predictions {_mm(c['predictions_mpjpe'])}, 3-frame moving average "
                  f"{_mm(c['moving_average_mpjpe'])}.", "",
                  "| tau | confident share | completed | interpolated | confident joints' error "
                  "| unconfident joints' error, before -> after |",
                  "|---:|---:|---:|---:|---:|---|"]
        lines += [f"| {tau} | {t['share_confident']:.2f} | {_mm(t['completed_mpjpe'])} | "
                  f"{_mm(t['interpolation_mpjpe'])} | {_mm(t['confident_error'])} | "
                  f"{_mm(t['unconfident_error_before'])} -> {_mm(t['unconfident_error_after'])} |"
                  for tau, t in c["taus"].items()]
        lines.append("")
    if "pseudo_label_own_error_share" in result:
        s = result["pseudo_label_own_error_share"]
        lines += [f"## Share of the labels' error along the network's own ({s['reference']})", "",
                  "| labels | share |", "|---|---:|"]
        lines += [f"| {k} | {_ratio(v)} |" for k, v in s.items() if k != "reference"]
        lines.append("")
    if "error_persistence" in result:
        p = result["error_persistence"]
        lags = list(next(iter(p.values()))["lag_correlation"])
        lines += ["## Error over time: per-video constant share and correlation of the rest", "",
                  "| error of | constant share | " + " | ".join(f"lag {lag}" for lag in lags)
                  + " |", "|---|---:|" + "---:|" * len(lags)]
        lines += [f"| {k} | {_ratio(v['video_constant_share'])} | "
                  + " | ".join(_ratio(v["lag_correlation"][lag]) for lag in lags) + " |"
                  for k, v in p.items()]
        lines.append("")
    if "test_time_views" in result:
        v = result["test_time_views"]
        lines += [f"## Test-time views on {v['frames']} unlabelled frames, MPJPE (mm)", "",
                  "| view | MPJPE |", "|---|---:|"]
        lines += [f"| {name} | {_mm(err)} |" for name, err in v["views"].items()]
        lines += [f"| average of the views | {_mm(v['view_average_mpjpe'])} |", "",
                  f"Identity and flipped views' joints lie {_mm(v['identity_vs_flip_mm'])} mm "
                  "apart.", ""]
    if "fit" in result:
        f = result["fit"]
        lines += ["## Fit: the labelled training frames against new subjects' frames, MPJPE (mm)",
                  "", "| network | " + " | ".join(f"{split} ({f['frames'][split]} frames)"
                                                  for split in FIT_SPLITS)
                  + " | validation / labelled |", "|---|" + "---:|" * (len(FIT_SPLITS) + 1)]
        lines += [f"| {name} | " + " | ".join(_mm(rows[split]["mpjpe"]) for split in FIT_SPLITS)
                  + f" | {_ratio(rows['validation']['mpjpe'] / rows['labelled']['mpjpe'])} |"
                  for name, rows in f["networks"].items()]
        followed = {k: v for k, v in f["networks"].items() if "to_labels" in v}
        if followed:
            lines += ["", "Fine-tuned networks on the unlabelled frames against their labels "
                      "(mm):", "", "| network | its labels' error | its error | distance to "
                      "its labels: baseline -> it |", "|---|---:|---:|---:|"]
            lines += [f"| {k} | {_mm(v['labels_error'])} | {_mm(v['unlabelled']['mpjpe'])} | "
                      f"{_mm(v.get('baseline_to_labels'))} -> {_mm(v['to_labels'])} |"
                      for k, v in followed.items()]
        lines.append("")
    if "pose_scale" in result:
        ps = result["pose_scale"]
        lines += ["## Pose size: mean joint distance from the pelvis (mm)", "",
                  f"Validation truth: {_mm(ps['validation_truth_size'])}.", "",
                  "| network | predicted size | size / truth | validation MPJPE | at its best "
                  "scale factor (fitted to the truth) |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {k} | {_mm(v['size'])} | {_ratio(v['size_to_truth'])} | {_mm(v['mpjpe'])} "
                  f"| {_mm(v['mpjpe_at_best_factor'])} (x{v['best_factor']:.2f}) |"
                  for k, v in ps["networks"].items()]
        lines += ["", "The baseline's validation predictions scaled about the pelvis: "
                  + ", ".join(f"x{f}: {c:+.1f}%" for f, c in
                              ps["baseline_scaled_mpjpe_change"].items()) + " MPJPE.", ""]
        if "pseudo_label_sizes" in ps:
            lines += ["Pseudo-label sizes: " + ", ".join(
                f"{k} {_mm(v)}" for k, v in ps["pseudo_label_sizes"].items()) + ".", ""]
    if "label_weights" in result:
        lw = result["label_weights"]
        lines += [f"## Eq. 4's weights and the completed labels' error ({lw['joints']} joints)", "",
                  f"At tau = {lw['tau']}: {lw['share_weighted_down']:.1%} of the joints weighed "
                  f"down; their labels' error {_mm(lw['error_at_or_below_tau'])} mm, the others' "
                  f"{_mm(lw['error_above_tau'])} mm; rank correlation of confidence and error "
                  f"{_ratio(lw['rank_correlation'])}.", "",
                  "| tau | joints weighed down | weighted / unweighted label MSE |",
                  "|---:|---:|---:|"]
        lines += [f"| {t} | {v['share_weighted_down']:.1%} | {v['weighted_mse_ratio']:.3f} |"
                  for t, v in lw["taus"].items()]
        lines.append("")
    if "bone_targets" in result:
        bt = result["bone_targets"]
        lines += ["## Bone lengths against the truth's, per frame and bone", "",
                  f"True bones: {_mm(bt['truth_mean_length'])} mm on average.", "",
                  "| lengths of | mean abs. error (mm) | ratio to the truth |", "|---|---:|---:|"]
        lines += [f"| {name} | {_mm(bt[name]['abs_error'])} | {_ratio(bt[name]['ratio_to_truth'])}"
                  " |" for name in ("video_targets", "pred", "completed")]
        lines.append("")
    if "validation_bones" in result:
        lines += ["## Bone lengths of each network's validation predictions (Eq. 5's aim)", "",
                  "| network | spread within a video (mm) | error against the truth (mm) | "
                  "ratio to the truth |", "|---|---:|---:|---:|"]
        lines += [f"| {name} | {_mm(v['spread'])} | {_mm(v['abs_error'])} | "
                  f"{_ratio(v['ratio_to_truth'])} |" for name, v in result["validation_bones"].items()]
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    del argv
    wd_path = FLAGS.workdir
    if not wd_path or not os.path.exists(os.path.join(wd_path, "config.json")):
        raise ValueError(f"--workdir={wd_path!r} is not a work directory (no config.json)")
    config = ml_collections.ConfigDict(workdir_lib.load_stored_config(wd_path))
    workdir = Workdir(wd_path, config)
    sections = list(FLAGS.sections)
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ValueError(f"--sections: unknown {', '.join(unknown)}; valid: {', '.join(SECTIONS)}")
    if not FLAGS.view_frames and "test_time_views" in sections:
        sections.remove("test_time_views")
    if not FLAGS.fit_frames and "fit" in sections:
        sections.remove("fit")
    if {"unlabelled_error_components", "completion"} & set(sections):
        preds = stages._load_npz(workdir.require("predict", "predictions.npz"))
    taus = [float(t) for t in FLAGS.taus.split(",") if t]

    @functools.cache  # read once, for the sections that need it
    def pseudo_labels() -> dict[str, np.ndarray]:
        return stages._load_npz(workdir.require("complete", "pseudo_labels.npz"))

    compute = {
        "detector": lambda: detector_errors(config, workdir, FLAGS.frames),
        "unlabelled_error_components": lambda: error_components(preds["pred"], preds["gt"]),
        "completion": lambda: completion_checks(config, preds, taus, FLAGS.every),
        "pseudo_label_own_error_share": lambda: pseudo_label_own_error_share(
            workdir, FLAGS.reference_workdir or wd_path, stages.finetune_seed(config)),
        "error_persistence": lambda: pseudo_label_persistence(workdir),
        "test_time_views": lambda: {k: v for k, v in test_time_views(
            config, workdir, FLAGS.view_frames).items() if k != "index"},
        "fit": lambda: {k: v for k, v in run_fit(config, workdir, FLAGS.fit_frames).items()
                        if k != "index"},
        "pose_scale": lambda: pose_scale(workdir),
        "label_weights": lambda: label_weights(pseudo_labels(), float(config.finetune.tau)),
        "bone_targets": lambda: bone_targets(pseudo_labels()),
        "validation_bones": lambda: validation_bones(workdir),
    }
    # Sections not asked for this time keep what an earlier run wrote.
    path = os.path.join(wd_path, "diagnose.json")
    earlier = {}
    if os.path.exists(path):
        with open(path) as f:
            earlier = json.load(f)
    result: dict[str, Any] = {"workdir": wd_path}
    for name in SECTIONS:
        if name in sections:
            result[name] = compute[name]()
        elif name in earlier:
            result[name] = earlier[name]
    text = json.dumps(result, indent=2)
    print(text)
    with open(path, "w") as f:
        f.write(text + "\n")
    summary = markdown(result)
    print(summary)
    with open(os.path.join(wd_path, "diagnose.md"), "w") as f:
        f.write(summary)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
