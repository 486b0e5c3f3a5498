"""Checkpoints (orbax) and progress logging."""
from __future__ import annotations

import io
import json
import os

import jax
import numpy as np
import pytest

import helpers_train as H
from hourglass_jax import checkpoint as C
from hourglass_jax import mesh as M
from hourglass_jax import progress, train


def test_roundtrip_onto_mesh_shardings(tmp_path):
    model, tx, state = H.init_state(frozen=("detector",))
    mesh = M.make_data_mesh(8)
    placed = train.place_state(state, mesh)
    with C.Checkpointer(tmp_path / "ck") as ck:
        ck.save(7, placed, {"note": "x", "n": [1, 2]})
        ck.wait()
        restored, meta = ck.restore(state, mesh=mesh)  # target from the unplaced state
    assert meta == {"note": "x", "n": [1, 2]}
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
        assert b.sharding.is_equivalent_to(M.replicated(mesh), b.ndim)
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes() and a.dtype == b.dtype
    assert C.latest_step(tmp_path / "ck") == 7


def test_keeps_last_n_plus_best(tmp_path):
    model, tx, state = H.init_state(frozen=())
    ck = C.Checkpointer(tmp_path / "ck", keep_last=2, best_metric="val_mpjpe", best_mode="min")
    # step -> validation MPJPE (None: saved without evaluation).
    history = {1: 90.0, 2: 60.0, 3: 75.0, 4: None, 5: 80.0, 6: None}
    for step, v in history.items():
        ck.save(step, state, {"step": step}, None if v is None else {"val_mpjpe": v})
    ck.wait()
    # Last two (5, 6) plus the lowest MPJPE (2); the rest deleted.
    assert ck.all_steps() == [2, 5, 6]
    assert ck.best_step() == 2 and ck.latest_step() == 6
    _, meta = ck.restore(state, 2)
    assert meta == {"step": 2}
    with pytest.raises(FileNotFoundError, match="step 3"):
        ck.restore(state, 3)
    with pytest.raises(ValueError, match="val_mpjpe"):
        ck.save(7, state, {}, {"loss": 1.0})
    ck.close()


def test_missing_checkpoint_and_bad_options(tmp_path):
    assert C.latest_step(tmp_path / "nothing") is None
    model, tx, state = H.init_state(frozen=())
    with C.Checkpointer(tmp_path / "empty") as ck:
        assert ck.latest_step() is None
        with pytest.raises(FileNotFoundError, match="no checkpoint"):
            ck.restore(state)
    with pytest.raises(ValueError, match="keep_last"):
        C.Checkpointer(tmp_path / "x", keep_last=0)
    with pytest.raises(ValueError, match="best_mode"):
        C.Checkpointer(tmp_path / "y", best_mode="lowest")


def test_progress_logger_lines_jsonl_tensorboard_and_resume(tmp_path):
    out = io.StringIO()
    log = progress.ProgressLogger(tmp_path, total_steps=10, images_per_step=4, every=5,
                                  stream=out)
    assert [s for s in range(1, 11) if log.due(s)] == [5, 10]
    log.log_train(5, {"loss": 2.0})
    line = log.log_train(10, {"loss": 1.0})
    log.log_eval(10, {"val_mpjpe": 55.5})
    log.close()
    assert line.startswith("step 10/10 loss 1 |") and "img/s" in line and "ETA 0:00:00" in line
    recs = [json.loads(x) for x in open(tmp_path / "metrics.jsonl")]
    assert [(r["kind"], r["step"]) for r in recs] == [("train", 5), ("train", 10), ("eval", 10)]
    assert recs[1]["loss"] == 1.0 and recs[1]["images_per_s"] > 0
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tb"))
    # A run resumed from step 5 drops what the killed run logged after it.
    log = progress.ProgressLogger(tmp_path, total_steps=10, start_step=5, stream=io.StringIO(),
                                  tensorboard=False)
    log.close()
    assert [json.loads(x)["step"] for x in open(tmp_path / "metrics.jsonl")] == [5]


def test_format_duration():
    assert progress.format_duration(3725.4) == "1:02:05"
    assert progress.format_duration(float("inf")) == "?"


def test_loss_growth_against_numpy_medians(tmp_path):
    rng = np.random.default_rng(0)
    steps = np.arange(1, 49)
    falling = 5e5 * np.exp(-steps / 20.0) * rng.uniform(0.7, 1.3, steps.size) + 1e5
    # Loss that jumps tenfold after a third of the run, as the diverged fine-tuning in
    # docs/experiments.md.
    jumping = np.where(steps < 16, 4e5, 4e6) * rng.uniform(0.7, 1.3, steps.size)
    for losses in (falling, jumping):
        n = int(losses.size * 0.2)
        expected = np.median(losses[-n:]) / np.median(losses[:n])
        assert progress.loss_growth(losses) == pytest.approx(expected, rel=1e-12)
        n3 = int(losses.size * 0.3)
        assert progress.loss_growth(losses, window=0.3) == pytest.approx(
            np.median(losses[-n3:]) / np.median(losses[:n3]), rel=1e-12)
    assert progress.loss_growth(falling) < 1.0 < progress.DIVERGED_LOSS_GROWTH
    assert progress.loss_growth(jumping) > 5.0 >= progress.DIVERGED_LOSS_GROWTH
    assert progress.loss_growth([1.0, 2.0, 3.0, 4.0]) is None          # too short to tell
    assert progress.loss_growth([1.0, 1.0, float("nan"), 1.0, 1.0]) == float("inf")
    # A loss that is zero throughout (fine-tuning on the network's own predictions with frozen
    # BatchNorm and no augmentation) did not grow; one that rises from zero did.
    assert progress.loss_growth([0.0] * 10) == 1.0 < progress.DIVERGED_LOSS_GROWTH
    assert progress.loss_growth([0.0] * 5 + [1.0] * 5) == float("inf")
    with pytest.raises(ValueError, match="window"):
        progress.loss_growth(falling, window=0.8)
    # logged_losses reads what ProgressLogger wrote, train records only, in step order, and
    # skips a line cut short by a kill.
    log = progress.ProgressLogger(tmp_path, total_steps=48, every=1, stream=io.StringIO(),
                                  tensorboard=False)
    for s, v in zip(steps, jumping):
        log.log_train(int(s), {"loss": float(v)})
    log.log_eval(48, {"val_mpjpe": 1.0})
    log.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "step": 49, "lo')
    assert progress.logged_losses(tmp_path / "metrics.jsonl") == pytest.approx(jumping, rel=1e-6)
