"""Human3.6M class-mismatch case (paper Sec. 4.4): train on labelled "Discussion" (mostly
standing), fine-tune on unlabelled "Phoning" (mostly sitting); both evaluated on S9, S11."""
from experiments.configs.h36m_base import get_h36m_config


def get_config():
    c = get_h36m_config("h36m_discussion_phoning", labelled_actions=("Discussion",),
                        unlabelled_actions=("Phoning",))
    c.data.validation_actions = ("Discussion", "Phoning")
    return c
