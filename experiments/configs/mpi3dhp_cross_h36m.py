"""Cross-dataset transfer H36M -> MPI-INF-3DHP (paper Sec. 4.4): the network is trained fully
supervised on Human3.6M (S1, S5-S8), fine-tuned on 5 unlabelled 3DHP videos from S1-S5 and
evaluated on 3 3DHP videos from S6-S8 (no 3DHP label is used for training).

The paper draws the videos at random without listing them; these were drawn once with
numpy.random.default_rng(0) from (subject, sequence, chest camera), as "subject/SeqN/N/camera"
sequence ids of the mpi_inf_3dhp builder's `train` split.
"""
from experiments.configs.h36m_base import get_h36m_config


def get_config():
    c = get_h36m_config("mpi3dhp_cross_h36m", unlabelled_subjects=())
    c.data.unlabelled_dataset = "mpi_inf_3dhp"
    c.data.unlabelled_split = "train"
    c.data.unlabelled_sequences = ("S2/Seq1/1/6", "S2/Seq2/2/0", "S3/Seq1/1/8", "S4/Seq1/1/1",
                                   "S5/Seq1/1/0")
    c.data.validation_dataset = "mpi_inf_3dhp"
    c.data.validation_split = "train"
    c.data.validation_subjects = ()
    c.data.validation_sequences = ("S7/Seq2/2/7", "S8/Seq1/1/6", "S8/Seq2/2/4")
    c.complete.tau = c.finetune.tau = 0.5  # paper Table 2: 3DHP's threshold
    return c
