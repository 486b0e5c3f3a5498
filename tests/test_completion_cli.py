"""`python -m completion IN.npz OUT.npz`: reads poses + scores, writes the completion."""
import numpy as np
import pytest

from completion.__main__ import main


def test_cli_round_trips_a_file(tmp_path, capsys):
    rng = np.random.default_rng(0)
    f = 24
    t = np.linspace(0, 2 * np.pi, f)
    poses = (rng.normal(size=(48, 2)) @ np.stack([np.sin(t), np.cos(t)]) * 100).T.reshape(f, 16, 3)
    poses += 1000.0
    scores = rng.random((f, 16))
    scores[0] = 1.0
    low = scores <= 0.7
    noisy = poses.copy()
    noisy[low] += 300.0  # wrong where unconfident
    noisy[low & (rng.random((f, 16)) < 0.3)] = np.nan  # and sometimes missing
    src, dst = tmp_path / "in.npz", tmp_path / "out.npz"
    np.savez(src, poses=noisy, scores=scores)
    assert main([str(src), str(dst), "--tau", "0.7", "--max-iters", "40"]) == 0
    printed = capsys.readouterr().out
    assert "observed (score > 0.7)" in printed and "iterations" in printed
    with np.load(dst) as out:
        x, obs = out["poses"], out["observed"]
        assert x.shape == poses.shape and out["E"].shape == poses.shape
        np.testing.assert_array_equal(obs, ~low)
        np.testing.assert_array_equal(x[obs], noisy.astype(np.float32)[obs])  # held exactly
        assert np.isfinite(x).all()
        # The unconfident entries moved towards the truth.
        assert np.abs(x - poses)[low].mean() < 0.5 * np.abs(np.nan_to_num(noisy, nan=0) - poses)[low].mean()


def test_cli_bad_files(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        main([str(tmp_path / "missing.npz"), str(tmp_path / "o.npz")])
    np.savez(tmp_path / "x.npz", poses=np.zeros((5, 16, 3)))
    with pytest.raises(ValueError, match="scores"):
        main([str(tmp_path / "x.npz"), str(tmp_path / "o.npz")])


def test_package_imports_without_hourglass_jax():
    import subprocess
    import sys

    code = ("import sys, completion, completion.__main__; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('hourglass_jax', 'experiments')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
