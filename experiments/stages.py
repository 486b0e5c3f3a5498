"""The stages of the two-stage method (paper Fig. 1), each reading from and writing to the workdir.

pretrain2d -> train3d -> predict -> complete -> finetune -> evaluate -> report

  pretrain2d  the 2D detector (2 stacks) on the 2D set (the MPII stand-in), then frozen
  train3d     the volumetric stack on the labelled subjects/actions (the baseline)
  predict     3D poses (mm) and per-joint confidences on every frame of the unlabelled videos
  complete    Eq. 1 per video, batched over all videos; per-video bone lengths; the controls
  finetune    the baseline fine-tuned on the pseudo-labels, once per loss setting
  evaluate    MPJPE / NMPJPE / PMPJPE on the validation subjects, per action and subject
  report      tables (markdown + JSON) and figures

Training stages checkpoint with orbax as they go, so a killed run resumes inside the stage.
Assumption shared with c2f-vol: the root's absolute depth is known (it only places the skeleton
for back-projection; every error is root-relative). Ground truth of unlabelled videos is stored
beside the predictions for the reports, never read by a training stage except two fine-tuning
controls: `oracle`, which measures the ceiling of any pseudo-label, and `shuffled_error`, which
measures what labels as wrong as the predictions teach when their errors are not the network's.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import completion
from experiments import common, datasets, divergence
from experiments import workdir as workdir_lib
from experiments.workdir import Workdir, stage_done
from hourglass_jax import export, geometry, metrics, predictor, progress, skeleton
from hourglass_jax.data import pipeline
from hourglass_jax.losses import finetune_loss
from hourglass_jax.mesh import make_data_mesh
from hourglass_jax.model import Detector2D, VolumetricHourglass
from hourglass_jax.softargmax import coordinate_loss, predict_pose_mm
from hourglass_jax.targets import gaussian_volumes, heatmap_loss, heatmaps_from_crop_px
from hourglass_jax.train import (create_train_state, fit, make_optimizer, make_train_step,
                                  train_state_from_variables)

MODEL_DIR = "model"  # each training stage exports its final network to <stage dir>/model


def _filters(subjects, actions) -> dict[str, Any]:
    return {"subjects": common.tuple_or_none(subjects), "actions": common.tuple_or_none(actions)}


def _mesh_for(batch_size: int):
    """All devices that divide the batch (a batch of 32 on 3 devices would not split evenly)."""
    n = len(jax.devices())
    while batch_size % n:
        n -= 1
    return make_data_mesh(n)


def _optimizer(stage: ml_collections.ConfigDict, steps: int, frozen=()):
    """RMSprop at the stage's learning rate, constant or (`lr_schedule="cosine"`) decayed along a
    half cosine to 1% of it at the last step; `max_normalised_step` > 0 clips each step
    (`train.clipped_rmsprop`)."""
    schedule = stage.get("lr_schedule", "constant")
    if schedule == "constant":
        rate = stage.learning_rate
    elif schedule == "cosine":
        rate = optax.cosine_decay_schedule(stage.learning_rate, max(steps, 1), alpha=0.01)
    else:
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {schedule!r}")
    return make_optimizer(rate, frozen=frozen,
                          max_normalised_step=float(stage.get("max_normalised_step", 0.0)))


class Preempted(RuntimeError):
    """A training stage stopped on SIGTERM before its last step, its checkpoint saved.

    Raised instead of returning the partly trained state, so that the stage is not marked done,
    nothing downstream uses that state, and a rerun of the same command resumes from the
    checkpoint. Attributes: stage_dir, step (steps taken), total_steps.
    """

    def __init__(self, stage_dir: str, step: int, total_steps: int):
        super().__init__(f"stopped by SIGTERM at step {step} of {total_steps} in {stage_dir}; "
                         "the checkpoint of that step is saved: run the same command again to "
                         "resume")
        self.stage_dir, self.step, self.total_steps = stage_dir, step, total_steps


def _train(config, stage_dir: str, module, loss_fn, init_state, pipe, *, steps: int,
           tx, frozen=(), apply_kwargs=None, checkpoint_every: int, run_meta: dict,
           step_fn=None):
    batch_size = pipe.global_batch_size
    try:
        state = fit(module, loss_fn, tx,
                    init_state, lambda s: common.device_batch(pipe.batch_at(s)),
                    workdir=stage_dir, total_steps=steps, mesh=_mesh_for(batch_size),
                    frozen=frozen, apply_kwargs=apply_kwargs, checkpoint_every=checkpoint_every,
                    log_every=config.log_every, run_meta=run_meta, best_metric=None,
                    step_fn=step_fn)
    finally:
        pipe.close()  # its worker processes or threads end with the stage
    taken = int(jax.device_get(state.step))
    if taken < steps:  # `fit` returns early only on SIGTERM
        raise Preempted(stage_dir, taken, steps)
    return state


def _variables(state) -> dict[str, Any]:
    return jax.device_get({"params": state.params, "batch_stats": state.batch_stats})


def check_supported(config: ml_collections.ConfigDict) -> None:
    """ValueError naming a malformed cross-dataset, sequence or scene field (see
    experiments/datasets.py, which reads them)."""
    datasets.check_config(config)


# ------------------------------------------------------------------------------------ pretrain2d
def pretrain2d(config: ml_collections.ConfigDict, workdir: Workdir) -> dict:
    """Train the 2D detector on the 2D set with the L2 heatmap loss on both stacks, or import it
    from a PyTorch stacked-hourglass checkpoint (`pretrain2d.import_checkpoint`)."""
    source = config.pretrain2d.get("from_workdir", "")
    if source:
        return reuse_detector(config, source, workdir)
    cfg = common.network_config(config)
    checkpoint = config.pretrain2d.get("import_checkpoint", "")
    if checkpoint:
        from hourglass_jax import importer
        importer.export_detector(checkpoint, workdir.file("pretrain2d", MODEL_DIR), cfg)
        return {"imported": checkpoint}
    # The real 3D datasets have no 2D split: their protocols name the 2D set (MPII) explicitly.
    dataset = config.data.get("pretrain_dataset", "")
    if dataset:
        src = common.sources(config, dataset)[config.data.get("pretrain_split", "train")]
    else:
        src = common.sources(config)["pretrain2d"]
    spec = predictor.volume_spec(cfg)
    module = Detector2D(cfg)
    c = config.pretrain2d
    pipe = pipeline.TrainPipeline(src, global_batch_size=c.batch_size, seed=config.seed)

    def loss_fn(outputs, batch):
        heatmaps, _ = outputs
        target = heatmaps_from_crop_px(batch["pose2d"], spec)
        return heatmap_loss({"heatmaps2d": heatmaps}, {"heatmaps2d": target}), {}

    tx = _optimizer(c, c.steps)
    init = create_train_state(module, tx, config.seed, jnp.zeros((1, cfg.input_size,
                                                                  cfg.input_size, 3)),
                              train=False)
    state = _train(config, workdir.stage_dir("pretrain2d"), module, loss_fn, init, pipe,
                   steps=c.steps, tx=tx, checkpoint_every=c.checkpoint_every,
                   run_meta={"stage": "pretrain2d", "learning_rate": c.learning_rate,
                             "lr_schedule": c.get("lr_schedule", "constant"),
                             "batch_size": c.batch_size})
    export.save_model(workdir.file("pretrain2d", MODEL_DIR), "detector2d", cfg, _variables(state))
    return {"steps": c.steps, "frames": len(pipe.indices)}


# Config fields the detector depends on. Every other field (the labelled subjects, the 3D
# schedules, ...) is read only by later stages, so runs that differ only there can share one.
DETECTOR_FIELDS: tuple[str, ...] = (
    "seed", "data.dataset", "data.builder_config", "data.pretrain_dataset", "data.pretrain_split",
    "model", "pretrain2d")
_DETECTOR_FREE = ("pretrain2d.from_workdir", "pretrain2d.checkpoint_every")


def _detector_fields(config: Mapping[str, Any]) -> dict[str, Any]:
    flat = workdir_lib.flatten(config)
    return {k: v for k, v in flat.items()
            if any(k == f or k.startswith(f + ".") for f in DETECTOR_FIELDS)
            and k not in _DETECTOR_FREE}


def checked_model_of(option: str, source: str, stage: str, config: ml_collections.ConfigDict,
                     fields: Callable[[Mapping[str, Any]], dict[str, Any]], mismatch: str) -> str:
    """The exported model of `stage` in another work directory, `source`, after checking that
    the stage finished there and that its stored config agrees with `config` on `fields` (a
    config dict -> the flattened fields that must match). FileNotFoundError / ValueError that
    start with `option` and name the missing file or the differing fields."""
    model = os.path.join(source, stage, MODEL_DIR)
    if not stage_done(source, stage) or not os.path.isdir(model):
        raise FileNotFoundError(
            f"{option}: no finished {stage} stage there "
            f"(missing {os.path.join(source, stage, 'DONE.json')} or {model})")
    check_source_config(option, source, config, fields, mismatch)
    return model


def check_source_config(option: str, source: str, config: ml_collections.ConfigDict,
                        fields: Callable[[Mapping[str, Any]], dict[str, Any]],
                        mismatch: str) -> None:
    """FileNotFoundError unless the work directory `source` holds its config.json, ValueError
    (starting with `option`, then `mismatch`, naming the differing fields) unless that config
    agrees with `config` on `fields` (a config dict -> the flattened fields that must match)."""
    config_path = os.path.join(source, "config.json")
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"{option}: missing {config_path}")
    theirs = fields(workdir_lib.load_stored_config(source))
    ours = fields(json.loads(config.to_json()))
    differing = workdir_lib.differing_fields(theirs, ours)
    if differing:
        details = workdir_lib.describe_differences(differing, theirs, ours, "there", "here")
        raise ValueError(f"{option} {mismatch}; differing fields: {details}")


def reuse_detector(config: ml_collections.ConfigDict, source: str, workdir: Workdir) -> dict:
    """The pretrain2d stage of another work directory, copied after checking that it was made by
    the same detector config (`DETECTOR_FIELDS`): protocols that differ only in their 3D data
    (Fig. 5's S1, S15, S156, S1567) then share one 2D detector, as in the paper, and skip its
    training. A clear error for a source that is unfinished or was made by another config."""
    source = os.path.abspath(source)
    if source == workdir.path:
        raise ValueError(f"pretrain2d.from_workdir is this work directory itself: {source}")
    model = checked_model_of(f"pretrain2d.from_workdir={source}", source, "pretrain2d", config,
                             _detector_fields, "trained its detector with another config")
    target = workdir.file("pretrain2d", MODEL_DIR)
    if os.path.exists(target):  # a copy killed half-way
        shutil.rmtree(target)
    shutil.copytree(model, target)
    return {"copied_from": source}


# The stages before fine-tuning, and the config fields they do not read (the fine-tuning's and
# evaluation's, the protocol's name) or that do not change what they write (where the data
# were read from, the work directory's own free fields).
UPSTREAM_STAGES: tuple[str, ...] = workdir_lib.UPSTREAM_STAGES
UPSTREAM_FREE: tuple[str, ...] = ("protocol", "data.data_dir") + workdir_lib.FREE_FIELDS


def _upstream_fields(config: Mapping[str, Any]) -> dict[str, Any]:
    flat = workdir_lib.flatten(config)
    return {k: v for k, v in flat.items()
            if not k.startswith(("finetune.", "evaluate.")) and k not in UPSTREAM_FREE}


def reuse_stage(config: ml_collections.ConfigDict, stage: str, workdir: Workdir) -> dict:
    """One of `UPSTREAM_STAGES`, copied from the work directory `finetune.from_workdir` after
    checking that the stage finished there and that its config agrees with `config` on every
    field the first four stages read (`_upstream_fields`). Fine-tuning variants of one baseline
    (another loss setting's weights, `finetune.seed`, `finetune.labelled_fraction`) then run in
    directories of their own. Returns the source's DONE.json info with "copied_from"; a
    FileNotFoundError / ValueError naming the missing file or the differing fields."""
    source = os.path.abspath(config.finetune.from_workdir)
    option = f"finetune.from_workdir={source}"
    if source == workdir.path:
        raise ValueError(f"{option} is this work directory itself")
    info = workdir_lib.read_done_info(source, stage)
    if info is None:
        raise FileNotFoundError(f"{option}: no finished {stage} stage there (missing "
                                f"{os.path.join(source, stage, 'DONE.json')})")
    check_source_config(option, source, config, _upstream_fields,
                        f"made its {stage} stage with another config (only "
                        f"{', '.join(UPSTREAM_FREE)} and the finetune and evaluate fields may "
                        "differ)")
    target = workdir.stage_dir(stage)
    shutil.rmtree(target)  # stage_dir made it; copytree wants it absent (or half-copied: a kill)
    # Training checkpoints stay behind: later stages read only the exported model.
    shutil.copytree(os.path.join(source, stage), target,
                    ignore=shutil.ignore_patterns("DONE.json", "checkpoints"))
    print(f"  {stage}: copied from {source}", flush=True)
    # The copy's own finishing time and duration are recorded by `main.run`.
    kept = {k: v for k, v in info.items() if k not in ("finished_at", "seconds")}
    return dict(kept, copied_from=source, source_seconds=info.get("seconds"))


def stage_function(config: ml_collections.ConfigDict, stage: str
                   ) -> Callable[[ml_collections.ConfigDict, Workdir], dict]:
    """What runs `stage`: its `STAGE_FUNCTIONS` entry, or `reuse_stage` for the stages before
    fine-tuning when `finetune.from_workdir` names a run to copy them from."""
    if config.finetune.get("from_workdir", "") and stage in UPSTREAM_STAGES:
        return lambda c, w: reuse_stage(c, stage, w)
    return STAGE_FUNCTIONS[stage]


# --------------------------------------------------------------------------------------- train3d
def supervised_loss_fn(spec: geometry.VolumeSpec, k: int, coordinate_weight: float) -> Callable:
    """The supervised stage's loss: L2 between the volumes and Gaussians at the target's voxels
    (`batch["pose3d"]`, camera frame mm, through the batch's camera and crop), plus
    `coordinate_weight` times the soft-argmax coordinates' L1 error in voxels (0: off)."""

    def loss_fn(outputs, batch):
        voxels = geometry.pose_to_voxels(batch["pose3d"], batch["intrinsics"], batch["center"],
                                         batch["scale"], spec)
        target = gaussian_volumes(voxels, spec.depth_bins, spec.heatmap_size)
        heatmap = heatmap_loss(outputs, {"volume": target})
        if not coordinate_weight:
            return heatmap, {}
        coords = coordinate_loss(outputs["volume"], voxels, k)
        return heatmap + coordinate_weight * coords, {"heatmap": heatmap, "coordinates": coords}

    return loss_fn


def train3d(config: ml_collections.ConfigDict, workdir: Workdir) -> dict:
    """Train the volumetric stack on the labelled split, the pretrained detector frozen."""
    _, _, detector_vars = export.load_model(workdir.require("pretrain2d", MODEL_DIR))
    src = common.sources(config)["train"]
    cfg = common.network_config(config)
    spec = predictor.volume_spec(cfg)
    module = VolumetricHourglass(cfg)
    c = config.train3d
    pipe = pipeline.TrainPipeline(
        src, global_batch_size=c.batch_size, seed=config.seed,
        **_filters(config.data.labelled_subjects, config.data.labelled_actions))

    loss_fn = supervised_loss_fn(spec, config.model.softargmax_k,
                                 float(c.get("coordinate_weight", 0.0)))
    tx = _optimizer(c, c.steps, frozen=("detector",))
    init = create_train_state(module, tx, config.seed,
                              jnp.zeros((1, cfg.input_size, cfg.input_size, 3)), train=False)
    init = init.replace(
        params={**init.params, "detector": common.to_jnp(detector_vars["params"])},
        batch_stats={**init.batch_stats, "detector": common.to_jnp(detector_vars["batch_stats"])})
    state = _train(config, workdir.stage_dir("train3d"), module, loss_fn, init, pipe,
                   steps=c.steps, tx=tx, frozen=("detector",),
                   apply_kwargs={"train_detector": False},
                   checkpoint_every=c.checkpoint_every,
                   run_meta={"stage": "train3d", "learning_rate": c.learning_rate,
                             "lr_schedule": c.get("lr_schedule", "constant"),
                             "batch_size": c.batch_size})
    export.save_model(workdir.file("train3d", MODEL_DIR), "volumetric", cfg, _variables(state))
    return {"steps": c.steps, "labelled_frames": len(pipe.indices)}


# --------------------------------------------------------------------------------------- predict
# Fields of a video batch that `predictor.predict_views` reads to make and predict the views.
_VIEW_FIELDS = ("image", "pose3d", "pose2d", "visible", "intrinsics", "center", "scale",
                "root_depth")


def _predict_video(predict, variables, video: dict[str, np.ndarray], batch_size: int,
                   average_views: bool) -> tuple[np.ndarray, np.ndarray]:
    """(pose (F, 16, 3) mm camera frame, confidence (F, 16)) of one network on one video. With
    `average_views`, the root-relative pose and the confidence are averaged over
    `predictor.TEST_TIME_VIEWS` (each mapped back to this view), and the root is this view's."""
    if not average_views:
        (_, pose, conf), = predictor.predict_batches(predict, variables, [video], batch_size)
        return pose, conf
    rows = [{k: video[k][i] for k in _VIEW_FIELDS} for i in range(len(video["image"]))]
    views = predictor.predict_views(predict, variables, rows, batch_size)
    root = views["identity"][0][:, skeleton.ROOT:skeleton.ROOT + 1]
    relative = np.mean([common.root_relative(p) for p, _ in views.values()], axis=0)
    conf = np.mean([c for _, c in views.values()], axis=0)
    return relative + root, conf


def _predict_split(config, model_paths: dict[str, str], src, subjects, actions,
                   average_views: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """Predictions of one or more networks on whole videos, frame order kept: {name: the arrays
    of predictions.npz}. The videos are read and decoded once, whatever the networks'
    architectures (`make_predictor` compiles once per architecture). `average_views`: each
    frame's prediction averaged over the test-time views (`_predict_video`)."""
    networks = {}
    for name, path in model_paths.items():
        _, cfg, variables = export.load_model(path)
        # The variables go to the device once, not per call.
        networks[name] = (predictor.make_predictor(cfg, config.model.softargmax_k),
                          common.to_jnp(variables))
    meta_keys = ("sequence", "frame", "index", "subject", "action", "camera", "pose3d_rel")
    meta: dict[str, list] = {k: [] for k in meta_keys}
    cols = {name: {k: [] for k in ("pred", "pred_root", "confidence")} for name in networks}
    start, done = time.time(), 0
    for _, video in pipeline.read_sequences(src, **_filters(subjects, actions)):
        for key in meta_keys:
            meta[key].append(video[key])
        for name, (predict, variables) in networks.items():
            pose, conf = _predict_video(predict, variables, video, config.predict.batch_size,
                                        average_views)
            cols[name]["pred"].append(common.root_relative(pose))
            cols[name]["pred_root"].append(pose[:, skeleton.ROOT])
            cols[name]["confidence"].append(conf)
        done += len(video["frame"])
        if len(meta["frame"]) % 20 == 0:
            rate = done * len(networks) / (time.time() - start)
            print(f"  predicted {done} frames x {len(networks)} networks "
                  f"({rate:.0f} frames/s)", flush=True)
    if not meta["frame"]:
        raise ValueError(f"no videos selected for subjects {subjects} / actions {actions}")
    shared = {k: np.concatenate(v) for k, v in meta.items()}
    shared["frame_index"] = shared.pop("frame")
    shared["gt"] = shared.pop("pose3d_rel")
    _, sequence_id = np.unique(shared["sequence"], return_inverse=True)
    shared["sequence_id"] = sequence_id.astype(np.int32)
    return {name: {**shared, **{k: np.concatenate(v) for k, v in c.items()}}
            for name, c in cols.items()}


# Config fields a teacher's baseline (`predict.teacher_workdirs`) must share with the run: the
# same data, and the same labelled split, so that no teacher has seen the unlabelled truth.
TEACHER_FIELDS: tuple[str, ...] = ("data.dataset", "data.builder_config",
                                   "data.labelled_subjects", "data.labelled_actions")


def teacher_models(config: ml_collections.ConfigDict, workdir: Workdir) -> list[str]:
    """The train3d models that predict the pseudo-labels: this run's baseline, or the baselines
    of `predict.teacher_workdirs` (our extension), each checked to be finished and trained on
    this config's data and labelled split (`TEACHER_FIELDS`). A clear error otherwise."""
    teachers = tuple(config.predict.teacher_workdirs)
    if not teachers:
        return [workdir.require("train3d", MODEL_DIR)]

    def teacher_fields(stored: Mapping[str, Any]) -> dict[str, Any]:
        flat = workdir_lib.flatten(stored)
        return {k: flat.get(k) for k in TEACHER_FIELDS}

    return [checked_model_of(f"predict.teacher_workdirs: {teacher}", teacher, "train3d", config,
                             teacher_fields,
                             "trained its baseline on other data or another labelled split")
            for teacher in teachers]


def predict(config: ml_collections.ConfigDict, workdir: Workdir) -> dict:
    """Baseline predictions on every frame of the unlabelled videos. With
    `predict.teacher_workdirs`, the predictions (root-relative poses, roots and confidences) of
    those runs' baselines instead, averaged over them."""
    sel = datasets.selection(config, "unlabelled")
    average_views = bool(config.predict.average_views)
    models = teacher_models(config, workdir)
    # Keyed by position: a teacher named twice counts twice in the mean.
    outs = list(_predict_split(config, {str(i): path for i, path in enumerate(models)},
                               sel.source, sel.subjects, sel.actions,
                               average_views=average_views).values())
    out = dict(outs[0])
    for key in ("pred", "pred_root", "confidence"):
        out[key] = np.mean([o[key].astype(np.float64) for o in outs], axis=0).astype(
            outs[0][key].dtype)
    _save_npz(workdir.file("predict", "predictions.npz"), out)
    share = float(np.mean(out["confidence"] > config.complete.tau))
    return {"frames": len(out["pred"]), "videos": int(out["sequence_id"].max()) + 1,
            "share_above_tau": share, "average_views": average_views,
            "networks": [os.path.dirname(os.path.dirname(p)) for p in models]}


def _save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    tmp = path + ".tmp.npz"
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def _load_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


# -------------------------------------------------------------------------------------- complete
def solver_config(config: ml_collections.ConfigDict) -> completion.CompletionConfig:
    return completion.CompletionConfig(max_iters=int(config.complete.max_iters),
                                       lambda_o=float(config.complete.get("lambda_o", 0.0)))


def complete_videos(preds: dict[str, np.ndarray], tau: float,
                    solver: completion.CompletionConfig, max_window: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Eq. 1 on every video of a predictions table, all videos in one batched solve.

    Returns completed (N, 16, 3) mm, interpolation control (N, 16, 3) mm, observed (N, 16)
    and solver statistics. Videos with no confident entry keep their raw predictions.
    """
    observed = preds["confidence"] > tau
    completed = preds["pred"].astype(np.float64).copy()
    interp = completed.copy()
    short, long_, kept = [], [], 0
    for rows in common.video_rows(preds["sequence_id"], preds["frame_index"]):
        if len(rows) < 2 or not observed[rows].any():
            kept += 1
            continue
        (long_ if len(rows) > max_window else short).append(rows)
    iters, converged = [], 0
    if short:
        results = completion.complete_batch([preds["pred"][r] for r in short],
                                            [observed[r] for r in short], solver)
        for rows, res in zip(short, results):
            completed[rows] = np.asarray(res.X)
            iters.append(int(res.iterations))
            converged += bool(res.converged)
    for rows in long_:
        res = completion.complete_long(preds["pred"][rows], observed[rows], solver,
                                       window=max_window)
        completed[rows] = np.asarray(res.X)
        iters.append(int(res.iterations))
        converged += bool(res.converged)
    for rows in short + long_:
        interp[rows] = completion.interpolate(preds["pred"][rows], observed[rows])
    stats = {"videos": len(short) + len(long_) + kept, "videos_solved": len(short) + len(long_),
             "videos_without_confident_entries": kept, "frames": int(len(completed)),
             "iterations_mean": float(np.mean(iters)) if iters else 0.0,
             "converged": int(converged)}
    return completed.astype(np.float32), interp.astype(np.float32), observed, stats


def video_medians(values: np.ndarray, sequence_id: np.ndarray) -> np.ndarray:
    """Each video's median over its frames of per-frame values (N, K), repeated per frame:
    (N, K) float64."""
    values = np.asarray(values, np.float64)
    out = np.empty_like(values)
    for rows in common.video_rows(sequence_id):
        out[rows] = np.median(values[rows], axis=0)
    return out


def video_bone_lengths(poses: np.ndarray, sequence_id: np.ndarray) -> np.ndarray:
    """Per-video bone lengths (median over the video's frames), repeated per frame: (N, 11) mm."""
    lengths = skeleton.bone_lengths(np.asarray(poses, np.float64))
    return video_medians(lengths, sequence_id).astype(np.float32)


# `complete.bone_lengths_from`: the poses whose per-video median bone lengths the bone term
# trains towards: the completed ones (the paper) or the raw predictions.
BONE_LENGTH_SOURCES: tuple[str, ...] = ("completed", "pred")


def rescaled_to_predictions(completed: np.ndarray, pred: np.ndarray,
                            sequence_id: np.ndarray) -> np.ndarray:
    """The completed poses (N, 16, 3) mm of each video scaled about their root by one factor per
    video: the sum of the raw predictions' per-video median bone lengths over the completed
    poses' sum. The completion shrinks poses (its bones come out about 15% short while the
    raw predictions' have the true length); this gives the labels the predictions' size back
    and keeps their shape."""
    completed = np.asarray(completed, np.float64)
    factor = (video_bone_lengths(pred, sequence_id).sum(-1)
              / video_bone_lengths(completed, sequence_id).sum(-1))  # (N,): one per video
    root = completed[:, skeleton.ROOT:skeleton.ROOT + 1]
    return (root + factor[:, None, None] * (completed - root)).astype(np.float32)


def complete(config: ml_collections.ConfigDict, workdir: Workdir) -> dict:
    """Pseudo-labels: the completed predictions of every unlabelled video (paper Sec. 3.2),
    rescaled to the raw predictions' size when `complete.rescale_to_predictions` is set, and
    per-video bone lengths from the poses `complete.bone_lengths_from` names."""
    bone_source = config.complete.get("bone_lengths_from", "completed")
    if bone_source not in BONE_LENGTH_SOURCES:
        raise ValueError(f"unknown complete.bone_lengths_from {bone_source!r}; "
                         f"valid: {', '.join(BONE_LENGTH_SOURCES)}")
    preds = _load_npz(workdir.require("predict", "predictions.npz"))
    start = time.time()
    completed, interp, observed, stats = complete_videos(
        preds, config.complete.tau, solver_config(config), config.complete.max_window)
    stats["seconds"] = round(time.time() - start, 2)
    if config.complete.get("rescale_to_predictions", False):
        completed = rescaled_to_predictions(completed, preds["pred"], preds["sequence_id"])
    bone_poses = {"completed": completed, "pred": preds["pred"]}[bone_source]
    out = dict(preds, completed=completed, interp=interp, observed=observed,
               bone_lengths=video_bone_lengths(bone_poses, preds["sequence_id"]))
    _save_npz(workdir.file("complete", "pseudo_labels.npz"), out)
    with open(workdir.file("complete", "solver_stats.json"), "w") as f:
        json.dump(stats, f, indent=2)
    before = float(np.mean(metrics.mpjpe(preds["pred"], preds["gt"])))
    after = float(np.mean(metrics.mpjpe(completed, preds["gt"])))
    print(f"  completion: MPJPE of the unlabelled predictions {before:.1f} -> {after:.1f} mm "
          f"({stats['videos_solved']} videos, {stats['seconds']} s)", flush=True)
    return {**stats, "mpjpe_predictions": before, "mpjpe_completed": after}


# -------------------------------------------------------------------------------------- finetune
LABELLED_TRUTH = "labelled_truth"  # target of the `labelled` control: not a pseudo-label column
# Which pseudo-label each loss setting trains on, whether it weights by confidence (Eq. 3-4),
# and whether it adds the bone-length term (Eq. 5).
SETTINGS: dict[str, tuple[str, bool, bool]] = {
    "original": ("pred", False, False),
    "optimised": ("completed", False, False),
    "weighted": ("completed", True, False),
    "bone": ("completed", True, True),
    "interp": ("interp", False, False),
    "labelled": (LABELLED_TRUTH, False, False),  # control: the labelled split, no pseudo-label
    "oracle": ("gt", False, False),  # control: the unlabelled videos' true poses (the ceiling)
    # control: true poses + the predictions' errors of other frames (shuffled_prediction_errors)
    "shuffled_error": ("shuffled_error", False, False),
    # ablation: `bone` without Eq. 4's weights (optimised supervision + the bone term)
    "unweighted_bone": ("completed", False, True),
}


def shuffled_prediction_errors(labels: Mapping[str, np.ndarray], seed: int) -> np.ndarray:
    """Labels of the `shuffled_error` control, (N, 16, 3) mm root-relative: each unlabelled
    frame's true pose plus the raw prediction error (`pred - gt`) of another frame.

    A seeded random cycle through all N frames decides whose error each frame carries, so no
    frame keeps its own and every error is used once. The labels are then as far from the truth
    as the predictions (the same per-frame errors, permuted), but an error no longer comes from
    the network's view of the image it labels. ValueError with fewer than two frames."""
    gt, pred = np.asarray(labels["gt"]), np.asarray(labels["pred"])
    if gt.shape != pred.shape or gt.ndim != 3 or gt.shape[0] < 2:
        raise ValueError(f"shuffled_error needs predictions and true poses of the same shape "
                         f"(N >= 2, 16, 3); got pred {pred.shape}, gt {gt.shape}")
    cycle = np.random.default_rng(seed).permutation(gt.shape[0])
    donor = np.empty_like(cycle)
    donor[cycle] = np.roll(cycle, -1)  # frame cycle[i] takes the error of frame cycle[i + 1]
    return gt + (pred - gt)[donor]


class GroundTruthLabels:
    """The fields fine-tuning adds to a labelled record (a grain-safe callable): confidence 1
    for every joint and the bone lengths of its own true pose, so the `labelled` control trains
    with exactly the loss function of the pseudo-label settings."""

    def __call__(self, sample: dict) -> dict:
        out = dict(sample)
        out["confidence"] = np.ones(sample["pose3d"].shape[0], np.float32)
        out["bone_lengths"] = skeleton.bone_lengths(
            np.asarray(sample["pose3d"], np.float64)).astype(np.float32)
        return out


def finetune_seed(config: ml_collections.ConfigDict) -> int:
    """The fine-tuning's seed: `finetune.seed`, or the run's `seed` where that is -1 (unset)."""
    seed = int(config.finetune.get("seed", -1))
    if seed < -1:
        raise ValueError(f"finetune.seed must be -1 (the run's seed) or >= 0, got {seed}")
    return int(workdir_lib.effective_finetune_seed(config.seed, seed))


def labelled_batch_size(config: ml_collections.ConfigDict) -> int:
    """Rows of each fine-tuning batch that `finetune.labelled_fraction` gives to the labelled
    split (our extension; 0, the paper's fine-tuning on pseudo-labels alone). ValueError when the
    fraction is outside [0, 1) or leaves the batch without a pseudo-labelled or labelled row."""
    c = config.finetune
    fraction = float(c.labelled_fraction)
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"finetune.labelled_fraction must be in [0, 1), got {fraction}")
    rows = int(round(fraction * c.batch_size))
    if fraction > 0 and not 0 < rows < c.batch_size:
        raise ValueError(f"finetune.labelled_fraction {fraction} of a batch of {c.batch_size} "
                         f"gives {rows} labelled rows; it must give between 1 and "
                         f"{c.batch_size - 1}")
    return rows


def _labelled_split_pipeline(config: ml_collections.ConfigDict, batch_size: int,
                             seed: int) -> pipeline.TrainPipeline:
    """The labelled split train3d read, with its ground truth as fine-tuning labels."""
    return pipeline.TrainPipeline(
        common.sources(config)["train"], global_batch_size=batch_size, seed=seed,
        relabel=GroundTruthLabels(),
        **_filters(config.data.labelled_subjects, config.data.labelled_actions))


def finetune_pipeline(config: ml_collections.ConfigDict, setting: str,
                      labels: dict[str, np.ndarray]
                      ) -> pipeline.TrainPipeline | pipeline.MixedPipeline:
    """The training records of one fine-tuning setting: the unlabelled videos relabelled with
    its pseudo-labels, or (the `labelled` control) the labelled split train3d read, with its
    ground truth. With `finetune.labelled_fraction` > 0 every batch of a pseudo-label setting
    ends with that share of labelled frames (a `MixedPipeline`: pseudo-labelled rows first).
    `finetune.augment_unlabelled` False: the pseudo-labelled rows are not augmented (the
    labelled ones always are)."""
    c = config.finetune
    seed = finetune_seed(config)
    target, weighted, _ = SETTINGS[setting]
    if target == LABELLED_TRUTH:
        return _labelled_split_pipeline(config, c.batch_size, seed + 1)
    mixed_rows = labelled_batch_size(config)
    sel = datasets.selection(config, "unlabelled")
    pseudo = pipeline.TrainPipeline(
        sel.source, global_batch_size=c.batch_size - mixed_rows, seed=seed + 1,
        relabel=PseudoLabels(labels, target, weighted),
        augment=bool(c.augment_unlabelled),
        **_filters(sel.subjects, sel.actions))
    if not mixed_rows:
        return pseudo
    return pipeline.MixedPipeline([pseudo, _labelled_split_pipeline(config, mixed_rows,
                                                                     seed + 2)])


def describe_frames(pipe: pipeline.TrainPipeline | pipeline.MixedPipeline, kind: str) -> str:
    """'N <kind> frames', and for a mixed pipeline the labelled rows it adds per batch."""
    if isinstance(pipe, pipeline.MixedPipeline):
        pseudo, labelled = pipe.parts
        return (f"{len(pseudo.indices)} {kind} frames + {len(labelled.indices)} labelled frames "
                f"({labelled.global_batch_size} of every {pipe.global_batch_size} rows)")
    return f"{len(pipe.indices)} {kind} frames"


class PseudoLabels:
    """Replaces a training record's 3D target by its pseudo-label (a grain-safe callable).

    The pseudo-label is placed in the camera frame at the baseline's predicted root (x, y from
    the network, z the known root depth) and projected into the crop, so the augmentation moves
    it exactly as it moves a true label. Adds per-joint `confidence` and per-video
    `bone_lengths`, which the flip augmentation permutes with the joints and bones.
    """

    def __init__(self, labels: dict[str, np.ndarray], target: str, weighted: bool):
        self.row_of = {int(i): r for r, i in enumerate(labels["index"])}
        self.poses = labels[target] + labels["pred_root"][:, None, :]
        self.confidence = (labels["confidence"] if weighted
                           else np.ones_like(labels["confidence"])).astype(np.float32)
        self.bone_lengths = labels["bone_lengths"].astype(np.float32)

    def __call__(self, sample: dict) -> dict:
        row = self.row_of[int(sample["index"])]
        out = dict(sample)
        pose = self.poses[row].astype(np.float32)
        res = sample["image"].shape[0]
        uv = geometry.project(pose.astype(np.float64), sample["intrinsics"].astype(np.float64))
        out["pose3d"] = pose
        out["pose2d"] = geometry.image_to_crop(uv, sample["center"].astype(np.float64),
                                               float(sample["scale"]), res).astype(np.float32)
        out["confidence"] = self.confidence[row]
        out["bone_lengths"] = self.bone_lengths[row]
        return out


def finetune_loss_fn(spec, k: int, tau: float, gamma: float,
                     per_frame_normalised: bool = False) -> Callable:
    """Eq. 2 on root-relative mm coordinates from the local soft-argmax (paper Sec. 3.3);
    `per_frame_normalised`: each frame's Eq. 4 weights scaled to sum to its joint count (our
    option, `finetune.normalise_weights`)."""

    def loss_fn(outputs, batch):
        pose, _ = predict_pose_mm(outputs["volume"], batch["intrinsics"], batch["center"],
                                  batch["scale"], batch["root_depth"], spec, k)
        pred = pose - pose[:, skeleton.ROOT:skeleton.ROOT + 1]
        target = batch["pose3d"] - batch["pose3d"][:, skeleton.ROOT:skeleton.ROOT + 1]
        loss, parts = finetune_loss(pred, target, batch["confidence"], batch["bone_lengths"],
                                    tau=tau, gamma=gamma,
                                    per_frame_normalised=per_frame_normalised)
        return loss, parts

    return loss_fn


# `finetune.loss`: "eq2", the paper's Eq. 2 (weighted fidelity on the soft-argmax coordinates in
# mm, + gamma * bone consistency, as each setting asks); "supervised", our probe: the supervised
# stage's heatmap loss on the setting's labels, which ignores confidences and bone lengths (so
# `weighted` and `bone` train like `optimised`).
FINETUNE_LOSSES: tuple[str, ...] = ("eq2", "supervised")


def finetune_steps(config: ml_collections.ConfigDict, frames: int) -> int:
    c = config.finetune
    if c.steps:
        return int(c.steps)
    return max(1, int(round(c.epochs * frames / c.batch_size)))


def finetune(config: ml_collections.ConfigDict, workdir: Workdir) -> dict:
    """Fine-tune the baseline on the pseudo-labels, once per loss setting (paper Table 5)."""
    c = config.finetune
    unknown = [s for s in c.settings if s not in SETTINGS]
    if unknown:
        raise ValueError(f"unknown finetune setting(s) {unknown}; valid: {', '.join(SETTINGS)}")
    loss_kind = c.loss
    if loss_kind not in FINETUNE_LOSSES:
        raise ValueError(f"unknown finetune.loss {loss_kind!r}; "
                         f"valid: {', '.join(FINETUNE_LOSSES)}")
    labelled_batch_size(config)  # a bad fraction fails before any setting trains
    seed = finetune_seed(config)
    labels = _load_npz(workdir.require("complete", "pseudo_labels.npz"))
    if "shuffled_error" in c.settings:
        labels["shuffled_error"] = shuffled_prediction_errors(labels, seed)
    module, cfg, variables = export.load_model(workdir.require("train3d", MODEL_DIR))
    spec = predictor.volume_spec(cfg)
    # Every setting, the controls included, runs the steps the unlabelled frames ask for.
    steps = finetune_steps(config, len(labels["index"]))
    tx = _optimizer(c, steps, frozen=("detector",))
    apply_kwargs = {"train_detector": False, "freeze_batchnorm": bool(c.freeze_batchnorm)}
    # The settings differ in their labels, and in their loss only by gamma (Eq. 4's weights
    # arrive as confidences in the batch), so they share one compiled step per gamma: with
    # nine settings that saves seven compilations (about 10 s each on 2 CPU cores).
    steps_by_loss: dict[tuple, tuple[Callable, Callable]] = {}

    def step_for(bones: bool) -> tuple[Callable, Callable]:
        gamma = c.gamma if bones and loss_kind == "eq2" else 0.0
        key = (loss_kind, gamma)
        if key not in steps_by_loss:
            if loss_kind == "supervised":
                loss_fn = supervised_loss_fn(spec, config.model.softargmax_k,
                                             float(config.train3d.get("coordinate_weight", 0.0)))
            else:
                loss_fn = finetune_loss_fn(spec, config.model.softargmax_k, c.tau, gamma,
                                           bool(c.get("normalise_weights", False)))
            step_fn = make_train_step(module, loss_fn, tx, _mesh_for(c.batch_size),
                                      frozen=("detector",), apply_kwargs=apply_kwargs)
            steps_by_loss[key] = (loss_fn, step_fn)
        return steps_by_loss[key]

    info = {}
    for setting in c.settings:
        stage_dir = os.path.join(workdir.stage_dir("finetune"), setting)
        model_path = os.path.join(stage_dir, MODEL_DIR)
        if os.path.exists(os.path.join(model_path, "model_config.json")):
            print(f"  finetune/{setting}: done already, skipped", flush=True)
            continue
        target, _, bones = SETTINGS[setting]
        pipe = finetune_pipeline(config, setting, labels)
        init = train_state_from_variables(variables, tx, seed)
        kind = "labelled" if target == LABELLED_TRUTH else "pseudo-labelled"
        print(f"  finetune/{setting}: {steps} steps on {describe_frames(pipe, kind)}",
              flush=True)
        loss_fn, step_fn = step_for(bones)
        state = _train(config, stage_dir, module, loss_fn, init, pipe, steps=steps, tx=tx,
                       frozen=("detector",), apply_kwargs=apply_kwargs, step_fn=step_fn,
                       checkpoint_every=c.checkpoint_every,
                       run_meta={"stage": f"finetune/{setting}", "loss": loss_kind,
                                 "learning_rate": c.learning_rate,
                                 "batch_size": c.batch_size, "gamma": c.gamma, "tau": c.tau,
                                 "labelled_fraction": float(c.labelled_fraction)})
        export.save_model(model_path, "volumetric", cfg, _variables(state))
        growth = progress.loss_growth(progress.logged_losses(
            os.path.join(stage_dir, "metrics.jsonl")))
        if divergence.diverged_settings({setting: growth}):
            print(f"  finetune/{setting}: {divergence.diverged_warning(setting, growth)}",
                  flush=True)
        info[setting] = {"steps": steps, "loss_growth": growth}
    return info


# -------------------------------------------------------------------------------------- evaluate
def validation_errors(out: dict[str, np.ndarray],
                      scenes: dict[str, tuple[str, ...]] | None = None) -> dict[str, Any]:
    """Errors of one network's validation predictions: overall, per action, per subject, and per
    scene when `scenes` ({scene: validation subjects}) is given (paper Table 7)."""
    errors = metrics.pose_errors(out["pred"], out["gt"])
    result: dict[str, Any] = {"overall": {m: float(e.mean()) for m, e in errors.items()},
                              "frames": int(len(out["pred"]))}
    for group in ("action", "subject"):
        keys = out[group].astype(str)
        result[f"per_{group}"] = {
            key: {m: float(e[keys == key].mean()) for m, e in errors.items()}
            for key in sorted(set(keys.tolist()))}
    if scenes:
        result["per_scene"] = datasets.scene_errors(out, scenes, errors)
    return result


def evaluate(config: ml_collections.ConfigDict, workdir: Workdir) -> dict:
    """MPJPE, NMPJPE, PMPJPE of the baseline and every fine-tuned network on validation."""
    sel = datasets.selection(config, "validation")
    models = {"baseline": workdir.require("train3d", MODEL_DIR)}
    for setting in config.finetune.settings:
        models[setting] = workdir.require("finetune", os.path.join(setting, MODEL_DIR))
    outputs = _predict_split(config, models, sel.source, sel.subjects, sel.actions)
    scenes = datasets.scenes(config)
    results = {}
    for name, out in outputs.items():
        results[name] = validation_errors(out, scenes)
        _save_npz(workdir.file("evaluate", f"predictions_{name}.npz"),
                  {k: out[k] for k in ("subject", "action", "sequence_id", "frame_index", "pred",
                                       "gt", "confidence")})
        o = results[name]["overall"]
        print(f"  {name:>10}: MPJPE {o['mpjpe']:.1f}  NMPJPE {o['nmpjpe']:.1f}  "
              f"PMPJPE {o['pmpjpe']:.1f} mm", flush=True)
    with open(workdir.file("evaluate", "results.json"), "w") as f:
        json.dump({"settings": results}, f, indent=2)
    return {"mpjpe": {k: v["overall"]["mpjpe"] for k, v in results.items()}}


# ---------------------------------------------------------------------------------------- report
def report(config: ml_collections.ConfigDict, workdir: Workdir) -> dict:
    """Tables (markdown + JSON) and figures of the run; prints the markdown."""
    from experiments import report as report_lib
    markdown = report_lib.write_report(workdir.path)
    print(markdown, flush=True)
    return {"report": os.path.join(workdir.path, "report", "report.md")}


# Stages whose outputs depend on `finetune.settings`, a field a rerun in the same work directory
# may change: such a stage counts as done only if it covered every setting the config asks for
# (`main.run` records them in its DONE.json).
SETTINGS_STAGES: tuple[str, ...] = ("finetune", "evaluate", "report")


def missing_settings(config: ml_collections.ConfigDict, stage: str,
                     done_info: Mapping[str, Any]) -> list[str]:
    """The loss settings of `config` that a finished `stage` (its DONE.json info) did not cover;
    empty for stages that do not depend on them."""
    if stage not in SETTINGS_STAGES:
        return []
    if "settings" in done_info:
        covered = set(done_info["settings"])
    else:  # DONE markers written before the settings were recorded
        covered = {k for k in done_info.get("mpjpe", {}) if k != "baseline"}
    return [s for s in config.finetune.settings if s not in covered]


STAGE_FUNCTIONS: dict[str, Callable[[ml_collections.ConfigDict, Workdir], dict]] = {
    "pretrain2d": pretrain2d, "train3d": train3d, "predict": predict, "complete": complete,
    "finetune": finetune, "evaluate": evaluate, "report": report,
}
