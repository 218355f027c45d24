"""Every option of every run, once: dataclasses whose fields are also the tools' flags.

Field names follow the original's flags (train.py, eval.py, vis.py, export_model.py);
each field's ``metadata`` carries its help text (and ``flag`` where the flag's name
differs, ``choices`` for enums, ``required``, ``multi`` for repeated flags, ``positive``
for list values that must be > 0, ``prefix`` for a nested group).
``tools.common_flags.define_flags(cls)`` defines the flags from these,
``options_from_flags(cls)`` reads them back, so a default lives here only.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from deeplab_ext.data.colormap import ADE20K, CAMVID, CITYSCAPES, PASCAL
from deeplab_ext.models.registry import family_of, group_variables, variant_field
from deeplab_ext.models.tag_heads import TAG_HEADS
from deeplab_ext.run.formats import FORMATS, format_help, model_files_help
from deeplab_ext.run.refit_kinds import (
    DEFAULT_KIND,
    EVIDENCE_MODES,
    REFIT_KINDS,
    default_kinds,
    kind_names,
    refit_kind,
    table_modes,
)
from tf_mtl.aux_modules import ADAPTORS, AGGREGATORS
from tf_mtl.distribute import STRATEGIES
from tf_mtl.evidence import EvidenceConfig, EvidenceRefitter
from tf_mtl.functional_optimizers import OPTIMIZERS as REFIT_OPTIMIZERS
from tf_mtl.precision import POLICIES as PRECISIONS
from tf_mtl.schedules import LEARNING_POLICIES
from tf_mtl.segmentation_tags import SEGMENTATION_TAG_POOLINGS
from tf_mtl.weighting.base import WEIGHTINGS_REGISTRY

if TYPE_CHECKING:
    import keras

    from deeplab_ext.data.datasets import DatasetInfo

__all__ = [
    "DemoOptions",
    "EvalOptions",
    "EvidenceOptions",
    "ExportOptions",
    "ImportOptions",
    "LabelAutoencoderOptions",
    "PredictOptions",
    "TrainOptions",
    "TuneOptions",
    "VisOptions",
]

COLORMAP_TYPES = (PASCAL, CITYSCAPES, ADE20K, CAMVID)
# The evidence table row tools.tune_evidence maximises: DL-BP-* (plain), DL-BP-*-Pr
# (pruned), or the soft rows with their prior's strength and tag confidence (soft).
OBJECTIVES = ("plain", "pruned", "soft")


def opt(default: Any = None, help: str = "", **meta: Any) -> Any:  # noqa: A002
    """A field with its flag's help text (and other flag metadata)."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple or default_factory for mutable defaults")
    return dataclasses.field(default=default, metadata={"help": help, **meta})


def align_field() -> Any:
    return opt(True, "Pad each input onto the size grid the model was trained on (its output "
               "stride and training crop, as the original pads to eval_crop_size) and crop "
               "the outputs back.")


def tag_head_opt() -> Any:
    return opt(None, "The tag head: encoder (a trained head on the encoder features, the "
               "*_mt variants' default) or segmentation (tags pooled from the network's own "
               "segmentation: no parameters, nothing to train; gives a released model tags).",
               choices=TAG_HEADS)


def seg_tag_pooling_opt() -> Any:
    return opt(None, "--tag_head=segmentation: how each class's pixel probabilities are "
               "pooled into its tag (default: the variant's, lse).",
               choices=SEGMENTATION_TAG_POOLINGS)


def seg_tag_temperature_opt() -> Any:
    return opt(None, "--tag_head=segmentation with lse pooling: the temperature r of "
               "log(mean(exp(r * p))) / r (default: the variant's).")


def allow_partial_opt() -> Any:
    return opt(False, "Start from weights that cover less than 90% of the backbone (and of "
               "the groups --train_groups leaves frozen); by default such a source, written "
               "for another variant, is refused.")


def unused(given: frozenset[str], flags: tuple[str, ...] | str, why: str,
           keep: tuple[str, ...] = ()) -> list[str]:
    """The refusal of ``flags`` (names, or a prefix ending in ``_``; ``keep`` are the names
    under the prefix that the mode does read) where they were given but the chosen mode does
    not read them: ``unused_flags`` of an options class."""
    names = sorted(n for n in given if n.startswith(flags) and n not in keep) \
        if isinstance(flags, str) else [n for n in flags if n in given]
    return [f"--{', --'.join(names)}: {why}; drop {'it' if len(names) == 1 else 'them'}"] \
        if names else []


# The soft evidence settings' flags (EvidenceOptions.prune_strength, tag_confidence).
SOFT_FLAGS = ("evidence_prune_strength", "evidence_tag_confidence")


def group(factory: Any, prefix: str, help: str = "") -> Any:  # noqa: A002
    """A nested options group whose flags are ``<prefix><field>``."""
    return dataclasses.field(default_factory=factory, metadata={"prefix": prefix, "help": help})


def given_flags() -> Any:
    """The names of the flags the user gave: filled when the options are resolved from the
    command line (``tools.common_flags.options_from_flags``), not a flag itself. Settings a
    run directory holds (its tuned refit settings) yield to the flags given."""
    return dataclasses.field(default=frozenset(), compare=False, repr=False,
                             metadata={"resolved": True})


_REFIT = EvidenceConfig()  # the library's defaults, which the flags share


def _read_by(field: str | None = None) -> str:
    """The rows of the built-in kinds that read ``field`` (None: those refitting weights),
    for a flag's help: derived, so a kind's file is the one place that says so."""
    kinds = [REFIT_KINDS[k] for k in kind_names()]
    return ", ".join(k.mode for k in kinds if (k.weights if field is None else field in k.fields))


