"""The training loop: kill -9 and resume, same data order; run settings checked on resume."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import helpers_train as H
from hourglass_jax import checkpoint as C
from hourglass_jax import train

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# A failure guard, not a timing check: room for a machine busy with other test workers.
FIRST_CHECKPOINT_DEADLINE_S = 300
TOTAL, EVERY = 12, 3


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, HERE, env.get("PYTHONPATH", "")])
    return env


def _fit_cmd(workdir, sleep_s):
    return [sys.executable, os.path.join(HERE, "helpers_train.py"), "fit", "--workdir",
            str(workdir), "--total_steps", str(TOTAL), "--checkpoint_every", str(EVERY),
            "--sleep_s", str(sleep_s)]


def _uninterrupted(workdir):
    model, tx, state = H.init_state()
    return jax.device_get(train.fit(
        model, H.loss_fn, tx, state, H.make_batch, workdir=workdir, total_steps=TOTAL,
        frozen=("detector",), apply_kwargs=dict(train_detector=False), checkpoint_every=EVERY,
        log_every=1, run_meta={"test": "kill"}, stream=io.StringIO()))


def test_sigkill_sigterm_resume_reaches_same_parameters(tmp_path):
    """A training subprocess is SIGKILLed after its first checkpoint; restarted, it is stopped
    by SIGTERM (checkpoint, clean exit); restarted again it finishes, with the same state, bit
    for bit, as an uninterrupted run (same device count, same compiled program)."""
    killed = tmp_path / "killed"
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(_fit_cmd(killed, sleep_s=0.4), env=_env(), stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + FIRST_CHECKPOINT_DEADLINE_S
        while C.latest_step(killed / "checkpoints") is None:
            assert proc.poll() is None, open(tmp_path / "first.log").read()[-3000:]
            assert time.time() < deadline, f"no checkpoint within {FIRST_CHECKPOINT_DEADLINE_S} s"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert proc.returncode == -signal.SIGKILL
    killed_at = C.latest_step(killed / "checkpoints")
    assert killed_at is not None and killed_at < TOTAL  # really killed mid-run
    # Second run: resumes, then gets SIGTERM (preemption notice): checkpoints and exits cleanly.
    proc = subprocess.Popen(_fit_cmd(killed, sleep_s=0.4), env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("step ") and int(line.split()[1].split("/")[0]) >= killed_at + 2:
                proc.send_signal(signal.SIGTERM)
                break
        rest, _ = proc.communicate(timeout=60)
        lines.append(rest)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(lines)
    assert proc.returncode == 0, out[-3000:]
    assert f"resuming from checkpoint step {killed_at}" in out
    stopped_at = int(out.split("SIGTERM: checkpointed step ")[1].split(",")[0])
    assert killed_at + 2 <= stopped_at < TOTAL
    assert C.latest_step(killed / "checkpoints") == stopped_at
    # Third run: resumes and finishes.
    resumed = subprocess.run(_fit_cmd(killed, sleep_s=0.0), env=_env(), capture_output=True,
                             text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert f"resuming from checkpoint step {stopped_at}" in resumed.stdout
    # Metrics file: every step exactly once, although some steps were run twice.
    steps = [json.loads(x)["step"] for x in open(killed / "metrics.jsonl")]
    assert steps == list(range(1, TOTAL + 1))

    reference = _uninterrupted(tmp_path / "straight")
    model, tx, state = H.init_state()
    with C.Checkpointer(killed / "checkpoints", best_metric=None) as ck:
        assert ck.latest_step() == TOTAL
        final, meta = ck.restore(state)
    assert meta["step"] == TOTAL and meta["run"] == {"test": "kill"}
    assert int(final.step) == TOTAL
    for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(final)):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    assert max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(
        jax.tree.leaves(state.params["lifter"]), jax.tree.leaves(final.params["lifter"]))) > 1e-3


def test_fit_eval_best_checkpoint_and_settings_check(tmp_path):
    model, tx, state = H.init_state(frozen=())
    evals = []

    def eval_fn(st, step):
        # A made-up validation error that is best at step 4.
        evals.append(step)
        return {"val_mpjpe": abs(step - 4) + 10.0}

    out = io.StringIO()
    final = train.fit(model, H.loss_fn, tx, state, H.make_batch, workdir=tmp_path, total_steps=8,
                      checkpoint_every=100, keep_last=1, log_every=4, eval_every=2,
                      eval_fn=eval_fn, run_meta={"lr": 1e-3}, stream=out)
    assert int(final.step) == 8 and evals == [2, 4, 6, 8]
    with C.Checkpointer(tmp_path / "checkpoints") as ck:
        assert ck.all_steps() == [4, 8] and ck.best_step() == 4
    lines = [ln for ln in out.getvalue().splitlines() if ln.startswith("step ")]
    assert len(lines) == 2 and lines[0].startswith("step 4/8 loss") and "ETA" in lines[0]
    assert "eval step 4: val_mpjpe 10" in out.getvalue()
    # Resuming the finished run with other settings is refused; with the same ones it is a no-op.
    with pytest.raises(ValueError, match="other settings"):
        train.fit(model, H.loss_fn, tx, state, H.make_batch, workdir=tmp_path, total_steps=8,
                  run_meta={"lr": 2e-3}, stream=io.StringIO())
    again = train.fit(model, H.loss_fn, tx, state, H.make_batch, workdir=tmp_path, total_steps=8,
                      eval_every=2, eval_fn=eval_fn, run_meta={"lr": 1e-3}, stream=io.StringIO())
    assert int(again.step) == 8 and evals == [2, 4, 6, 8]
