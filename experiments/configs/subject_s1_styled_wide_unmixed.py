"""`subject_s1_styled_wide` fine-tuned, as the paper, on the unlabelled videos alone.

The only change to `subject_s1_styled_wide` is `finetune.labelled_fraction = 0`: no labelled S1 rows
are mixed into the fine-tuning batches, which hold pseudo-labelled frames of S5-S8 only, as the
paper fine-tunes ("2 epochs on the whole unannotated image sequences", Sec. 4.1). Over the three
baseline seeds of `subject_s1_styled_wide` this gave the full method its best figure
(docs/experiments.md "Stronger styles": optimised supervision -8.0 +- 0.5%, full method
-7.6 +- 0.3%, exact labels -7.3 +- 1.1% validation MPJPE), against 0.5's -7.3 / -6.6 / -9.1%. The
share was read off the validation subjects, as every other schedule choice here, so these figures
are not held out.

Because the lifter's BatchNorm is frozen and the pseudo-labelled frames are not augmented, the
network's own raw predictions are a fixed point: `original` supervision has zero loss and
leaves the baseline unchanged, and optimised supervision teaches the completion's corrections
and nothing else. The first four stages are those of `subject_s1_styled_wide` with the same
seed, so `finetune.from_workdir` copies them from a finished run of it (checked field by field),
and `finetune.seed` gives the same baseline another fine-tuning:

    python -m experiments.main --config=experiments/configs/subject_s1_styled_wide_unmixed.py \
        --workdir=runs/s1_styled_wide_unmixed "--config.finetune.settings=('optimised','bone','oracle')" \
        [--config.finetune.from_workdir=runs/styled_wide_seed0] [--config.finetune.seed=1]
"""
from experiments.configs.subject_s1_styled_wide import get_config as get_wide_config


def get_config():
    c = get_wide_config()
    c.protocol = "subject_s1_styled_wide_unmixed"
    c.finetune.labelled_fraction = 0.0
    return c
