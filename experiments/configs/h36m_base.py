"""Shared settings of the paper-scale Human3.6M protocols (the `h36m` builder, 256 px crops, the
`paper` network) and the paper's optimisation settings (Sec. 4.1: batch 2 at 2.5e-4 supervised;
2 epochs at batch 4 and 2.5e-5 fine-tuning).

The dataset is a manual download: until `python -m hourglass_jax.data.prepare h36m
--manual_dir=... --config=full` has built it, the stages stop with the message of
`hourglass_jax.data.realdata.require_prepared`. docs/datasets.md says how to prepare it.
"""
from __future__ import annotations

import ml_collections

from experiments.configs.base import get_base_config

H36M_TRAIN_SUBJECTS = ("S1", "S5", "S6", "S7", "S8")
H36M_ACTIONS = ("Directions", "Discussion", "Eating", "Greeting", "Phoning", "Photo", "Posing",
                "Purchases", "Sitting", "SittingDown", "Smoking", "Waiting", "WalkDog", "Walking",
                "WalkTogether")


def get_real_config(protocol: str, dataset: str) -> ml_collections.ConfigDict:
    """The base config switched to a real dataset at paper scale."""
    c = get_base_config()
    c.protocol = protocol
    c.data.dataset = dataset
    c.data.builder_config = "full"  # 256 px crops
    # The 2D set of pretrain2d: MPII, as in the paper (the real 3D datasets have no 2D split).
    c.data.pretrain_dataset = "mpii"
    c.data.pretrain_split = "train"
    c.data.validation_actions = ()  # empty: all actions
    c.model.name = "paper"
    # A princeton-vl PyTorch stacked-hourglass checkpoint to import instead of pretraining the 2D
    # stacks (hourglass_jax.importer); empty: pretrain on MPII.
    c.pretrain2d.import_checkpoint = ""
    c.pretrain2d.steps = 100_000
    c.pretrain2d.learning_rate = 2.5e-4  # Newell's RMSprop rate, constant, as in the paper
    for stage in (c.pretrain2d, c.train3d, c.finetune):
        stage.lr_schedule = "constant"
    c.train3d.coordinate_weight = 0.0  # the paper's L2 heatmap loss only
    c.pretrain2d.batch_size = 6
    c.train3d.batch_size = 2          # paper Sec. 4.1
    c.train3d.learning_rate = 2.5e-4
    c.train3d.steps = 100_000         # the paper gives no step count: our choice
    c.train3d.checkpoint_every = 2000
    c.finetune.batch_size = 4         # paper Sec. 4.1: 2 epochs at 2.5e-5
    c.finetune.learning_rate = 2.5e-5
    c.finetune.epochs = 2.0
    c.finetune.steps = 0              # derived from the 2 epochs
    c.finetune.checkpoint_every = 2000
    c.complete.tau = c.finetune.tau = 0.7  # paper, H36M (its 3DHP protocols set 0.5)
    c.complete.lambda_o = 0.0  # the paper's Eq. 1: confident entries held exactly
    c.pretrain2d.checkpoint_every = 2000
    c.log_every = 200
    return c


def get_h36m_config(protocol: str, labelled_subjects=H36M_TRAIN_SUBJECTS,
                    unlabelled_subjects=H36M_TRAIN_SUBJECTS, labelled_actions=(),
                    unlabelled_actions=()) -> ml_collections.ConfigDict:
    c = get_real_config(protocol, "h36m")
    c.data.labelled_subjects = tuple(labelled_subjects)
    c.data.unlabelled_subjects = tuple(unlabelled_subjects)
    c.data.validation_subjects = ("S9", "S11")
    c.data.labelled_actions = tuple(labelled_actions)
    c.data.unlabelled_actions = tuple(unlabelled_actions)
    return c


def get_config():
    """The H36M subject-wise S1 protocol (same as h36m_subject_s1.py)."""
    return get_h36m_config("h36m_subject_s1", ("S1",), ("S5", "S6", "S7", "S8"))
