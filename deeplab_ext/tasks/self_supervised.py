"""Self-supervised auxiliary tasks as training-only branches
(``--aux_tasks=edges,denoise,colorize``).

``edges``: a 1x1 conv on a tapped feature (``--aux_feature``, DeepLab default the stride-4
``decoder_output``) predicts the crop's Canny edges (``deeplab_ext.data.self_supervised``);
sigmoid cross-entropy at the target's resolution, ignore pixels masked. It is a task, so
the loss weighting weighs it (``--aux_task_weight`` is its fixed weight or, under
uncertainty weighting, its prior). Trained and checkpointed with the model, never
exported.

``denoise`` and ``colorize`` change the *input*: the trunk runs a second pass on the
noisy crop (target: the clean crop) or on its L channel as a grey image (target: a and
b), through :class:`tf_mtl.graph.SecondPass`: the same shared weights, gradients from
both passes, BatchNorm normalising each pass with its own batch statistics while only the
main pass moves the moving statistics inference uses. A 1x1 conv on the second pass's
tapped feature predicts the target (MSE over the pixels the labels do not ignore); these
two are fixed-weight loss terms (``--aux_task_weight``) outside the task weighting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from deeplab_ext.data.datasets import DatasetInfo
from deeplab_ext.tasks.base import Branch, BranchSpec, TaskContext, register_branch
from tf_mtl.branches import LossTerm, TrainingHead
from tf_mtl.graph import SecondPass
from tf_mtl.metrics import BinaryMapScores
from tf_mtl.tasks import Task

__all__ = ["AUX_TASKS", "EDGE_OUTPUT", "EdgeHead", "SecondPassTask", "edge_loss"]

EDGE_OUTPUT = "edges_logits"


class EdgeHead(TrainingHead):
    """Tapped feature -> 1x1 conv -> one edge logit per position."""

    def __init__(self, feature: str, **kwargs: Any) -> None:
        super().__init__(features=(feature,), **kwargs)
        self.feature = feature
        self.conv = keras.layers.Conv2D(1, 1, name="edge_logits")

    def call(self, features: dict, training: bool | None = None) -> dict:
        return {EDGE_OUTPUT: self.conv(features[self.feature])}


def edge_loss(info: DatasetInfo):
    """``(edges [B, H, W] in {0, 1, ignore}, logits [B, h, w, 1]) -> scalar``: logits
    upsampled to the target, sigmoid cross-entropy averaged over the valid pixels."""

    def loss(edges: Any, logits: tf.Tensor) -> tf.Tensor:
        edges = tf.cast(edges, tf.int32)
        logits = tf.image.resize(tf.cast(logits, tf.float32), tf.shape(edges)[1:3])[..., 0]
        valid = tf.cast(tf.not_equal(edges, info.ignore_label), tf.float32)
        target = tf.cast(tf.equal(edges, 1), tf.float32)
        ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=logits)
        return tf.math.divide_no_nan(tf.reduce_sum(ce * valid), tf.reduce_sum(valid))

    return loss


def _edges(ctx: TaskContext) -> Branch:
    o = ctx.options
    return Branch(heads=[EdgeHead(o.aux_feature, name="edges_head")], targets=("edges",),
                  tasks=[Task("edges", edge_loss(ctx.info), output=EDGE_OUTPUT,
                              target="edges", weight=o.aux_task_weight,
                              metrics=[BinaryMapScores(ctx.info.ignore_label)])])


class SecondPassTask(LossTerm):
    """An auxiliary task on another input: ``make_input(x, y)`` through the trunk again
    (:class:`tf_mtl.graph.SecondPass`), a 1x1 conv on ``feature`` predicts ``channels``
    values per position, upsampled to the images' size; the mean squared error against
    ``make_target(x, y)`` over the pixels whose label is not ignored."""

    def __init__(self, network: keras.Model, feature: str, channels: int,
                 make_input: Callable[[Any, Any], tf.Tensor],
                 make_target: Callable[[Any, Any], tf.Tensor], info: DatasetInfo,
                 weight: float = 1.0, **kwargs: Any) -> None:
        super().__init__(weight=weight, **kwargs)
        self.second_pass = SecondPass(network, [feature])
        self.feature, self.channels, self.info = feature, channels, info
        self.make_input, self.make_target = make_input, make_target
        self.conv = keras.layers.Conv2D(channels, 1, name="predict")
        self.conv.build(self.second_pass.model.output[feature].shape)

    def compute(self, x: Any, y: Any, outputs: dict, training: bool) -> tf.Tensor:
        feature = self.second_pass(self.make_input(x, y))[self.feature]
        target = tf.cast(self.make_target(x, y), tf.float32)
        pred = tf.image.resize(tf.cast(self.conv(feature), tf.float32), tf.shape(target)[1:3])
        valid = tf.cast(tf.not_equal(tf.cast(y["semantic"], tf.int32), self.info.ignore_label),
                        tf.float32)
        err = tf.reduce_sum(tf.square(pred - target), -1)
        return tf.math.divide_no_nan(tf.reduce_sum(err * valid),
                                     tf.reduce_sum(valid) * self.channels)


def _denoise(ctx: TaskContext) -> Branch:
    """Noisy crop in, the clean crop (scaled to -1..1) out."""
    term = SecondPassTask(ctx.network, ctx.options.aux_feature, 3, lambda x, y: y["noisy"],
                          lambda x, y: tf.cast(x, tf.float32) / 127.5 - 1.0, ctx.info,
                          ctx.options.aux_task_weight, name="denoise_loss")
    return Branch(loss_terms=[term], targets=("noisy", "semantic"))


def _colorize(ctx: TaskContext) -> Branch:
    """The L channel as a grey image in, a and b (scaled by 1/128) out."""
    term = SecondPassTask(ctx.network, ctx.options.aux_feature, 2,
                          lambda x, y: tf.tile(y["lab"][..., :1] * 2.55, [1, 1, 1, 3]),
                          lambda x, y: y["lab"][..., 1:] / 128.0, ctx.info,
                          ctx.options.aux_task_weight, name="colorize_loss")
    return Branch(loss_terms=[term], targets=("lab", "semantic"))


# A new self-supervised task is one more entry.
AUX_TASKS = {"edges": _edges, "denoise": _denoise, "colorize": _colorize}


def _aux_tasks(ctx: TaskContext) -> Branch:
    unknown = [n for n in ctx.options.aux_tasks if n not in AUX_TASKS]
    if unknown:
        raise ValueError(f"--aux_tasks: unknown {unknown}; known: {sorted(AUX_TASKS)}")
    total = Branch()
    for name in dict.fromkeys(ctx.options.aux_tasks):
        total = total + AUX_TASKS[name](ctx)
    return total


register_branch(BranchSpec("aux_tasks", _aux_tasks,
                           enabled=lambda o: bool(getattr(o, "aux_tasks", None)),
                           options=("aux_tasks", "aux_feature", "aux_task_weight")))
