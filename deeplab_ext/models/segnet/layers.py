"""SegNet's layers: max-pooling that records where each maximum came from, and
unpooling that puts values back exactly there (Badrinarayanan et al., 2017), and MTAN's
soft-attention mask.

Indices are flat positions in the pooled input ``[B, H, W, C]`` (batch included), as
``tf.nn.max_pool_with_argmax(..., include_batch_in_index=True)`` returns them; ties go to
the first maximum in row-major window order. SAME padding: odd sizes pool to
``ceil(H / 2)`` and unpool back to the recorded ``H``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import tensorflow as tf

from deeplab_ext.models.layers import ConvBN, NormConfig, NormMixin

__all__ = ["AttentionMask", "MaxPoolWithArgmax", "MaxUnpool"]

_PKG = "deeplab_ext"


@keras.saving.register_keras_serializable(package=_PKG)
class MaxPoolWithArgmax(keras.layers.Layer):
    """2x2 stride-2 max pooling -> ``(pooled, argmax)``; argmax int64, flat with batch."""

    def call(self, x):
        pooled, argmax = tf.nn.max_pool_with_argmax(x, ksize=2, strides=2, padding="SAME",
                                                    include_batch_in_index=True)
        # The indices are a fact about the input, not something to differentiate.
        return pooled, tf.stop_gradient(argmax)

    def compute_output_shape(self, input_shape):
        half = lambda d: None if d is None else (d + 1) // 2  # noqa: E731
        shape = (input_shape[0], half(input_shape[1]), half(input_shape[2]), input_shape[3])
        return shape, shape


@keras.saving.register_keras_serializable(package=_PKG)
class MaxUnpool(keras.layers.Layer):
    """``[values, argmax, like]`` -> zeros shaped like ``like`` with each value at its argmax
    (values at the same index would add; 2x2 stride-2 windows never share one)."""

    def call(self, inputs):
        values, argmax, like = inputs
        shape = tf.shape(like, out_type=tf.int64)
        flat = tf.scatter_nd(tf.reshape(argmax, [-1, 1]), tf.reshape(values, [-1]),
                             tf.reshape(tf.reduce_prod(shape), [1]))
        return tf.reshape(flat, tf.cast(shape, tf.int32))

    def compute_output_shape(self, input_shape):
        return input_shape[2]


@keras.saving.register_keras_serializable(package=_PKG)
class AttentionMask(NormMixin, keras.layers.Layer):
    """MTAN's soft-attention mask: 1x1 conv-BN-ReLU, 1x1 conv-BN, sigmoid -> ``(0, 1)``
    per channel and location (``channels``: those of the features it multiplies)."""

    def __init__(self, channels: int, norm: NormConfig | Mapping[str, Any] | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.norm = NormConfig.of(norm)
        self.hidden = ConvBN(self.channels, 1, activation="relu", name="hidden", norm=self.norm)
        self.mask = ConvBN(self.channels, 1, activation=None, name="mask", norm=self.norm)

    def call(self, x, training=None):
        return keras.ops.sigmoid(self.mask(self.hidden(x, training=training), training=training))

    def build(self, input_shape):
        self.hidden.build(input_shape)
        self.mask.build(self.hidden.compute_output_shape(input_shape))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.channels)

    def get_config(self) -> dict:
        return {**super().get_config(), "channels": self.channels, **self._norm_config()}
