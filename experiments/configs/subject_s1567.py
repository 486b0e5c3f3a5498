"""Subject-wise protocol S1567: S1, S5, S6, S7 labelled; S8 unlabelled; S9, S11 validation."""
from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.protocol = "subject_s1567"
    c.data.labelled_subjects = ('S1', 'S5', 'S6', 'S7')
    c.data.unlabelled_subjects = ('S8',)
    return c
