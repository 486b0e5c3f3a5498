"""experiments/soft_fidelity_probe.py: Eq. 1 with a soft data term on the confident entries."""
import numpy as np

from completion import CompletionConfig
from completion.reference import solve as reference_solve
from completion.reference import complete as reference_complete
from experiments.soft_fidelity_probe import probe


def test_soft_fidelity_probe_tends_to_the_exact_constraint():
    # experiments/soft_fidelity_probe.py replaces P_Omega(X) = P_Omega(S) by a penalty
    # lambda_o/2 ||P_Omega(X - S)||^2: with a huge lambda_o it must reproduce the reference's
    # exact solution, with a small one the confident entries must be free to move.
    rng = np.random.default_rng(5)
    r, f = 6, 20
    t = np.linspace(0, 1, f)
    s = (np.stack([np.sin(2 * np.pi * (t + k / r)) for k in range(r)])
         + 0.1 * rng.normal(size=(r, f)))
    mask = rng.uniform(size=(r, f)) < 0.7
    x0 = np.where(mask, s, 0.0)
    cfg = CompletionConfig(max_iters=60, tol=1e-12)
    exact = reference_solve(np.where(mask, s, 0.0), mask, x0, cfg).X
    hard = reference_solve(np.where(mask, s, 0.0), mask, x0, cfg.replace(lambda_o=1e7)).X
    np.testing.assert_allclose(hard, exact, atol=1e-4)
    soft = reference_solve(np.where(mask, s, 0.0), mask, x0, cfg.replace(lambda_o=1.0)).X
    assert np.abs(soft - s)[mask].max() > 1e-2  # confident entries move under a soft term



def test_complete_soft_keeps_units_and_smooths_noise():
    # A smooth trajectory in mm with noise on every (confident) entry: the soft completion comes
    # back in mm and nearer the clean trajectory than the noisy input.
    rng = np.random.default_rng(6)
    f = 40
    t = np.linspace(0, 2 * np.pi, f)
    clean = np.stack([np.stack([300 * np.sin(t + j), 200 * np.cos(t + j), 100 * np.sin(2 * t)], -1)
                      for j in range(16)], 1)  # (F, 16, 3) mm
    noisy = clean + rng.normal(scale=30.0, size=clean.shape)
    out = reference_complete(noisy, np.ones((f, 16), bool),
                             CompletionConfig(max_iters=100, lambda_o=10.0)).X
    err_in = np.linalg.norm(noisy - clean, axis=-1).mean()
    err_out = np.linalg.norm(out - clean, axis=-1).mean()
    assert out.shape == clean.shape and err_out < 0.8 * err_in


def test_probe_jax_solver_agrees_with_the_reference():
    # --solver=jax runs the same soft problem through CompletionConfig.lambda_o (float32, one
    # batched call): the probe's figures must agree with the float64 reference's.
    rng = np.random.default_rng(7)
    t = np.linspace(0, 2 * np.pi, 20)
    rows = {"sequence_id": [], "frame_index": [], "pred": [], "gt": [], "confidence": []}
    for vid, f in enumerate((20, 14, 17)):
        gt = np.stack([np.stack([300 * np.sin(t[:f] + j), 200 * np.cos(t[:f] + j),
                                 100 * np.sin(2 * t[:f])], -1) for j in range(16)], 1)
        rows["sequence_id"].append(np.full(f, vid))
        rows["frame_index"].append(np.arange(f))
        rows["gt"].append(gt)
        rows["pred"].append(gt + rng.normal(scale=30.0, size=gt.shape))
        rows["confidence"].append(rng.random((f, 16)))
    preds = {k: np.concatenate(v) for k, v in rows.items()}
    cfg = CompletionConfig(max_iters=60, tol=0.0)
    want = probe(preds, 0.3, [10.0], 1, cfg)["lambda_o"]["10"]
    got = probe(preds, 0.3, [10.0], 1, cfg, solver="jax")["lambda_o"]["10"]
    for key, value in want.items():  # measured: MPJPEs within 5e-7 relative, change_percent 3e-6
        np.testing.assert_allclose(got[key], value, rtol=1e-4)
