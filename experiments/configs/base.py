"""Shared defaults of every experiment: the subject-wise S1 protocol on the embedded default.

Protocol files import `get_base_config()` and change only what makes them different.
Override any field from the command line: `--config.finetune.gamma=0.05`.
"""
from __future__ import annotations

import ml_collections

TRAIN_SUBJECTS = ("S1", "S5", "S6", "S7", "S8")
VALIDATION_SUBJECTS = ("S9", "S11")

# The four loss settings of the paper's ablation (Table 5) plus the interpolation control.
#   original:  L2 on the raw predictions (no completion)
#   optimised: L2 on the completed predictions
#   weighted:  + weighted fidelity, Eq. 3-4
#   bone:      + bone-length consistency, Eq. 2 and 5 (the full method)
#   interp:    L2 on predictions gap-filled by linear interpolation of the confident entries (control)
#   labelled:  the labelled split's ground truth with the same loss, steps and rate: no pseudo-label
#              at all (control). It measures what fine-tuning gains from continued training and
#              from the coordinate loss alone, which the other rows include too.
#   oracle:    the unlabelled videos' ground truth as labels (control): the ceiling of any
#              pseudo-label under this schedule. The only setting that reads that ground truth.
LOSS_SETTINGS = ("original", "optimised", "weighted", "bone", "interp", "labelled", "oracle")
# Settings a config may ask for that the protocols do not run by default:
#   shuffled_error: the unlabelled videos' true poses plus the raw predictions' errors, each error
#              moved to another frame (control). The labels are exactly as far from the truth as
#              the predictions, but their errors are not the network's own mistakes on those
#              images: it tells label noise apart from the network's systematic error.
#   unweighted_bone: the completed labels with the bone term but without Eq. 4's weights (our
#              ablation, the cell the paper's table lacks): whether the bone term helps on top of
#              optimised supervision alone.
OPTIONAL_SETTINGS = ("shuffled_error", "unweighted_bone")


