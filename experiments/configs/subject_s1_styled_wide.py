"""Subject-wise protocol S1 on `small_styled_wide`: `subject_s1_styled` with styles twice as strong.

The only change to `subject_s1_styled` is the data: the `small_styled_wide` builder config, in which
every subject's constant bone turns are drawn twice as far (`subjects.motion_style` with strength
2), so the S1 baseline covers a narrower share of the postures of the unlabelled subjects S5-S8 and
of the validation subjects S9 and S11. docs/experiments.md "Stronger styles" gives what it measured
(seed 0; about 110 minutes on 2 cores with its own detector and four loss settings):

    python -m experiments.main --config=experiments/configs/subject_s1_styled_wide.py \
        --workdir=runs/s1_styled_wide "--config.finetune.settings=('original','optimised','bone','oracle')"
"""
from experiments.configs.subject_s1_styled import get_config as get_styled_config


def get_config():
    c = get_styled_config()
    c.protocol = "subject_s1_styled_wide"
    c.data.builder_config = "small_styled_wide"
    return c
