"""Human3.6M action-wise protocol half: the first 8 actions labelled, the other 7 unlabelled, all
training subjects (S1, S5-S8); S9, S11 validation (paper Sec. 4.1, Table 5)."""
from experiments.configs.h36m_base import H36M_ACTIONS, get_h36m_config

LABELLED = ("Directions", "Discussion", "Eating", "Greeting", "Phoning", "Photo", "Posing",
            "Purchases")


def get_config():
    unlabelled = tuple(a for a in H36M_ACTIONS if a not in LABELLED)
    return get_h36m_config("h36m_action_half", labelled_actions=LABELLED,
                           unlabelled_actions=unlabelled)
