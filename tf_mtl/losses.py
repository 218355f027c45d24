"""Losses of the original DeepLab, in Keras 3 / TF 2 form.

`softmax_cross_entropy_with_ignore` follows research/deeplab's
`add_softmax_cross_entropy_loss_for_each_scale`: per-pixel softmax cross-entropy on
float32 logits, ignore pixels weighted 0, the sum normalised by the number of kept
pixels, optional per-class weights and online hard-pixel mining whose kept fraction
ramps linearly from 100% to `top_k_percent_pixels` over `hard_example_mining_step`
steps. Labels and logits must have the same spatial size (resizing is the model's job).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf


def _check_percent(top_k_percent_pixels: float) -> float:
    top_k = float(top_k_percent_pixels)
    if not 0.0 < top_k <= 1.0:
        raise ValueError(
            f"top_k_percent_pixels={top_k_percent_pixels} must be in (0, 1] "
            "(flag --top_k_percent_pixels; 1.0 disables hard-pixel mining)."
        )
    return top_k


def softmax_cross_entropy_with_ignore(
    labels: tf.Tensor,
    logits: tf.Tensor,
    *,
    num_classes: int,
    ignore_label: int,
    class_weights: Sequence[float] | None = None,
    top_k_percent_pixels: float = 1.0,
    hard_example_mining_step: int = 0,
    step: tf.Tensor | tf.Variable | int | None = None,
) -> tf.Tensor:
    """Pixel-wise softmax CE with an ignore label, class weights and hard-pixel mining.

    Args:
      labels: int `[B, H, W]` (or `[B, H, W, 1]`) class indices; `ignore_label` pixels
        never contribute.
      logits: `[B, H, W, num_classes]`, any float dtype (computed in float32).
      num_classes: number of classes (last logits dimension).
      ignore_label: label value to ignore.
      class_weights: optional per-class loss weights (the original's `label_weights`).
      top_k_percent_pixels: fraction of the batch's pixels kept (hardest first) once
        the mining warm-up is over; 1.0 keeps all pixels.
      hard_example_mining_step: steps over which the kept fraction ramps linearly from
        100% to `top_k_percent_pixels`; 0 applies the final fraction at once.
      step: current training step; required when hard_example_mining_step > 0.

    Returns:
      float32 scalar: sum of (weighted) kept pixel losses / number of kept pixels.
    """
    top_k = _check_percent(top_k_percent_pixels)
    logits = tf.cast(logits, tf.float32)
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank == 4 and labels.shape[-1] == 1:
        labels = tf.squeeze(labels, axis=-1)
    _check_shapes(labels, logits, num_classes)
    weighted, keep_f = _weighted_pixel_losses(labels, logits, num_classes, ignore_label,
                                              class_weights)
    if top_k == 1.0:
        return tf.math.divide_no_nan(tf.reduce_sum(weighted), tf.reduce_sum(keep_f))
    return _hard_pixel_mean(weighted, top_k, hard_example_mining_step, step)


def _check_shapes(labels: tf.Tensor, logits: tf.Tensor, num_classes: int) -> None:
    """Refuses, at trace time, logits and labels whose static shapes do not match."""
    if logits.shape.rank is not None and logits.shape[-1] is not None:
        if logits.shape[-1] != num_classes:
            raise ValueError(
                f"logits have {logits.shape[-1]} channels but num_classes={num_classes}."
            )
    if labels.shape.rank is not None and logits.shape.rank is not None:
        if labels.shape.rank != logits.shape.rank - 1:
            raise ValueError(
                f"labels {labels.shape} must be logits {logits.shape} without the class axis."
            )
        lab_hw, log_hw = labels.shape[1:], logits.shape[1:-1]
        if lab_hw.is_fully_defined() and log_hw.is_fully_defined() and lab_hw != log_hw:
            raise ValueError(
                f"labels spatial size {lab_hw.as_list()} != logits {log_hw.as_list()}: "
                "upsample the logits to the label size in the model before the loss."
            )


def _weighted_pixel_losses(labels: tf.Tensor, logits: tf.Tensor, num_classes: int,
                           ignore_label: int, class_weights: Sequence[float] | None
                           ) -> tuple[tf.Tensor, tf.Tensor]:
    """(each pixel's CE times its weight, the kept-pixel mask) over the flattened batch:
    ignore pixels weigh 0, the others their class weight (1 without class weights)."""
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    logits = tf.reshape(logits, [-1, num_classes])
    keep = tf.not_equal(labels, ignore_label)
    keep_f = tf.cast(keep, tf.float32)
    safe_labels = tf.where(keep, labels, tf.zeros_like(labels))
    weights = keep_f
    if class_weights is not None:
        cw = tf.constant(list(class_weights), tf.float32)
        if cw.shape[0] != num_classes:
            raise ValueError(
                f"class_weights has {cw.shape[0]} entries, expected num_classes={num_classes}."
            )
        weights = weights * tf.gather(cw, safe_labels)
    pixel_losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=safe_labels, logits=logits
    )
    return pixel_losses * weights, keep_f


def _hard_pixel_mean(weighted: tf.Tensor, top_k: float, hard_example_mining_step: int,
                     step: tf.Tensor | tf.Variable | int | None) -> tf.Tensor:
    """Online hard-pixel mining: the mean of the hardest pixels' losses, their fraction
    ramped from 100% to ``top_k`` over ``hard_example_mining_step`` steps."""
    num_pixels = tf.cast(tf.shape(weighted)[0], tf.float32)
    if hard_example_mining_step and hard_example_mining_step > 0:
        if step is None:
            raise ValueError(
                "hard_example_mining_step > 0 needs the training step: pass step= (or call "
                "SoftmaxCrossEntropyWithIgnore.set_step(optimizer.iterations); "
                "MultiTaskModel.compile does this)."
            )
        ratio = tf.minimum(1.0, tf.cast(step, tf.float32) / float(hard_example_mining_step))
        fraction = ratio * top_k + (1.0 - ratio)
    else:
        fraction = tf.constant(top_k, tf.float32)
    k = tf.cast(fraction * num_pixels, tf.int32)
    top_losses, _ = tf.math.top_k(weighted, k=k, sorted=False)
    num_present = tf.reduce_sum(tf.cast(tf.not_equal(top_losses, 0.0), tf.float32))
    return tf.math.divide_no_nan(tf.reduce_sum(top_losses), num_present)


def tag_bce(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Sigmoid cross-entropy on image-level tag logits, mean over tags and batch."""
    logits = tf.cast(logits, tf.float32)
    labels = tf.cast(labels, tf.float32)
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))


