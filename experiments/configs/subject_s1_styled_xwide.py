"""Subject-wise protocol S1 on `small_styled_xwide`: `subject_s1_styled` with styles three times as strong.

The only change to `subject_s1_styled` is the data: the `small_styled_xwide` builder config, in
which every subject's constant bone turns are drawn three times as far as in `small_styled`
(`subjects.motion_style` with strength 3: upper arms up to 90 degrees, elbows up to 105), so the
S1 baseline covers a narrower share still of the other subjects' postures than on
`small_styled_wide`. It asks whether the gain of fine-tuning on completed pseudo-labels grows
with that gap (docs/experiments.md "Styles three times as strong"):

    python -m experiments.main --config=experiments/configs/subject_s1_styled_xwide.py \
        --workdir=runs/s1_styled_xwide "--config.finetune.settings=('optimised','bone','oracle')"
"""
from experiments.configs.subject_s1_styled import get_config as get_styled_config


def get_config():
    c = get_styled_config()
    c.protocol = "subject_s1_styled_xwide"
    c.data.builder_config = "small_styled_xwide"
    return c