@dataclasses.dataclass
class EvidenceOptions:
    """Prediction-time refitting (flags ``--evidence_*``); the defaults are the library's
    (``tf_mtl.evidence.EvidenceConfig``), but for the early-stopping cap and the refitted
    groups, which only the tools know."""

    steps: int = opt(_REFIT.steps, f"Refit steps per image ({_read_by('steps')}).")
    learning_rate: float = opt(_REFIT.learning_rate, "Refit learning rate.")
    optimizer: str = opt(_REFIT.optimizer, "Refit optimizer.", choices=REFIT_OPTIMIZERS)
    alpha: float = opt(_REFIT.alpha, "L2 to the trained weights / on the latent offset "
                       f"({_read_by('alpha')}).")
    es_steps: int = opt(30, f"Step cap for early stopping ({_read_by('es_steps')}).")
    threshold: float = opt(_REFIT.threshold, "Tag decision threshold (early stopping).")
    es_margin: float = opt(_REFIT.margin, "Early stopping waits until every tag clears "
                           "--evidence_threshold by this margin (present >= t+m, absent < t-m); "
                           "0 = plain agreement.")
    clip_norm: float = opt(_REFIT.clip_norm, "Clip each refit step's gradient to this global norm per image "
                           "(0 = off).")
    safeguard: bool = opt(_REFIT.safeguard, "Per image, keep the unrefitted prediction when refitting "
                          "did not lower the tags' loss against the evidence or flipped a tag "
                          "that agreed with it.")
    refit: str | None = opt(None, "Variable groups refitted, e.g. backbone,aspp,tag_head "
                            "(default: the model family's refit set; DeepLab: backbone, aspp, "
                            "tag_head).")
    jit_compile: bool = opt(_REFIT.jit_compile, "XLA-compile the refit loop (GPU).")
    anchor: float = opt(_REFIT.anchor, f"{_read_by()}: weight of a term keeping the refitted "
                        "segmentation near the unrefitted one pruned to the tags (per-pixel "
                        "cross-entropy); 0 = off.")
    prune_strength: float = opt(_REFIT.prune_strength, "Soft evidence: pruning as a prior "
                                "that scales each class by 1 - s * (1 - t), t its tag's "
                                "probability (0 untagged): 1 = remove the classes the tags rule "
                                "out (the seed's pruning), 0 = no pruning. Read by the soft rows "
                                "(*soft_prune) and by tools.predict; the -Pr rows are the seed's.")
    tag_confidence: float = opt(1.0, "Soft evidence: how far the tags given are trusted, in "
                                "(0.5, 1]: each tag's probability (1 for a tag given by name or "
                                "taken from the data, p for name:p) is multiplied by it, and that "
                                "is the refit's target and the prior's t. Read where "
                                "prune_strength is.")

    def __post_init__(self) -> None:
        if not 0.0 <= self.prune_strength <= 1.0:  # NaN fails too
            raise ValueError(f"--evidence_prune_strength={self.prune_strength}: must be in "
                             "[0, 1] (1 = remove the classes the tags rule out, 0 = no pruning)")
        if not 0.5 < self.tag_confidence <= 1.0:
            raise ValueError(f"--evidence_tag_confidence={self.tag_confidence}: must be in "
                             "(0.5, 1] (a tag given is more likely present than not; 1 = sure)")

    def hard(self) -> EvidenceOptions:
        """These settings for the seed's rows: tags as given, pruning that removes."""
        return dataclasses.replace(self, prune_strength=1.0, tag_confidence=1.0)

    def soft_tags(self, tags: Any) -> Any:
        """The evidence the soft settings make of the tags given: each probability times
        ``tag_confidence`` (the one place that says so)."""
        return tags if self.tag_confidence == 1.0 else tags * self.tag_confidence

    def config(self, kind: str, prune: bool, scales: tuple[float, ...] = (1.0,),
               flip: bool = False, keep_classes: tuple[int, ...] = (0,)) -> EvidenceConfig:
        """The one mapping from these flags to the ``tf_mtl.evidence.EvidenceConfig`` of
        one refit kind (``run.refit_kinds``): the fields every kind shares here, then the
        kind's own (its steps and objective terms, from its file; they win over a shared
        field, as ``es`` zeroes ``alpha``). The anchor is a term of the kinds that refit
        weights; a latent kind does without it."""
        row = refit_kind(kind, "")
        shared = dict(
            learning_rate=self.learning_rate, optimizer=self.optimizer,
            threshold=self.threshold, jit_compile=self.jit_compile, safeguard=self.safeguard,
            clip_norm=self.clip_norm, anchor=self.anchor if row.weights else 0.0,
            eval_scales=tuple(scales), add_flipped_images=flip, prune=prune,
            keep_classes=tuple(keep_classes), prune_strength=self.prune_strength,
            mode=row.refit_mode)
        return EvidenceConfig(**(shared | row.config(self)))

    def refitter(self, network: keras.Model, info: DatasetInfo, kind: str = DEFAULT_KIND,
                 prune: bool = False, scales: Sequence[float] = (1.0,), flip: bool = False
                 ) -> EvidenceRefitter:
        """The refitter of one refit kind for ``network`` (every tool that refits builds
        it here): this kind's config, and from the network's family the refitted variable
        groups, the segmentation and tag outputs and the latent feature; from the dataset
        ``info`` the tags' classes and the class pruning never removes."""
        family = family_of(network)
        cfg = self.config(kind, prune, tuple(scales), flip, info.keep_classes)
        if cfg.mode != "weights":
            if family.latent_feature is None:
                use = " / ".join(REFIT_KINDS[k].mode for k in kind_names()
                                 if REFIT_KINDS[k].weights)
                raise ValueError(f"--evidence_modes: the {kind} mode needs one feature that "
                                 f"alone determines every output, and model family "
                                 f"{family.name!r} has none; use {use}")
            cfg = dataclasses.replace(cfg, latent_layer=family.latent_feature)
        variables = group_variables(network, self.refit) if cfg.mode == "weights" else None
        return EvidenceRefitter(network, cfg, variables=variables,
                                tag_class_ids=list(info.tag_class_ids),
                                semantic_key=family.semantic_output,
                                tags_key=family.tags_output)


