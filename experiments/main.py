r"""Runs the two-stage method of the paper, stage by stage, in one work directory.

  python -m experiments.main --config=experiments/configs/subject_s1.py --workdir=runs/s1 \
      [--stages=all|pretrain2d,train3d,predict,complete,finetune,evaluate,report] \
      [--config.finetune.gamma=0.05]

A rerun skips the stages that are done; a killed run resumes where it stopped. On SIGTERM (the
usual preemption notice) a training stage saves a checkpoint after its current step and the run
exits with status 143 (128 + SIGTERM) without marking that stage done; the same command resumes it.
"""
from __future__ import annotations

import os
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import common, configs, datasets, provenance
from experiments import stages as stages_lib
from experiments.workdir import STAGES, Workdir, parse_stages, read_done_info

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM, what schedulers read as "stopped by the signal"

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. experiments/configs/subject_s1.py.")
_PROTOCOL = flags.DEFINE_string(
    "protocol", None, "A protocol name (a file of experiments/configs/), instead of --config.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory for all stage outputs.")
_STAGES = flags.DEFINE_string("stages", "all", "'all' or a comma list of stages to run.")
_XLA_CACHE = flags.DEFINE_string(
    "xla_cache", os.path.join(os.path.expanduser("~"), ".cache", "hourglass_jax", "xla"),
    "Directory of the persistent XLA compilation cache ('' disables it).")


def run(config, workdir_path: str, stage_spec: str = "all") -> Workdir:
    """Runs the asked stages in pipeline order; returns the work directory."""
    wanted = parse_stages(stage_spec)
    if config.finetune.get("from_workdir", ""):
        # The stages it copies are cheap and every later stage reads them.
        wanted = tuple(s for s in STAGES if s in wanted or s in stages_lib.UPSTREAM_STAGES)
    stages_lib.check_supported(config)

    def missing(stage: str) -> list[str] | None:
        """None: not done; else the loss settings it still lacks (empty: nothing to do)."""
        info = read_done_info(workdir_path, stage)
        return None if info is None else stages_lib.missing_settings(config, stage, info)

    # Every dataset the pending stages read must be prepared before the first stage starts.
    datasets.check_prepared(config, [s for s in wanted if missing(s) != []])
    workdir = Workdir(workdir_path, config)
    for stage in wanted:
        lacking = missing(stage)
        if lacking == []:
            logging.info("stage %s: done already, skipped", stage)
            print(f"[{stage}] done already, skipped", flush=True)
            continue
        if lacking:
            print(f"[{stage}] done without the loss setting(s) {', '.join(lacking)}; running "
                  "again", flush=True)
        print(f"[{stage}] running", flush=True)
        start = time.time()
        info = stages_lib.stage_function(config, stage)(config, workdir)
        info = dict(info or {}, seconds=round(time.time() - start, 1),
                    provenance=provenance.describe())
        if stage in stages_lib.SETTINGS_STAGES:  # what `missing_settings` checks on a rerun
            info["settings"] = list(config.finetune.settings)
        workdir.mark_done(stage, info)
        print(f"[{stage}] done in {info['seconds']:.1f} s", flush=True)
    return workdir


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if (_CONFIG.value is None) == (_PROTOCOL.value is None):
        raise app.UsageError(
            "give one of --config=experiments/configs/<protocol>.py or --protocol=<protocol>; "
            f"protocols: {', '.join(configs.protocols())}")
    config = _CONFIG.value if _CONFIG.value is not None else \
        configs.get_protocol_config(_PROTOCOL.value)
    if not _WORKDIR.value:
        raise app.UsageError("--workdir is required")
    # orbax logs every checkpoint operation at INFO; keep the progress lines readable.
    logging.get_absl_handler().addFilter(lambda record: "orbax" not in record.pathname)
    common.enable_compilation_cache(_XLA_CACHE.value)
    try:
        run(config, _WORKDIR.value, _STAGES.value)
    except stages_lib.Preempted as stop:
        print(f"[preempted] {stop}", file=sys.stderr, flush=True)
        sys.exit(PREEMPTED_EXIT_CODE)


if __name__ == "__main__":
    app.run(main)