@keras.saving.register_keras_serializable(package="tf_mtl")
class SoftmaxCrossEntropyWithIgnore(keras.losses.Loss):
    """Keras wrapper of `softmax_cross_entropy_with_ignore` (the original DeepLab loss).

    The hard-pixel-mining ramp needs the training step: `MultiTaskModel.compile`
    binds `optimizer.iterations` via `set_step`; standalone callers bind any
    variable/tensor themselves.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_label: int = 255,
        class_weights: Sequence[float] | None = None,
        top_k_percent_pixels: float = 1.0,
        hard_example_mining_step: int = 0,
        name: str = "softmax_ce_with_ignore",
        **kwargs: Any,
    ) -> None:
        kwargs.pop("reduction", None)
        super().__init__(name=name, reduction="sum_over_batch_size", **kwargs)
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        if self.class_weights is not None and len(self.class_weights) != self.num_classes:
            raise ValueError(
                f"class_weights has {len(self.class_weights)} entries, expected "
                f"num_classes={self.num_classes}."
            )
        self.top_k_percent_pixels = _check_percent(top_k_percent_pixels)
        self.hard_example_mining_step = int(hard_example_mining_step)
        self._step: Any = None

    @property
    def needs_step(self) -> bool:
        """True when the loss depends on the training step (mining ramp)."""
        return self.top_k_percent_pixels < 1.0 and self.hard_example_mining_step > 0

    def set_step(self, step: Any) -> None:
        """Binds the training-step variable read by the hard-mining ramp."""
        self._step = step

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        return softmax_cross_entropy_with_ignore(
            y_true,
            y_pred,
            num_classes=self.num_classes,
            ignore_label=self.ignore_label,
            class_weights=self.class_weights,
            top_k_percent_pixels=self.top_k_percent_pixels,
            hard_example_mining_step=self.hard_example_mining_step,
            step=None if self._step is None else tf.convert_to_tensor(self._step),
        )

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "ignore_label": self.ignore_label,
            "class_weights": self.class_weights,
            "top_k_percent_pixels": self.top_k_percent_pixels,
            "hard_example_mining_step": self.hard_example_mining_step,
        }


@keras.saving.register_keras_serializable(package="tf_mtl")
class TagBCE(keras.losses.Loss):
    """Keras wrapper of `tag_bce`: multi-label sigmoid BCE for image-level tags."""

    def __init__(self, name: str = "tag_bce", **kwargs: Any) -> None:
        kwargs.pop("reduction", None)
        super().__init__(name=name, reduction="sum_over_batch_size", **kwargs)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        return tag_bce(y_true, y_pred)

    def get_config(self) -> dict:
        return {"name": self.name}


def image_class_ce(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Softmax cross-entropy of one class per image; images labelled < 0 (no object) take
    no part; mean over the rest (0 when none)."""
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    logits = tf.cast(logits, tf.float32)
    valid = labels >= 0
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.maximum(labels, 0),
                                                        logits=logits)
    w = tf.cast(valid, tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(ce * w), tf.reduce_sum(w))


