"""Self-supervised auxiliary tasks as training-only branches (``--aux_tasks=edges``).

``edges``: a 1x1 conv on a tapped feature (``--aux_feature``, DeepLab default the stride-4
``decoder_output``) predicts the crop's Canny edges (``deeplab_ext.data.self_supervised``);
sigmoid cross-entropy at the target's resolution, ignore pixels masked. It is a task, so
the loss weighting weighs it (``--aux_task_weight`` is its fixed weight or, under
uncertainty weighting, its prior). Trained and checkpointed with the model, never
exported.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from deeplab_ext.data.datasets import DatasetInfo
from deeplab_ext.run.tasks import Branch, BranchSpec, TaskContext, register_branch
from tf_mtl.branches import TrainingHead
from tf_mtl.tasks import Task

__all__ = ["AUX_TASKS", "EDGE_OUTPUT", "EdgeHead", "edge_loss"]

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
                              target="edges", weight=o.aux_task_weight)])


AUX_TASKS = {"edges": _edges}  # a new self-supervised task is one more entry


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
