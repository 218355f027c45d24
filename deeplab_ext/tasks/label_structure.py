"""Phase 2 of the label-structure regulariser (Mostajabi, Maire & Shakhnarovich, CVPR 2018):
training-only branches that make the segmenter predict through a label autoencoder.

* ``label_decoder`` (``--label_decoder=AE``): a 1x1 conv maps a tapped feature at the
  bottleneck's stride (DeepLab: the OS16 ``encoder``) to the bottleneck's channels, the
  autoencoder's **frozen** decoder turns it into a label map, and its cross-entropy (or
  MSE on the probabilities) against the ground truth, ignore pixels masked, is added with
  ``--label_decoder_weight`` (or as one more weighted task). Ablations:
  ``--label_decoder_trainable``, ``--label_decoder_init=random``.
* ``label_encoder`` (``--label_encoder=AE``): the paper's alternative; 1x1 convs on a
  tapped feature regress the frozen encoder's conv1 and conv3 activations of the one-hot
  ground truth (MSE).

Both are ``tf_mtl`` training-only heads and terms: one forward pass, checkpointed with the
model, never exported (the export and the evidence refitter see the plain network).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from deeplab_ext.data.datasets import DatasetInfo
from deeplab_ext.models.label_autoencoder import build_label_autoencoder, one_hot_labels
from deeplab_ext.models.registry import ModelFamily
from deeplab_ext.run.label_autoencoder import load_label_autoencoder
from deeplab_ext.tasks.base import (
    Branch,
    BranchSpec,
    TaskContext,
    branches_from_record,
    register_branch,
    restore_branch_outputs,
)
from tf_mtl.branches import LossTerm, OutputLoss, TrainingHead
from tf_mtl.inference import InputAlignment
from tf_mtl.losses import label_map_loss
from tf_mtl.tasks import Task

__all__ = ["LabelDecoderHead", "LabelEncoderTerm", "decoder_path"]

DECODER_OUTPUT = "label_decoder_semantic"


def _resize(x: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    return tf.image.resize(x, size, method="bilinear")


class LabelDecoderHead(TrainingHead):
    """Tapped feature -> 1x1 conv to the bottleneck -> the (frozen) label decoder."""

    def __init__(self, decoder: keras.Model, bottleneck: int, feature: str,
                 trainable_decoder: bool = False, **kwargs: Any) -> None:
        super().__init__(features=(feature,), **kwargs)
        self.feature = feature
        self.project = keras.layers.Conv2D(bottleneck, 1, name="to_bottleneck")
        self.decoder = decoder
        self.decoder.trainable = trainable_decoder  # frozen: BatchNorm in inference mode too

    def call(self, features: dict, training: bool | None = None) -> dict:
        code = self.project(features[self.feature])
        return {DECODER_OUTPUT: self.decoder(code, training=training)}


class LabelEncoderTerm(LossTerm):
    """MSE between 1x1-conv regressions of a tapped feature and the frozen label
    encoder's conv1 (full resolution) and conv3 (stride 4) activations of the labels."""

    def __init__(self, encoder: keras.Model, feature: str, in_channels: int,
                 info: DatasetInfo, weight: float = 0.5, **kwargs: Any) -> None:
        super().__init__(weight=weight, features=(feature,), **kwargs)
        self.encoder, self.feature, self.num_classes = encoder, feature, info.num_classes
        self.encoder.trainable = False
        c1, c3 = encoder.output["conv1"].shape[-1], encoder.output["conv3"].shape[-1]
        self.to_conv1 = keras.layers.Conv2D(c1, 1, name="to_conv1")
        self.to_conv3 = keras.layers.Conv2D(c3, 1, name="to_conv3")
        for conv in (self.to_conv1, self.to_conv3):  # weights before any optimizer sees them
            conv.build((None, None, None, in_channels))

    def compute(self, x: Any, y: Any, outputs: dict, training: bool) -> tf.Tensor:
        targets = self.encoder(one_hot_labels(y["semantic"], self.num_classes), training=False)
        feature = tf.cast(outputs[self.feature], tf.float32)
        loss = 0.0
        for conv, key in ((self.to_conv1, "conv1"), (self.to_conv3, "conv3")):
            target = tf.stop_gradient(tf.cast(targets[key], tf.float32))
            pred = _resize(conv(feature), tf.shape(target)[1:3])
            loss += tf.reduce_mean(tf.square(pred - target))
        return loss


