"""Action-wise protocol `hard` on the embedded dataset (paper Sec. 4.1 b): the 11 easier actions
labelled (all training subjects), the 4 hardest unlabelled; S9, S11 validation.

The hardest four are those with the highest validation MPJPE of the subject-wise S1 baseline of
`make demo` (seed 0, runs/demo_s1/report/report.md, Table 4 analogue): cartwheel 424 mm,
getup_faceup 410, crawl 407, getup_facedown 365 (next: roll 362). H36M's are Photo, Purchases,
Sitting and SittingDown.
"""
from experiments.configs.base import action_wise_config

UNLABELLED_ACTIONS = ("cartwheel", "getup_faceup", "crawl", "getup_facedown")


def get_config():
    return action_wise_config("action_hard", UNLABELLED_ACTIONS)
