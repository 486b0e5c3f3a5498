"""Human3.6M action-wise protocol hard: the 11 easier actions labelled; Photo, Purchases, Sitting,
SittingDown unlabelled (named by the paper, Sec. 4.1, Table 6); S9, S11 validation."""
from experiments.configs.h36m_base import H36M_ACTIONS, get_h36m_config

HARD = ("Photo", "Purchases", "Sitting", "SittingDown")


def get_config():
    easy = tuple(a for a in H36M_ACTIONS if a not in HARD)
    return get_h36m_config("h36m_action_hard", labelled_actions=easy, unlabelled_actions=HARD)
