"""Which fine-tunings of a work directory diverged, read from their logged losses.

`progress.loss_growth` measures a log; this module applies it to `finetune/<setting>/
metrics.jsonl` and words the warning that the finetune stage, the report and
`experiments.seeds` print. It imports no plotting library, so the stage and the seeds tool can
use it without the report's dependencies.
"""
from __future__ import annotations

import glob
import os
from collections.abc import Mapping

from hourglass_jax import progress


def finetune_loss_growth(workdir: str) -> dict[str, float | None]:
    """{setting: progress.loss_growth of its fine-tuning loss} for every finetune/<setting> whose
    metrics.jsonl holds a logged loss (None: too few logged losses to tell)."""
    growth = {}
    for path in sorted(glob.glob(os.path.join(workdir, "finetune", "*", "metrics.jsonl"))):
        losses = progress.logged_losses(path)
        if losses:
            growth[os.path.basename(os.path.dirname(path))] = progress.loss_growth(losses)
    return growth


def diverged_settings(growth: Mapping[str, float | None]) -> list[str]:
    """The settings of `finetune_loss_growth`'s answer whose loss diverged, sorted."""
    return sorted(s for s, g in growth.items()
                  if g is not None and g >= progress.DIVERGED_LOSS_GROWTH)


def diverged_warning(setting: str, growth: float) -> str:
    """The line a report and the finetune stage print for a setting whose loss diverged."""
    return (f"WARNING: the fine-tuning of `{setting}` diverged: its loss ended {growth:.1f} times "
            f"where it began (median of the last fifth of logged steps over the first; healthy "
            f"runs stay below {progress.DIVERGED_LOSS_GROWTH:g}). Its rows measure that failure, "
            "not the loss setting: fine-tune it again with a bound on RMSprop's steps "
            "(--config.finetune.max_normalised_step=3) or another --config.seed.")
