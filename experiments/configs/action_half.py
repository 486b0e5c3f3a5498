"""Action-wise protocol `half` on the embedded dataset (paper Sec. 4.1 b): the first half of the
actions labelled (all training subjects), the rest unlabelled; S9, S11 validation.

H36M's protocol labels its first 8 of 15 actions in the dataset's order; here the order is the
clips' (alphabetical), so the labelled half is backflip ... jump.
"""
from experiments.configs.base import action_wise_config
from hourglass_jax.data.mocap import CLIP_NAMES

UNLABELLED_ACTIONS = CLIP_NAMES[8:]


def get_config():
    return action_wise_config("action_half", UNLABELLED_ACTIONS)