@dataclasses.dataclass
class TrainOptions:
    """Training (``tools.train``); names follow the original train.py flags."""

    train_logdir: str = opt(None, "Where checkpoints and TensorBoard logs are written.",
                            required=True)
    dataset_dir: str = opt(None, "Folder with the TFRecord shards of --dataset.", required=True)
    model_variant: str = variant_field()
    dataset: str = opt("shapes_evidence", "Dataset name (pascal_voc_seg, cityscapes, ade20k, "
                       "camvid, coco128_voc, shapes_evidence, or one registered by "
                       "--extra_modules).")
    train_split: str = opt("train", "Split to train on.")
    train_crop_size: tuple[int, int] = opt((513, 513), "Crop size h,w.", positive=True)
    train_batch_size: int = opt(8, "Global batch size.")
    base_learning_rate: float = opt(1e-4, "Base learning rate.")
    learning_policy: str = opt("poly", "Learning rate policy.", choices=LEARNING_POLICIES)
    learning_power: float = opt(0.9, "Poly power.")
    learning_rate_decay_step: int = opt(2000, "Step policy: decay every N steps.")
    learning_rate_decay_factor: float = opt(0.1, "Step policy: decay factor.")
    slow_start_step: int = opt(0, "Steps at --slow_start_learning_rate first.")
    slow_start_learning_rate: float = opt(1e-4, "Learning rate during slow start.")
    training_number_of_steps: int = opt(30000, "Total training steps.")
    optimizer: str = opt("momentum", "Optimizer.", choices=("momentum", "adam"))
    momentum: float = opt(0.9, "Momentum.")
    weight_decay: float | None = opt(None, "Weight decay (default: the variant's).")
    fine_tune_batch_norm: bool = opt(True, "Train BatchNorm (needs batch >= 12).")
    train_groups: tuple[str, ...] | None = opt(None, "Train only these variable groups of the "
                                               "model family (DeepLab: backbone, aspp, decoder, "
                                               "logits, tag_head), freeze the rest; default: "
                                               "all. E.g. tag_head on a pretrained import.")
    tf_initial_checkpoint: str | None = opt(None, "Weights to initialise from: a released "
                                            "model's name (tools.model_info --list_weights), "
                                            "the original's file (TFLite, TF1 checkpoint), a "
                                            "run directory or a zoo checkpoint.")
    initialize_last_layer: bool = opt(True, "Also load the logits from the checkpoint.")
    last_layer_gradient_multiplier: float = opt(1.0, "Multiply the gradients of the last "
                                                "layer (logits) by this: > 1 trains a new "
                                                "classifier on a pretrained trunk faster "
                                                "(the original's flag).")
    allow_partial_init: bool = allow_partial_opt()
    output_stride: int | None = opt(None, "8, 16 or 32 (default: the variant's).")
    atrous_rates: tuple[int, ...] | None = opt(None, "ASPP rates at OS16 (repeat the flag).",
                                               multi=True)
    decoder_output_stride: int | None = opt(None, "Decoder stride (4), default the variant's.")
    num_tags: int | None = opt(None, "Tags of the tag head (default: the dataset's).")
    tag_head_hidden: int | None = opt(None, "*_mt: hidden units of the tag head (0 = linear).")
    tag_head_pooling: str | None = opt(None, "*_mt: pool features then classify (avg), or "
                                       "classify every location then pool (max / lse); "
                                       "default: the variant's.", choices=("avg", "max", "lse"))
    tag_head: str | None = tag_head_opt()
    seg_tag_pooling: str | None = seg_tag_pooling_opt()
    seg_tag_temperature: float | None = seg_tag_temperature_opt()
    min_scale_factor: float = opt(0.5, "Augmentation: min scale.")
    max_scale_factor: float = opt(2.0, "Augmentation: max scale.")
    scale_factor_step_size: float = opt(0.25, "Augmentation: scale step.")
    min_resize_value: int | None = opt(None, "Resize shorter side to at least this.")
    max_resize_value: int | None = opt(None, "Resize longer side to at most this.")
    top_k_percent_pixels: float = opt(1.0, "Hard-pixel mining: keep this fraction.")
    hard_example_mining_step: int = opt(0, "Steps to ramp hard-pixel mining.")
    loss_weighting: str = opt("uncertainty", "How task losses are combined: a loss weighting "
                              "or a gradient method (LibMTL's set; tf_mtl/weighting/).",
                              choices=WEIGHTINGS_REGISTRY)
    weighting_options: str = opt("", "Options of --loss_weighting as key=value,... (e.g. "
                                 "calpha=0.4 for cagrad; rep_grad=true for gradients of the "
                                 "shared features instead of the shared weights). Unknown keys "
                                 "are an error that lists the method's options.")
    initial_sigma: float = opt(1.0, "Alias of --weighting_options=initial_sigma=S "
                               "(uncertainty weighting's initial sigma).")
    dwa_window_steps: int = opt(0, "Alias of --weighting_options=window_steps=N (DWA's steps "
                                "per averaging window; 0 = one pass over --train_split).")
    training_branches: tuple[str, ...] = opt((), "Training-only branches to add, by registered "
                                             "name (deeplab_ext.tasks.register_branch).")
    label_decoder: str | None = opt(None, "Regularise with a frozen label-map decoder "
                                    "(Mostajabi et al. 2018): a --train_logdir of "
                                    "tools.train_label_autoencoder. Training only.")
    label_decoder_weight: float = opt(0.5, "Weight of the label-decoder (or -encoder) loss.")
    label_decoder_loss: str = opt("ce", "The decoder path's loss against the labels.",
                                  choices=("ce", "mse"))
    label_decoder_feature: str = opt("encoder", "The tapped feature at the bottleneck's "
                                     "stride (16) the decoder path starts from.")
    label_decoder_trainable: bool = opt(False, "Ablation: train the decoder too.")
    label_decoder_init: str = opt("trained", "Ablation: random = an untrained decoder.",
                                  choices=("trained", "random"))
    label_decoder_as_task: bool = opt(False, "Make the decoder path one more task of "
                                      "--loss_weighting (its weight a prior) instead of a "
                                      "fixed-weight term.")
    label_encoder: str | None = opt(None, "The paper's alternative: regress the frozen label "
                                    "encoder's conv1 and conv3 activations (MSE) from "
                                    "--label_encoder_feature. A phase-1 --train_logdir.")
    label_encoder_feature: str = opt("decoder_output", "The tapped feature the encoder "
                                     "regression starts from.")
    aux_tasks: tuple[str, ...] = opt((), "Self-supervised auxiliary tasks, training only: "
                                     "edges (Canny edges of the crop), denoise, colorize "
                                     "(a second trunk pass on a noisy / grey input).")
    aux_feature: str = opt("decoder_output", "The tapped feature the --aux_tasks heads read.")
    aux_task_weight: float = opt(1.0, "Each auxiliary task's weight (its prior under "
                                 "uncertainty weighting).")
    aux_modules: tuple[str, ...] = opt((), "Auxiliary modules (Liu et al. 2019), training "
                                       "only, for these tasks: semantic, edges.")
    aux_module_taps: tuple[str, ...] = opt((), "Features the modules (and deep supervision) "
                                           "read, shallowest first; default: the model "
                                           "family's downsampling stages (DeepLab: "
                                           "low_level, stride8, stride16).")
    aux_module_channels: int = opt(32, "Channels of each module's adaptors and state.")
    aux_module_adaptor: str = opt("basic", "Adaptor per tap.", choices=ADAPTORS)
    aux_module_aggregator: str = opt("sum", "How a tap joins the state.", choices=AGGREGATORS)
    aux_module_weight: float = opt(1.0, "Weight of each module's loss.")
    deep_supervision: tuple[str, ...] = opt((), "Deep supervision for these tasks (semantic, "
                                            "edges): the task's loss at every tap.")
    deep_supervision_weight: float = opt(0.1, "Scale of each deep-supervision loss.")
    task_weights: str = opt("", "Weights of the network's tasks by name, e.g. semantic=0.7,"
                            "class=0.1,box=0.2 (fixed weighting), or their prior multipliers "
                            "under uncertainty weighting; unnamed tasks keep theirs.")
    tag_loss_weight: float = opt(1.0, "Weight of the tag loss (fixed weighting), or its prior "
                                 "multiplier under uncertainty weighting.")
    mixed_precision: str = opt("float32", "Precision policy (mixed_float16 on GPU).",
                               choices=PRECISIONS)
    distribution_strategy: str = opt("default", "tf.distribute strategy (multi_worker_mirrored "
                                     "reads TF_CONFIG).", choices=STRATEGIES)
    num_gpus: int | None = opt(None, "GPUs for mirrored (default: all).")
    sync_batch_norm: bool = opt(False, "Synchronised BatchNorm across replicas.")
    save_interval_steps: int = opt(500, "Checkpoint every N steps.")
    save_summaries_steps: int = opt(50, "TensorBoard scalars every N steps.")
    save_summaries_images: bool = opt(True, "Prediction overlays in TensorBoard.")
    max_checkpoints_to_keep: int = opt(5, "Checkpoints kept in --train_logdir.")
    log_every_n_steps: int = opt(10, "Progress line every N steps.")
    seed: int | None = opt(None, "Random seed.")
    deterministic: bool = opt(False, "Repeat a run bit for bit on one machine: TF op "
                              "determinism and seeds everywhere (--seed, default 0). Slower; "
                              "another CPU still trains another model.")


