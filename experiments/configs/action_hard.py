"""Action-wise protocol `hard` on the embedded dataset (paper Sec. 4.1 b): the 11 easier actions
labelled (all training subjects), the 4 hardest unlabelled; S9, S11 validation.

The hardest four are those with the highest validation MPJPE of the subject-wise S1 baseline of
`make demo` (seed 0, runs/demo_s1/report/report.md, Table 4 analogue): cartwheel 424 mm,
getup_faceup 410, crawl 407, getup_facedown 365 (next: roll 362). H36M's are Photo, Purchases,
Sitting and SittingDown.
"""
from experiments.configs.base import TRAIN_SUBJECTS, get_base_config
from hourglass_jax.data.mocap import CLIP_NAMES

UNLABELLED_ACTIONS = ("cartwheel", "getup_faceup", "crawl", "getup_facedown")
LABELLED_ACTIONS = tuple(a for a in CLIP_NAMES if a not in UNLABELLED_ACTIONS)


def get_config():
    c = get_base_config()
    c.protocol = "action_hard"
    c.data.labelled_subjects = TRAIN_SUBJECTS
    c.data.unlabelled_subjects = TRAIN_SUBJECTS
    c.data.labelled_actions = LABELLED_ACTIONS
    c.data.unlabelled_actions = UNLABELLED_ACTIONS
    return c
