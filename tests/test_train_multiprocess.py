"""Two JAX processes on localhost (CPU collectives, 4 devices each) == one process (8 devices).

The two processes train through `fit` (checkpointing every step, both writing one orbax
checkpoint), then take one more step by hand; this process repeats the same steps on its own
8 devices, and restores the 2-process checkpoint onto its single-process mesh."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import jax
import numpy as np

import helpers_train as H
from hourglass_jax import checkpoint as C
from hourglass_jax import mesh as M
from hourglass_jax import train

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
STEPS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_process(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, HERE, env.get("PYTHONPATH", "")])
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    env["JAX_PLATFORMS"] = "cpu"
    port, out = _free_port(), tmp_path / "dist.npz"
    procs = [subprocess.Popen(
        [sys.executable, os.path.join(HERE, "helpers_train.py"), "dist", "--port", str(port),
         "--process_id", str(i), "--out", str(out), "--steps", str(STEPS),
         "--workdir", str(tmp_path / "run")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    try:
        logs = [p.communicate(timeout=400)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]

    # Same steps in this process, on its 8 devices.
    model, tx, state = H.init_state(frozen=())
    mesh = M.make_data_mesh(8)
    step = train.make_train_step(model, H.loss_fn, tx, mesh)
    init = state
    state = train.place_state(state, mesh)
    for s in range(STEPS + 1):
        state, metrics = step(state, M.shard_global_batch(H.make_batch(s), mesh))
        if s + 1 == STEPS:
            at_checkpoint = jax.device_get(state)
    ref = jax.tree.leaves(jax.device_get((state.params, state.batch_stats,
                                          {"loss": metrics["loss"]})))
    got = H.load_leaves(str(out))
    assert len(got) == len(ref)
    for a, b in zip(ref, got):
        # Cross-process (gloo) reductions may sum in another order: float32 rounding only.
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    assert max(float(np.max(np.abs(np.asarray(a) - b))) for a, b in zip(
        jax.tree.leaves(init.params), got[:len(jax.tree.leaves(init.params))])) > 1e-4

    with C.Checkpointer(tmp_path / "run" / "checkpoints", best_metric=None) as ck:
        assert ck.all_steps() == list(range(1, STEPS + 1))
        restored, meta = ck.restore(init, mesh=mesh)
    assert meta["step"] == STEPS and int(restored.step) == STEPS
    for a, b in zip(jax.tree.leaves(at_checkpoint), jax.tree.leaves(restored)):
        assert b.sharding.is_equivalent_to(M.replicated(mesh), b.ndim)
        np.testing.assert_allclose(np.asarray(b), a, rtol=1e-5, atol=1e-6)
