r"""Keeps a finished run's results in the repository: its tables, logs and config, not its networks.

    python -m experiments.archive runs/demo_s1 results/demo_s1_seed0 [--figures]

A work directory holds checkpoints and arrays (hundreds of megabytes for the styled protocols)
and lives outside git (`runs/` is ignored), so it is gone with the machine that made it. The
archive is the part worth committing, a few tens of kilobytes of text: `config.json`, every
stage's `DONE.json` (its timing, summary and, from runs made since it was added, the commit and
machine: `experiments.provenance`), `complete/solver_stats.json`, `evaluate/results.json`, the
training logs (`metrics.jsonl`), `report/report.md` and `report/report.json`, and with
`--figures` the report's PNGs. `experiments.seeds` reads an archive as it reads a work
directory (it needs only the report, the config and the fine-tuning logs), so runs made in
different sessions or on different machines can be tabulated together:

    python -m experiments.seeds results/demo_s1_seed0 results/demo_s1_seed1 runs/demo_s1_seed2

The archive is written to a temporary directory and renamed into place, so a kill never leaves
half of one; an existing destination is refused rather than overwritten.
"""
from __future__ import annotations

import datetime
import glob
import json
import os
import shutil
from typing import Sequence

from absl import app, flags

from experiments import workdir as workdir_lib

# Paths relative to the work directory; everything else (checkpoints, .npz arrays, TensorBoard
# events) stays behind.
TEXT_FILES = ("config.json", "*/DONE.json", "complete/solver_stats.json",
              "evaluate/results.json", "*/metrics.jsonl", "finetune/*/metrics.jsonl",
              "report/report.md", "report/report.json")
FIGURE_FILES = ("report/*.png",)
MANIFEST = "ARCHIVE.json"


def archived_files(workdir: str, figures: bool = False) -> list[str]:
    """The paths (relative to `workdir`, sorted) that `archive` copies from it."""
    found = set()
    for pattern in TEXT_FILES + (FIGURE_FILES if figures else ()):
        found.update(os.path.relpath(p, workdir)
                     for p in glob.glob(os.path.join(workdir, pattern)) if os.path.isfile(p))
    return sorted(found)


def archive(workdir: str, destination: str, figures: bool = False) -> list[str]:
    """Copies a finished run's text outputs (and with `figures` its report's PNGs) from
    `workdir` to the new directory `destination`, plus ARCHIVE.json naming the source, the
    time and the files. Returns the copied paths, relative to either directory.

    Raises FileNotFoundError when `workdir` is not a work directory of `experiments.main` or
    its report stage has not run, FileExistsError when `destination` exists.
    """
    if not os.path.isfile(os.path.join(workdir, "config.json")):
        raise FileNotFoundError(f"{workdir} is not a work directory of experiments.main (it holds "
                                "no config.json)")
    if not workdir_lib.stage_done(workdir, "report"):
        raise FileNotFoundError(f"{workdir} has no finished report stage: run its report stage "
                                "first (--stages=report)")
    if os.path.lexists(destination):
        raise FileExistsError(f"{destination} exists: archive under another name, or delete it "
                              "first")
    files = archived_files(workdir, figures)
    parent = os.path.dirname(os.path.abspath(destination))
    os.makedirs(parent, exist_ok=True)
    # Named by pid; a stale one (a killed run's, pid reused) is cleared so nothing of it mixes in.
    staging = os.path.join(parent, f".{os.path.basename(destination)}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for rel in files:
            os.makedirs(os.path.join(staging, os.path.dirname(rel)), exist_ok=True)
            shutil.copyfile(os.path.join(workdir, rel), os.path.join(staging, rel))
        with open(os.path.join(staging, MANIFEST), "w", encoding="utf-8") as f:
            json.dump({"source": os.path.abspath(workdir),
                       "archived_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
                           timespec="seconds"),
                       "files": files}, f, indent=2)
        os.rename(staging, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return files


def main(argv: Sequence[str]) -> None:
    if len(argv) != 3:
        raise app.UsageError("usage: python -m experiments.archive <workdir> <destination> "
                             "[--figures]")
    files = archive(argv[1], argv[2], flags.FLAGS.figures)
    size = sum(os.path.getsize(os.path.join(argv[2], f)) for f in files)
    print(f"archived {len(files)} files ({size / 1024:.0f} KiB) of {argv[1]} to {argv[2]}")


if __name__ == "__main__":
    flags.DEFINE_bool("figures", False, "Also copy the report's PNG figures.")
    app.run(main)
