"""A tiny network following the ARCHITECTURE.md contract, for tests, benches and docs."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

__all__ = ["ResizeLike", "build_toy_network"]


@keras.saving.register_keras_serializable(package="tf_mtl")
class ResizeLike(keras.layers.Layer):
    """Bilinearly resize ``x`` to the spatial size of ``ref`` (logits to input size)."""

    def call(self, x: Any, ref: Any) -> Any:
        # tf.image.resize accepts a dynamic size tensor (keras.ops.image.resize does not).
        y = tf.image.resize(x, tf.shape(ref)[1:3], method="bilinear")
        return tf.cast(y, x.dtype)

    def compute_output_shape(self, x_shape: tuple, ref_shape: tuple) -> tuple:
        return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[3])


def build_toy_network(
    num_classes: int = 5, num_tags: int = 4, width: int = 8, seed: int = 0
) -> keras.Model:
    """A tiny network following the ARCHITECTURE.md contract (tests, benches, docs).

    images -> normalise -> conv -> ``low_level`` -> strided conv + BN -> conv ->
    ``encoder``; tag head: global pool + dense; decoder: upsample encoder, concat
    low_level, conv, 1x1 ``logits``, resized to the input size.
    """
    layers = keras.layers
    init = keras.initializers.GlorotUniform
    inp = keras.Input((None, None, 3), name="images")
    x = layers.Rescaling(2.0 / 255.0, offset=-1.0, name="normalize")(inp)
    x = layers.Conv2D(width, 3, padding="same", activation="relu", name="backbone_conv1",
                      kernel_initializer=init(seed))(x)
    low = layers.Identity(name="low_level")(x)
    x = layers.Conv2D(2 * width, 3, strides=2, padding="same", name="backbone_conv2",
                      kernel_initializer=init(seed + 1))(low)
    x = layers.BatchNormalization(name="backbone_bn")(x)
    x = layers.Activation("relu")(x)
    x = layers.Conv2D(2 * width, 3, padding="same", activation="relu", name="aspp",
                      kernel_initializer=init(seed + 2))(x)
    enc = layers.Identity(name="encoder")(x)
    t = layers.GlobalAveragePooling2D(name="tag_pool")(enc)
    t = layers.Dense(num_tags, name="tag_head", kernel_initializer=init(seed + 3))(t)
    t = layers.Activation("linear", dtype="float32", name="tags")(t)
    d = ResizeLike(name="decoder_upsample")(enc, low)
    d = layers.Concatenate(name="decoder_concat")([d, low])
    d = layers.Conv2D(width, 3, padding="same", activation="relu", name="decoder",
                      kernel_initializer=init(seed + 4))(d)
    d = layers.Conv2D(num_classes, 1, name="logits", kernel_initializer=init(seed + 5))(d)
    d = ResizeLike(name="upsample_logits")(d, inp)
    d = layers.Activation("linear", dtype="float32", name="semantic")(d)
    return keras.Model(inp, {"semantic": d, "tags": t}, name="toy_segmenter")