@dataclasses.dataclass
class LabelAutoencoderOptions:
    """Phase 1 of the label-structure regulariser (``tools.train_label_autoencoder``):
    an autoencoder trained on ground-truth label maps alone."""

    train_logdir: str = opt(None, "Where its checkpoints, TensorBoard logs and "
                            "model_config.json go (tools.train --label_decoder=THIS).",
                            required=True)
    dataset_dir: str = opt(None, "Folder with the TFRecord shards of --dataset (only the "
                           "label maps are read).", required=True)
    dataset: str = opt("shapes_evidence", "Dataset name (its classes and ignore label).")
    train_split: str = opt("train", "Split to train on.")
    eval_split: str = opt("val", "Split the reconstruction mIoU is reported on.")
    variant: str = opt("128", "Channels, named by the bottleneck: 32 | 128 | 256.",
                       choices=("32", "128", "256"))
    train_crop_size: tuple[int, int] = opt((256, 256), "Crop size h,w (multiples of 16).",
                                           positive=True)
    train_batch_size: int = opt(8, "Batch size.")
    training_number_of_steps: int = opt(3000, "Training steps.")
    base_learning_rate: float = opt(1e-3, "Adam learning rate (poly decay).")
    min_scale_factor: float = opt(0.5, "Augmentation: min scale.")
    max_scale_factor: float = opt(2.0, "Augmentation: max scale.")
    save_interval_steps: int = opt(500, "Checkpoint every N steps.")
    save_summaries_steps: int = opt(50, "TensorBoard scalars every N steps.")
    log_every_n_steps: int = opt(50, "Progress line every N steps.")
    max_eval_examples: int | None = opt(None, "Report the mIoU on the first N label maps.")
    seed: int | None = opt(0, "Random seed.")


