"""`subject_s1_styled_xwide` fine-tuned, as the paper, on the unlabelled videos alone.

The only change to `subject_s1_styled_xwide` is `finetune.labelled_fraction = 0` (the change
`subject_s1_styled_wide_unmixed` makes to `subject_s1_styled_wide`): the fine-tuning batches
hold pseudo-labelled frames of S5-S8 only, as the paper fine-tunes. Its first four stages are
those of `subject_s1_styled_xwide` with the same seed, so `finetune.from_workdir` can copy them
from a finished run of it:

    python -m experiments.main --config=experiments/configs/subject_s1_styled_xwide_unmixed.py \
        --workdir=runs/s1_styled_xwide_unmixed "--config.finetune.settings=('optimised','bone','oracle')" \
        [--config.finetune.from_workdir=runs/s1_styled_xwide] [--config.finetune.seed=1]
"""
from experiments.configs.subject_s1_styled_xwide import get_config as get_xwide_config


def get_config():
    c = get_xwide_config()
    c.protocol = "subject_s1_styled_xwide_unmixed"
    c.finetune.labelled_fraction = 0.0
    return c
