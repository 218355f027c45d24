"""Multiply-add counts from the traced TensorFlow graph (like the original's model zoo numbers).

The model is traced once in a ``tf.function`` with a static input shape; every
``Conv2D`` / ``DepthwiseConv2dNative`` / ``MatMul`` / ``BatchMatMul*`` op is counted from
its static shapes. Dilated convs that TF lowers to ``SpaceToBatchND -> conv ->
BatchToSpaceND`` are counted at the cropped ``BatchToSpaceND`` output size (the
mathematically equivalent dilated conv), not the padded space-to-batch size.
Element-wise ops, BN (folded at inference), pooling and resizes are not counted, as in
the original's reported multiply-adds.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

__all__ = ["count_macs", "count_macs_by_op", "count_params"]

_CONV_OPS = ("Conv2D", "DepthwiseConv2dNative")
_MATMUL_OPS = ("MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3")


def _static(shape: tf.TensorShape, what: str) -> list[int]:
    dims = shape.as_list() if shape.rank is not None else None
    if dims is None or any(d is None for d in dims):
        raise ValueError(
            f"count_macs: {what} has a non-static shape {shape}; pass a fully defined "
            "input_shape, e.g. (1, 513, 513, 3)"
        )
    return dims


def _effective_output_shape(op: tf.Operation) -> list[int]:
    """Output shape of a conv, seen through a following BatchToSpaceND (dilated conv)."""
    out = op.outputs[0]
    for consumer in out.consumers():
        if consumer.type == "BatchToSpaceND":
            return _static(consumer.outputs[0].shape, consumer.name)
    return _static(out.shape, op.name)


def _op_macs(op: tf.Operation) -> int:
    if op.type in _CONV_OPS:
        nhwc = op.get_attr("data_format") in (b"NHWC", "NHWC")
        if not nhwc:
            raise ValueError(f"count_macs: {op.name} uses NCHW; only NHWC graphs are supported")
        kh, kw, cin, mult = _static(op.inputs[1].shape, op.name + " filter")
        out = _effective_output_shape(op)
        spatial = out[0] * out[1] * out[2]
        if op.type == "Conv2D":
            return spatial * out[3] * kh * kw * cin  # out[3] == filters
        return spatial * cin * mult * kh * kw  # depthwise: one k*k filter per channel
    if op.type in _MATMUL_OPS:
        a = _static(op.inputs[0].shape, op.name + " a")
        b = _static(op.inputs[1].shape, op.name + " b")
        out = _static(op.outputs[0].shape, op.name)
        if op.type == "MatMul":
            k = a[0] if op.get_attr("transpose_a") else a[1]
        else:
            adj_x = op.get_attr("adj_x")
            k = a[-2] if adj_x else a[-1]
        del b
        return int(np.prod(out)) * k
    return 0


def _graph(model: keras.Model, input_shape: Sequence[int]) -> tf.Graph:
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 4:
        raise ValueError(f"count_macs: input_shape={input_shape} must be (B, H, W, C)")

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32)])
    def forward(x):
        return model(x, training=False)

    return forward.get_concrete_function().graph


def _walk(graph: tf.Graph):
    """All ops, including those of functions defined in the graph (while/cond bodies)."""
    yield from graph.get_operations()
    for fn in list(getattr(graph, "_functions", {}).values()):
        sub = getattr(fn, "graph", None)
        if sub is not None and sub is not graph:
            yield from _walk(sub)


def count_macs_by_op(model: keras.Model, input_shape: Sequence[int] = (1, 513, 513, 3)) -> dict:
    """Multiply-adds per op type (for reports / debugging)."""
    totals: dict[str, int] = {}
    for op in _walk(_graph(model, input_shape)):
        macs = _op_macs(op)
        if macs:
            totals[op.type] = totals.get(op.type, 0) + int(macs)
    return totals


def count_macs(model: keras.Model, input_shape: Sequence[int] = (1, 513, 513, 3)) -> int:
    """Total multiply-adds of one forward pass at ``input_shape`` (static, NHWC)."""
    return int(sum(count_macs_by_op(model, input_shape).values()))


def count_params(model: keras.Model, trainable_only: bool = False) -> int:
    """Number of scalars in the model's (trainable) weights."""
    weights = model.trainable_weights if trainable_only else model.weights
    return int(sum(int(np.prod(w.shape)) for w in weights))
