"""MPJPE / NMPJPE / PMPJPE against closed forms and independent float64 SciPy references."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.linalg import orthogonal_procrustes
from scipy.spatial.transform import Rotation

from hourglass_jax import metrics as m
from hourglass_jax.skeleton import ROOT


def _poses(seed, shape=()):
    return np.random.default_rng(seed).normal(size=shape + (16, 3)) * 300.0


def _pmpjpe_reference(p, g):
    """Float64 reference: Kabsch rotation (SciPy, proper rotations only) + closed-form scale."""
    p0, g0 = p - p.mean(0), g - g.mean(0)
    rot, _ = Rotation.align_vectors(g0, p0)          # rot.apply(p0) ~ g0, det +1
    rp = rot.apply(p0)
    s = np.sum(rp * g0) / np.sum(p0 * p0)            # least-squares scale for that rotation
    return np.linalg.norm(s * rp - g0, axis=-1).mean()


def test_mpjpe_hand_computed():
    g = _poses(0)
    p = g.copy()
    p[0] += [3.0, 4.0, 0.0]                          # one joint 5 mm off
    assert m.mpjpe(p, g) == pytest.approx(5.0 / 16)
    p = g + [10.0, -20.0, 7.0]                       # a global shift is removed by root alignment
    assert m.mpjpe(p, g) == pytest.approx(0.0, abs=1e-12)
    p = g.copy()
    p[np.arange(16) != ROOT] += [0.0, 0.0, 10.0]     # 15 joints 10 mm off, the root exact
    assert m.mpjpe(p, g) == pytest.approx(15 * 10.0 / 16)
    p = g.copy()
    p[ROOT] += [0.0, 0.0, 10.0]                      # only the root off: every other joint moves 10 mm
    assert m.mpjpe(p, g) == pytest.approx(15 * 10.0 / 16)


def test_nmpjpe_scaled_pose_is_zero_and_scale_is_least_squares():
    g = _poses(1)
    p = 0.7 * (g - g[ROOT]) + [100.0, 200.0, 3000.0]
    assert m.nmpjpe(p, g) == pytest.approx(0.0, abs=1e-9)
    assert m.mpjpe(p, g) > 10.0
    q = _poses(2)
    pr, gr = q - q[ROOT], g - g[ROOT]
    s = np.linalg.lstsq(pr.reshape(-1, 1), gr.reshape(-1), rcond=None)[0][0]
    assert m.nmpjpe(q, g) == pytest.approx(np.linalg.norm(s * pr - gr, axis=-1).mean(), rel=1e-12)


def test_pmpjpe_similarity_is_zero():
    g = _poses(3)
    rot = Rotation.from_rotvec([0.3, -1.2, 2.0]).as_matrix()
    p = 1.7 * g @ rot.T + [500.0, -80.0, 4000.0]
    assert m.pmpjpe(p, g) == pytest.approx(0.0, abs=1e-9)
    assert m.nmpjpe(p, g) > 10.0
    aligned = m.procrustes_align(p, g)
    np.testing.assert_allclose(aligned, g, atol=1e-9)


def test_pmpjpe_matches_reference_on_random_poses():
    for seed in range(5):
        p, g = _poses(10 + seed), _poses(20 + seed)
        assert m.pmpjpe(p, g) == pytest.approx(_pmpjpe_reference(p, g), rel=1e-9)
        # Noisy similarity: small but non-zero, still equal to the reference.
        noisy = 0.9 * g @ Rotation.random(random_state=seed).as_matrix().T + _poses(30 + seed) * 0.05
        assert m.pmpjpe(noisy, g) == pytest.approx(_pmpjpe_reference(noisy, g), rel=1e-9)


def test_pmpjpe_does_not_undo_a_reflection():
    g = _poses(4)
    mirrored = g * [-1.0, 1.0, 1.0]                  # left-right mirror: det -1
    p0, g0 = mirrored - mirrored.mean(0), g - g.mean(0)
    refl, _ = orthogonal_procrustes(p0, g0)          # unrestricted: finds the reflection, error 0
    assert np.linalg.det(refl) < 0
    assert np.abs(p0 @ refl - g0).max() < 1e-9
    err = m.pmpjpe(mirrored, g)
    assert err > 50.0                                 # reflections are excluded
    assert err == pytest.approx(_pmpjpe_reference(mirrored, g), rel=1e-9)


def test_batched_shapes_equal_per_pose():
    p, g = _poses(5, (2, 3)), _poses(6, (2, 3))
    for fn in (m.mpjpe, m.nmpjpe, m.pmpjpe):
        out = fn(p, g)
        assert out.shape == (2, 3)
        for i in range(2):
            for j in range(3):
                assert out[i, j] == pytest.approx(fn(p[i, j], g[i, j]), rel=1e-12)


def test_jit_float32_matches_float64():
    p, g = _poses(7, (8,)), _poses(8, (8,))
    p[1] = 1.3 * g[1] + 5.0                           # an exact similarity inside the batch
    for fn in (m.mpjpe, m.nmpjpe, m.pmpjpe):
        out = jax.jit(fn)(jnp.asarray(p, jnp.float32), jnp.asarray(g, jnp.float32))
        assert isinstance(out, jax.Array) and out.shape == (8,) and out.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(out), fn(p, g), rtol=1e-4, atol=1e-2)
    assert float(jax.jit(m.pmpjpe)(jnp.asarray(p[1]), jnp.asarray(g[1]))) < 1e-2


def test_bad_input():
    with pytest.raises(ValueError, match="differ"):
        m.mpjpe(np.zeros((16, 3)), np.zeros((15, 3)))
    with pytest.raises(ValueError, match="J, 3"):
        m.pmpjpe(np.zeros((16, 2)), np.zeros((16, 2)))
    with pytest.raises(ValueError, match="pred contains 1 non-finite"):
        m.mpjpe(np.where(np.arange(48).reshape(16, 3) == 5, np.nan, 1.0), np.zeros((16, 3)))
    # An all-zero prediction is degenerate for the scale: finite error equal to the gt's spread.
    g = _poses(9)
    assert m.nmpjpe(np.zeros((16, 3)), g) == pytest.approx(m.mpjpe(np.zeros((16, 3)), g))


def test_aggregate_and_table():
    errors = np.array([10.0, 20.0, 30.0, 60.0])
    keys = ["walk", "run", "walk", "run"]
    out = m.aggregate(errors, keys)
    assert out == {"walk": 20.0, "run": 40.0, "all": 30.0}
    assert list(out) == ["walk", "run", "all"]
    with pytest.raises(ValueError, match="non-finite"):
        m.aggregate([1.0, np.nan], ["a", "b"])
    with pytest.raises(ValueError, match="keys"):
        m.aggregate([1.0, 2.0], ["a"])
    with pytest.raises(ValueError, match="non-empty"):
        m.aggregate([], [])
    table = m.markdown_table({"baseline": {"walk": 97.7, "all": 97.66}, "ours": {"all": 88.84}},
                             row_label="method")
    assert table.splitlines() == [
        "| method | walk | all |",
        "|---|---:|---:|",
        "| baseline | 97.7 | 97.7 |",
        "| ours | - | 88.8 |",
    ]


def test_aggregate_table_margins():
    errors = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    subj = ["S9", "S9", "S11", "S11", "S11"]
    act = ["walk", "run", "walk", "walk", "run"]
    t = m.aggregate_table(errors, subj, act)
    assert t == {
        "S9": {"walk": 1.0, "run": 2.0, "all": 1.5},
        "S11": {"walk": 3.5, "run": 5.0, "all": 4.0},
        "all": {"walk": 8.0 / 3, "run": 3.5, "all": 3.0},
    }
    assert "| S11 | 3.50 | 5.00 | 4.00 |" in m.markdown_table(t, "subject", precision=2)
    with pytest.raises(ValueError, match="must match"):
        m.aggregate_table(errors, subj[:4], act)


def test_joint_errors_closed_forms():
    g = _poses(40)
    offsets = np.zeros((16, 3))
    offsets[0] = [3.0, 4.0, 0.0]                      # 5 mm
    offsets[9] = [0.0, 0.0, -12.0]                    # 12 mm
    want = np.linalg.norm(offsets, axis=-1)
    np.testing.assert_allclose(m.joint_errors(g + offsets, g, "mpjpe"), want, atol=1e-12)
    # NMPJPE: a uniformly scaled root-relative pose has zero error on every joint.
    p = 0.6 * (g - g[ROOT]) + [40.0, 0.0, 5000.0]
    np.testing.assert_allclose(m.joint_errors(p, g, "nmpjpe"), np.zeros(16), atol=1e-9)
    # ... and otherwise the per-joint residual of the scalar least-squares fit.
    q = _poses(41)
    pr, gr = q - q[ROOT], g - g[ROOT]
    s = np.linalg.lstsq(pr.reshape(-1, 1), gr.reshape(-1), rcond=None)[0][0]
    np.testing.assert_allclose(m.joint_errors(q, g, "nmpjpe"), np.linalg.norm(s * pr - gr, axis=-1),
                               rtol=1e-10)
    # PMPJPE: a similarity transform of gt plus one displaced joint. The SciPy Kabsch reference
    # gives the per-joint residuals independently.
    rot = Rotation.from_rotvec([0.2, 0.9, -0.4]).as_matrix()
    r = 1.3 * g @ rot.T + [10.0, 20.0, 3000.0]
    np.testing.assert_allclose(m.joint_errors(r, g, "pmpjpe"), np.zeros(16), atol=1e-9)
    r[4] += [0.0, 80.0, 0.0]
    r0, g0 = r - r.mean(0), g - g.mean(0)
    kabsch, _ = Rotation.align_vectors(g0, r0)
    rr = kabsch.apply(r0)
    ref = np.linalg.norm(np.sum(rr * g0) / np.sum(r0 * r0) * rr - g0, axis=-1)
    np.testing.assert_allclose(m.joint_errors(r, g, "pmpjpe"), ref, rtol=1e-9, atol=1e-9)
    assert ref[4] > 20.0 and ref[4] == ref.max()      # the displaced joint dominates


def test_joint_errors_mean_equals_pose_metrics():
    p, g = _poses(42, (3, 5)), _poses(43, (3, 5))
    for kind, fn in (("mpjpe", m.mpjpe), ("nmpjpe", m.nmpjpe), ("pmpjpe", m.pmpjpe)):
        je = m.joint_errors(p, g, kind)
        assert je.shape == (3, 5, 16)
        np.testing.assert_array_equal(je.mean(axis=-1), fn(p, g))
        jj = jax.jit(m.joint_errors, static_argnums=2)(jnp.asarray(p, jnp.float32),
                                                       jnp.asarray(g, jnp.float32), kind)
        assert jj.shape == (3, 5, 16)
        np.testing.assert_allclose(np.asarray(jj), je, rtol=1e-4, atol=1e-2)
    with pytest.raises(ValueError, match="unknown error kind 'pck'"):
        m.joint_errors(p, g, "pck")