@dataclasses.dataclass
class ImportOptions:
    """Released weights of the original into a run directory (``tools.import_weights``)."""

    source: str = opt(None, "The weights: a released model's name (python -m "
                      "tools.model_info --list_weights: shipped, cached or downloaded), a "
                      "TFLite file of the original (float, dynamic-range or full-integer; "
                      "tensor names kept or stripped), its TF1 checkpoint (model.ckpt-N "
                      "prefix or its folder), a Keras Applications ImageNet backbone .h5 "
                      "(MobileNetV2), or a run directory of this zoo (its record gives the "
                      "model and dataset).", required=True)
    model_variant: str | None = opt(None, "Zoo variant with the source's layout, e.g. "
                                    "deeplabv3_mobilenetv2_dm05 (its _mt twin adds a new tag "
                                    "head); default: a run's own, or the released layout "
                                    "that matches the source.")
    output_dir: str = opt(None, "Run directory to write (every tool accepts it as "
                          "--checkpoint_dir, tools.train as --tf_initial_checkpoint).",
                          required=True)
    dataset: str | None = opt(None, "The classes the weights were trained on (default: a "
                              "released name's, else pascal_voc_seg).")
    tag_head: str | None = tag_head_opt()
    seg_tag_pooling: str | None = seg_tag_pooling_opt()
    seg_tag_temperature: float | None = seg_tag_temperature_opt()
    output_stride: int | None = opt(None, "8, 16 or 32 (default: a released name's, else "
                                    "the variant's); the weights do not depend on it.")
    allow_partial_init: bool = allow_partial_opt()
    train_crop_size: tuple[int, int] | None = opt(None, "The crop the weights were trained on "
                                                  "(default: a released name's, else the "
                                                  "original's 513): the input grid "
                                                  "predictions pad onto.", positive=True)


def evidence_given(options: Any, prefix: str = "evidence_") -> frozenset[str]:
    """The ``EvidenceOptions`` fields whose flags ``options`` were resolved with (its
    ``given``): they beat a run's tuned settings."""
    given = getattr(options, "given", frozenset())
    return frozenset(f.name for f in dataclasses.fields(EvidenceOptions)
                     if prefix + f.metadata.get("flag", f.name) in given)


@dataclasses.dataclass
class EvalOptions:
    """Evaluation and the evidence table (``tools.eval``)."""

    given: frozenset[str] = given_flags()

    checkpoint_dir: str | None = opt(None, "A --train_logdir of tools.train, or a released "
                                     "model's name (imported once into the cache, tags "
                                     "pooled from its segmentation).")
    model: str | None = opt(None, f"Or: {model_files_help()}, scored as shipped (modes none, "
                            "prune).")
    dataset_dir: str = opt(None, "Folder with the TFRecord shards.", required=True)
    dataset: str | None = opt(None, "The dataset the shards hold, for shards written "
                              "without a record of it (<split>.dataset.json, which this "
                              "project's converters write); it must have the checkpoint's "
                              "classes. Default: the shards' own record.")
    eval_logdir: str | None = opt(None, "Where eval_results.json and comparison.png go.")
    eval_split: str = opt("val", "Split to evaluate.")
    eval_crop_size: tuple[int, int] | None = opt(None, "Pad/crop to h,w (default: full images).",
                                                 positive=True)
    eval_scales: tuple[float, ...] = opt((1.0,), "Scales for multi-scale inference, e.g. "
                                         "0.5,0.75,1.0,1.25,1.5,1.75.", positive=True)
    add_flipped_images: bool = opt(False, "Also average left-right flipped predictions.")
    align_inputs: bool = align_field()
    evidence_modes: tuple[str, ...] = opt(("none",), "Rows: " + ",".join(
        m for m, row in EVIDENCE_MODES.items() if not row.soft) + ", and the soft rows "
        + ",".join(m for m, row in EVIDENCE_MODES.items() if row.soft)
        + " (--evidence_prune_strength, --evidence_tag_confidence).")
    evidence: EvidenceOptions = group(EvidenceOptions, "evidence_")
    tag_noise: str = opt("", "Score the rows with noisy tags, as users' tags are: per image "
                         "drop K true tags and/or add K false ones (drawn from the dataset's "
                         "classes absent from it), seeded per image: drop:1,add:1,seed:0 (any "
                         "of them; rate:0.5 touches half the images only). Recorded per image "
                         "in eval_results.json.")
    tags_from: str | None = opt(None, "Score the rows with your own tags: a .json {image: "
                                "[\"person\", \"dog:0.6\"]} or .csv (image,person dog:0.6) "
                                "file naming every image of the split.")
    use_tuned_evidence: bool = opt(True, "Refit with the settings tools.tune_evidence chose "
                                   "for this run, when it has them (--evidence_* flags given "
                                   "still win).")
    max_examples: int | None = opt(None, "Evaluate only the first N images.",
                                   flag="max_number_of_examples")
    num_vis_examples: int = opt(4, "Images in comparison.png.")
    save_predictions: bool = opt(False, "Also write each image's class map per row (PNG of "
                                 "class ids) to <eval_logdir>/predictions/<mode>/, named "
                                 "<index>_<image name>.png as per_image in "
                                 "eval_results.json lists them.")
    checkpoint_path: str | None = opt(None, "A specific checkpoint (default: the latest).")
    bootstrap_samples: int = opt(1000, "Resamples of the images for the 95% interval of each "
                                 "row's difference to DL-MT and DL-MT-Pr (0 = off).")
    min_resize_value: int | None = opt(None, "Resize the shorter side to at least this "
                                       "(default: the run's training value).")
    max_resize_value: int | None = opt(None, "Resize the longer side to at most this "
                                       "(default: the run's training value).")
    label_decoder_path_miou: bool = opt(False, "Also report the mIoU of a --label_decoder run's "
                                        "training-only decoder path (feature -> 1x1 conv -> "
                                        "frozen label decoder), read back from the checkpoint.")

    def unused_flags(self, given: frozenset[str]) -> list[str]:
        if not self.model:
            if any(m in EVIDENCE_MODES and EVIDENCE_MODES[m].soft for m in self.evidence_modes):
                return []
            return unused(given, SOFT_FLAGS, "they set the soft rows only; add soft_prune or "
                          f"{REFIT_KINDS[DEFAULT_KIND].mode}_soft_prune (...) to "
                          "--evidence_modes")
        return (unused(given, "evidence_", "--model scores a LiteRT / ONNX file, which has no "
                       "refit (--evidence_modes=none,prune is what it scores)",
                       keep=("evidence_modes",))
                + unused(given, ("checkpoint_path", "use_tuned_evidence", "eval_scales",
                                 "add_flipped_images", "align_inputs", "eval_crop_size",
                                 "label_decoder_path_miou", "min_resize_value",
                                 "max_resize_value", "save_predictions"),
                         "--model scores the file at its own fixed size as shipped; these "
                         "apply to --checkpoint_dir"))


