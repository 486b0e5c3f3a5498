"""Action-wise protocol `half` on the embedded dataset (paper Sec. 4.1 b): the first half of the
actions labelled (all training subjects), the rest unlabelled; S9, S11 validation.

H36M's protocol labels its first 8 of 15 actions in the dataset's order; here the order is the
clips' (alphabetical), so the labelled half is backflip ... jump.
"""
from experiments.configs.base import TRAIN_SUBJECTS, get_base_config
from hourglass_jax.data.mocap import CLIP_NAMES

LABELLED_ACTIONS = CLIP_NAMES[:8]
UNLABELLED_ACTIONS = CLIP_NAMES[8:]


def get_config():
    c = get_base_config()
    c.protocol = "action_half"
    c.data.labelled_subjects = TRAIN_SUBJECTS
    c.data.unlabelled_subjects = TRAIN_SUBJECTS
    c.data.labelled_actions = LABELLED_ACTIONS
    c.data.unlabelled_actions = UNLABELLED_ACTIONS
    return c
