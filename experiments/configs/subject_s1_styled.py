"""Subject-wise protocol S1 on `small_styled`, the setting in which the completion helps most here.

`subject_s1_long` (frozen lifter BatchNorm while fine-tuning, unaugmented pseudo-labelled frames,
half of every batch labelled, 2400 cosine steps from 2.5e-4) with two changes:
- the data: the `small_styled` builder config, in which every subject performs the actions in a
  posture style of its own, so the unlabelled subjects S5-S8 bring postures the S1 baseline never
  saw (on `small` they perform S1's very poses, retargeted);
- the supervised 3D stage trains twice as long again (19200 steps, about 31 minutes on 2 CPU
  cores alone), which raised what exact labels of the unlabelled videos can teach (the oracle).

docs/experiments.md "Denser videos, other postures" gives what it measured over three baseline
seeds. The detector (`pretrain2d`) is the one `small_styled` runs train; a finished run's
`pretrain2d` may be copied into a new work directory to skip it. By default every loss setting of
the paper's ablation and the three controls (interp, labelled, oracle) fine-tune from the one
baseline (about 4.5 minutes each on 2 cores):

    python -m experiments.main --config=experiments/configs/subject_s1_styled.py \
        --workdir=runs/s1_styled [--config.seed=1]
"""
from experiments.configs.subject_s1_long import get_config as get_long_config


def get_config():
    c = get_long_config()
    c.protocol = "subject_s1_styled"
    c.data.builder_config = "small_styled"
    c.train3d.steps = 19200
    return c
