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

import time
from typing import Any, Callable, Mapping, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, PartitionSpec as P

from hourglass_jax.mesh import DATA_AXIS, replicate

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


def rmsprop(learning_rate: float | optax.Schedule) -> optax.GradientTransformation:
    """RMSprop as Torch7 `optim.rmsprop` (used by c2f-vol) and `torch.optim.RMSprop` define it.

    v <- 0.99 v + 0.01 g^2 (v starts at 0); p <- p - lr g / (sqrt(v) + 1e-8): alpha 0.99,
    eps 1e-8 added outside the square root, no momentum, no bias correction. (Torch7
    optim/rmsprop.lua defaults; optax's own defaults differ: decay 0.9, eps inside the sqrt.)
    """
    return optax.rmsprop(learning_rate, decay=0.99, eps=1e-8, eps_in_sqrt=False,
                         initial_scale=0.0)


def make_optimizer(learning_rate: float | optax.Schedule,
                   frozen: Sequence[str] = ()) -> optax.GradientTransformation:
    """RMSprop on every top-level parameter subtree except those named in `frozen`.

    Frozen subtrees (e.g. ("detector",) when training the volumetric stack) get
    `optax.set_to_zero` through `optax.partition`, so the optimizer keeps no RMS accumulator
    for them (their slots in the state are empty `MaskedNode`s).
    """
    tx = rmsprop(learning_rate)
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
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}),
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
