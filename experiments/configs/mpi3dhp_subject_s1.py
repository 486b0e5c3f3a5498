"""MPI-INF-3DHP subject-wise protocol S1: S1 labelled, S2-S8 unlabelled (12.5 fps, the 8
chest-height cameras), test sequences TS1-TS6 as validation with results per scene (paper
Table 2 and Table 7). The scene of each test sequence is in `evaluate.scenes`."""
import ml_collections

from experiments.configs.h36m_base import get_real_config


def get_config():
    c = get_real_config("mpi3dhp_subject_s1", "mpi_inf_3dhp")
    c.data.labelled_subjects = ("S1",)
    c.data.unlabelled_subjects = ("S2", "S3", "S4", "S5", "S6", "S7", "S8")
    c.data.validation_subjects = ("TS1", "TS2", "TS3", "TS4", "TS5", "TS6")
    # Table 7: studio with green screen, studio without, outdoor (mpi_inf_3dhp.SCENES).
    c.evaluate.scenes = ml_collections.ConfigDict({
        "green_screen": ("TS1", "TS2"), "studio": ("TS3", "TS4"), "outdoor": ("TS5", "TS6")})
    c.complete.tau = c.finetune.tau = 0.5  # paper Table 2: 3DHP's threshold
    return c
