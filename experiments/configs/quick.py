"""Every stage on a few frames (the `tiny` embedded dataset, the `test` network): a smoke run.

Runs in well under 2 minutes on 2 CPU cores; part of `make test`. Its numbers mean nothing.
"""
from experiments.configs.base import LOSS_SETTINGS, OPTIONAL_SETTINGS, get_base_config


def get_config():
    c = get_base_config()
    c.protocol = "quick"
    c.data.builder_config = "tiny"
    c.model.name = "test"
    for stage in (c.pretrain2d, c.train3d, c.finetune):
        stage.batch_size = 8
        stage.checkpoint_every = 2
    c.pretrain2d.steps = 3
    c.train3d.steps = 3
    c.finetune.steps = 3
    c.finetune.settings = LOSS_SETTINGS + OPTIONAL_SETTINGS  # every setting, the optional ones too
    c.predict.batch_size = 16
    c.complete.max_iters = 50
    c.log_every = 1
    return c
