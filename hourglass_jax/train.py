"""Data-parallel training: TrainState, RMSprop with frozen sub-networks, the shard_map step.

The step is the pmap programming model on `jax.shard_map`: every device of a 1-D ("data",)
mesh holds a replica of the state and a slice of the global batch; gradients, loss, metrics
and BatchNorm running statistics are averaged with `lax.pmean`. The same program runs on one
device (a mesh of size 1), on many devices and on many hosts.

The model is any Flax linen module whose `apply` takes `{"params", "batch_stats"}` and
`train=...`; the loss is any `loss_fn(outputs, batch) -> (scalar, metrics dict)` computed as a
mean over the (per-device) batch, so that the mean over devices is the mean over the global
batch. For BatchNorm to see the global batch (and match a single-device step exactly), the
model's BatchNorm layers must be built with `axis_name="data"` (`mesh.DATA_AXIS`); without it
each device normalises with its own shard's statistics and only the running averages are
averaged afterwards.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import warnings
from typing import Any, Callable, Mapping, Sequence, TextIO

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, PartitionSpec as P

from hourglass_jax.checkpoint import Checkpointer
from hourglass_jax.mesh import DATA_AXIS, make_data_mesh, replicate, shard_batch, shard_global_batch
from hourglass_jax.progress import ProgressLogger

# Learning rates of the paper (Sec. 4.1) and c2f-vol: supervised training and fine-tuning.
SUPERVISED_LR: float = 2.5e-4
FINETUNE_LR: float = 2.5e-5

LossFn = Callable[[Any, Mapping[str, jax.Array]], tuple[jax.Array, dict[str, jax.Array]]]
InputsFn = Callable[[Mapping[str, jax.Array]], tuple]


class TrainState(flax.struct.PyTreeNode):
    """Everything a run needs to continue bit-for-bit: a plain pytree of arrays.

    Attributes:
      step: () int32, number of optimizer steps taken.
      params: the model's "params" collection (float32).
      batch_stats: the model's "batch_stats" collection (BatchNorm running mean/var).
      opt_state: the optax state.
      rng: (2,) uint32 raw PRNG key data (raw so that checkpoints hold plain arrays).
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array


# Torch7 optim/rmsprop.lua: alpha 0.99, eps 1e-8 added outside the square root, v starts at 0.
_TORCH7_RMS = dict(decay=0.99, eps=1e-8, eps_in_sqrt=False, initial_scale=0.0)


def rmsprop(learning_rate: float | optax.Schedule) -> optax.GradientTransformation:
    """RMSprop as Torch7 `optim.rmsprop` (used by c2f-vol) and `torch.optim.RMSprop` define it.

    v <- 0.99 v + 0.01 g^2 (v starts at 0); p <- p - lr g / (sqrt(v) + 1e-8): alpha 0.99,
    eps 1e-8 added outside the square root, no momentum, no bias correction. (Torch7
    optim/rmsprop.lua defaults; optax's own defaults differ: decay 0.9, eps inside the sqrt.)
    """
    return optax.rmsprop(learning_rate, **_TORCH7_RMS)


def clipped_rmsprop(learning_rate: float | optax.Schedule,
                    max_normalised_step: float) -> optax.GradientTransformation:
    """`rmsprop` with each parameter's normalised step g / (sqrt(v) + eps) clipped to
    [-max_normalised_step, max_normalised_step] before the learning rate scales it.

    Torch7's RMSprop steps lr * g / sqrt(v); where v, the running mean of g^2, is small
    against a new gradient (a parameter that rarely got one, or the first steps, where the
    ratio is 1 / sqrt(0.01) = 10), that step is many times the rate. The clip bounds every
    step at lr * max_normalised_step, whatever the gradient's scale. Our guard, not the paper's.
    """
    if not max_normalised_step > 0:
        raise ValueError(f"max_normalised_step must be > 0, got {max_normalised_step}")
    return optax.chain(
        optax.scale_by_rms(**_TORCH7_RMS),
        optax.clip(max_normalised_step),
        optax.scale_by_learning_rate(learning_rate))


