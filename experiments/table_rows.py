"""Names and order of Table 3's rows (one per loss setting), shared by `report` and `seeds`.

Kept apart from `report` so that `seeds`, which only reads reports, does not import JAX and the
plotting code with it.
"""
from __future__ import annotations

from typing import Any, Mapping

from experiments.configs.base import LOSS_SETTINGS, OPTIONAL_SETTINGS

# Rows of Table 3 in the paper's order; meanings in experiments/configs/base.py.
SETTING_ORDER: tuple[str, ...] = ("baseline",) + tuple(LOSS_SETTINGS) + tuple(OPTIONAL_SETTINGS)
SETTING_LABELS: dict[str, str] = {
    "baseline": "baseline",
    "original": "original supervision",
    "optimised": "optimised supervision",
    "weighted": "+ weighted fidelity",
    "bone": "+ bone consistency (full method)",
    "interp": "interpolation supervision (control)",
    "labelled": "labelled ground truth only (control)",
    "oracle": "unlabelled ground truth (oracle control)",
    "shuffled_error": "ground truth + other frames' prediction errors (control)",
    "unweighted_bone": "optimised + bone consistency, unweighted (ablation)",
}
_LABEL_RANK = {SETTING_LABELS[s]: i for i, s in enumerate(SETTING_ORDER)}


def in_paper_order(rows: Mapping[str, Any]) -> dict[str, Any]:
    """Table 3 rows keyed by label, in the paper's order; unknown labels last, as they came."""
    return dict(sorted(rows.items(), key=lambda item: _LABEL_RANK.get(item[0], len(_LABEL_RANK))))
