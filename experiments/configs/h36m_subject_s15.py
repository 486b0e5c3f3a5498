"""Human3.6M subject-wise protocol S15: S1, S5 labelled; S6, S7, S8 unlabelled videos;
S9, S11 validation (paper Sec. 4.1, Table 3 and Fig. 5)."""
from experiments.configs.h36m_base import get_h36m_config


def get_config():
    return get_h36m_config("h36m_subject_s15", ('S1', 'S5'), ('S6', 'S7', 'S8'))