@dataclasses.dataclass
class TuneOptions:
    """Refit settings tuned for one trained model (``tools.tune_evidence``)."""

    checkpoint_dir: str = opt(None, "A --train_logdir of tools.train.", required=True)
    dataset_dir: str = opt(None, "Folder with the TFRecord shards.", required=True)
    dataset: str | None = opt(None, "The dataset the shards hold, for shards written "
                              "without a record of it (<split>.dataset.json, which this "
                              "project's converters write); it must have the checkpoint's "
                              "classes. Default: the shards' own record.")
    tune_split: str = opt("test", "Split to tune on: not the one you report (the built-in "
                          "dataset's generator writes a 'test' split for this).")
    eval_crop_size: tuple[int, int] | None = opt(None, "Pad/crop to h,w (default: full "
                                                 "images, padded onto the training grid).",
                                                 positive=True)
    align_inputs: bool = align_field()
    max_examples: int | None = opt(None, "Tune on the first N images only.",
                                   flag="max_number_of_examples")
    kinds: tuple[str, ...] = opt(default_kinds(), "Refit kinds to tune: " + ", ".join(
        f"{k} ({REFIT_KINDS[k].row})" for k in kind_names()) + ".")
    learning_rates: tuple[float, ...] = opt((0.01, 0.03, 0.1), "Learning rates tried.")
    clip_norms: tuple[float, ...] = opt((0.0, 0.5), "Gradient clip norms tried (0 = off).")
    max_candidates: int = opt(12, "Evaluations per kind at most, no refit included.")
    min_confidence: float = opt(0.9, "A refit is chosen only if it beats no refit in at least "
                                "this fraction of bootstrap resamples of the tuning images "
                                "(0 = the best mIoU, however thin its lead).")
    bootstrap_samples: int = opt(1000, "Resamples of the tuning images (0 = off; then "
                                 "--min_confidence must be 0).")
    objective: str = opt("plain", "The row the search maximises: plain (DL-BP-* against "
                         "DL-MT), pruned (DL-BP-*-Pr against DL-MT-Pr: the refit that adds "
                         "most to pruning, for users who prune whenever they have tags) or soft "
                         "(DL-BP-*-SPr against DL-MT-SPr, each with its prune strength and tag "
                         "confidence searched: for tags that may be wrong; pair it with "
                         "--tag_noise).", choices=OBJECTIVES)
    prune_strengths: tuple[float, ...] = opt((1.0, 0.9, 0.7, 0.5, 0.3, 0.0), "--objective=soft: "
                                             "the prune strengths tried (1 = the seed's "
                                             "pruning, 0 = none).")
    tag_confidences: tuple[float, ...] = opt((1.0, 0.8, 0.6), "--objective=soft: the tag "
                                             "confidences tried, each in (0.5, 1].")
    tag_noise: str = opt("", "Tune with noisy tags (as tools.eval --tag_noise: "
                         "drop:K,add:K,seed:N): settings for tags that may be wrong.")
    tags_from: str | None = opt(None, "Tune with your own tags per image (as tools.eval "
                                "--tags_from).")
    folds: int = opt(0, "Cross-fitting: cut the split into K interleaved folds, score each "
                     "with the settings tuned on the others, and write the held-out table "
                     "over every image to evidence_crossfit.json (0 = tune on the whole "
                     "split and write evidence_tuned.json).")
    eval_scales: tuple[float, ...] = opt((1.0,), "--folds: also score the held-out folds at "
                                         "these scales (the search runs at one scale, as "
                                         "the refit does).", positive=True)
    add_flipped_images: bool = opt(False, "--folds: with --eval_scales, also average flipped "
                                   "predictions.")
    evidence: EvidenceOptions = group(EvidenceOptions, "evidence_",
                                      "The search's start point.")

    def unused_flags(self, given: frozenset[str]) -> list[str]:
        problems = [] if self.objective == "soft" else unused(
            given, ("prune_strengths", "tag_confidences", *SOFT_FLAGS),
            "they are searched (the last two: from) with --objective=soft only")
        if self.folds:
            return problems
        return problems + unused(given, ("eval_scales", "add_flipped_images"),
                                 "they score the held-out folds of --folds=K; give --folds")


