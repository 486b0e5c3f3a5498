"""Eq. 2-5 on small cases computed by hand."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hourglass_jax.losses import (bone_consistency_loss, bone_lengths_safe, fidelity_weights,
                                  finetune_loss, weighted_fidelity_loss)
from hourglass_jax.skeleton import bone_lengths


def test_fidelity_weights_eq4():
    s = jnp.array([0.9, 0.7, 0.3, 0.0, 1.0, 0.7000001])
    # Weight 1 strictly above tau, the score itself at or below.
    np.testing.assert_allclose(np.asarray(fidelity_weights(s, 0.7)),
                               [1.0, 0.7, 0.3, 0.0, 1.0, 1.0], rtol=1e-6)
    with pytest.raises(ValueError, match="tau"):
        fidelity_weights(s, 1.5)


def _fidelity_case():
    target = np.zeros((2, 16, 3), np.float32)
    pred = target.copy()
    scores = np.full((2, 16), 0.95, np.float32)
    pred[0, 0] = (3.0, 4.0, 0.0)   # |e|^2 = 25, score 0.9 > tau -> weight 1
    scores[0, 0] = 0.9
    pred[0, 1] = (1.0, 0.0, 0.0)   # |e|^2 = 1, score 0.5 -> weight 0.5
    scores[0, 1] = 0.5
    pred[1, 2] = (0.0, 0.0, 2.0)   # |e|^2 = 4, score = tau -> weight 0.7
    scores[1, 2] = 0.7
    return pred, target, scores    # Eq. 3 sum: 25 + 0.5 + 2.8 = 28.3 over 2 frames


def test_weighted_fidelity_eq3_by_hand():
    pred, target, scores = map(jnp.asarray, _fidelity_case())
    assert float(weighted_fidelity_loss(pred, target, scores, 0.7, "sum")) == pytest.approx(28.3)
    assert float(weighted_fidelity_loss(pred, target, scores, 0.7)) == pytest.approx(14.15)
    # Gradient: 2 W(s) (pred - target) / F, and none into the scores.
    g_pred, g_scores = jax.grad(weighted_fidelity_loss, argnums=(0, 2))(pred, target, scores, 0.7)
    want = np.zeros((2, 16, 3))
    want[0, 0] = 2 * 1.0 * np.array([3, 4, 0]) / 2
    want[0, 1] = 2 * 0.5 * np.array([1, 0, 0]) / 2
    want[1, 2] = 2 * 0.7 * np.array([0, 0, 2]) / 2
    np.testing.assert_allclose(np.asarray(g_pred), want, rtol=1e-6, atol=1e-7)
    assert np.all(np.asarray(g_scores) == 0)


def _line_pose():
    """Joint i at x = 10 i mm: bone (a, b) has length 10 |a - b|."""
    pose = np.zeros((16, 3), np.float32)
    pose[:, 0] = 10.0 * np.arange(16)
    return pose


def test_bone_consistency_eq5_by_hand():
    pose = _line_pose()
    # BONES: (6,2) (6,3) (2,1) (3,4) (1,0) (4,5) (12,11) (13,14) (11,10) (14,15) (8,9)
    lengths = np.asarray(bone_lengths_safe(jnp.asarray(pose)))
    np.testing.assert_allclose(lengths, [40, 30, 10, 10, 10, 10, 10, 10, 10, 10, 10], rtol=1e-6)
    np.testing.assert_allclose(lengths, bone_lengths(pose.astype(np.float64)), rtol=1e-6)
    pred = jnp.asarray(np.stack([pose, 2 * pose]))  # second frame: every bone doubled
    target = jnp.full((2, 11), 10.0)
    # Frame 0: (40-10)^2 + (30-10)^2 = 1300. Frame 1: (80-10)^2 + (60-10)^2 + 9 * 10^2 = 8300.
    assert float(bone_consistency_loss(pred, target, "sum")) == pytest.approx(9600.0)
    assert float(bone_consistency_loss(pred, target)) == pytest.approx(4800.0)


def test_bone_gradient_closed_form_and_finite_at_zero_length():
    pose = jnp.asarray(_line_pose())[None]
    target = jnp.full((1, 11), 10.0)
    g = np.asarray(jax.grad(bone_consistency_loss)(pose, target))
    # Only bones (6,2) and (6,3) are off, by 30 and 20. d(b - t)^2/dp = 2 (b - t) db/dp, and
    # db/dp is the unit vector along the bone: the pelvis (x = 60) lies at +x of both hips
    # (x = 20, 30), so d/dx6 = 2*30 + 2*20 = 100, d/dx2 = -60, d/dx3 = -40.
    want = np.zeros((1, 16, 3))
    want[0, 6, 0], want[0, 2, 0], want[0, 3, 0] = 100.0, -60.0, -40.0
    np.testing.assert_allclose(g, want, atol=1e-4)
    collapsed = jnp.zeros((1, 16, 3))  # every bone of length 0
    g0 = jax.grad(bone_consistency_loss)(collapsed, target)
    assert np.all(np.isfinite(np.asarray(g0)))


def test_per_frame_normalised_weights_by_hand():
    """`per_frame_normalised` scales each frame's Eq. 4 weights to sum to 16: frame 0's weights
    (1, 0.5, and 14 ones) sum to 15.5, frame 1's (0.7 and 15 ones) to 15.7; a frame whose
    weights are all 1 is unchanged, and a frame of zero scores keeps zero weight (no NaN)."""
    pred, target, scores = map(jnp.asarray, _fidelity_case())
    frame0 = (25.0 * 1.0 + 1.0 * 0.5) * 16 / 15.5
    frame1 = 4.0 * 0.7 * 16 / 15.7
    assert float(weighted_fidelity_loss(pred, target, scores, 0.7, "sum",
                                        per_frame_normalised=True)) == pytest.approx(
        frame0 + frame1, rel=1e-6)
    ones = jnp.ones_like(scores)
    assert float(weighted_fidelity_loss(pred, target, ones, 0.7, per_frame_normalised=True)) \
        == pytest.approx(float(weighted_fidelity_loss(pred, target, ones, 0.7)), rel=1e-6)
    zero = scores.at[1].set(0.0)
    value, grad = jax.value_and_grad(weighted_fidelity_loss)(pred, target, zero, 0.7, "sum",
                                                            True)
    assert float(value) == pytest.approx(frame0, rel=1e-6)
    assert np.all(np.isfinite(np.asarray(grad))) and not np.any(np.asarray(grad)[1])


def test_finetune_loss_eq2():
    pred, target, scores = _fidelity_case()
    bones = np.asarray(bone_lengths(pred.astype(np.float64)), np.float32) + 1.0  # each off by 1
    # U per frame: 11 bones * 1^2 = 11 -> mean 11. L = 14.15 + 0.5 * 11.
    fn = jax.jit(finetune_loss)  # tau and gamma traced: no Python-side checks on them
    total, parts = fn(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(scores),
                      jnp.asarray(bones), 0.7, 0.5)
    assert float(parts["fidelity"]) == pytest.approx(14.15, rel=1e-5)
    assert float(parts["bone"]) == pytest.approx(11.0, rel=1e-5)
    assert float(total) == pytest.approx(14.15 + 5.5, rel=1e-5)


def test_bad_input():
    p = jnp.zeros((2, 16, 3))
    with pytest.raises(ValueError, match="pred"):
        weighted_fidelity_loss(jnp.zeros((2, 15, 3)), jnp.zeros((2, 15, 3)), jnp.ones((2, 15)))
    with pytest.raises(ValueError, match="scores"):
        weighted_fidelity_loss(p, p, jnp.ones((2, 15)))
    with pytest.raises(ValueError, match="target"):
        weighted_fidelity_loss(p, p[:1], jnp.ones((2, 16)))
    with pytest.raises(ValueError, match="bone_lengths"):
        bone_consistency_loss(p, jnp.ones((2, 10)))
    with pytest.raises(ValueError, match="reduction"):
        bone_consistency_loss(p, jnp.ones((2, 11)), "max")
    with pytest.raises(ValueError, match="gamma"):
        finetune_loss(p, p, jnp.ones((2, 16)), jnp.ones((2, 11)), gamma=-1.0)
