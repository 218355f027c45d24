"""Serving functions rebuilt for CPU inference: weights as constants, BatchNorm folded.

Model-agnostic (any ``tf.function`` with an ``input_signature``). Why: on CPU, TF's oneDNN
kernels pre-pack constant filters once and Grappler fuses a convolution with a following
``BiasAdd`` and activation; a filter read from a variable is re-packed at every call, and
Grappler fuses a depthwise convolution with neither a ``FusedBatchNormV3`` nor the ``Mul``
/ ``Add`` it folds that into. LiteRT's converter does both at conversion; this does them for
the SavedModel (BENCHMARKS 24 measures each step).
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import tensorflow as tf

__all__ = ["fold_batch_norms", "with_constant_weights"]

_CONVS = ("Conv2D", "DepthwiseConv2dNative")
# Ops between a convolution and its BatchNorm that move pixels but keep channels: a
# per-channel affine commutes with them (atrous depthwise convolutions sit between
# SpaceToBatchND and BatchToSpaceND).
_CHANNEL_PRESERVING = ("BatchToSpaceND", "Identity")


def _name(ref: str) -> str:
    return ref.lstrip("^").split(":")[0]


def fold_batch_norms(graph_def: Any) -> int:
    """Fold every inference ``FusedBatchNorm(V3)`` with constant parameters into the
    constant filter of the convolution feeding it (``Conv2D`` or ``DepthwiseConv2dNative``,
    NHWC, possibly through ``BatchToSpaceND``); the BatchNorm becomes a ``BiasAdd`` of the
    folded offset. In place; returns how many were folded. A BatchNorm whose input is
    shared, whose other outputs are read, or whose convolution has a non-constant filter
    is left alone."""
    nodes = {n.name: n for n in graph_def.node}
    consumers: dict[str, list[str]] = {}
    for n in graph_def.node:
        for ref in n.input:
            consumers.setdefault(_name(ref), []).append(ref)
    folded = 0
    for bn in list(graph_def.node):
        found = _foldable(bn, nodes, consumers)
        if found is not None:
            _fold(graph_def, bn, *found)
            folded += 1
    return folded


def _constant(nodes: dict[str, Any], ref: str) -> Any:
    """The ``Const`` node a reference reads (through ``Identity`` nodes), else None."""
    node = nodes[_name(ref)]
    while node.op == "Identity":
        node = nodes[_name(node.input[0])]
    return node if node.op == "Const" else None


def _foldable(bn: Any, nodes: dict[str, Any], consumers: dict[str, list[str]]
              ) -> tuple[list[Any], Any, Any] | None:
    """(its four constant parameters, the convolution, its constant filter) where node
    ``bn`` is an inference BatchNorm that can be folded into that convolution, else None."""
    if (bn.op not in ("FusedBatchNorm", "FusedBatchNormV3") or bn.attr["is_training"].b
            or bn.attr["data_format"].s not in (b"", b"NHWC")):
        return None
    params = [_constant(nodes, ref) for ref in bn.input[1:5]]
    if any(p is None for p in params) or any(
            ref.split(":")[-1] not in (bn.name, "0") for ref in consumers.get(bn.name, [])):
        return None
    conv = nodes[_name(bn.input[0])]
    while conv.op in _CHANNEL_PRESERVING and len(consumers.get(conv.name, [])) == 1:
        conv = nodes[_name(conv.input[0])]
    if (conv.op not in _CONVS or len(consumers.get(conv.name, [])) != 1
            or conv.attr["data_format"].s not in (b"", b"NHWC")):
        return None
    filt = _constant(nodes, conv.input[1])
    if filt is None:
        return None
    return params, conv, filt


def _fold(graph_def: Any, bn: Any, params: list[Any], conv: Any, filt: Any) -> None:
    """Rewrites one BatchNorm: its scale goes into a copy of the convolution's filter, and
    it becomes a ``BiasAdd`` of the folded offset (in place)."""
    from tensorflow.python.framework import tensor_util

    scale, offset, mean, var = (
        tensor_util.MakeNdarray(p.attr["value"].tensor).astype(np.float64) for p in params)
    a = scale / np.sqrt(var + bn.attr["epsilon"].f)
    w = tensor_util.MakeNdarray(filt.attr["value"].tensor)
    # Conv2D: [kh, kw, in, out]; depthwise: [kh, kw, in, multiplier], out = in * mult.
    shape = (1, 1, 1, -1) if conv.op == "Conv2D" else (1, 1, *w.shape[2:])
    new_filter = graph_def.node.add()
    new_filter.CopyFrom(filt)
    new_filter.name = f"{conv.name}/folded_filter"
    new_filter.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(
        (w.astype(np.float64) * a.reshape(shape)).astype(w.dtype)))
    conv.input[1] = new_filter.name
    dtype = bn.attr["T"]
    bias = graph_def.node.add()
    bias.CopyFrom(params[1])
    bias.name = f"{bn.name}/folded_offset"
    bias.attr["dtype"].type = dtype.type
    bias.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(
        (offset - mean * a).astype(tf.as_dtype(dtype.type).as_numpy_dtype)))
    x = bn.input[0]
    bn.op = "BiasAdd"
    del bn.input[:]
    bn.input.extend([x, bias.name])
    for key in list(bn.attr.keys()):
        del bn.attr[key]
    bn.attr["T"].CopyFrom(dtype)
    bn.attr["data_format"].s = b"NHWC"


def _keep_reachable(graph_def: Any, outputs: list[str]) -> None:
    """Drop the nodes no output reads data from (in place), and the control edges to them.

    The frozen graph orders its former variable reads before the outputs by control edges
    (a ``NoOp``); with the reads now constants, those edges would keep every replaced
    constant alive, stored beside its folded copy.
    """
    nodes = {n.name: n for n in graph_def.node}
    keep, todo = set(), [_name(o) for o in outputs]
    while todo:
        name = todo.pop()
        if name not in keep:
            keep.add(name)
            todo.extend(_name(ref) for ref in nodes[name].input if not ref.startswith("^"))
    kept = [n for n in graph_def.node if n.name in keep or n.op == "Placeholder"]
    for n in kept:
        refs = [r for r in n.input if not r.startswith("^") or _name(r) in keep]
        del n.input[:]
        n.input.extend(refs)
    del graph_def.node[:]
    graph_def.node.extend(kept)


def with_constant_weights(fn: Any, fold: bool = True) -> Any:
    """A ``tf.function`` with an ``input_signature``, rebuilt with the variables it reads
    as constants (and, with ``fold``, BatchNorm folded into the convolutions); same inputs,
    outputs and keyword names. A snapshot: later changes to the variables do not reach it.
    In a SavedModel that also keeps its variables (for a refit signature) the weights are
    then stored twice."""
    from tensorflow.python.eager import wrap_function
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    concrete = fn.get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete)
    if fold:
        graph_def = frozen.graph.as_graph_def()
        outputs = [t.name for t in frozen.outputs]
        if fold_batch_norms(graph_def):
            _keep_reachable(graph_def, outputs)  # the replaced constants are not stored
            frozen = wrap_function.function_from_graph_def(
                graph_def, [t.name for t in frozen.inputs], outputs)
    args, kwargs = concrete.structured_input_signature
    specs = list(args) + [kwargs[k] for k in sorted(kwargs)]
    names = [s.name for s in specs]

    def call(*inputs: tf.Tensor) -> Any:
        return tf.nest.pack_sequence_as(concrete.structured_outputs, frozen(*inputs))

    # The keyword names a SavedModel signature takes are the Python parameter names.
    call.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names])
    return tf.function(call, input_signature=[tf.TensorSpec(s.shape, s.dtype, name=n)
                                              for s, n in zip(specs, names, strict=True)])
