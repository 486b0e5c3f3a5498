"""A real learning test: the `tiny` network overfits a handful of embedded-dataset frames."""
from __future__ import annotations

import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hourglass_jax import geometry, metrics, train
from hourglass_jax import mesh as M
from hourglass_jax.data import mocap_render as mr
from hourglass_jax.model import VolumetricHourglass, model_config
from hourglass_jax.softargmax import predict_pose_mm
from hourglass_jax.targets import heatmap_loss, heatmaps_from_crop_px, volumes_from_pose

N_FRAMES, STEPS = 4, 150


def _frames(cfg_model):
    cfg = next(c for c in mr.CONFIGS if c.name == "small")
    video = next(mr.video_frames(cfg, ("S1",)))
    picked = mr.take_frames(video, slice(0, 4 * N_FRAMES, 4))  # 4 frames of one video, 0.4 s apart
    ex = mr.render_frames(picked, cfg)
    spec = geometry.VolumeSpec(heatmap_size=cfg_model.heatmap_size,
                               depth_bins=cfg_model.depth_bins, input_size=cfg_model.input_size)
    ex["image"] = ex["image"].astype(np.float32) / 255.0
    ex["heatmaps2d"] = np.asarray(heatmaps_from_crop_px(ex["pose2d"], spec))
    ex["volume"] = np.asarray(volumes_from_pose(ex["pose3d"], ex["intrinsics"], ex["center"],
                                                ex["scale"], spec))
    keys = ("image", "heatmaps2d", "volume", "pose3d", "intrinsics", "center", "scale",
            "root_depth")
    return {k: np.asarray(ex[k]) for k in keys}, spec


@pytest.mark.slow
def test_tiny_network_overfits_a_few_frames(tmp_path):
    cfg = model_config("tiny", bn_axis_name=M.DATA_AXIS)
    batch, spec = _frames(cfg)
    assert batch["image"].shape == (N_FRAMES, 64, 64, 3)
    model = VolumetricHourglass(cfg)
    tx = train.make_optimizer(1e-3)
    state = train.create_train_state(model, tx, 0, batch["image"][:1], train=False)
    mesh = M.make_data_mesh(1)

    def loss_fn(out, b):
        return heatmap_loss(out, {"heatmaps2d": b["heatmaps2d"], "volume": b["volume"]}), {}

    @jax.jit
    def predict(st):
        out = model.apply({"params": st.params, "batch_stats": st.batch_stats},
                          jnp.asarray(batch["image"]), train=False)
        pose, _ = predict_pose_mm(out["volume"], batch["intrinsics"], batch["center"],
                                  batch["scale"], batch["root_depth"], spec)
        return jnp.mean(metrics.mpjpe(pose, batch["pose3d"]))

    def eval_fn(st, step):
        return {"val_mpjpe": float(predict(st))}

    before = eval_fn(jax.device_get(state), 0)["val_mpjpe"]
    final = train.fit(model, loss_fn, tx, state, lambda step: batch, workdir=tmp_path,
                      total_steps=STEPS, mesh=mesh, apply_kwargs=dict(train_detector=True),
                      checkpoint_every=STEPS, log_every=25, eval_every=STEPS, eval_fn=eval_fn,
                      stream=io.StringIO())
    after = eval_fn(final, STEPS)["val_mpjpe"]
    # The crop spans ~2 m over 16 heatmap px and the depth 2 m over 16 bins (125 mm voxels):
    # memorised frames must be located well below a voxel.
    print(f"overfit MPJPE: {before:.1f} mm -> {after:.1f} mm")
    assert after < 60.0 and after < 0.3 * before, (before, after)
