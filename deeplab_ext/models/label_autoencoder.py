"""An autoencoder over label maps (Mostajabi, Maire & Shakhnarovich, CVPR 2018, phase 1).

It sees no image: its input is a one-hot label map ``[B, H, W, C]`` (an ignore pixel is
all zeros), its output the label map's logits. Encoder: five 3x3 conv + BatchNorm + ReLU
layers with 2x2 max-pooling between them (bottleneck at stride 16); decoder mirrored:
2x bilinear upsampling + 3x3 conv + BatchNorm + ReLU, then a 3x3 conv to the classes; no
skip connections. Channel variants are named by their bottleneck. The encoder and the
decoder are sub-models of their own (``label_encoder``, ``label_decoder``), so phase 2
can put the frozen decoder behind a segmentation network's features.
"""

from __future__ import annotations

import keras
import tensorflow as tf

__all__ = ["STRIDE", "VARIANTS", "build_label_autoencoder", "one_hot_labels"]

VARIANTS: dict[str, tuple[int, ...]] = {
    "32": (32, 32, 32, 32, 32),
    "128": (32, 128, 128, 128, 128),
    "256": (32, 128, 128, 128, 256),
}
STRIDE = 16  # four 2x2 poolings


def one_hot_labels(labels: tf.Tensor, num_classes: int) -> tf.Tensor:
    """int labels ``[..., H, W]`` -> one-hot float32; any value outside the classes (the
    ignore label) gives an all-zero vector."""
    return tf.one_hot(tf.cast(labels, tf.int32), num_classes, dtype=tf.float32)


@keras.saving.register_keras_serializable(package="deeplab_ext")
class Upsample2x(keras.layers.Layer):
    """2x bilinear upsampling that takes inputs of unknown size (keras' UpSampling2D
    cannot trace bilinear resizing without a static size)."""

    def call(self, x):
        size = 2 * tf.shape(x)[1:3]
        return tf.cast(tf.image.resize(x, size, method="bilinear"), x.dtype)

    def compute_output_shape(self, shape):
        grow = lambda d: None if d is None else 2 * d  # noqa: E731
        return (shape[0], grow(shape[1]), grow(shape[2]), shape[3])


def _conv(x, filters: int, name: str):
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=name)(x)


def build_label_autoencoder(num_classes: int, variant: str = "128") -> keras.Model:
    """The autoencoder: one-hot ``[B, H, W, C]`` -> ``{"semantic": logits [B, H', W', C]}``
    (H' = H when H is a multiple of 16). ``model.get_layer("label_encoder")`` outputs
    ``{"conv1", "conv3", "bottleneck"}``; ``model.get_layer("label_decoder")`` maps a
    bottleneck to logits."""
    if variant not in VARIANTS:
        raise ValueError(f"label autoencoder variant {variant!r} is unknown; valid: "
                         f"{sorted(VARIANTS)}")
    channels = VARIANTS[variant]
    onehot = keras.Input((None, None, num_classes), name="onehot")
    x, taps = onehot, {}
    for i, c in enumerate(channels, start=1):
        if i > 1:
            x = keras.layers.MaxPooling2D(2, padding="same", name=f"pool{i - 1}")(x)
        x = _conv(x, c, f"conv{i}")
        taps[f"conv{i}"] = x
    encoder = keras.Model(onehot, {"conv1": taps["conv1"], "conv3": taps["conv3"],
                                   "bottleneck": x}, name="label_encoder")
    code = keras.Input((None, None, channels[-1]), name="bottleneck")
    y = code
    for i in range(len(channels) - 1, 0, -1):
        y = Upsample2x(name=f"up{i}")(y)
        y = _conv(y, channels[i - 1], f"deconv{i}")
    logits = keras.layers.Conv2D(num_classes, 3, padding="same", name="logits")(y)
    decoder = keras.Model(code, logits, name="label_decoder")
    out = keras.layers.Activation("linear", dtype="float32", name="semantic")(
        decoder(encoder(onehot)["bottleneck"]))
    return keras.Model(onehot, {"semantic": out}, name=f"label_autoencoder_{variant}")
