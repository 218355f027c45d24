"""DeepLab's own heads: ASPP and the DeepLabv3+ decoder (the original's
``extract_features`` and ``refine_by_decoder``), built from the shared blocks of
``deeplab_ext.models.layers``. Registered under ``deeplab_ext`` as before, so ``.keras``
files written when they lived in ``models/layers.py`` still load.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import tensorflow as tf

from deeplab_ext.models.layers import (
    ConvBN,
    NormConfig,
    NormMixin,
    SeparableConvBN,
    resize_bilinear,
)

_PKG = "deeplab_ext"

__all__ = ["ASPP", "Decoder"]


@keras.saving.register_keras_serializable(package=_PKG)
class ASPP(NormMixin, keras.layers.Layer):
    """Atrous spatial pyramid pooling as in the original ``extract_features``.

    Branches (concat order as the original): image pooling (global mean -> 1x1 -> BN ->
    ReLU -> bilinear resize), 1x1 conv, one 3x3 (separable) atrous conv per rate; then a
    1x1 projection + BN + ReLU and dropout.
    """

    def __init__(
        self,
        filters: int = 256,
        atrous_rates: tuple[int, ...] | list[int] = (),
        image_pooling: bool = True,
        separable: bool = True,
        dropout: float = 0.1,
        norm: NormConfig | Mapping[str, Any] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.atrous_rates = tuple(int(r) for r in (atrous_rates or ()))
        self.image_pooling = bool(image_pooling)
        self.separable = bool(separable)
        self.dropout_rate = float(dropout)
        self.norm = norm = NormConfig.of(norm)
        self.pool_conv = (
            ConvBN(self.filters, 1, name="image_pooling", norm=norm) if self.image_pooling
            else None
        )
        self.conv0 = ConvBN(self.filters, 1, name="aspp0", norm=norm)
        # One attribute per branch (not a list): tf.train.Checkpoint does not track the
        # contents of Keras-tracked lists, and training checkpoints must include them.
        conv = SeparableConvBN if self.separable else ConvBN
        for i, rate in enumerate(self.atrous_rates, 1):
            setattr(self, f"atrous{i}",
                    conv(self.filters, 3, dilation_rate=rate, name=f"aspp{i}", norm=norm))
        self.projection = ConvBN(self.filters, 1, name="concat_projection", norm=norm)
        self.dropout = keras.layers.Dropout(self.dropout_rate, name="dropout")

    def atrous_layers(self) -> list[keras.layers.Layer]:
        """The atrous branches, in rate order."""
        return [getattr(self, f"atrous{i}") for i in range(1, len(self.atrous_rates) + 1)]

    def call(self, x, training=None):
        branches = []
        if self.pool_conv is not None:
            pooled = keras.ops.mean(x, axis=(1, 2), keepdims=True)
            pooled = self.pool_conv(pooled, training=training)
            size = tf.shape(x)[1:3]
            branches.append(resize_bilinear(pooled, size[0], size[1]))
        branches.append(self.conv0(x, training=training))
        for layer in self.atrous_layers():
            branches.append(layer(x, training=training))
        y = keras.ops.concatenate(branches, axis=-1) if len(branches) > 1 else branches[0]
        y = self.projection(y, training=training)
        return self.dropout(y, training=training)

    def build(self, input_shape):
        shape = tuple(input_shape)
        if self.pool_conv is not None:
            self.pool_conv.build((shape[0], 1, 1, shape[-1]))
        self.conv0.build(shape)
        for layer in self.atrous_layers():
            layer.build(shape)
        n_branches = 1 + len(self.atrous_rates) + (self.pool_conv is not None)
        self.projection.build(shape[:-1] + (self.filters * n_branches,))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "filters": self.filters,
            "atrous_rates": list(self.atrous_rates),
            "image_pooling": self.image_pooling,
            "separable": self.separable,
            "dropout": self.dropout_rate,
            **self._norm_config(),
        }


@keras.saving.register_keras_serializable(package=_PKG)
class Decoder(NormMixin, keras.layers.Layer):
    """DeepLabv3+ decoder (the original's ``refine_by_decoder``) for one low-level feature.

    ``inputs = [encoder, low_level]``: 1x1 conv of ``low_level`` to ``low_level_filters``
    (+BN+ReLU), encoder resized bilinearly to the low-level size, concat (encoder first),
    two 3x3 (separable) convs of ``filters``.
    """

    def __init__(
        self,
        filters: int = 256,
        low_level_filters: int = 48,
        separable: bool = True,
        norm: NormConfig | Mapping[str, Any] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.low_level_filters = int(low_level_filters)
        self.separable = bool(separable)
        self.norm = norm = NormConfig.of(norm)
        self.projection = ConvBN(self.low_level_filters, 1, name="feature_projection0", norm=norm)
        conv = SeparableConvBN if self.separable else ConvBN
        self.conv0 = conv(self.filters, 3, name="decoder_conv0", norm=norm)
        self.conv1 = conv(self.filters, 3, name="decoder_conv1", norm=norm)

    def call(self, inputs, training=None):
        encoder, low_level = inputs
        low = self.projection(low_level, training=training)
        size = tf.shape(low)[1:3]
        enc = resize_bilinear(encoder, size[0], size[1])
        y = keras.ops.concatenate([enc, low], axis=-1)
        y = self.conv0(y, training=training)
        return self.conv1(y, training=training)

    def build(self, input_shape):
        enc_shape, low_shape = (tuple(s) for s in input_shape)
        self.projection.build(low_shape)
        self.conv0.build(low_shape[:-1] + (enc_shape[-1] + self.low_level_filters,))
        self.conv1.build(low_shape[:-1] + (self.filters,))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[1][:-1]) + (self.filters,)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "filters": self.filters,
            "low_level_filters": self.low_level_filters,
            "separable": self.separable,
            **self._norm_config(),
        }


@keras.saving.register_keras_serializable(package="deeplab_ext")
class TaskDecoder(NormMixin, keras.layers.Layer):
    """One task's decoder of Kendall et al.'s scene network: a 3x3 conv of ``filters``
    (+BN+ReLU), then a 1x1 conv to ``channels`` outputs (with bias, linear)."""

    def __init__(self, filters: int, channels: int,
                 norm: NormConfig | Mapping[str, Any] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.channels = int(filters), int(channels)
        self.norm = norm = NormConfig.of(norm)
        self.conv = ConvBN(self.filters, 3, name="conv", norm=norm)
        self.out = keras.layers.Conv2D(
            self.channels, 1, kernel_regularizer=norm.regularizer(),
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.01), name="out")

    def call(self, x, training=None):
        return self.out(self.conv(x, training=training))

    def build(self, input_shape):
        self.conv.build(tuple(input_shape))
        self.out.build(tuple(input_shape)[:-1] + (self.filters,))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.channels,)

    def get_config(self) -> dict:
        return {**super().get_config(), "filters": self.filters, "channels": self.channels,
                **self._norm_config()}
