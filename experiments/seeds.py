"""Mean and spread of the paper's tables over several runs of one protocol (different seeds).

    python -m experiments.seeds runs/demo_s1 runs/demo_s1_seed1 runs/demo_s1_seed2 \
        --out runs/demo_s1_seeds

Runs of one baseline with different fine-tuning seeds (`finetune.seed`, e.g. made with
`finetune.from_workdir`) count as different runs, named "seed (fine-tuning N)".

One seed's loss settings may be spread over several work directories that share its first four
stages (an ablation run beside the main one, `finetune.from_workdir`): join them with `+`,
`runs/s0+runs/s0_ablation runs/s1+runs/s1_ablation ...`, and their Table 1 and Table 3 rows
are pooled (they must agree on seed, config as below, and every row they both hold, the
baseline included).

Runs are comparable when their configs are: where every work directory holds its
`config.json` (written by `experiments.main`), the runs must agree on every field but the
protocol's name, the seed, the list of loss settings, where the data and a reused detector
were read from, and the log and batch sizes (FREE_FIELDS), and a ValueError names the fields
that differ (a run of `subject_s1_long` with the styled overrides pools with runs of
`subject_s1_styled`, which sets the same; two runs of one protocol name with different
overrides do not). Without config.json (older runs) the protocol names must match.

Reads each work directory's `report/report.json` (written by the report stage) and writes
`seeds.md` and `seeds.json` to --out (and prints the markdown): for every row of Table 1
(optimisation of the unlabelled predictions) and Table 3 (validation after fine-tuning), the
mean, the sample standard deviation and the min..max of MPJPE, NMPJPE and PMPJPE, plus the mean
and sample standard deviation over runs of the relative change against the baseline (Table 3) or
the raw predictions of the same joints (Table 1) of the same run.
"""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np
from absl import app, flags

from experiments import divergence
from experiments import workdir as workdir_lib
from experiments.table_rows import in_paper_order
from hourglass_jax import progress

METRICS = ("MPJPE", "NMPJPE", "PMPJPE")
TABLES = ("table1", "table3")
TITLES = {"table1": "Table 1 analogue: optimisation of the unlabelled predictions (mm)",
          "table3": "Table 3 analogue: validation after fine-tuning (mm)"}


def reference_row(table: str, row: str) -> str:
    """The row a row's change is measured against: the baseline in Table 3; in Table 1 the raw
    predictions of the same joints (all, or only those with scores above tau)."""
    if table == "table3":
        return "baseline"
    return "Preds (scores > τ)" if "scores >" in row else "Predictions (all)"


# Config fields that may differ between runs that are pooled or aggregated: those a work
# directory itself lets change (log and batch sizes, the settings list, a copied detector's
# origin), the protocol's name, the seed, and where the data were read from.
FREE_FIELDS = workdir_lib.FREE_FIELDS + ("protocol", "seed", "finetune.seed", "data.data_dir")


def run_seeds(report: dict[str, Any]) -> tuple[Any, Any]:
    """(seed, fine-tuning seed) of a run: its report's, or for reports written before the
    fine-tuning seed was recorded, its config's `finetune.seed` (-1 or absent: the seed)."""
    seed = report.get("seed")
    finetune_seed = report.get("finetune_seed")
    if finetune_seed is None:
        finetune_seed = workdir_lib.effective_finetune_seed(
            seed, (report.get("config") or {}).get("finetune.seed"))
    return seed, finetune_seed


def seed_label(report: dict[str, Any]) -> str:
    """'1', or '1 (fine-tuning 2)' for a run fine-tuned with a seed other than its baseline's."""
    seed, finetune_seed = run_seeds(report)
    return str(seed) if finetune_seed == seed else f"{seed} (fine-tuning {finetune_seed})"


