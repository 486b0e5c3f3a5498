"""experiments.seeds: mean and spread of the paper's tables over runs of several seeds."""
import json
import os

import numpy as np
import pytest

from experiments import seeds


def _metrics(mpjpe):
    return dict(MPJPE=mpjpe, NMPJPE=mpjpe - 10, PMPJPE=mpjpe - 50)


def _write_report(root, name, seed, baseline, bone, protocol="subject_s1", others=None,
                  config=None):
    rows3 = {"baseline": _metrics(baseline)}
    if bone is not None:
        rows3["+ bone consistency (full method)"] = _metrics(bone)
    rows3.update({row: _metrics(v) for row, v in (others or {}).items()})
    rows1 = {"Predictions (all)": dict(MPJPE=100.0, NMPJPE=90.0, PMPJPE=80.0),
             "Optimisations (all)": dict(MPJPE=90.0, NMPJPE=85.0, PMPJPE=70.0),
             "Preds (scores > τ)": dict(MPJPE=50.0, NMPJPE=50.0, PMPJPE=50.0),
             "Optis (scores > τ)": dict(MPJPE=49.0, NMPJPE=50.0, PMPJPE=50.0)}
    wd = os.path.join(root, name)
    os.makedirs(os.path.join(wd, "report"))
    with open(os.path.join(wd, "report", "report.json"), "w") as f:
        json.dump({"protocol": protocol, "seed": seed, "table1": {"rows": rows1},
                   "table3": {"rows": rows3}}, f)
    if config is not None:  # as experiments.main writes it: the whole config, nested
        with open(os.path.join(wd, "config.json"), "w") as f:
            json.dump({"protocol": protocol, "seed": seed, **config}, f)
    return wd


def _config(steps=9600, settings=("bone",), lr=2.5e-5):
    return {"train3d": {"steps": steps}, "finetune": {"settings": list(settings), "learning_rate": lr}}


def test_runs_compare_by_config_not_by_protocol_name(tmp_path):
    # A protocol run with overrides equals another protocol that sets the same fields: pooled.
    a = _write_report(tmp_path, "a", 0, 300.0, 290.0, protocol="subject_s1_long",
                      config=_config(steps=19200))
    b = _write_report(tmp_path, "b", 1, 280.0, 270.0, protocol="subject_s1_styled",
                      config=_config(steps=19200, settings=("bone", "oracle")))
    agg = seeds.aggregate(seeds.load_reports([a, b]))
    assert agg["protocol"] == "subject_s1_long = subject_s1_styled" and agg["runs"] == 2
    # One protocol name with different overrides: refused, naming the field.
    c = _write_report(tmp_path, "c", 2, 300.0, 290.0, protocol="subject_s1_long",
                      config=_config(steps=9600))
    with pytest.raises(ValueError, match=r"train3d\.steps: 19200 \(\S+/a\) vs 9600 \(\S+/c\)"):
        seeds.aggregate(seeds.load_reports([a, c]))
    # Joined work directories of one seed must agree too (their settings lists may differ).
    ablation = _write_report(tmp_path, "a_ablation", 0, 300.0, None, protocol="subject_s1_long",
                             others={"optimised supervision": 280.0},
                             config=_config(steps=19200, settings=("optimised",), lr=1e-4))
    with pytest.raises(ValueError, match="finetune.learning_rate"):
        seeds.load_reports([f"{a}+{ablation}"])


def test_mean_spread_and_change_match_numpy(tmp_path, capsys):
    base, bone = [300.0, 280.0, 290.0], [270.0, 266.0, 290.0]
    wds = [_write_report(tmp_path, f"s{i}", i, b, f) for i, (b, f) in enumerate(zip(base, bone))]
    agg = seeds.aggregate(seeds.load_reports(wds))
    e = agg["table3"]["+ bone consistency (full method)"]
    assert e["MPJPE"]["mean"] == pytest.approx(np.mean(bone))
    assert e["MPJPE"]["std"] == pytest.approx(np.std(bone, ddof=1))
    assert (e["MPJPE"]["min"], e["MPJPE"]["max"]) == (266.0, 290.0)
    # The change is averaged per run (-10%, -5%, 0%), not taken between the means.
    assert e["change_percent"]["MPJPE"] == pytest.approx(-5.0)
    assert e["change_percent_std"]["MPJPE"] == pytest.approx(np.std([-10.0, -5.0, 0.0], ddof=1))
    assert agg["table1"]["Optimisations (all)"]["change_percent"]["MPJPE"] == pytest.approx(-10.0)
    # Confident joints are compared with the predictions of the same joints, not with all.
    assert agg["table1"]["Optis (scores > τ)"]["change_percent"]["MPJPE"] == pytest.approx(-2.0)
    assert agg["seeds"] == [0, 1, 2]
    seeds.run(wds, str(tmp_path / "out"))
    out = capsys.readouterr().out
    assert "275.3 +- 12.9 (266.0..290.0)" in out and "-5.0 +- 5.0%" in out
    with open(tmp_path / "out" / "seeds.json") as f:
        assert json.load(f)["table3"]["baseline"]["MPJPE"]["mean"] == pytest.approx(290.0)
    assert (tmp_path / "out" / "seeds.md").read_text().startswith("Protocol subject_s1, 3 runs")


