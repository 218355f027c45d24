"""Image-level tags pooled from a segmentation: a tag head with no parameters.

Why: a tag head trained beside the segmentation needs many tagged images before its
tags are worth refitting towards (65 photos gave tag F1 0.44 and a refit that cost 15.8
mIoU points, BENCHMARKS 11). A released segmenter already says, per pixel, how sure it
is of each class; pooling that over the image gives each class's presence score with
nothing to train, and the evidence gradient then flows straight into the pixels that
carry the class.

Per tag ``t`` (class ``class_ids[t]``), with ``p`` the softmax of the segmentation
logits over the image's ``N`` pixels:

* ``lse`` (default): ``s = log(mean(exp(r * p))) / r``, a smooth maximum between the
  mean (r -> 0) and the max (r -> inf); ``r`` is the temperature;
* ``max``: ``s = max(p)``;
* ``mean``: ``s = mean(p)`` (the class's expected area: a weak presence score);

and the tag logit is ``log(s) - log(1 - s)`` (``s`` clipped to ``[eps, 1 - eps]``), so
``sigmoid(logit) = s`` and every tool that applies a sigmoid to tag logits reads ``s``.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

__all__ = ["SEGMENTATION_TAG_POOLINGS", "SegmentationTags"]

SEGMENTATION_TAG_POOLINGS = ("lse", "max", "mean")


@keras.saving.register_keras_serializable(package="tf_mtl")
class SegmentationTags(keras.layers.Layer):
    """``logits [B, H, W, C] -> tag logits [B, T]``: the segmentation's own presence scores.

    Args:
      class_ids: tag ``t`` is class ``class_ids[t]`` (background and the ignore label are
        not tagged: the dataset's ``tag_class_ids``).
      pooling: ``lse`` | ``max`` | ``mean`` (module docstring).
      temperature: ``r`` of ``lse``.
      eps: clip of the pooled probability before the logit (keeps it finite).
    """

    def __init__(self, class_ids: Sequence[int], pooling: str = "lse",
                 temperature: float = 10.0, eps: float = 1e-6, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.class_ids = tuple(int(c) for c in class_ids)
        if not self.class_ids or min(self.class_ids) < 0:
            raise ValueError(f"SegmentationTags(class_ids={class_ids}): need >= 1 class id, "
                             "each >= 0")
        if pooling not in SEGMENTATION_TAG_POOLINGS:
            raise ValueError(f"SegmentationTags(pooling={pooling!r}): use one of "
                             f"{SEGMENTATION_TAG_POOLINGS}")
        if not temperature > 0:
            raise ValueError(f"SegmentationTags(temperature={temperature}): must be > 0")
        if not 0 < eps < 0.5:
            raise ValueError(f"SegmentationTags(eps={eps}): must be in (0, 0.5)")
        self.pooling, self.temperature, self.eps = pooling, float(temperature), float(eps)

    def build(self, input_shape):
        classes = input_shape[-1]
        if classes is not None and max(self.class_ids) >= classes:
            raise ValueError(f"SegmentationTags: class id {max(self.class_ids)} out of range "
                             f"for {classes} classes")
        self.built = True

    def call(self, logits):
        probs = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
        probs = tf.gather(probs, list(self.class_ids), axis=-1)  # [B, H, W, T]
        flat = tf.reshape(probs, [tf.shape(probs)[0], -1, len(self.class_ids)])
        if self.pooling == "max":
            pooled = tf.reduce_max(flat, axis=1)
        elif self.pooling == "mean":
            pooled = tf.reduce_mean(flat, axis=1)
        else:
            r = self.temperature
            n = tf.cast(tf.shape(flat)[1], tf.float32)
            pooled = (tf.reduce_logsumexp(r * flat, axis=1) - tf.math.log(n)) / r
        pooled = tf.clip_by_value(pooled, self.eps, 1.0 - self.eps)
        # log(1 - s), not log1p(-s): ONNX has no Log1p, and with s <= 1 - eps the two agree
        # to float32 round-off.
        return tf.math.log(pooled) - tf.math.log(1.0 - pooled)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], len(self.class_ids))

    def get_config(self) -> dict:
        return {**super().get_config(), "class_ids": list(self.class_ids),
                "pooling": self.pooling, "temperature": self.temperature, "eps": self.eps}
