"""Checkpoint save time on a device mesh, printed as JSON.

Measured in one run: `hourglass_jax.checkpoint.Checkpointer.save` (which hands orbax a host copy
of the state in a single process) against the same orbax CheckpointManager given the device
arrays themselves (the baseline; orbax's CPU default then slices every replicated array per
replica). The state is a real TrainState: the `test` (or --config) volumetric network with its
optimizer, replicated over every device of a ("data",) mesh. Each save is waited for, so the
figure is the whole write. The first save of each kind includes what orbax compiles for it.

    python benchmarks/checkpoint_bench.py [--devices 8] [--config test] [--saves 3]

--devices N > 1 on a CPU host forces N virtual CPU devices (as the tests do).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=8, help="virtual CPU devices (CPU hosts only)")
    p.add_argument("--config", default="test", help="model config name (hourglass_jax.model)")
    p.add_argument("--saves", type=int, default=3, help="saves of each kind")
    return p.parse_args()


def main() -> None:
    args = _parse()
    if args.devices > 1:
        os.environ.setdefault("XLA_FLAGS",
                              f"--xla_force_host_platform_device_count={args.devices}")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import jax
    import jax.numpy as jnp
    import orbax.checkpoint as ocp

    from hourglass_jax import checkpoint, mesh, train
    from hourglass_jax.model import VolumetricHourglass, model_config

    cfg = model_config(args.config)
    tx = train.make_optimizer(1e-3, frozen=("detector",))
    state = train.create_train_state(VolumetricHourglass(cfg), tx, 0,
                                     jnp.zeros((1, cfg.input_size, cfg.input_size, 3)),
                                     train=False)
    devices = mesh.make_data_mesh(jax.device_count())
    placed = train.place_state(state, devices)
    leaves, size = train.count_leaves(placed)

    def timed(save) -> list[float]:
        seconds = []
        for step in range(args.saves):
            start = time.perf_counter()
            save(step)
            seconds.append(round(time.perf_counter() - start, 4))
        return seconds

    with tempfile.TemporaryDirectory() as root:
        with checkpoint.Checkpointer(os.path.join(root, "ours"), best_metric=None) as ours:
            def save_ours(step):
                ours.save(step, placed)
                ours.wait()
            ours_s = timed(save_ours)
        baseline = ocp.CheckpointManager(os.path.join(root, "orbax"),
                                         options=ocp.CheckpointManagerOptions(create=True),
                                         item_names=("state",))

        def save_baseline(step):
            baseline.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(placed)))
            baseline.wait_until_finished()
        baseline_s = timed(save_baseline)
        baseline.close()

    later = lambda s: sum(s[1:]) / max(len(s) - 1, 1)  # noqa: E731
    print(json.dumps({
        "devices": jax.device_count(), "platform": jax.devices()[0].platform,
        "config": args.config, "leaves": leaves, "parameters_and_slots": size,
        "checkpointer_s": ours_s, "orbax_device_arrays_s": baseline_s,
        "first_save_ratio": round(baseline_s[0] / ours_s[0], 2),
        "later_saves_ratio": round(later(baseline_s) / later(ours_s), 2) if args.saves > 1 else None,
    }, indent=2))


if __name__ == "__main__":
    main()
