"""Device meshes and multi-host helpers for data-parallel training.

Everything here works the same on 1 CPU, several (forced) CPU devices, a GPU and many hosts:
the training step always runs under `jax.shard_map` over a 1-D ("data",) mesh, so the
program never changes with the number of devices, only the mesh does.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS: str = "data"


def make_data_mesh(num_devices: int | None = None,
                   devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh ("data",) over `num_devices` devices (default: all, across all processes).

    The axis type is given explicitly (Explicit): the step is written with `shard_map`, which
    names the axis itself, so nothing relies on the compiler's automatic sharding propagation.
    """
    devs = list(devices) if devices is not None else list(jax.devices())
    n = len(devs) if num_devices is None else int(num_devices)
    if n < 1 or n > len(devs):
        raise ValueError(f"num_devices={num_devices} but {len(devs)} devices are available")
    return jax.make_mesh((n,), (DATA_AXIS,), axis_types=(AxisType.Explicit,), devices=devs[:n])


def initialize_distributed(coordinator_address: str, num_processes: int, process_id: int,
                           *, cpu_collectives: str | None = "gloo",
                           local_device_ids: Sequence[int] | None = None) -> None:
    """Join a multi-process JAX job (call before any other JAX call in the process).

    Args:
      coordinator_address: "host:port" of process 0's coordinator, e.g. "127.0.0.1:12345".
      num_processes: total number of processes.
      process_id: this process's index in [0, num_processes).
      cpu_collectives: CPU cross-process collectives backend ("gloo"); None leaves the default
        (on GPU/TPU the backend's own collectives are used either way).
      local_device_ids: optional subset of local devices for this process.
    """
    if not 0 <= process_id < num_processes:
        raise ValueError(f"process_id={process_id} outside [0, {num_processes})")
    if cpu_collectives is not None:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               local_device_ids=local_device_ids)


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding of a value held whole on every device of `mesh`."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding of a batch split along its leading axis over the "data" axis."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place a pytree of host or device arrays, identical on every process, on all devices.

    Built with `make_array_from_callback`, which only touches this process's devices, so it
    also works when the mesh spans several processes.
    """
    sharding = replicated(mesh)

    def put(x):
        x = np.asarray(jax.device_get(x))
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    return jax.tree.map(put, tree)


def process_rows(global_batch_size: int, mesh: Mesh) -> slice:
    """The rows of a global batch that this process's devices hold under `batch_sharding`.

    Raises ValueError if the batch does not split evenly over the mesh, or if this process's
    rows are not one contiguous block (a mesh whose devices are not grouped by process).
    """
    n_dev = mesh.devices.size
    if global_batch_size % n_dev:
        raise ValueError(f"global batch {global_batch_size} not divisible by {n_dev} devices")
    idx_map = batch_sharding(mesh).addressable_devices_indices_map((global_batch_size,))
    starts = sorted({(s[0].start or 0) for s in idx_map.values()})
    per = global_batch_size // n_dev
    lo, hi = starts[0], starts[-1] + per
    if hi - lo != per * len(starts):
        raise ValueError("this process's devices do not hold a contiguous block of the batch")
    return slice(lo, hi)


def shard_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh,
                global_batch_size: int | None = None) -> dict[str, jax.Array]:
    """Turn this process's part of a batch into global arrays split over "data".

    Args:
      local_batch: dict of arrays (B_local, ...) held by this process; B_local must be the
        same for every key and divisible by the number of local devices in the mesh.
      mesh: the ("data",) mesh.
      global_batch_size: B_global; default B_local * number of processes.
    Returns:
      dict of jax.Array (B_global, ...) sharded with `batch_sharding(mesh)`.
    """
    if not local_batch:
        raise ValueError("empty batch")
    sizes = {k: np.shape(v)[0] if np.ndim(v) else None for k, v in local_batch.items()}
    if None in sizes.values() or len(set(sizes.values())) != 1:
        raise ValueError(f"batch arrays need one common leading (batch) axis, got {sizes}")
    sharding = batch_sharding(mesh)
    out = {}
    for k, v in local_batch.items():
        v = np.asarray(v)
        gshape = None
        if global_batch_size is not None:
            gshape = (global_batch_size,) + v.shape[1:]
        out[k] = jax.make_array_from_process_local_data(sharding, v, gshape)
    return out


def shard_global_batch(global_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Like `shard_batch`, from the whole global batch (every process passes the same one)."""
    sizes = {np.shape(v)[0] for v in global_batch.values()}
    if len(sizes) != 1:
        raise ValueError(f"batch arrays disagree on the batch size: {sorted(sizes)}")
    b = sizes.pop()
    rows = process_rows(b, mesh)
    return shard_batch({k: np.asarray(v)[rows] for k, v in global_batch.items()}, mesh, b)
