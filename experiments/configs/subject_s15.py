"""Subject-wise protocol S15: S1, S5 labelled; S6, S7, S8 unlabelled; S9, S11 validation."""
from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.protocol = "subject_s15"
    c.data.labelled_subjects = ('S1', 'S5')
    c.data.unlabelled_subjects = ('S6', 'S7', 'S8')
    return c
