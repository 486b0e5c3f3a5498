"""Subject-wise protocol S1: S1 labelled; S5-S8 unlabelled videos; S9, S11 validation (paper Sec. 4.1)."""
from experiments.configs.base import get_base_config


def get_config():
    return get_base_config()