def _load_report(workdir: str) -> dict[str, Any]:
    """report.json, with the run's flattened config under "config" (as its work directory
    reads it back, fields added since filled in) when the directory holds config.json."""
    path = os.path.join(workdir, "report", "report.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: run the report stage of {workdir} first")
    with open(path) as f:
        report = json.load(f)
    report["workdir"] = workdir
    # From the logs themselves, so that reports written before the check have it too.
    report["diverged"] = [f"{workdir}: {s}" for s in
                          divergence.diverged_settings(divergence.finetune_loss_growth(workdir))]
    if os.path.exists(os.path.join(workdir, "config.json")):
        report["config"] = workdir_lib.flatten(workdir_lib.load_stored_config(workdir))
    return report


def _check_comparable(name: str, reports: Sequence[dict[str, Any]]) -> None:
    """ValueError unless the runs may be pooled: where every run has its config, those agree
    on all but FREE_FIELDS (the error names the fields and both work directories); otherwise
    (older runs) their protocol names agree."""
    if any(r.get("config") is None for r in reports):
        protocols = sorted({str(r.get("protocol")) for r in reports})
        if len(protocols) != 1:
            raise ValueError(f"{name}: runs of different protocols {protocols}")
        return
    first = reports[0]
    for other in reports[1:]:
        keys = workdir_lib.differing_fields(first["config"], other["config"], FREE_FIELDS)
        if keys:
            details = workdir_lib.describe_differences(keys, first["config"], other["config"],
                                                       first["workdir"], other["workdir"])
            raise ValueError(f"{name}: runs of different configs ({len(keys)} fields differ: "
                             f"{details}); only {', '.join(FREE_FIELDS)} may")


def _pool_rows(name: str, table: str, into: dict[str, Any], rows: dict[str, Any]) -> None:
    """Adds `rows` to `into`; a row both hold must have the same figures (the shared stages)."""
    for row, values in rows.items():
        if row in into and any(not np.isclose(into[row][m], values[m], rtol=1e-9, atol=0.0)
                               for m in METRICS):
            raise ValueError(f"{name}: row {row!r} of {table} differs between the joined work "
                             "directories; join only runs that share their first four stages")
        into.setdefault(row, values)


def merge_reports(workdirs: Sequence[str], reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One report from the reports of one seed's work directories (pooled Table 1/3 rows)."""
    name = "+".join(workdirs)
    seeds = sorted({seed_label(r) for r in reports})
    if len(seeds) != 1:
        raise ValueError(f"{name}: joined work directories of different seeds {seeds}")
    _check_comparable(name, reports)
    config = None if any(r.get("config") is None for r in reports) else reports[0]["config"]
    seed, finetune_seed = run_seeds(reports[0])
    merged: dict[str, Any] = {"protocol": reports[0].get("protocol"), "seed": seed,
                              "finetune_seed": finetune_seed, "workdir": name, "config": config,
                              "diverged": [d for r in reports for d in r.get("diverged", [])]}
    for table in TABLES:
        held = [r[table]["rows"] for r in reports if r.get(table)]
        if not held:
            continue
        rows: dict[str, Any] = {}
        for r in held:
            _pool_rows(name, table, rows, r)
        # Table 3 in the paper's order, whichever directory a setting came from.
        merged[table] = {"rows": in_paper_order(rows) if table == "table3" else rows}
    return merged


def load_reports(workdirs: Sequence[str]) -> list[dict[str, Any]]:
    """The report.json of each work directory, or of each `+`-joined group of them (pooled);
    FileNotFoundError names a missing one."""
    reports = []
    for wd in workdirs:
        parts = [p for p in wd.split("+") if p]
        loaded = [_load_report(p) for p in parts]
        reports.append(loaded[0] if len(loaded) == 1 else merge_reports(parts, loaded))
    return reports


def aggregate(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """{"runs", "seeds", "finetune_seeds", "seed_labels", "protocol", table: {row: {metric:
    {mean, std, min, max}, "change_percent": {metric: mean}}}} over comparable runs
    (`_check_comparable`) with distinct (seed, fine-tuning seed) pairs (`run_seeds`)."""
    if len(reports) < 2:
        raise ValueError(f"need at least 2 runs to give a spread, got {len(reports)}")
    _check_comparable("aggregate", reports)
    protocols = sorted({str(r.get("protocol")) for r in reports})
    labels = [seed_label(r) for r in reports]
    if len(set(labels)) != len(labels):
        raise ValueError(f"runs share a seed and a fine-tuning seed: {labels}")
    pairs = [run_seeds(r) for r in reports]
    out: dict[str, Any] = {"runs": len(reports), "seeds": [p[0] for p in pairs],
                           "finetune_seeds": [p[1] for p in pairs], "seed_labels": labels,
                           "protocol": " = ".join(protocols),
                           "diverged": [d for r in reports for d in r.get("diverged", [])]}
    for table in TABLES:
        present = [r[table]["rows"] for r in reports if r.get(table)]
        if len(present) != len(reports):
            continue  # a run without this table (its stage did not run): leave the table out
        rows = [name for name in present[0] if all(name in p for p in present)]
        agg = {}
        for name in rows:
            entry = {}
            for m in METRICS:
                v = np.array([p[name][m] for p in present], np.float64)
                entry[m] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)),
                            "min": float(v.min()), "max": float(v.max())}
            ref_row = reference_row(table, name)
            if ref_row in rows:
                changes = {m: np.array([100.0 * (p[name][m] / p[ref_row][m] - 1.0)
                                        for p in present]) for m in METRICS}
                entry["change_percent"] = {m: float(c.mean()) for m, c in changes.items()}
                entry["change_percent_std"] = {m: float(c.std(ddof=1))
                                               for m, c in changes.items()}
            agg[name] = entry
        out[table] = agg
    return out