@dataclasses.dataclass
class VisOptions:
    """Visualisation (``tools.vis``); names follow the original vis.py flags."""

    checkpoint_dir: str = opt(None, "A --train_logdir of tools.train, or a released model's "
                              "name (imported once into the cache).", required=True)
    dataset_dir: str = opt(None, "Folder with the TFRecord shards.", required=True)
    dataset: str | None = opt(None, "The dataset the shards hold, for shards written "
                              "without a record of it (<split>.dataset.json, which this "
                              "project's converters write); it must have the checkpoint's "
                              "classes. Default: the shards' own record.")
    vis_logdir: str = opt(None, "Where the images are written.", required=True)
    vis_split: str = opt("val", "Split to visualise.")
    colormap_type: str | None = opt(None, "Colormap of the prediction PNGs (default: the "
                                    "dataset's).", choices=COLORMAP_TYPES)
    also_save_raw_predictions: bool = opt(False, "Also write raw class-id PNGs.")
    max_number_of_images: int | None = opt(None, "Visualise only the first N images.")
    eval_scales: tuple[float, ...] = opt((1.0,), "Scales for multi-scale inference.")
    add_flipped_images: bool = opt(False, "Also average left-right flipped predictions.")
    align_inputs: bool = align_field()
    checkpoint_path: str | None = opt(None, "A specific checkpoint (default: the latest).")


@dataclasses.dataclass
class ExportOptions:
    """SavedModel export (``tools.export_model``), and the LiteRT / ONNX files."""

    given: frozenset[str] = given_flags()

    checkpoint_dir: str = opt(None, "A --train_logdir of tools.train, or a released model's "
                              "name (imported once into the cache).", required=True)
    export_path: str = opt(None, "Directory of the export (replaced atomically).",
                           required=True)
    format: tuple[str, ...] = opt(("saved_model",), format_help())
    export_input_size: tuple[int, int] | None = opt(
        None, "The fixed input size h,w of the files of --format="
        f"{','.join(f.name for f in FORMATS.values() if f.fixed_size)} (default: the training "
        "crop); clients resize images to it.", positive=True)
    quantize: str = opt("none", "Post-training quantisation of the LiteRT file: none, "
                        "dynamic_range (int8 weights), float16 (float16 weights), int8 (int8 "
                        "weights and activations, calibrated on --calibration_*; float input "
                        "and outputs).")
    calibration_dataset_dir: str | None = opt(None, "Shards to calibrate --quantize=int8 on.")
    calibration_split: str = opt("train", "Split of --calibration_dataset_dir.")
    calibration_examples: int = opt(100, "Images to calibrate on.", positive=True)
    checkpoint_path: str | None = opt(None, "A specific checkpoint (default: the latest).")
    inference_scales: tuple[float, ...] = opt((1.0,), "Scales for multi-scale inference.")
    add_flipped_images: bool = opt(False, "Average left-right flipped predictions.")
    align_inputs: bool = align_field()
    evidence: EvidenceOptions = group(EvidenceOptions, "evidence_")
    use_tuned_evidence: bool = opt(True, "Serve the refit kind and settings tools.tune_evidence "
                                   "chose for this run, when it has them (--evidence_* flags "
                                   "given still win).")

    def unused_flags(self, given: frozenset[str]) -> list[str]:
        sized = [f.name for f in FORMATS.values() if f.fixed_size]
        files = set(sized) & set(self.format)
        return ((unused(given, ("export_input_size",), "it sizes the files of "
                        f"{' / '.join(sized)}; add {' or '.join(sized)} to --format")
                 if not files else [])
                + (unused(given, ("calibration_dataset_dir", "calibration_split",
                                  "calibration_examples"),
                          "they calibrate --quantize=int8 only") if self.quantize != "int8"
                   else []))