def _autoencoder(path: str, info: DatasetInfo, random: bool = False) -> keras.Model:
    autoencoder, ae_info, meta = load_label_autoencoder(path)
    if ae_info.num_classes != info.num_classes:
        raise ValueError(f"--label_decoder={path} models {ae_info.num_classes} classes "
                         f"({ae_info.name}); this run has {info.num_classes} ({info.name})")
    if random:  # the ablation: the same architecture, never trained
        autoencoder = build_label_autoencoder(info.num_classes, meta["variant"])
    return autoencoder


def _label_decoder(ctx: TaskContext) -> Branch:
    o = ctx.options
    ae = _autoencoder(o.label_decoder, ctx.info, random=o.label_decoder_init == "random")
    bottleneck = ae.get_layer("label_encoder").output["bottleneck"].shape[-1]
    head = LabelDecoderHead(ae.get_layer("label_decoder"), bottleneck, o.label_decoder_feature,
                            o.label_decoder_trainable, name="label_decoder_head")
    loss = label_map_loss(ctx.info.num_classes, ctx.info.ignore_label, o.label_decoder_loss)
    shown = {"heads": [head], "targets": ("semantic",), "label_maps": (DECODER_OUTPUT,)}
    if o.label_decoder_as_task:
        return Branch(**shown, tasks=[Task(
            "label_decoder", loss, output=DECODER_OUTPUT, target="semantic",
            weight=o.label_decoder_weight)])
    return Branch(**shown, loss_terms=[OutputLoss(
        DECODER_OUTPUT, "semantic", loss, o.label_decoder_weight, name="label_decoder_loss")])


def _label_encoder(ctx: TaskContext) -> Branch:
    o = ctx.options
    ae = _autoencoder(o.label_encoder, ctx.info)
    try:
        feature = ctx.network.get_layer(o.label_encoder_feature).output
    except ValueError as e:
        raise ValueError(f"--label_encoder_feature={o.label_encoder_feature}: the model has no "
                         f"such feature; its family's: {list(ctx.family.feature_names)}") from e
    term = LabelEncoderTerm(ae.get_layer("label_encoder"), o.label_encoder_feature,
                            feature.shape[-1], ctx.info, o.label_decoder_weight,
                            name="label_encoder_loss")
    return Branch(loss_terms=[term], targets=("semantic",))


def decoder_path(checkpoint_path: str, network: keras.Model, family: ModelFamily,
                 info: DatasetInfo, record: dict, alignment: InputAlignment,
                 example: tf.Tensor) -> Callable[[tf.Tensor], tf.Tensor]:
    """``images -> logits`` at the images' size of a trained run's decoder path (tapped
    feature -> 1x1 conv -> decoder), the training-only branch rebuilt from what the run
    recorded and read back from its checkpoint: the paper reports this path alone
    segments "quite reasonably". ``example``: an input batch to build the head on."""
    if "label_decoder" not in record:
        raise ValueError("--label_decoder_path_miou: this run was not trained with "
                         f"--label_decoder (its training branches: {sorted(record) or 'none'})")
    outputs = restore_branch_outputs(checkpoint_path, network,
                                     branches_from_record(network, family, info, record),
                                     alignment, example)
    return lambda images: outputs(images)[DECODER_OUTPUT]


_DECODER_OPTIONS = ("label_decoder", "label_decoder_weight", "label_decoder_loss",
                    "label_decoder_feature", "label_decoder_trainable", "label_decoder_init",
                    "label_decoder_as_task")
register_branch(BranchSpec("label_decoder", _label_decoder,
                           enabled=lambda o: bool(getattr(o, "label_decoder", None)),
                           options=_DECODER_OPTIONS))
register_branch(BranchSpec("label_encoder", _label_encoder,
                           enabled=lambda o: bool(getattr(o, "label_encoder", None)),
                           options=("label_encoder", "label_encoder_feature",
                                    "label_decoder_weight")))
