"""A small stand-in network and loss for the training-system tests (and their subprocesses).

`TwoStage` mimics the real network's layout: a `detector` submodule (conv + BatchNorm) whose
features feed a `lifter` submodule (conv + BatchNorm + dense), variables
{"params": {"detector", "lifter"}, "batch_stats": {"detector", "lifter"}}.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


class _Block(nn.Module):
    features: int
    bn_axis_name: str | None
    dtype: Any

    @nn.compact
    def __call__(self, x, train: bool):
        # No bias before BatchNorm: it would be cancelled (zero gradient) anyway.
        x = nn.Conv(self.features, (3, 3), use_bias=False, dtype=self.dtype)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                         axis_name=self.bn_axis_name, dtype=self.dtype)(x)
        return nn.relu(x)


class Detector(nn.Module):
    bn_axis_name: str | None = "data"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        x = _Block(4, self.bn_axis_name, self.dtype)(x, train)
        heat = nn.Conv(2, (1, 1), dtype=self.dtype)(x)
        return heat, x


class Lifter(nn.Module):
    bn_axis_name: str | None = "data"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, feats, train: bool):
        x = _Block(4, self.bn_axis_name, self.dtype)(feats, train)
        x = x.mean(axis=(1, 2))
        return nn.Dense(3, dtype=self.dtype)(x)


class TwoStage(nn.Module):
    """images (B, 8, 8, 3) -> {"heat": (B, 8, 8, 2), "pose": (B, 3)}."""

    bn_axis_name: str | None = "data"
    dtype: Any = jnp.float32

    def setup(self):
        self.detector = Detector(self.bn_axis_name, self.dtype)
        self.lifter = Lifter(self.bn_axis_name, self.dtype)

    def __call__(self, images, train: bool, train_detector: bool = True):
        heat, feats = self.detector(images, train and train_detector)
        if not train_detector:
            feats = jax.lax.stop_gradient(feats)
        return {"heat": heat, "pose": self.lifter(feats, train)}


def loss_fn(outputs, batch):
    """Mean squared errors of both heads (means over the device's batch)."""
    l_heat = jnp.mean((outputs["heat"] - batch["heat"]) ** 2)
    l_pose = jnp.mean((outputs["pose"] - batch["pose"]) ** 2)
    return l_heat + l_pose, {"pose_mse": l_pose}


def make_batch(step: int, batch_size: int = 8) -> dict[str, np.ndarray]:
    """Deterministic synthetic batch number `step` (float32 numpy)."""
    rs = np.random.default_rng(1000 + step)
    return {
        "image": rs.normal(size=(batch_size, 8, 8, 3)).astype(np.float32),
        "heat": rs.normal(size=(batch_size, 8, 8, 2)).astype(np.float32),
        "pose": rs.normal(size=(batch_size, 3)).astype(np.float32),
    }


def init_state(frozen: tuple[str, ...] = ("detector",), lr: float = 1e-3, seed: int = 0,
               dtype: Any = jnp.float32):
    """(model, tx, state) for the stand-in: the state is unplaced (default device)."""
    from hourglass_jax import train
    model = TwoStage(dtype=dtype)
    tx = train.make_optimizer(lr, frozen=frozen)
    state = train.create_train_state(model, tx, seed, np.zeros((1, 8, 8, 3), np.float32),
                                     train=False)
    return model, tx, state


def save_tree(path: str, tree: Any) -> None:
    """Save a pytree's leaves (fetched to host) as arrays leaf_0, leaf_1, ... in an .npz."""
    leaves = [np.asarray(jax.device_get(x)) for x in jax.tree.leaves(tree)]
    np.savez(path, **{f"leaf_{i}": x for i, x in enumerate(leaves)})


def load_leaves(path: str) -> list[np.ndarray]:
    """Leaves written by `save_tree`, in order."""
    with np.load(path) as z:
        return [z[f"leaf_{i}"] for i in range(len(z.files))]


def _run_fit(workdir: str, total_steps: int, checkpoint_every: int, sleep_s: float) -> None:
    import time
    from hourglass_jax import train
    model, tx, state = init_state()

    def batch_at(step):
        time.sleep(sleep_s)  # slows the run down so that the parent can kill it mid-way
        return make_batch(step)

    train.fit(model, loss_fn, tx, state, batch_at, workdir=workdir, total_steps=total_steps,
              frozen=("detector",), apply_kwargs=dict(train_detector=False),
              checkpoint_every=checkpoint_every, log_every=1, run_meta={"test": "kill"})


def _run_dist(port: int, process_id: int, out: str, steps: int, workdir: str) -> None:
    """One process of a 2-process job: `steps` steps through `fit` (with its checkpoints), then
    one more step by hand to get the metrics; process 0 writes the result."""
    from hourglass_jax import mesh as M, train
    M.initialize_distributed(f"127.0.0.1:{port}", 2, process_id)
    model, tx, state = init_state(frozen=())
    mesh = M.make_data_mesh()
    state = train.fit(model, loss_fn, tx, state, make_batch, workdir=workdir, total_steps=steps,
                      mesh=mesh, checkpoint_every=1, log_every=1)
    step = train.make_train_step(model, loss_fn, tx, mesh)
    state, metrics = step(state, M.shard_global_batch(make_batch(steps), mesh))
    # Replicated: this process's first shard holds the whole value.
    host = jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data), state)
    if process_id == 0:
        save_tree(out, (host.params, host.batch_stats, {"loss": np.asarray(
            metrics["loss"].addressable_shards[0].data)}))
    jax.distributed.shutdown()


if __name__ == "__main__":
    import argparse
    parser = argparse.ArgumentParser(description="subprocess worker of the training tests")
    parser.add_argument("mode", choices=["fit", "dist"])
    parser.add_argument("--workdir")
    parser.add_argument("--total_steps", type=int, default=12)
    parser.add_argument("--checkpoint_every", type=int, default=3)
    parser.add_argument("--sleep_s", type=float, default=0.0)
    parser.add_argument("--port", type=int)
    parser.add_argument("--process_id", type=int)
    parser.add_argument("--out")
    parser.add_argument("--steps", type=int, default=2)
    a = parser.parse_args()
    if a.mode == "fit":
        _run_fit(a.workdir, a.total_steps, a.checkpoint_every, a.sleep_s)
    else:
        _run_dist(a.port, a.process_id, a.out, a.steps, a.workdir)