def markdown(agg: dict[str, Any]) -> str:
    """Tables of mean +- std (min..max) per metric, and the change's mean +- std over runs."""
    lines = [f"Protocol {agg['protocol']}, {agg['runs']} runs (seeds "
             f"{', '.join(agg.get('seed_labels', map(str, agg['seeds'])))}): "
             "mean +- sample std (min..max), mm; "
             "change: mean +- sample std over runs of the relative change of MPJPE against the baseline "
             "(Table 3) or the raw predictions of the same joints (Table 1).", ""]
    if agg.get("diverged"):
        lines += [f"**WARNING: {len(agg['diverged'])} fine-tuning(s) diverged (loss ended at least "
                  f"{progress.DIVERGED_LOSS_GROWTH:g} times where it began); their rows pull the "
                  f"means and spreads below: {'; '.join(agg['diverged'])}.**", ""]
    for table in TABLES:
        if table not in agg:
            continue
        lines += [f"### {TITLES[table]}", "",
                  "| | " + " | ".join(METRICS) + " | MPJPE change |",
                  "|---|" + "---:|" * (len(METRICS) + 1)]
        for name, e in agg[table].items():
            cells = [f"{e[m]['mean']:.1f} +- {e[m]['std']:.1f} "
                     f"({e[m]['min']:.1f}..{e[m]['max']:.1f})" for m in METRICS]
            change = e.get("change_percent", {}).get("MPJPE")
            spread = e.get("change_percent_std", {}).get("MPJPE", 0.0)
            cells.append("" if change is None else f"{change:+.1f} +- {spread:.1f}%")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)




def run(workdirs: Sequence[str], out: str = "") -> dict[str, Any]:
    """Aggregate the runs, print the markdown, write seeds.md / seeds.json to `out` if given."""
    agg = aggregate(load_reports(workdirs))
    text = markdown(agg)
    print(text)
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "seeds.md"), "w") as f:
            f.write(text + "\n")
        with open(os.path.join(out, "seeds.json"), "w") as f:
            json.dump(agg, f, indent=2)
    return agg


def main(argv: Sequence[str]) -> None:
    run(argv[1:], flags.FLAGS.out)


if __name__ == "__main__":
    flags.DEFINE_string("out", "", "Directory for seeds.md and seeds.json (empty: print only).")
    app.run(main)
