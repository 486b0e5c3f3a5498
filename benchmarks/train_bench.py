"""Training-step throughput: images/s and model FLOPs utilisation, printed as JSON.

Cases (the issue's): (a) the 2D pretraining step (Detector2D, every stack trained, batch 32);
(b) the volumetric step (VolumetricHourglass, 2D stacks frozen, batch 16 and 32); each in
float32 and bfloat16 compute (float32 parameters). Each case runs the project's data-parallel
step (`train.make_train_step`: jit + shard_map over all devices, pmean, synchronised BatchNorm)
and, as the baseline measured in the same run, the same update written as a plain single-device
`jax.jit` (no shard_map, no collectives); `ratio` = shard_map images/s / plain images/s.

FLOPs come from XLA's cost analysis of the lowered step (per device program, times the number
of devices; the compiled GPU program would leave out the convolutions handed to cuDNN).
MFU = achieved FLOP/s / peak FLOP/s; the peak is looked up for known GPUs (dense tensor-core
figures: bf16 for bfloat16, TF32 for float32) or given with --peak_tflops; on CPU it
is unknown and MFU is null unless given.

  python benchmarks/train_bench.py --config tiny            # CPU
  python benchmarks/train_bench.py --config paper --steps 20  # GPU
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

# Runnable from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from hourglass_jax import mesh as M
from hourglass_jax import train
from hourglass_jax.model import Detector2D, VolumetricHourglass, model_config
from hourglass_jax.targets import heatmap_loss

# Dense peak TFLOP/s per device (NVIDIA datasheets: H100 SXM / H200 SXM share the compute;
# bf16 989.4, TF32 494.7; A100 SXM bf16 312, TF32 156).
PEAK_TFLOPS = {"H100": {"bfloat16": 989.4, "float32": 494.7},
               "H200": {"bfloat16": 989.4, "float32": 494.7},
               "A100": {"bfloat16": 312.0, "float32": 156.0}}


def _peak(dtype: str, override: float | None) -> float | None:
    if override is not None:
        return override
    kind = jax.devices()[0].device_kind
    for name, peaks in PEAK_TFLOPS.items():
        if name in kind:
            return peaks[dtype]
    return None


def _flops(stage: Any) -> float | None:
    cost = stage.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older JAX returned one dict per program
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    return float(cost["flops"])


def _batch(cfg, batch_size: int, rs: np.random.Generator) -> dict[str, np.ndarray]:
    h, d = cfg.heatmap_size, cfg.depth_bins
    s = cfg.input_size
    return {"image": rs.uniform(0, 1, (batch_size, s, s, 3)).astype(np.float32),
            "heatmaps2d": rs.uniform(0, 1, (batch_size, h, h, 16)).astype(np.float32),
            "volume": rs.uniform(0, 1, (batch_size, 16, d, h, h)).astype(np.float32)}


def _loss(stage: str):
    if stage == "pretrain2d":
        return lambda out, b: (
            heatmap_loss({"heatmaps2d": out[0]}, {"heatmaps2d": b["heatmaps2d"]}), {})
    return lambda out, b: (heatmap_loss(out, {"volume": b["volume"]}), {})


def _plain_step(model, loss_fn, tx, frozen, apply_kwargs):
    """The same update as a plain single-device jit (the baseline)."""
    def step(state, batch):
        fixed = {k: v for k, v in state.params.items() if k in frozen}

        def loss_of(p):
            out, upd = model.apply({"params": {**p, **fixed}, "batch_stats": state.batch_stats},
                                   batch["image"], train=True, mutable=["batch_stats"],
                                   **apply_kwargs)
            return loss_fn(out, batch)[0], upd["batch_stats"]
        trainable = {k: v for k, v in state.params.items() if k not in frozen}
        (loss, stats), g = jax.value_and_grad(loss_of, has_aux=True)(trainable)
        g = {**g, **jax.tree.map(jnp.zeros_like, fixed)}
        upd, opt = tx.update(g, state.opt_state, state.params)
        params = optax.apply_updates(state.params, upd)
        params = {k: (state.params[k] if k in frozen else params[k]) for k in params}
        return state.replace(step=state.step + 1, params=params, batch_stats=stats,
                             opt_state=opt), loss
    return jax.jit(step, donate_argnums=(0,))


def _time(fn, state, batch, steps: int, warmup: int):
    for _ in range(warmup):
        state, out = fn(state, batch)
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, out = fn(state, batch)
    jax.block_until_ready((state, out))
    return time.perf_counter() - t0, state  # the input state was donated: continue from this


def run_case(config: str, stage: str, batch_size: int, dtype: str, steps: int, warmup: int,
             peak_tflops: float | None, baseline: bool, repeats: int = 3) -> dict[str, Any]:
    """One stage/batch/dtype: the shard_map step and (optionally) the plain-jit baseline, timed
    alternately `repeats` times; the fastest repeat of each counts (robust to other load)."""
    jdtype = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
    n_dev = jax.device_count()
    if batch_size % n_dev:
        raise ValueError(f"batch {batch_size} not divisible by {n_dev} devices")
    frozen = ("detector",) if stage == "volumetric" else ()
    apply_kwargs = {"train_detector": False} if stage == "volumetric" else {}
    Net = VolumetricHourglass if stage == "volumetric" else Detector2D
    rs = np.random.default_rng(0)
    result: dict[str, Any] = {"config": config, "stage": stage, "batch": batch_size,
                              "dtype": dtype, "devices": n_dev,
                              "device_kind": jax.devices()[0].device_kind}
    cfg = model_config(config, dtype=jdtype, bn_axis_name=M.DATA_AXIS)
    model = Net(cfg)
    tx = train.make_optimizer(train.SUPERVISED_LR, frozen=frozen)
    t0 = time.perf_counter()
    state0 = train.create_train_state(model, tx, 0, np.zeros((1, cfg.input_size, cfg.input_size, 3),
                                                             np.float32), train=False)
    result["init_s"] = round(time.perf_counter() - t0, 2)
    mesh = M.make_data_mesh()
    loss_fn = _loss(stage)
    step = train.make_train_step(model, loss_fn, tx, mesh, frozen=frozen, apply_kwargs=apply_kwargs)
    host_batch = _batch(cfg, batch_size, rs)
    batch = M.shard_global_batch(host_batch, mesh)
    state = train.place_state(state0, mesh)
    t0 = time.perf_counter()
    lowered = step.lower(state, batch)
    compiled = lowered.compile()
    result["compile_s"] = round(time.perf_counter() - t0, 2)
    # FLOPs of the program before XLA's GPU passes: once convolutions become cuDNN custom
    # calls the compiled program's cost analysis leaves them out (on an H200 it gave 0.005
    # GFLOP per image for the `tiny` step, where CPU counted 0.165).
    flops_dev = _flops(lowered)
    if flops_dev is None:
        flops_dev = _flops(compiled)
    if baseline:
        plain_model = Net(model_config(config, dtype=jdtype))  # BatchNorm without axis_name
        plain = _plain_step(plain_model, loss_fn, tx, frozen, apply_kwargs)
        dev0 = jax.devices()[0]
        pstate = jax.device_put(state0, dev0)
        pbatch = jax.device_put(host_batch, dev0)
        pcompiled = plain.lower(pstate, pbatch).compile()
    secs, psecs = [], []
    for _ in range(repeats):
        t, state = _time(compiled, state, batch, steps, warmup)
        secs.append(t)
        if baseline:
            t, pstate = _time(pcompiled, pstate, pbatch, steps, warmup)
            psecs.append(t)
    secs = min(secs)
    ips = steps * batch_size / secs
    result.update(images_per_s=round(ips, 2), step_ms=round(1e3 * secs / steps, 2))
    if flops_dev is not None:
        flops = flops_dev * n_dev
        achieved = flops * steps / secs
        peak = _peak(dtype, peak_tflops)
        result.update(gflops_per_image=round(flops / batch_size / 1e9, 3),
                      achieved_tflops=round(achieved / 1e12, 4),
                      peak_tflops=peak,
                      mfu=None if peak is None else round(achieved / (peak * 1e12 * n_dev), 4))
    if baseline:
        pips = steps * batch_size / min(psecs)
        result.update(baseline="plain jit, 1 device", baseline_images_per_s=round(pips, 2),
                      ratio=round(ips / pips, 3))
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="tiny", help="model preset: test, tiny or paper")
    p.add_argument("--cases", default="pretrain2d:32,volumetric:16,volumetric:32",
                   help="comma-separated stage:batch")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--steps", type=int, default=5, help="timed steps per case")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="alternating timed repeats; best counts")
    p.add_argument("--peak_tflops", type=float, default=None, help="per-device peak for MFU")
    p.add_argument("--no_baseline", action="store_true")
    a = p.parse_args(argv)
    cases = [(c.split(":")[0], int(c.split(":")[1])) for c in a.cases.split(",")]
    for stage, _ in cases:
        if stage not in ("pretrain2d", "volumetric"):
            raise ValueError(f"unknown stage {stage!r} (pretrain2d or volumetric)")
    results = []
    todo = [(s, b, d) for s, b in cases for d in a.dtypes.split(",")]
    t_start = time.perf_counter()
    for i, (stage, bs, dtype) in enumerate(todo):
        r = run_case(a.config, stage, bs, dtype, a.steps, a.warmup, a.peak_tflops,
                     not a.no_baseline, a.repeats)
        results.append(r)
        el = time.perf_counter() - t_start
        print(f"[{i + 1}/{len(todo)}] {stage} b{bs} {dtype}: {r['images_per_s']} img/s "
              f"(elapsed {el:.0f} s, ETA {el / (i + 1) * (len(todo) - i - 1):.0f} s)",
              file=sys.stderr, flush=True)
    print(json.dumps({"benchmark": "train_step", "jax": jax.__version__,
                      "backend": jax.default_backend(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