def box_mse(targets: tf.Tensor, boxes: tf.Tensor) -> tf.Tensor:
    """Squared error of normalised boxes ``[B, 4]`` against targets ``[B, 5]`` =
    ``[present, ymin, xmin, ymax, xmax]``; mean over coordinates of present boxes."""
    targets = tf.cast(targets, tf.float32)
    w = targets[:, 0]
    err = tf.reduce_mean(tf.square(tf.cast(boxes, tf.float32) - targets[:, 1:]), axis=-1)
    return tf.math.divide_no_nan(tf.reduce_sum(err * w), tf.reduce_sum(w))


def masked_l1(targets: tf.Tensor, predictions: tf.Tensor) -> tf.Tensor:
    """L1 of dense regressions: ``targets`` ``[B, H, W, C + 1]`` (C values, then a 0/1
    mask), ``predictions`` ``[B, H, W, C]``; the mean absolute error over the masked
    pixels and the C components (Kendall et al.'s instance and depth losses)."""
    targets = tf.cast(targets, tf.float32)
    mask = targets[..., -1:]
    err = tf.abs(tf.cast(predictions, tf.float32) - targets[..., :-1]) * mask
    channels = tf.cast(tf.shape(predictions)[-1], tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(err), tf.reduce_sum(mask) * channels)


def call_loss(loss: Any, y_true: Any, y_pred: tf.Tensor) -> tf.Tensor:
    """This replica's float32 scalar loss.

    Keras 3 built-in losses divide their (non-scalar) reduction by
    num_replicas_in_sync inside `__call__`, losses returning a scalar do not. To scale
    every term exactly once (in the train step), keras Losses are evaluated through
    `call` and reduced here: "sum" sums, anything else averages.
    """
    if isinstance(loss, keras.losses.Loss):
        values = tf.cast(loss.call(tf.cast(y_true, tf.float32), y_pred), tf.float32)
        if values.shape.rank == 0:
            return values
        if loss.reduction == "sum":
            return tf.reduce_sum(values)
        return tf.math.divide_no_nan(tf.reduce_sum(values), tf.cast(tf.size(values), tf.float32))
    return tf.cast(tf.reshape(loss(y_true, y_pred), []), tf.float32)


def label_map_loss(num_classes: int, ignore_label: int, kind: str = "ce"
                   ) -> Callable[[Any, tf.Tensor], tf.Tensor]:
    """``(labels [B, H, W], logits [B, h, w, C]) -> scalar``: logits upsampled to the labels,
    then softmax cross-entropy (``ce``) or the squared error of the probabilities against
    the one-hot labels (``mse``); ignore pixels take no part in either. For heads that
    predict a label map at another resolution (auxiliary modules, a label decoder)."""
    if kind not in ("ce", "mse"):
        raise ValueError(f"label_map_loss(kind={kind!r}): use 'ce' or 'mse'")
    ce = SoftmaxCrossEntropyWithIgnore(num_classes, ignore_label)

    def loss(labels: Any, logits: tf.Tensor) -> tf.Tensor:
        labels = tf.cast(labels, tf.int32)
        logits = tf.image.resize(logits, tf.shape(labels)[1:3], method="bilinear")
        if kind == "ce":
            return call_loss(ce, labels, logits)
        valid = tf.cast(tf.not_equal(labels, ignore_label), tf.float32)
        # One-hot of the ignore label (outside the classes) is all zeros.
        onehot = tf.one_hot(labels, num_classes, dtype=tf.float32)
        err = tf.reduce_sum(tf.square(tf.nn.softmax(logits) - onehot), -1)
        return tf.math.divide_no_nan(tf.reduce_sum(err * valid), tf.reduce_sum(valid))

    return loss