def make_optimizer(learning_rate: float | optax.Schedule,
                   frozen: Sequence[str] = (),
                   max_normalised_step: float = 0.0) -> optax.GradientTransformation:
    """RMSprop on every top-level parameter subtree except those named in `frozen`.

    Frozen subtrees (e.g. ("detector",) when training the volumetric stack) get
    `optax.set_to_zero` through `optax.partition`, so the optimizer keeps no RMS accumulator
    for them (their slots in the state are empty `MaskedNode`s). `max_normalised_step` > 0
    uses `clipped_rmsprop`; 0 (the default) is plain `rmsprop`.
    """
    if max_normalised_step < 0:
        raise ValueError(f"max_normalised_step must be >= 0 (0: no clip), got {max_normalised_step}")
    tx = (clipped_rmsprop(learning_rate, max_normalised_step) if max_normalised_step
          else rmsprop(learning_rate))
    if not frozen:
        return tx
    frozen = tuple(frozen)

    def labels(params):
        missing = [k for k in frozen if k not in params]
        if missing:
            raise ValueError(f"frozen subtrees {missing} not in params (keys {list(params)})")
        return {k: ("frozen" if k in frozen else "train") for k in params}

    return optax.partition({"train": tx, "frozen": optax.set_to_zero()}, labels)


def create_train_state(model: Any, tx: optax.GradientTransformation, seed: int,
                       *init_args: Any, **init_kwargs: Any) -> TrainState:
    """Initialise the model (jitted, on the default device) and the optimizer.

    Args:
      model: a Flax linen module.
      tx: the optimizer (e.g. `make_optimizer`).
      seed: integer seed; the parameters come from key(seed), the step RNG from key(seed + 1).
      *init_args, **init_kwargs: example inputs for `model.init`, e.g. images (1, H, W, 3).
    """
    variables = jax.jit(lambda k: model.init(k, *init_args, **init_kwargs))(
        jax.random.key(seed))
    return train_state_from_variables(variables, tx, seed)


def train_state_from_variables(variables: Mapping[str, Any], tx: optax.GradientTransformation,
                               seed: int) -> TrainState:
    """A step-0 TrainState that starts from given variables (e.g. a trained network's, from
    `export.load_model`): {"params", "batch_stats"} as arrays, a fresh optimizer state, and the
    step RNG of `seed` (key(seed + 1), as `create_train_state`). Fine-tuning starts here without
    initialising a network only to overwrite its parameters.
    """
    params = jax.tree.map(jnp.asarray, variables["params"])
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=jax.tree.map(jnp.asarray, variables.get("batch_stats", {})),
                      opt_state=tx.init(params),
                      rng=jax.random.key_data(jax.random.key(seed + 1)))


def _default_inputs(batch: Mapping[str, jax.Array]) -> tuple:
    return (batch["image"],)


