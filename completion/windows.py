"""Many sequences in one call: padded batches (optionally sharded over devices) and long videos
as overlapping windows.

The batched core is `jax.vmap(complete_core)` over sequences padded to one length; each
sequence's `valid` frame mask keeps the padding out of its solution (alm.py explains why the
padded iterates stay exactly zero), and a vmapped `lax.while_loop` freezes each member once its
own stop test holds, so every sequence gets the result it would get alone.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from completion.alm import (CompletionResult, complete, complete_core, per_joint_if_equal,
                            validate_inputs, x_step_slots)
from completion.config import CompletionConfig


@functools.partial(jax.jit, static_argnames=("config", "max_free"))
def _batched(poses, observed, valid, config, max_free):
    return jax.vmap(complete_core, in_axes=(0, 0, 0, None, None))(poses, observed, valid, config,
                                                                  max_free)


@functools.lru_cache(maxsize=32)
def _sharded_fn(mesh: Mesh, axis: str, config: CompletionConfig, max_free: int | None):
    spec = PartitionSpec(axis)

    def local(poses, observed, valid):  # each device solves its own slice of the batch
        return jax.vmap(complete_core, in_axes=(0, 0, 0, None, None))(poses, observed, valid,
                                                                      config, max_free)

    # No collectives inside: each device's slice is independent. check_vma=False because the
    # while_loop carry starts from constants (zeros, B = I) that are not marked device-varying.
    return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(spec, spec, spec), out_specs=spec,
                                 check_vma=False))


def run_padded(poses: np.ndarray, observed: np.ndarray, valid: np.ndarray,
               config: CompletionConfig, mesh: Mesh | None = None,
               axis_name: str | None = None) -> CompletionResult:
    """Solve a padded batch (no validation; see `complete_batch`).

    Args:
      poses: (N, F, P, 3); observed: (N, F, P) or (N, F, P, 3) bool; valid: (N, F) bool.
      mesh: optional device mesh; the batch is split along `axis_name` (default: the mesh's first
        axis) and each device runs the vmapped solver on its slice. N is padded up to a multiple
        of that axis' size with copies of the first sequence, dropped again on return.
    Returns:
      CompletionResult with a leading batch axis N (NumPy arrays on the host when sharded).

    A per-coordinate mask whose x, y, z agree is solved per joint (one Cholesky factor per
    joint), and the X step is sized to the batch's largest count of unobserved frames
    (`free_slots`; all F frames with the soft data term): both change the cost, not the result.
    """
    n = poses.shape[0]
    observed = per_joint_if_equal(np.asarray(observed, bool), np.ndim(poses))
    valid = np.asarray(valid, bool)
    free = ~observed & valid.reshape(valid.shape + (1,) * (observed.ndim - 2))
    max_free = x_step_slots(np.moveaxis(free, 1, -1), config)
    if mesh is None:
        return _batched(jnp.asarray(poses), jnp.asarray(observed), jnp.asarray(valid), config,
                        max_free)
    axis = axis_name or mesh.axis_names[0]
    size = mesh.shape[axis]
    extra = (-n) % size
    if extra:
        pick = np.concatenate([np.arange(n), np.zeros(extra, int)])
        poses, observed, valid = poses[pick], observed[pick], valid[pick]
    sharding = NamedSharding(mesh, PartitionSpec(axis))
    args = [jax.device_put(np.asarray(a), sharding) for a in (poses, observed, valid)]
    out = _sharded_fn(mesh, axis, config, max_free)(*args)
    # Gathered to the host: indexing arrays sharded over explicit mesh axes needs out_sharding.
    return jax.tree.map(lambda a: np.asarray(a)[:n], out)


def _obs3(obs: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    obs = np.asarray(obs)
    if obs.shape == shape[:-1]:
        obs = np.broadcast_to(obs[..., None], shape)
    return obs


def complete_batch(sequences, observed, config: CompletionConfig = CompletionConfig(),
                   lengths=None, mesh: Mesh | None = None, axis_name: str | None = None,
                   pad_multiple: int = 16):
    """Complete many sequences of different lengths in one batched (optionally sharded) call.

    Validates every sequence on the host (as `complete` does), pads them to one length (rounded
    up to `pad_multiple` frames so that nearby lengths share one compiled program), and runs the
    vmapped solver once. Padding changes no result: each output equals `complete` on that
    sequence alone, up to float rounding (tests/test_completion_batch.py checks it).

    Args:
      sequences: list of (F_i, P, 3) arrays, or one padded (N, F, P, 3) array with `lengths`.
      observed: matching list of (F_i, P) / (F_i, P, 3) bool masks, or (N, F, P[, 3]).
      config: CompletionConfig.
      lengths: (N,) ints, required with a padded array (frames beyond them are ignored).
      mesh, axis_name: shard the batch over a device mesh (see `run_padded`).
      pad_multiple: frames are padded up to a multiple of this.
    Returns:
      A list of CompletionResult (X, E (F_i, P, 3)) for a list input; for a padded array, one
      CompletionResult with leading axis N, X and E (N, F, P, 3), zero beyond each length.
    """
    as_list = isinstance(sequences, (list, tuple))
    if as_list:
        if not isinstance(observed, (list, tuple)) or len(observed) != len(sequences):
            raise ValueError("observed must be a list with one mask per sequence")
        if len(sequences) == 0:
            raise ValueError("no sequences given")
        seqs = [np.asarray(s) for s in sequences]
        obss = [np.asarray(o) for o in observed]
        lens = np.array([s.shape[0] if s.ndim == 3 else -1 for s in seqs])
    else:
        arr = np.asarray(sequences)
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise ValueError(f"padded sequences must be (N, F, P, 3), got shape {arr.shape}")
        if lengths is None:
            raise ValueError("lengths is required with a padded (N, F, P, 3) batch")
        lens = np.asarray(lengths)
        if lens.shape != (arr.shape[0],) or np.any(lens > arr.shape[1]):
            raise ValueError(f"lengths must be (N,) = ({arr.shape[0]},) ints <= F = {arr.shape[1]}, "
                             f"got {lens.tolist()}")
        obs_all = np.asarray(observed)
        if obs_all.shape[:3] != arr.shape[:3]:
            raise ValueError(f"observed must be (N, F, P[, 3]) matching {arr.shape}, "
                             f"got {obs_all.shape}")
        seqs = [arr[i, :lens[i]] for i in range(arr.shape[0])]
        obss = [obs_all[i, :lens[i]] for i in range(arr.shape[0])]
    for i, (s, o) in enumerate(zip(seqs, obss)):
        try:
            validate_inputs(s, o, config)
        except ValueError as err:
            raise ValueError(f"sequence {i}: {err}") from None
    joints = {s.shape[1] for s in seqs}
    if len(joints) != 1:
        raise ValueError(f"all sequences must have the same number of joints, got {sorted(joints)}")
    p = joints.pop()
    f_max = int(math.ceil(max(lens) / pad_multiple) * pad_multiple)
    n = len(seqs)
    # float64 only when JAX runs with x64 enabled, otherwise float32 (what JAX would use anyway).
    dtype = jax.dtypes.canonicalize_dtype(np.result_type(*[s.dtype for s in seqs], np.float32))
    poses = np.zeros((n, f_max, p, 3), dtype)
    per_joint = all(o.ndim == 2 for o in obss)  # keep (F, P) masks: one factor per joint
    obs = np.zeros((n, f_max, p) if per_joint else (n, f_max, p, 3), bool)
    valid = np.zeros((n, f_max), bool)
    for i, (s, o) in enumerate(zip(seqs, obss)):
        poses[i, :len(s)] = s
        obs[i, :len(s)] = o if per_joint else _obs3(o, s.shape)
        valid[i, :len(s)] = True
    out = run_padded(poses, obs, valid, config, mesh, axis_name)
    # Slice on the host: eager device slicing would compile one program per sequence length.
    out = jax.device_get(out)
    if not as_list:
        f_in = np.asarray(sequences).shape[1]
        return jax.tree.map(lambda a: a[:, :f_in] if a.ndim >= 4 else a, out)
    return [jax.tree.map(lambda a, i=i: a[i, :lens[i]] if a.ndim >= 4 else a[i], out)
            for i in range(n)]


def window_starts(num_frames: int, window: int, overlap: int) -> np.ndarray:
    """First frame of each window: step window - overlap, the last window ending at the end."""
    if num_frames <= window:
        return np.zeros(1, int)
    step = window - overlap
    starts = list(range(0, num_frames - window, step)) + [num_frames - window]
    return np.array(sorted(set(starts)), int)


def blend_weights(starts: Sequence[int], window: int, num_frames: int) -> np.ndarray:
    """(W, window) weights summing to 1 over the windows covering each frame.

    Each window's weight ramps up linearly over the frames it shares with the previous window
    and down over those it shares with the next, so seams are continuous.
    """
    starts = np.asarray(starts)
    raw = np.ones((len(starts), window))
    for k, s in enumerate(starts):
        if k > 0:
            shared = starts[k - 1] + window - s
            if shared > 0:
                raw[k, :shared] = np.arange(1, shared + 1) / (shared + 1)
        if k + 1 < len(starts):
            shared = s + window - starts[k + 1]
            if shared > 0:
                raw[k, window - shared:] = np.arange(shared, 0, -1) / (shared + 1)
    total = np.zeros(num_frames)
    for k, s in enumerate(starts):
        total[s:s + window] += raw[k]
    return raw / np.stack([total[s:s + window] for s in starts])


def complete_long(poses, observed, config: CompletionConfig = CompletionConfig(),
                  window: int = 256, overlap: int = 64, mesh: Mesh | None = None
                  ) -> CompletionResult:
    """Complete a long sequence as overlapping windows solved in one batched call, then blended.

    Sequences of at most `window` frames are solved whole (same as `complete`). Longer ones are
    cut into windows of `window` frames overlapping by `overlap`, solved together by the vmapped
    (optionally sharded) solver, and blended with linear cross-fades over the overlaps;
    observed entries are then reset to the input exactly (not with the soft data term,
    config.lambda_o > 0, where they are blended like the others).

    Args:
      poses: (F, P, 3), NaN allowed where not observed. observed: (F, P) or (F, P, 3) bool.
      window: frames per window (>= 2). overlap: shared frames, 0 <= overlap < window.
    Returns:
      CompletionResult: X, E (F, P, 3) blended; iterations the largest, converged all windows,
      residuals the per-component maximum, objective the sum over windows.
    """
    if not (isinstance(window, int) and window >= 2):
        raise ValueError(f"window must be an int >= 2, got {window!r}")
    if not (isinstance(overlap, int) and 0 <= overlap < window):
        raise ValueError(f"overlap must be an int in [0, window), got {overlap!r}")
    validate_inputs(poses, observed, config)
    x = np.asarray(poses)
    f = x.shape[0]
    if f <= window:
        return complete(x, observed, config)
    obs = np.asarray(observed)
    starts = window_starts(f, window, overlap)
    idx = starts[:, None] + np.arange(window)[None, :]
    out = run_padded(x[idx], obs[idx], np.ones(idx.shape, bool), config, mesh)
    w = blend_weights(starts, window, f)[..., None, None]
    dtype = np.asarray(out.X).dtype
    x_acc = np.zeros(x.shape, np.float64)
    e_acc = np.zeros(x.shape, np.float64)
    np.add.at(x_acc, idx, w * np.asarray(out.X, np.float64))
    np.add.at(e_acc, idx, w * np.asarray(out.E, np.float64))
    if not config.soft_data_term:  # exact constraint: observed entries are the input's
        x_acc = np.where(_obs3(obs, x.shape), x, x_acc)
    return CompletionResult(
        X=jnp.asarray(x_acc.astype(dtype)), E=jnp.asarray(e_acc.astype(dtype)),
        iterations=jnp.max(out.iterations), converged=jnp.all(out.converged),
        residuals=jnp.max(out.residuals, axis=0), objective=jnp.sum(out.objective))
