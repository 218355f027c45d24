"""Test helpers: a tiny network following the ARCHITECTURE.md contract (tests, benches,
docs), and :func:`run_layer_test`, the harness every registered layer goes through."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

__all__ = ["ResizeLike", "build_toy_network", "run_layer_test"]


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


def run_layer_test(
    layer_cls: type,
    init_kwargs: Mapping[str, Any],
    inputs: Any,
    *,
    expected_trainable: int,
    expected_non_trainable: int = 0,
    expected_output_shape: Any = None,
    call_kwargs: Mapping[str, Any] | None = None,
    symbolic: bool = True,
) -> Any:
    """keras-hub's ``run_layer_test`` in small: what every layer must do to be saved,
    reloaded and served. Returns the eager output.

    * called eagerly on ``inputs`` (a tensor, a list / dict of them as one argument, or a
      tuple: positional arguments), it holds
      ``expected_trainable`` / ``expected_non_trainable`` weight tensors and gives
      ``expected_output_shape`` (a shape, or a list of them: one per output, flattened);
    * ``from_config(get_config())`` rebuilds it with the same config, and with the same
      weights it gives exactly the same output (same graph, same inputs);
    * ``keras.saving`` serialises and deserialises it to the same class and config (the
      path of a ``.keras`` file: the class must be registered);
    * called on ``keras.Input`` tensors of the same shapes with the batch unknown, it
      gives the eager output's shapes but the batch (what a functional model sees;
      ``symbolic=False`` for layers that take no tensors of images, e.g. loss weightings).
    """
    call_kwargs = dict(call_kwargs or {})
    layer = layer_cls(**init_kwargs)
    out = _call(layer, inputs, call_kwargs)
    shapes = _check_eager(layer, out, expected_trainable, expected_non_trainable,
                          expected_output_shape)
    config = layer.get_config()
    _check_from_config(layer, config, inputs, call_kwargs, out)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    if type(restored) is not layer_cls or restored.get_config() != config:
        raise AssertionError(f"{layer_cls.__name__}: keras.saving did not round-trip it "
                             "(is the class registered?)")
    if symbolic:
        _check_symbolic(layer_cls, config, inputs, call_kwargs, shapes)
    return out


def _check_eager(layer: keras.layers.Layer, out: Any, expected_trainable: int,
                 expected_non_trainable: int, expected_output_shape: Any) -> list[tuple]:
    """The eager call's weight counts and output shapes (returned) against the expected."""
    name = type(layer).__name__
    counts = (len(layer.trainable_weights), len(layer.non_trainable_weights))
    if counts != (expected_trainable, expected_non_trainable):
        raise AssertionError(f"{name}: {counts[0]} trainable and {counts[1]} "
                             f"non-trainable weights, expected {expected_trainable} and "
                             f"{expected_non_trainable}")
    shapes = [tuple(t.shape) for t in tf.nest.flatten(out)]
    if expected_output_shape is not None:
        want = expected_output_shape if isinstance(expected_output_shape, list) else [
            tuple(expected_output_shape)]
        if shapes != [tuple(w) for w in want]:
            raise AssertionError(f"{name}: output shapes {shapes}, expected {want}")
    return shapes


def _check_from_config(layer: keras.layers.Layer, config: dict, inputs: Any,
                       call_kwargs: Mapping[str, Any], out: Any) -> None:
    """``from_config(get_config())`` keeps the config and, with the same weights, gives
    exactly the eager output."""
    layer_cls = type(layer)
    clone = layer_cls.from_config(config)
    _call(clone, inputs, call_kwargs)
    clone.set_weights(layer.get_weights())
    if clone.get_config() != config:
        raise AssertionError(f"{layer_cls.__name__}: from_config(get_config()) changed the "
                             f"config:\n{config}\n{clone.get_config()}")
    again = _call(clone, inputs, call_kwargs)
    for a, b in zip(tf.nest.flatten(out), tf.nest.flatten(again), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b),
                                      err_msg=f"{layer_cls.__name__}: the rebuilt layer "
                                      "gives another output")


def _check_symbolic(layer_cls: type, config: dict, inputs: Any,
                    call_kwargs: Mapping[str, Any], shapes: list[tuple]) -> None:
    """On ``keras.Input`` tensors with the batch unknown, the layer gives the eager output's
    shapes but the batch."""

    def placeholder(t: Any) -> Any:
        return keras.Input(batch_shape=(None, *t.shape[1:]), dtype=t.dtype)

    sym_out = _call(layer_cls.from_config(config), tf.nest.map_structure(placeholder, inputs),
                    call_kwargs)
    for sym, shape in zip(tf.nest.flatten(sym_out), shapes, strict=True):
        dims = tuple(sym.shape)[1:]
        if len(dims) != len(shape) - 1 or any(
                d is not None and d != e for d, e in zip(dims, shape[1:], strict=True)):
            raise AssertionError(f"{layer_cls.__name__}: symbolic output shape {dims} does "
                                 f"not fit the eager {shape[1:]}")


def _call(layer: keras.layers.Layer, inputs: Any, kwargs: Mapping[str, Any]) -> Any:
    return layer(*inputs, **kwargs) if isinstance(inputs, tuple) else layer(inputs, **kwargs)