def test_bad_inputs(tmp_path):
    a = _write_report(tmp_path, "a", 0, 300.0, 290.0)
    with pytest.raises(ValueError, match="at least 2 runs"):
        seeds.aggregate(seeds.load_reports([a]))
    same_seed = _write_report(tmp_path, "b", 0, 300.0, 290.0)
    with pytest.raises(ValueError, match="share a seed"):
        seeds.aggregate(seeds.load_reports([a, same_seed]))
    other = _write_report(tmp_path, "c", 1, 300.0, 290.0, protocol="action_half")
    with pytest.raises(ValueError, match="different protocols"):
        seeds.aggregate(seeds.load_reports([a, other]))
    with pytest.raises(FileNotFoundError, match="report stage"):
        seeds.load_reports([str(tmp_path / "missing")])


def test_one_seeds_settings_pooled_from_joined_work_directories(tmp_path):
    """`a+b`: a seed's main run and its ablation run (same first four stages) give one row set."""
    groups = []
    for seed, (base, bone, opt, orig) in enumerate([(300.0, 270.0, 280.0, 290.0),
                                                     (280.0, 266.0, 252.0, 270.0)]):
        main = _write_report(tmp_path, f"s{seed}", seed, base, bone,
                             others={"original supervision": orig})
        ablation = _write_report(tmp_path, f"s{seed}_ablation", seed, base, None,
                                 others={"optimised supervision": opt})
        groups.append(f"{main}+{ablation}")
    agg = seeds.aggregate(seeds.load_reports(groups))
    rows = agg["table3"]
    # The paper's order, whichever directory a row came from.
    assert list(rows) == ["baseline", "original supervision", "optimised supervision",
                          "+ bone consistency (full method)"]
    opt_changes = [100 * (280 / 300 - 1), 100 * (252 / 280 - 1)]
    assert rows["optimised supervision"]["change_percent"]["MPJPE"] == pytest.approx(
        np.mean(opt_changes))
    assert rows["optimised supervision"]["change_percent_std"]["MPJPE"] == pytest.approx(
        np.std(opt_changes, ddof=1))
    assert rows["+ bone consistency (full method)"]["MPJPE"]["mean"] == pytest.approx(268.0)
    assert agg["seeds"] == [0, 1]


def test_joined_work_directories_must_share_seed_and_stages(tmp_path):
    main = _write_report(tmp_path, "m", 0, 300.0, 290.0)
    other_seed = _write_report(tmp_path, "o", 1, 300.0, None, others={"optimised supervision": 280.0})
    with pytest.raises(ValueError, match="different seeds"):
        seeds.load_reports([f"{main}+{other_seed}"])
    # A different baseline means the ablation did not reuse this run's train3d.
    other_baseline = _write_report(tmp_path, "b", 0, 301.0, None,
                                   others={"optimised supervision": 280.0})
    with pytest.raises(ValueError, match="'baseline' of table3 differs"):
        seeds.load_reports([f"{main}+{other_baseline}"])
    with pytest.raises(FileNotFoundError, match="report stage"):
        seeds.load_reports([f"{main}+{tmp_path / 'missing'}"])


def test_diverged_fine_tuning_named_above_the_tables(tmp_path, capsys):
    wds = [_write_report(tmp_path, f"s{i}", i, 300.0, 290.0) for i in range(3)]
    for i, losses in enumerate(([5.0, 4.0, 3.0, 2.5, 2.0], [1.0, 1.0, 1.0, 4.0, 4.0])):
        d = os.path.join(wds[i], "finetune", "bone")
        os.makedirs(d)
        with open(os.path.join(d, "metrics.jsonl"), "w") as f:
            f.writelines(json.dumps({"kind": "train", "step": 10 * (k + 1), "loss": v}) + "\n"
                         for k, v in enumerate(losses))
    agg = seeds.run(wds)
    assert agg["diverged"] == [f"{wds[1]}: bone"]      # 4x its first loss; s0 fell, s2 has no log
    out = capsys.readouterr().out
    assert "WARNING: 1 fine-tuning(s) diverged" in out and f"{wds[1]}: bone" in out
    assert out.index("WARNING") < out.index("### Table 3")


def test_fine_tuning_seeds_of_one_baseline_count_as_runs(tmp_path, capsys):
    """Two fine-tunings of one baseline (`finetune.seed`) are two runs, named by both seeds;
    the same pair twice, or joined directories of different fine-tuning seeds, are refused."""
    config = _config()
    first = _write_report(tmp_path, "s0", 0, 300.0, 285.0, config=config)  # finetune.seed absent
    config_ft1 = dict(config, finetune=dict(config["finetune"], seed=1))
    second = _write_report(tmp_path, "s0_ft1", 0, 300.0, 279.0, config=config_ft1)
    agg = seeds.aggregate(seeds.load_reports([first, second]))
    assert agg["seeds"] == [0, 0] and agg["finetune_seeds"] == [0, 1]
    assert agg["table3"]["+ bone consistency (full method)"]["MPJPE"]["mean"] == pytest.approx(282.0)
    seeds.run([first, second])
    assert "2 runs (seeds 0, 0 (fine-tuning 1))" in capsys.readouterr().out
    # finetune.seed = the seed is the same run as finetune.seed = -1.
    config_ft0 = dict(config, finetune=dict(config["finetune"], seed=0))
    again = _write_report(tmp_path, "s0_ft0", 0, 300.0, 285.0, config=config_ft0)
    with pytest.raises(ValueError, match="share a seed and a fine-tuning seed"):
        seeds.aggregate(seeds.load_reports([first, again]))
    ablation = _write_report(tmp_path, "s0_ft1_ablation", 0, 300.0, None,
                             others={"optimised supervision": 280.0}, config=config_ft1)
    with pytest.raises(ValueError, match="different seeds"):
        seeds.load_reports([f"{first}+{ablation}"])
