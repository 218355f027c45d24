"""tf_mtl.serving_graph: constant weights and BatchNorm folded into the convolutions, with
outputs equal to the variable-reading function's."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from deeplab_ext.models.layers import FusedBatchNorm  # FusedBatchNormV3 ops, as the zoo's
from tf_mtl.serving_graph import fold_batch_norms, with_constant_weights

SPEC = [tf.TensorSpec([None, None, None, 3], tf.float32, name="images")]


def _network() -> keras.Model:
    """Conv + BN + ReLU6, an atrous depthwise conv + BN (SpaceToBatch / BatchToSpace around
    it), a depthwise conv with multiplier 2 + BN, and a BN whose input is shared (not
    folded); moving statistics far from 0 / 1 so a wrong fold shows."""
    keras.utils.set_random_seed(0)
    x = inp = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(x)
    x = keras.layers.ReLU(6.0)(FusedBatchNorm()(x))
    x = keras.layers.DepthwiseConv2D(3, padding="same", dilation_rate=2, use_bias=False)(x)
    x = keras.layers.ReLU(6.0)(FusedBatchNorm()(x))
    x = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, use_bias=False)(x)
    x = FusedBatchNorm()(x)
    shared = keras.layers.Conv2D(4, 1, use_bias=False)(x)
    y = FusedBatchNorm()(shared) + shared
    net = keras.Model(inp, {"out": y})
    rng = np.random.default_rng(1)
    for layer in net.layers:
        if isinstance(layer, FusedBatchNorm):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 2, n), rng.normal(0, 1, n),
                               rng.normal(0, 2, n), rng.uniform(0.1, 3, n)])
    return net


def test_folded_constant_function_equals_the_network():
    net = _network()

    @tf.function(input_signature=SPEC)
    def serve(images):  # with a cond, as the serving alignment has
        images = tf.cond(tf.shape(images)[1] > 1, lambda: images, lambda: images + 1.0)
        return {"out": net(images, training=False)["out"]}

    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    graph_def = convert_variables_to_constants_v2(serve.get_concrete_function()).graph \
        .as_graph_def()
    assert fold_batch_norms(graph_def) == 3  # not the one whose input is shared
    ops = [n.op for n in graph_def.node]
    assert ops.count("FusedBatchNormV3") == 1 and ops.count("BiasAdd") == 3
    assert "BatchToSpaceND" in ops  # the atrous one was folded through it

    frozen = with_constant_weights(serve)
    x = tf.constant(np.random.default_rng(2).uniform(0, 255, (2, 19, 23, 3)), tf.float32)
    want = serve(x)["out"].numpy()
    got = frozen(images=x)["out"].numpy()
    assert np.abs(want).max() > 10  # the statistics matter
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4 * np.abs(want).max())
    # Each weight is stored once: the constants replaced by folded ones are dropped.
    graph = frozen.get_concrete_function().graph.as_graph_def()
    stored = sum(n.attr["value"].tensor.ByteSize() for f in graph.library.function
                 for n in f.node_def if n.op == "Const")
    weights = sum(v.numpy().nbytes for v in net.weights)
    assert weights < stored < 1.25 * weights, (stored, weights)  # 2.06x unpruned
    unfolded = with_constant_weights(serve, fold=False)(x)["out"].numpy()
    np.testing.assert_allclose(unfolded, want, rtol=1e-6, atol=1e-6)  # constants, same ops


def test_with_constant_weights_is_a_snapshot_that_reads_no_variables():
    net = _network()
    serve = tf.function(lambda images: {"out": net(images, training=False)["out"]},
                        input_signature=SPEC)
    frozen = with_constant_weights(serve)
    assert not any(t.dtype == tf.resource
                   for t in frozen.get_concrete_function().captured_inputs)
    assert any(t.dtype == tf.resource for t in serve.get_concrete_function().captured_inputs)
    x = tf.constant(np.random.default_rng(3).uniform(0, 255, (1, 9, 9, 3)), tf.float32)
    expect = frozen(x)["out"].numpy()
    kernel = net.trainable_variables[0]
    kernel.assign(kernel * 2.0)
    assert np.abs(serve(x)["out"].numpy() - expect).max() > 1e-3
    np.testing.assert_array_equal(frozen(x)["out"].numpy(), expect)