def _to_float32(tree: Any) -> Any:
    # Losses are computed in float32 even when the network computes in bfloat16.
    return jax.tree.map(
        lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def _varying(tree: Any) -> Any:
    # Replicated (invariant) inputs become per-device values: the gradient of a per-device
    # loss is then the per-device gradient, averaged explicitly below (pmap semantics).
    return jax.tree.map(lambda x: lax.pcast(x, DATA_AXIS, to="varying"), tree)


def _pmean(tree: Any) -> Any:
    def mean(x):
        if DATA_AXIS in getattr(jax.typeof(x), "vma", frozenset({DATA_AXIS})):
            return lax.pmean(x, DATA_AXIS)
        return x  # already identical on every device (e.g. a constant metric)
    return jax.tree.map(mean, tree)


def _warn_unsynced_batchnorm(model: Any, mesh: Mesh) -> None:
    """Warn when a model declares BatchNorm without the data axis on a multi-device mesh."""
    if mesh.devices.size < 2:
        return
    for holder in (model, getattr(model, "config", None)):
        if holder is not None and hasattr(holder, "bn_axis_name"):
            if getattr(holder, "bn_axis_name") != DATA_AXIS:
                warnings.warn(
                    f"{type(model).__name__} has bn_axis_name={holder.bn_axis_name!r}: BatchNorm "
                    f"will normalise each device's shard on its own, so the step differs from a "
                    f"single-device step; build it with bn_axis_name={DATA_AXIS!r}", stacklevel=3)
            return


def make_train_step(model: Any, loss_fn: LossFn, tx: optax.GradientTransformation, mesh: Mesh,
                    *, frozen: Sequence[str] = (), inputs_fn: InputsFn = _default_inputs,
                    apply_kwargs: Mapping[str, Any] | None = None, donate: bool = True
                    ) -> Callable[[TrainState, Mapping[str, jax.Array]],
                                  tuple[TrainState, dict[str, jax.Array]]]:
    """Build the jitted data-parallel training step `step(state, batch) -> (state, metrics)`.

    Args:
      model: Flax module; called as `model.apply(variables, *inputs_fn(batch), train=True,
        **apply_kwargs, mutable=["batch_stats"], rngs={"dropout": ...})`.
      loss_fn: `(outputs, batch) -> (loss, metrics)`, means over the device's batch. Outputs
        are cast to float32 first (bf16 compute, float32 loss).
      tx: the optimizer; built with the same `frozen` names (see `make_optimizer`).
      mesh: 1-D ("data",) mesh; the global batch size must be a multiple of its size.
      frozen: top-level parameter subtrees that are not trained: no gradient is computed for
        them, and they and their BatchNorm statistics are returned unchanged (bit-identical).
      inputs_fn: picks the model's positional inputs from the batch (default `batch["image"]`).
      apply_kwargs: extra keyword arguments for `model.apply` (e.g. train_detector=False).
      donate: donate the input state's buffers (the caller must not reuse `state`).
    Returns:
      step(state, batch): state replicated on `mesh`, batch a dict of arrays (B, ...) split
      over "data"; returns the new state and the metrics (with "loss"), averaged over the
      global batch.
    """
    frozen = tuple(frozen)
    apply_kwargs = dict(apply_kwargs or {})
    _warn_unsynced_batchnorm(model, mesh)

    def local_step(state: TrainState, batch):
        params = state.params
        missing = [k for k in frozen if k not in params]
        if missing:
            raise ValueError(f"frozen subtrees {missing} not in params (keys {list(params)})")
        trainable = {k: v for k, v in params.items() if k not in frozen}
        fixed = {k: v for k, v in params.items() if k in frozen}

        rng = jax.random.wrap_key_data(state.rng)
        rng, step_key = jax.random.split(rng)
        dropout_key = jax.random.fold_in(step_key, lax.axis_index(DATA_AXIS))
        stats_in = _varying(state.batch_stats)

        def loss_of(trainable_params):
            variables = {"params": {**trainable_params, **fixed}, "batch_stats": stats_in}
            outputs, updates = model.apply(variables, *inputs_fn(batch), train=True,
                                           mutable=["batch_stats"], rngs={"dropout": dropout_key},
                                           **apply_kwargs)
            loss, metrics = loss_fn(_to_float32(outputs), batch)
            return loss, (metrics, updates.get("batch_stats", {}))

        (loss, (metrics, new_stats)), grads = jax.value_and_grad(loss_of, has_aux=True)(
            _varying(trainable))
        grads = _pmean(grads)
        # set_to_zero ignores these; zeros keep the tree structure the optimizer expects.
        all_grads = {**grads, **jax.tree.map(jnp.zeros_like, fixed)}
        updates, opt_state = tx.update(all_grads, state.opt_state, params)
        new_params = optax.apply_updates(params, updates)
        # Frozen subtrees are passed through untouched (x + 0 would turn -0.0 into +0.0).
        new_params = {k: (params[k] if k in frozen else new_params[k]) for k in params}
        new_stats = _pmean(new_stats)
        if isinstance(new_stats, Mapping):
            new_stats = {k: (state.batch_stats[k] if k in frozen and k in state.batch_stats
                             else v) for k, v in new_stats.items()}
        metrics = _pmean({"loss": loss, **metrics})
        new_state = state.replace(step=state.step + 1, params=new_params, batch_stats=new_stats,
                                  opt_state=opt_state, rng=jax.random.key_data(rng))
        return new_state, metrics

    sharded = jax.shard_map(local_step, mesh=mesh, in_specs=(P(), P(DATA_AXIS)),
                            out_specs=(P(), P()))
    return jax.jit(sharded, donate_argnums=(0,) if donate else ())


def make_eval_step(model: Any, metric_fn: Callable[[Any, Mapping[str, jax.Array]],
                                                   dict[str, jax.Array]],
                   mesh: Mesh, *, inputs_fn: InputsFn = _default_inputs,
                   apply_kwargs: Mapping[str, Any] | None = None
                   ) -> Callable[[TrainState, Mapping[str, jax.Array]], dict[str, jax.Array]]:
    """Jitted data-parallel evaluation `eval_step(state, batch) -> metrics`.

    `metric_fn(outputs, batch)` returns per-device means; they are averaged over devices
    (equal shard sizes, so this is the mean over the global batch). BatchNorm uses its
    running statistics (`train=False`).
    """
    apply_kwargs = dict(apply_kwargs or {})

    def local_eval(state: TrainState, batch):
        outputs = model.apply({"params": state.params, "batch_stats": state.batch_stats},
                              *inputs_fn(batch), train=False, **apply_kwargs)
        return _pmean(metric_fn(_to_float32(outputs), batch))

    return jax.jit(jax.shard_map(local_eval, mesh=mesh, in_specs=(P(), P(DATA_AXIS)),
                                 out_specs=P()))


def place_state(state: TrainState, mesh: Mesh) -> TrainState:
    """Replicate a host/default-device state on every device of `mesh`."""
    return replicate(state, mesh)


def count_leaves(tree: Any) -> tuple[int, int]:
    """(number of array leaves, total number of elements) of a pytree; for memory checks."""
    leaves = [x for x in jax.tree.leaves(tree) if hasattr(x, "shape")]
    return len(leaves), int(sum(np.prod(x.shape, dtype=np.int64) for x in leaves))


def check_batch(batch: Mapping[str, Any], step: int) -> dict[str, np.ndarray]:
    """Validate a host batch: a non-empty dict of arrays with one leading batch size and finite
    floating values. Raises ValueError naming the step and key."""
    if not isinstance(batch, Mapping) or not batch:
        raise ValueError(f"batch_at({step}) must return a non-empty dict of arrays")
    out = {k: np.asarray(v) for k, v in batch.items()}
    sizes = {k: (v.shape[0] if v.ndim else None) for k, v in out.items()}
    if None in sizes.values() or len(set(sizes.values())) != 1:
        raise ValueError(f"batch_at({step}): arrays need one common batch size, got {sizes}")
    for k, v in out.items():
        if np.issubdtype(v.dtype, np.floating) and not np.all(np.isfinite(v)):
            raise ValueError(f"batch_at({step}): {k!r} contains NaN or inf")
    return out


class _SigtermFlag:
    """Turns SIGTERM (the usual preemption notice) into a flag the loop checks after each step.

    Installed only in single-process runs, from the main thread: with several processes each
    would stop at a different step and the others would wait forever in a collective.
    """

    def __init__(self, enable: bool):
        self.requested = False
        self._previous = None
        if (enable and jax.process_count() == 1
                and threading.current_thread() is threading.main_thread()):
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None


def fit(model: Any, loss_fn: LossFn, tx: optax.GradientTransformation, init_state: TrainState,
        batch_at: Callable[[int], Mapping[str, np.ndarray]], *, workdir: str | os.PathLike,
        total_steps: int, mesh: Mesh | None = None, frozen: Sequence[str] = (),
        inputs_fn: InputsFn = _default_inputs, apply_kwargs: Mapping[str, Any] | None = None,
        checkpoint_every: int = 100, keep_last: int = 3, log_every: int = 10,
        eval_every: int = 0,
        eval_fn: Callable[[TrainState, int], Mapping[str, float]] | None = None,
        best_metric: str | None = "val_mpjpe", run_meta: Mapping[str, Any] | None = None,
        batch_is_global: bool = True, async_checkpoints: bool = True,
        stream: TextIO | None = None, stop_on_sigterm: bool = True,
        step_fn: Callable[[TrainState, Mapping[str, jax.Array]],
                          tuple[TrainState, dict[str, jax.Array]]] | None = None) -> TrainState:
    """Train for `total_steps` steps, resuming from the newest checkpoint in `workdir`.

    The data order is a function of the step only: step s trains on `batch_at(s)`, so a run
    killed at any moment and restarted continues with exactly the batches (and RNG) it would
    have seen. Files in `workdir`: `checkpoints/<step>/`, `metrics.jsonl`, `tb/` (TensorBoard).

    Args:
      model, loss_fn, tx, frozen, inputs_fn, apply_kwargs: as for `make_train_step`.
      init_state: the freshly initialised state (`create_train_state`); when a checkpoint
        exists it only gives the structure to restore into.
      batch_at: step -> dict of numpy arrays (B, ...): the global batch of that step (every
        process returns the same one and keeps its own rows), or with
        `batch_is_global=False` this process's part of it.
      workdir: run directory.
      total_steps: train until the state has taken this many steps.
      mesh: ("data",) mesh; default all devices.
      checkpoint_every: save every this many steps (and at the end, and after every eval).
      keep_last: checkpoints kept besides the best one.
      log_every: progress line / metrics record every this many steps.
      eval_every, eval_fn: call `eval_fn(state, step) -> metrics` every `eval_every` steps and
        at the end; its `best_metric` (e.g. "val_mpjpe", lower is better) ranks checkpoints.
      run_meta: JSON-serialisable run settings saved with each checkpoint; resuming a workdir
        whose checkpoint has different settings raises ValueError.
      async_checkpoints: write checkpoints in the background.
      stream: where progress lines go (default stdout).
      stop_on_sigterm: on SIGTERM (single-process runs), checkpoint after the current step and
        return early; the returned state's `step` is then below `total_steps`.
      step_fn: a step `make_train_step` built from the same model, loss_fn, tx, mesh, frozen,
        inputs_fn and apply_kwargs, to reuse its compilation across runs (several fine-tunings
        that share a loss); default: build one here.
    Returns:
      The final state (replicated on `mesh`).
    """
    if total_steps < 0 or checkpoint_every < 1 or log_every < 1 or eval_every < 0:
        raise ValueError(f"bad schedule: total_steps={total_steps}, checkpoint_every="
                         f"{checkpoint_every}, log_every={log_every}, eval_every={eval_every}")
    if eval_every and eval_fn is None:
        raise ValueError("eval_every > 0 needs an eval_fn")
    mesh = mesh if mesh is not None else make_data_mesh()
    workdir = os.fspath(workdir)
    run_meta = json.loads(json.dumps(dict(run_meta or {})))  # as it reads back from JSON
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep_last=keep_last,
                        best_metric=best_metric if eval_fn is not None else None,
                        async_save=async_checkpoints)
    start = ckpt.latest_step()
    if start is None:
        start = 0
        state = place_state(init_state, mesh)
    else:
        state, meta = ckpt.restore(init_state, start, mesh=mesh)
        if meta.get("run", {}) != run_meta:
            ckpt.close()
            raise ValueError(f"{workdir} holds a run with other settings: {meta.get('run')} "
                             f"!= {run_meta}")
        if int(jax.device_get(state.step)) != start:
            raise ValueError(f"checkpoint {start} holds a state at step {int(state.step)}")
        if jax.process_index() == 0:
            print(f"resuming from checkpoint step {start} in {workdir}", file=stream or sys.stdout,
                  flush=True)
    if step_fn is None:
        step_fn = make_train_step(model, loss_fn, tx, mesh, frozen=frozen, inputs_fn=inputs_fn,
                                  apply_kwargs=apply_kwargs)
    put = shard_global_batch if batch_is_global else shard_batch
    logger = None
    out = stream or sys.stdout
    sigterm = _SigtermFlag(stop_on_sigterm)
    try:
        for step in range(start, total_steps):
            batch = check_batch(batch_at(step), step)
            global_size = next(iter(batch.values())).shape[0]
            if not batch_is_global:
                global_size *= jax.process_count()
            if logger is None:
                logger = ProgressLogger(workdir, total_steps, start_step=start,
                                        images_per_step=global_size, every=log_every,
                                        stream=stream)
            state, metrics = step_fn(state, put(batch, mesh))
            done = step + 1
            if logger.due(done):
                host = jax.device_get(metrics)
                if not np.isfinite(host["loss"]):
                    raise FloatingPointError(f"loss is {host['loss']} after step {done}")
                logger.log_train(done, host)
            evaluation = None
            if eval_every and (done % eval_every == 0 or done == total_steps):
                evaluation = {k: float(v) for k, v in eval_fn(state, done).items()}
                logger.log_eval(done, evaluation)
            if (done % checkpoint_every == 0 or done == total_steps or evaluation is not None
                    or sigterm.requested):
                meta = {"run": run_meta, "step": done, "total_steps": total_steps,
                        "images_seen": done * global_size, "wall_time": time.time()}
                ranked = evaluation if (evaluation and best_metric in evaluation) else None
                ckpt.save(done, state, meta, ranked)
            if sigterm.requested:
                print(f"SIGTERM: checkpointed step {done}, stopping", file=out, flush=True)
                break
    finally:
        sigterm.restore()
        ckpt.close()  # waits for the background save
        if logger is not None:
            logger.close()
    return state
