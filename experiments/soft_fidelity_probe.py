"""Probe: Eq. 1 with a soft data term instead of the hard constraint on the confident entries.

Eq. 1 holds the confident entries exactly (P_Omega(X) = P_Omega(S)), so it cannot remove their
noise. This probe replaces that constraint by lambda_o / 2 ||P_Omega(X - S)||_F^2 in the
objective and measures, on every `--every`-th unlabelled video of a finished run, how the MPJPE
of all joints and of the confident ones changes (`--lambdas=0` is Eq. 1 itself). It runs the
float64 NumPy reference solver, or with `--solver=jax` the float32 JAX solver (all videos in one
`complete_batch` call per lambda_o); both read the weight from `CompletionConfig.lambda_o`.

    python -m experiments.soft_fidelity_probe --workdir=runs/demo_s1 --tau=0.16 \
        --lambdas=1,3,10,30,100 [--solver=jax] [--videos=labelled]

`--videos=labelled` measures on the labelled split's videos instead (the baseline's predictions
of its own training videos, made here): a choice of lambda_o that reads no ground truth of the
unlabelled videos.

The X step becomes, per row k of X (3P rows, F frames): (M + lambda_o diag(w_k)) x_k =
rhs_k + lambda_o w_k * s_k, with M and rhs those of the exact step and w_k the row's
confident-frame indicator (`completion.reference.solve`). As lambda_o grows, it tends to the
exact constraint.
"""
from __future__ import annotations

import json
import os
from typing import Sequence

import ml_collections
import numpy as np
from absl import app, flags

from completion import complete_batch, reference
from completion.config import CompletionConfig
from experiments import common, stages
from experiments import workdir as workdir_lib

SOLVERS = ("reference", "jax")


def complete_many(poses: Sequence[np.ndarray], observed: Sequence[np.ndarray],
                  config: CompletionConfig, solver: str = "reference") -> list[np.ndarray]:
    """Each (F_i, P, 3) mm video completed with `config` (its lambda_o included): one by one with
    the float64 reference solver, or all in one padded `complete_batch` call of the JAX solver."""
    if solver == "reference":
        return [reference.complete(p, o, config).X for p, o in zip(poses, observed)]
    if solver != "jax":
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    outs = complete_batch(list(poses), list(observed), config)
    return [np.asarray(r.X, np.float64) for r in outs]


def probe(preds: dict[str, np.ndarray], tau: float, lambdas: Sequence[float], every: int,
          config: CompletionConfig, solver: str = "reference") -> dict:
    """MPJPE of the raw and the soft-completed predictions (all joints, confident joints)."""
    chosen = common.video_rows(preds["sequence_id"], preds["frame_index"])[::every]
    out = {"videos": len(chosen), "tau": tau, "solver": solver, "lambda_o": {}}
    videos = [rows for rows in chosen  # the usable ones
              if len(rows) >= 2 and (preds["confidence"][rows] > tau).any()]
    conf = [preds["confidence"][rows] > tau for rows in videos]
    raw = [np.linalg.norm(preds["pred"][rows] - preds["gt"][rows], axis=-1) for rows in videos]
    raw_e, c = np.concatenate(raw), np.concatenate(conf)
    for lam in lambdas:
        xs = complete_many([preds["pred"][rows] for rows in videos], conf,
                           config.replace(lambda_o=lam), solver)
        done_e = np.concatenate([np.linalg.norm(x - preds["gt"][rows], axis=-1)
                                 for x, rows in zip(xs, videos)])
        out["lambda_o"][f"{lam:g}"] = {
            "predictions_mpjpe": float(raw_e.mean()), "completed_mpjpe": float(done_e.mean()),
            "change_percent": float(100 * (done_e.mean() / raw_e.mean() - 1)),
            "confident_predictions": float(raw_e[c].mean()),
            "confident_completed": float(done_e[c].mean())}
    return out


def labelled_predictions(workdir: str) -> dict[str, np.ndarray]:
    """The baseline's (train3d) predictions on every labelled video of the work directory's
    config, in the layout of predict/predictions.npz (root-relative mm, with ground truth)."""
    config = ml_collections.ConfigDict(workdir_lib.load_stored_config(workdir))
    model = os.path.join(workdir, "train3d", stages.MODEL_DIR)
    if not os.path.exists(os.path.join(model, "model_config.json")):
        raise FileNotFoundError(f"{model} not found: --workdir must hold a finished train3d stage")
    outs = stages._predict_split(config, {"baseline": model}, common.sources(config)["train"],
                                 config.data.labelled_subjects, config.data.labelled_actions)
    return outs["baseline"]


def main(argv: Sequence[str]) -> None:
    del argv
    workdir = flags.FLAGS.workdir or ""
    if flags.FLAGS.videos == "labelled":
        preds = labelled_predictions(workdir)
    else:
        path = os.path.join(workdir, "predict", "predictions.npz")
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"{path} not found: --workdir must hold a finished predict stage")
        with np.load(path) as f:
            preds = {k: f[k] for k in f.files}
    lambdas = [float(v) for v in flags.FLAGS.lambdas.split(",") if v]
    result = probe(preds, flags.FLAGS.tau, lambdas, flags.FLAGS.every,
                   CompletionConfig(max_iters=flags.FLAGS.max_iters), flags.FLAGS.solver)
    result["videos_of"] = flags.FLAGS.videos
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "A work directory with the predict stage done.")
    flags.DEFINE_float("tau", 0.16, "Confidence threshold.")
    flags.DEFINE_string("lambdas", "1,3,10,30,100", "Comma-separated lambda_o values.")
    flags.DEFINE_integer("every", 8, "Use every n-th video.")
    flags.DEFINE_enum("videos", "unlabelled", ["unlabelled", "labelled"],
                      "unlabelled: the predict stage's videos; labelled: the labelled split's "
                      "videos, predicted here by the baseline (no unlabelled ground truth read).")
    flags.DEFINE_integer("max_iters", 150, "ALM iterations at most (the demo's setting).")
    flags.DEFINE_enum("solver", "reference", list(SOLVERS),
                      "reference: float64 NumPy; jax: float32 CompletionConfig.lambda_o, batched.")
    app.run(main)
