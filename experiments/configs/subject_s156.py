"""Subject-wise protocol S156: S1, S5, S6 labelled; S7, S8 unlabelled; S9, S11 validation."""
from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.protocol = "subject_s156"
    c.data.labelled_subjects = ('S1', 'S5', 'S6')
    c.data.unlabelled_subjects = ('S7', 'S8')
    return c