def get_base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.protocol = "subject_s1"
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.dataset = "mocap_render"
    c.data.builder_config = "small"
    c.data.data_dir = ""  # empty: $HOURGLASS_DATA_DIR or ~/.cache/hourglass_jax/tfds
    c.data.labelled_subjects = ("S1",)
    c.data.unlabelled_subjects = ("S5", "S6", "S7", "S8")
    c.data.validation_subjects = VALIDATION_SUBJECTS
    c.data.labelled_actions = ()    # empty: all actions
    c.data.unlabelled_actions = ()  # empty: all actions
    c.data.max_frames_per_sequence = 0  # 0: all; small numbers make the quick config quick

    c.model = ml_collections.ConfigDict()
    c.model.name = "tiny"
    c.model.softargmax_k = 3
    # Feature width of every hourglass; 0: the preset's (64 for "tiny"). Compute grows with its
    # square. Another width is another detector too (pretrain2d.from_workdir checks it).
    c.model.channels = 0

    c.pretrain2d = ml_collections.ConfigDict()
    # CPU schedules, measured on the embedded `small` set (2-core CPU): the detector underfits
    # (its 2D error on its own training frames equals that on validation), so a higher rate with
    # a cosine decay: validation 2D error 2.50 -> 2.36 heatmap px, PCK@1px 0.39 -> 0.46 against
    # 600 constant steps at Newell's 2.5e-4. 3000 steps instead of 1000 (about 5 more minutes):
    # 2.36 -> 1.85 px, PCK@1px 0.46 -> 0.58, and the frozen detector bounds the whole network:
    # the baseline's validation MPJPE 280.9 -> 231.0 mm (seed 0; `experiments.diagnose`).
    c.pretrain2d.steps = 3000
    c.pretrain2d.batch_size = 32
    c.pretrain2d.learning_rate = 1e-3
    c.pretrain2d.checkpoint_every = 250
    c.pretrain2d.lr_schedule = "cosine"  # half-cosine decay to 1% at the last step, or "constant"
    # A work directory whose finished detector to copy instead of training one; it must have been
    # trained with this config's seed, data set, model and pretrain2d fields (checked). Protocols
    # that differ only in their 3D data share one detector this way, as in the paper.
    c.pretrain2d.from_workdir = ""

    c.train3d = ml_collections.ConfigDict()
    # 2400 steps: validation MPJPE 291.7 (1200 steps) -> 280.9 mm (seed 0); 2 cores, about 6 min.
    c.train3d.steps = 2400
    c.train3d.batch_size = 32
    c.train3d.learning_rate = 1e-3
    # Weight of the soft-argmax coordinate term (voxels, L1) added to the L2 heatmap loss; 0: off
    # (the paper's L2 only). With it, the rate and the decay above, the baseline's validation
    # MPJPE went 325.6 -> 291.7 mm (seed 0).
    c.train3d.coordinate_weight = 1e-3
    c.train3d.checkpoint_every = 250
    c.train3d.lr_schedule = "cosine"

    c.predict = ml_collections.ConfigDict()
    c.predict.batch_size = 64
    # Pseudo-labels from the average of each frame's prediction over the training augmentation's
    # 8 views (flip, +-10 and +-20 deg, scale 0.85 and 1.15), mapped back (our extension,
    # predictor.TEST_TIME_VIEWS; 8 times the predict stage's cost). False: the network's single
    # view, as in the paper. Validation is always single-view.
    c.predict.average_views = False
    # Work directories whose finished train3d baselines predict the pseudo-labels in place of this
    # run's own (our extension; docs/experiments.md "Whose error the labels carry"): their
    # predictions are averaged. Each must have been trained on this config's data and labelled split
    # (checked, stages.TEACHER_FIELDS). This run's own directory may be one of them. Empty: the
    # run's own baseline, as in the paper.
    c.predict.teacher_workdirs = ()

    c.complete = ml_collections.ConfigDict()
    # The paper sets tau per dataset so that most predictions count as confident: 0.7 on H36M
    # (86.4% above), 0.5 on 3DHP (81.0% above). The small CPU network's heatmaps peak lower:
    # 0.7 leaves only 12% of its joints confident, 0.16 leaves 86%, the paper's share (with the
    # 1000-step detector; with the 3000-step one 28% and 92-94%).
    c.complete.tau = 0.16
    c.complete.max_window = 256
    # Soft data term (our extension, CompletionConfig.lambda_o; 0 = the paper's exact constraint on
    # the confident entries, which copies their noise into the pseudo-labels). Chosen on the
    # labelled videos (seed 0's baseline on S1's 120 videos, `soft_fidelity_probe
    # --videos=labelled`): lambda_o = 1 / 3 / 10 / 30 / 100 move their MPJPE by +4.1 / -4.1 /
    # -7.5 / -6.4 / -3.8%. On the unlabelled videos Eq. 1 as printed gives -1.6%, lambda_o = 10
    # -7.0% (seed 0; README "Results of the demo" for all seeds).
    c.complete.lambda_o = 10.0
    c.complete.max_iters = 150  # real predictions converge slowly; 150 costs ~40 s for 475 videos on 2 cores
    # Which poses give each video's bone lengths, the bone term's (Eq. 5) targets: "completed"
    # (the paper) or "pred", the raw predictions (our option: the completion shrinks the poses,
    # so its bones come out short; `diagnose --sections=bone_targets` measures both).
    c.complete.bone_lengths_from = "completed"
    # Our option: scale each video's completed poses about the root to the raw predictions'
    # bone lengths (`stages.rescaled_to_predictions`), undoing the completion's shrinkage.
    c.complete.rescale_to_predictions = False

    c.finetune = ml_collections.ConfigDict()
    c.finetune.settings = LOSS_SETTINGS
    c.finetune.epochs = 2.0
    c.finetune.steps = 200  # 0: derived from `epochs` over the unlabelled frames
    c.finetune.batch_size = 32
    c.finetune.learning_rate = 2.5e-5
    c.finetune.gamma = 0.1
    c.finetune.tau = 0.16  # Eq. 4's threshold: the completion's tau
    # Our option: scale each frame's Eq. 4 weights to sum to its joint count, so that the weights
    # move the loss between a frame's joints without taking weight off pseudo-labelled frames.
    c.finetune.normalise_weights = False
    c.finetune.checkpoint_every = 250
    c.finetune.lr_schedule = "constant"  # or "cosine": half-cosine decay to 1% at the last step
    # "eq2": the paper's loss; "supervised": the supervised stage's heatmap loss on the labels
    # (our probe of whether Eq. 3's squared mm error limits fine-tuning; stages.FINETUNE_LOSSES).
    c.finetune.loss = "eq2"
    # Share of every fine-tuning batch drawn from the labelled split with its ground truth (our
    # extension, stages.labelled_batch_size; 0: the paper's fine-tuning on the unlabelled videos
    # alone). Against forgetting the labelled data, and to keep the exact labels' signal.
    c.finetune.labelled_fraction = 0.0
    # Lifter BatchNorm on its running averages while fine-tuning (train what is evaluated; our
    # probe, the paper does not say). On in `subject_s1_long`, whose docstring and
    # docs/experiments.md ("BatchNorm statistics and weights, apart") give what it measured.
    # `learning_rate=0` with it False re-estimates only these statistics.
    c.finetune.freeze_batchnorm = False
    # The paper's augmentation on the pseudo-labelled frames (flip, rotation, scale; the labels
    # move with the image). False: they are seen as predicted (our probe; the labelled rows of
    # `labelled_fraction` stay augmented).
    c.finetune.augment_unlabelled = True
    # > 0: clip every parameter's RMSprop step g / sqrt(v) to +-this before the rate scales it
    # (`train.clipped_rmsprop`; our guard: one styled fine-tuning diverged without it). 0: none.
    c.finetune.max_normalised_step = 0.0
    # The fine-tuning's own seed (the order of its batches, their augmentation, the controls'
    # draws); -1: the run's `seed`, as every run before this field. With `from_workdir` it
    # gives a second fine-tuning of one baseline: `seed` stays the baseline's.
    c.finetune.seed = -1
    # A work directory whose first four stages (pretrain2d, train3d, predict, complete) to copy
    # instead of running them: they must have been made with this config's fields (checked;
    # only `protocol` and the finetune and evaluate fields may differ, `stages.UPSTREAM_FREE`).
    # Fine-tuning variants of one baseline then run in directories of their own.
    c.finetune.from_workdir = ""

    c.evaluate = ml_collections.ConfigDict()
    c.evaluate.batch_size = 64

    c.log_every = 50
    return c


def action_wise_config(protocol: str, unlabelled_actions) -> ml_collections.ConfigDict:
    """An action-wise protocol: every training subject, `unlabelled_actions` unlabelled and the
    other actions of the embedded dataset labelled."""
    from hourglass_jax.data.mocap import CLIP_NAMES
    unknown = [a for a in unlabelled_actions if a not in CLIP_NAMES]
    if unknown:
        raise ValueError(f"unknown action(s) {unknown}; valid: {', '.join(CLIP_NAMES)}")
    c = get_base_config()
    c.protocol = protocol
    c.data.labelled_subjects = TRAIN_SUBJECTS
    c.data.unlabelled_subjects = TRAIN_SUBJECTS
    c.data.labelled_actions = tuple(a for a in CLIP_NAMES if a not in unlabelled_actions)
    c.data.unlabelled_actions = tuple(unlabelled_actions)
    return c