@dataclasses.dataclass
class PredictOptions:
    """One image, optionally with its tags as evidence, or a folder of images
    (``tools.predict``)."""

    given: frozenset[str] = given_flags()

    image: str = opt(None, "Input image (jpg/png), or a folder of them (then --output is "
                     "the folder to write into).", required=True)
    saved_model: str | None = opt(None, "A SavedModel from tools.export_model.")
    checkpoint_dir: str | None = opt(None, "Or: a --train_logdir of tools.train, or a "
                                     "released model's name (tools.model_info "
                                     "--list_weights: imported once into the cache, tags "
                                     "pooled from its segmentation).")
    model: str | None = opt(None, f"Or: {model_files_help()} (no refit: --tags prunes).")
    tags: tuple[str, ...] | None = opt(None, "Class names present in the image (the evidence), "
                                       "each with its probability if you are not sure: "
                                       "person,dog:0.6 (a name alone is 1).")
    prune: bool | None = opt(None, "Zero the probability of classes absent from --tags "
                             "(default: when the refit settings were tuned for pruned "
                             "predictions, tools.tune_evidence --objective=pruned).")
    output: str = opt("prediction.png", "Colour segmentation PNG to write.")
    raw_output: str | None = opt(None, "Optional raw class-index PNG.")
    side_by_side: str | None = opt(None, "One image: also write the photo | the plain "
                                   "prediction | the prediction with the evidence, overlaid "
                                   "on the photo, with a legend of the classes (default: "
                                   "<output>_side_by_side.png; 'none' = not written).")
    max_resize_value: int | None = opt(None, "Predict an image whose longer side exceeds this "
                                       "at this size (the class map is resized back); "
                                       "default: the run's training max_resize_value, else "
                                       "twice its training crop; 0 = always full size.")
    align_inputs: bool = opt(True, "--checkpoint_dir: pad onto the training grid (see "
                             "tools.eval); an export does what it was exported with.")
    evidence: EvidenceOptions = group(EvidenceOptions, "evidence_")
    use_tuned_evidence: bool = opt(True, "--checkpoint_dir: refit with the run's tuned "
                                   "settings when it has them (flags given still win).")

    def unused_flags(self, given: frozenset[str]) -> list[str]:
        problems = []
        if self.model:
            problems += unused(given, tuple(sorted(n for n in given if n.startswith("evidence_")
                                                   and n not in SOFT_FLAGS)),
                               "a LiteRT / ONNX file has no refit (--tags prunes)")
        if self.model or self.saved_model:
            problems += unused(given, ("align_inputs", "use_tuned_evidence"), "they apply to "
                               "--checkpoint_dir; an export serves what it was exported with")
        if os.path.isdir(self.image):
            problems += unused(given, ("raw_output", "side_by_side"), "with --image=FOLDER, "
                               "--output is the folder (raw class ids go to its raw/)")
        return problems


DEMO_VARIANT = "deeplabv3plus_mobilenetv2_tiny_mt"


def _demo_evidence() -> EvidenceOptions:
    # Chosen on the generated *test* split, not val (BENCHMARKS.md 6c): a larger rate with
    # per-image gradient clipping.
    return EvidenceOptions(learning_rate=0.1, clip_norm=0.5)


DEMO_WEIGHTS = "mobilenetv2_dm05_coco_voc_trainaug"  # shipped, with tuned refit settings


@dataclasses.dataclass
class DemoOptions:
    """The main job (``make demo``): by default a released model on the shipped real photos,
    nothing trained; ``--builtin`` trains on the built-in dataset instead."""

    given: frozenset[str] = given_flags()

    workdir: str = opt("demo_out", "Where data, checkpoints, export and report go.")
    builtin: bool = opt(False, "The training demo: train the tiny multi-task network on the "
                        "built-in shapes dataset (15-35 min on 2 cores) instead of the "
                        "real-photo job.")
    data: str | None = opt(None, "A VOC- or CamVid-layout folder (default: the shipped "
                           "coco128-voc photos; with --builtin, the built-in dataset). A "
                           "network is trained on it: from scratch, or fine-tuned from "
                           "--weights (its own classes: a new classifier where they differ).")
    weights: str | None = opt(None, "The weights: a released model's name (python -m "
                              "tools.model_info --list_weights), the original's file (TFLite, "
                              "TF1 checkpoint), a run directory of tools.import_weights or a "
                              f"zoo checkpoint (default: {DEMO_WEIGHTS} for the real-photo "
                              "job). With tags pooled from their segmentation (the default) "
                              "nothing is trained; with --tag_head=encoder or --train_groups "
                              "the network trains from them, BatchNorm frozen.")
    model_variant: str | None = opt(None, "Zoo variant (*_mt; default: "
                                    f"{DEMO_VARIANT} when training, the weights' own layout "
                                    "otherwise).")
    tag_head: str | None = tag_head_opt()
    train_groups: tuple[str, ...] | None = opt(None, "Train only these variable groups (e.g. "
                                               "tag_head on a pretrained model).")
    train_steps: int | None = opt(None, "Training steps (default 10000; 1000 fine-tuning "
                                  "--weights on --data; 0: score the weights as they are).")
    train_batch_size: int = opt(8, "Batch size.")
    crop_size: int | None = opt(None, "Training crop (default: the built-in dataset 65, a "
                                "folder 129, 321 fine-tuning --weights).")
    base_learning_rate: float | None = opt(None, "Adam learning rate, poly decay (default "
                                           "5e-3; 1e-3 fine-tuning --weights).")
    num_train: int = opt(2000, "Built-in dataset: training images.")
    num_val: int = opt(100, "Built-in dataset: validation images.")
    image_size: int = opt(64, "Built-in dataset: image side in pixels.")
    num_tune: int | None = opt(None, "Images the refit settings are tuned on, 0 = no tuning "
                               "(the built-in dataset generates a 'test' split of this size; "
                               "a user folder lends 'train'); default 50, or 24 when nothing "
                               "is trained. Released weights whose settings the table records "
                               "(tuned on other photos) are not tuned again.")
    tune_candidates: int | None = opt(None, "Refit settings tried per kind while tuning "
                                      "(default 8; 6 when nothing is trained).")
    max_eval_images: int | None = opt(None, "Evaluate only the first N val images.")
    evidence_modes: tuple[str, ...] | None = opt(
        None, f"Rows of the evidence table (default {','.join(table_modes(default_kinds()))} "
        f"when training; {','.join(table_modes((DEFAULT_KIND,)))} when nothing is trained). "
        "Their refit kinds are tuned.")
    report_photos: int = opt(6, "Photos shown in the report, those the evidence changed most "
                             "first.")
    evidence: EvidenceOptions = group(_demo_evidence, "evidence_")
    seed: int = opt(0, "Seed of the built-in dataset (and of training, unless --train_seed).")
    train_seed: int | None = opt(None, "Seed of training only: another model on the same data.")
