"""Weights released in TF1 formats, read under TF1 names and layouts, copied by a name map.

Two readers give the same view, ``{TF1 variable name: (shape, read)}`` in TF1 layouts
(conv kernels ``[h, w, in, out]``, depthwise kernels ``[h, w, in, multiplier]``):

* :func:`tf1_checkpoint_entries`: a TF1 ``model.ckpt-*`` as the original trainers wrote it.
* :func:`keras_model_entries`: a Keras model (e.g. ``keras.applications.MobileNetV2`` with
  its ImageNet ``.h5`` loaded), its layers renamed to the original's scopes.
* :func:`tflite_entries`: a TFLite flatbuffer converted from such a graph, read with the
  LiteRT interpreter (``ai_edge_litert``, the maintained successor of the deprecated
  ``tf.lite.Interpreter``). Its kernels are ``[out, h, w, in]`` and its BatchNorm is folded
  into each conv's bias; the bias of scope ``S`` is offered both as ``S/biases`` and as a
  folded ``S/BatchNorm`` (gamma 1, beta = bias, mean 0, and a variance that makes the
  target BatchNorm divide by exactly 1, whatever its epsilon: :data:`FOLDED_VARIANCE`).

:func:`load_named_weights` copies them into a Keras model given ``{variable path: TF1
name}`` and reports what was loaded, skipped, missing and left unused.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tf_mtl.checkpoint import LoadReport

__all__ = [
    "FOLDED_VARIANCE",
    "WeightOp",
    "dequantize",
    "expected_scopes",
    "structural_entries",
    "tflite_weight_ops",
    "keras_model_entries",
    "load_named_weights",
    "tf1_checkpoint_entries",
    "tflite_entries",
]

Entry = tuple[tuple[int, ...], Callable[[], object]]


class Entries(dict):
    """``{TF1 name: (shape, read)}``; ``group[name]`` names the stored tensor an entry reads
    (several names may read one tensor: a TFLite bias is also a folded BatchNorm)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.group: dict[str, str] = {}

    def group_of(self, name: str) -> str:
        return self.group.get(name, name)


class _FoldedVariance:
    """Stands for ``1 - epsilon`` of the BatchNorm it is loaded into: folded weights carry
    their normalisation already, so that BatchNorm must divide by sqrt(var + eps) = 1."""

    def __repr__(self) -> str:
        return "FOLDED_VARIANCE"


FOLDED_VARIANCE = _FoldedVariance()
_BIAS_SUFFIXES = ("/Conv2D_bias", "/depthwise_bias", "/biases")


def tf1_checkpoint_entries(path: str | os.PathLike, flag: str = "--source") -> Entries:
    """Every variable of a TF1 checkpoint (prefix ``model.ckpt-N`` or its directory)."""
    path = os.fspath(path)
    prefix = tf.train.latest_checkpoint(path) if os.path.isdir(path) else path
    try:
        reader = tf.train.load_checkpoint(prefix)
        shapes = reader.get_variable_to_shape_map()
    except Exception as e:  # noqa: BLE001 - TF raises several types here
        raise ValueError(f"{flag}={path}: cannot read it as a TF1 checkpoint ({e})") from e
    return Entries({name: (tuple(shape), lambda n=name: np.asarray(reader.get_tensor(n)))
                    for name, shape in shapes.items() if name != "global_step"})


def _interpreter(path: str, flag: str = "--source") -> Any:
    """The LiteRT interpreter of ``path`` without default delegates (the graph as stored:
    XNNPACK would merge ops into delegate nodes), tensors allocated."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError as e:  # pragma: no cover - a pinned requirement
        raise ImportError("reading a TFLite model needs ai-edge-litert (pip install "
                          "ai-edge-litert)") from e
    try:
        interpreter = Interpreter(
            model_path=path,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise ValueError(f"{flag}={path}: cannot read it as a TFLite model ({e})") from e
    return interpreter


def dequantize(values: np.ndarray, quantization: Mapping[str, Any]) -> np.ndarray:
    """A stored tensor as float32: ``(q - zero_point) * scale`` per tensor or per axis
    (``quantized_dimension``), the TFLite rule for int8 / uint8 weights and int32 biases;
    float tensors unchanged."""
    values = np.asarray(values)
    scales = np.asarray(quantization.get("scales", ()), np.float32)
    if values.dtype.kind == "f" or scales.size == 0:
        return values.astype(np.float32)
    zero = np.asarray(quantization.get("zero_points", ()), np.float32)
    zero = np.zeros_like(scales) if zero.size == 0 else zero
    shape = [1] * values.ndim
    if scales.size > 1:
        shape[int(quantization.get("quantized_dimension", 0))] = -1
    return (values.astype(np.float32) - zero.reshape(shape)) * scales.reshape(shape)


def tflite_entries(path: str | os.PathLike, require_names: bool = True,
                   flag: str = "--source") -> Entries:
    """The constant tensors of a TFLite model, renamed and laid out as TF1 variables
    (by the tensor names the original's converter kept; stripped names: use
    :func:`tflite_weight_ops` and :func:`structural_entries`)."""
    path = os.fspath(path)
    interpreter = _interpreter(path, flag)
    entries = Entries()
    for detail in interpreter.get_tensor_details():
        name, index, shape = detail["name"], detail["index"], tuple(detail["shape"])

        def read(i: int = index, q: Mapping = detail["quantization_parameters"]) -> np.ndarray:
            return dequantize(np.array(interpreter.get_tensor(i)), q)

        if name.endswith("/depthwise_weights") and len(shape) == 4:  # [1, h, w, c]
            entries[name] = ((shape[1], shape[2], shape[3], shape[0]),
                             lambda r=read: np.transpose(r(), (1, 2, 3, 0)))
        elif name.endswith("/weights") and len(shape) == 4:  # [out, h, w, in]
            entries[name] = ((shape[1], shape[2], shape[3], shape[0]),
                             lambda r=read: np.transpose(r(), (1, 2, 3, 0)))
        elif name.endswith(_BIAS_SUFFIXES) and len(shape) == 1:
            scope = name.rsplit("/", 1)[0]
            n = shape[0]
            entries[f"{scope}/biases"] = (shape, read)
            entries[f"{scope}/BatchNorm/beta"] = (shape, read)
            entries[f"{scope}/BatchNorm/gamma"] = (shape, lambda n=n: np.ones([n], np.float32))
            entries[f"{scope}/BatchNorm/moving_mean"] = (
                shape, lambda n=n: np.zeros([n], np.float32))
            entries[f"{scope}/BatchNorm/moving_variance"] = (shape, lambda: FOLDED_VARIANCE)
            for alias in ("biases", "BatchNorm/beta", "BatchNorm/gamma", "BatchNorm/moving_mean",
                          "BatchNorm/moving_variance"):
                entries.group[f"{scope}/{alias}"] = name
    if not entries and require_names:
        raise ValueError(f"{flag}={path}: no named conv weights in this TFLite model")
    return entries


# ------------------------------------------------------- TFLite graphs read by structure
@dataclasses.dataclass
class WeightOp:
    """One convolution of a TFLite graph, weights dequantised, in TF1 layout.

    ``scale`` / ``offset``: a per-channel MUL / ADD the converter left after it (BatchNorm
    that could not be folded into an atrous convolution's SPACE_TO_BATCH_ND wrapper; a
    full-integer export leaves the ADD alone, ``scale`` is then 1).
    ``pooled``: its input is a global average (DeepLab's image pooling branch).
    """

    kind: str  # "conv" | "depthwise"
    kernel: np.ndarray
    bias: np.ndarray
    scale: np.ndarray | None = None
    offset: np.ndarray | None = None
    pooled: bool = False
    quantized: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.kernel.shape)


_PASS_THROUGH = ("RESHAPE", "QUANTIZE", "DEQUANTIZE", "SQUEEZE")
_GLOBAL_POOLS = ("MEAN", "AVERAGE_POOL_2D")


class _TfliteGraph:
    """A TFLite model's ops indexed by the tensors they produce and consume, so that the
    convolutions and what follows them can be found by structure."""

    def __init__(self, interpreter: Any):
        self.interpreter = interpreter
        self.details = {d["index"]: d for d in interpreter.get_tensor_details()}
        self.ops = interpreter._get_ops_details()  # noqa: SLF001 - LiteRT's only graph view
        self.producer = {int(t): op for op in self.ops for t in op["outputs"]}
        self.consumers: dict[int, list] = {}
        for op in self.ops:
            for t in op["inputs"]:
                self.consumers.setdefault(int(t), []).append(op)

    def constant(self, t: int) -> tuple[np.ndarray, bool] | None:
        """A constant's float value (through a DEQUANTIZE op) and whether it was quantised."""
        op = self.producer.get(t)
        if op is not None:
            if op["op_name"] != "DEQUANTIZE" or int(op["inputs"][0]) in self.producer:
                return None
            t = int(op["inputs"][0])
        raw = np.array(self.interpreter.get_tensor(t))
        return dequantize(raw, self.details[t]["quantization_parameters"]), raw.dtype.kind != "f"

    def source(self, t: int) -> Any:
        """The op that computes tensor t, looking through reshapes and (de)quantisation."""
        op = self.producer.get(t)
        while op is not None and op["op_name"] in _PASS_THROUGH:
            op = self.producer.get(int(op["inputs"][0]))
        return op

    def only_consumer(self, t: int, name: str) -> Any:
        """Tensor t's single consumer if it is a ``name`` op, else None."""
        users = self.consumers.get(t, [])
        return users[0] if len(users) == 1 and users[0]["op_name"] == name else None

    def per_channel(self, op: Any, channels: int) -> np.ndarray | None:
        """The op's constant input with one value per channel, if it has one."""
        for t in op["inputs"]:
            c = self.constant(int(t)) if int(t) >= 0 else None
            if c is not None and c[0].shape == (channels,):
                return c[0]
        return None


def tflite_weight_ops(path: str | os.PathLike, flag: str = "--source") -> list[WeightOp]:
    """Every CONV_2D / DEPTHWISE_CONV_2D of a TFLite model in graph order, its weights
    dequantised (float, dynamic-range int8 with per-tensor scales, or full-integer int8 /
    uint8 with zero points, per-axis scales and int32 biases), read by the graph's structure
    alone: exports with stripped tensor names import through :func:`structural_entries`."""
    path = os.fspath(path)
    graph = _TfliteGraph(_interpreter(path, flag))
    found = []
    for op in graph.ops:
        if op["op_name"] not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        item = _weight_op(graph, op)
        if item is not None:
            found.append(item)
    if not found:
        raise ValueError(f"{flag}={path}: no convolution with constant weights in this "
                         "TFLite model")
    return found


def _weight_op(graph: _TfliteGraph, op: Any) -> WeightOp | None:
    """One convolution's WeightOp; None where its kernel is not a constant."""
    ins = [int(t) for t in op["inputs"]]
    kernel = graph.constant(ins[1])
    if kernel is None:
        return None
    kernel, quantized = kernel
    bias = graph.constant(ins[2]) if len(ins) > 2 and ins[2] >= 0 else None
    channels = kernel.shape[0] if op["op_name"] == "CONV_2D" else kernel.shape[-1]
    bias = np.zeros([channels], np.float32) if bias is None else bias[0]
    # [out, h, w, in] (conv) / [1, h, w, channels] (depthwise) -> TF1 [h, w, in, out|1]
    item = WeightOp("conv" if op["op_name"] == "CONV_2D" else "depthwise",
                    np.transpose(kernel, (1, 2, 3, 0)), bias, quantized=quantized)
    src = graph.source(ins[0])
    item.pooled = src is not None and src["op_name"] in _GLOBAL_POOLS
    _attach_batch_norm(graph, op, item, channels)
    return item


def _attach_batch_norm(graph: _TfliteGraph, op: Any, item: WeightOp, channels: int) -> None:
    """Sets ``item.scale`` / ``item.offset`` from the per-channel MUL / ADD the converter
    left after the convolution (a BatchNorm it could not fold), if there is one."""
    out = int(op["outputs"][0])
    follow = graph.only_consumer(out, "BATCH_TO_SPACE_ND")
    out = int(follow["outputs"][0]) if follow is not None else out
    mul = graph.only_consumer(out, "MUL")
    scale = graph.per_channel(mul, channels) if mul is not None else None
    if scale is not None:
        add = graph.only_consumer(int(mul["outputs"][0]), "ADD")
        offset = graph.per_channel(add, channels) if add is not None else None
        if offset is not None:
            item.scale, item.offset = scale, offset
    elif follow is not None:
        # A full-integer export folds the BatchNorm scale into the atrous kernel and
        # leaves its offset as an ADD after BATCH_TO_SPACE_ND (the conv's own bias is 0).
        add = graph.only_consumer(out, "ADD")
        offset = graph.per_channel(add, channels) if add is not None else None
        if offset is not None:
            item.scale, item.offset = np.ones([channels], np.float32), offset


def structural_entries(ops: Sequence[WeightOp],
                       expected: Sequence[tuple[str, str, tuple[int, ...], bool]]) -> Entries:
    """Name a TFLite graph's convolutions by matching them to the scopes a network expects.

    ``expected``: ``(TF1 scope, kind, kernel shape, pooled)`` in the network's graph order.
    Each takes the first unmatched op of the same kind, shape and pooling: both lists are
    in graph order, so runs of identical blocks pair up in order, and a parallel branch of
    the same shape (DeepLab's image pooling beside aspp0) is told apart by its pooled
    input. The entries are those a TFLite export with names gives (folded BatchNorm: the
    bias, or ``scale`` / ``offset``, as gamma and beta of a BatchNorm dividing by one).
    """
    entries = Entries()
    taken: set[int] = set()
    for scope, kind, shape, pooled in expected:
        index = next((i for i, op in enumerate(ops) if i not in taken and op.kind == kind
                      and op.shape == tuple(shape) and op.pooled == pooled), None)
        if index is None:
            continue
        taken.add(index)
        op = ops[index]
        leaf = "depthwise_weights" if kind == "depthwise" else "weights"
        entries[f"{scope}/{leaf}"] = (op.shape, lambda k=op.kernel: k)
        gamma = np.ones_like(op.bias) if op.scale is None else op.scale
        beta = op.bias if op.scale is None else op.bias * op.scale + op.offset
        n = op.bias.shape
        for alias, value in (("biases", op.bias), ("BatchNorm/beta", beta),
                             ("BatchNorm/gamma", gamma),
                             ("BatchNorm/moving_mean", np.zeros_like(op.bias))):
            entries[f"{scope}/{alias}"] = (n, lambda v=value: v)
            entries.group[f"{scope}/{alias}"] = f"{scope}/{leaf}"
        entries[f"{scope}/BatchNorm/moving_variance"] = (n, lambda: FOLDED_VARIANCE)
        entries.group[f"{scope}/BatchNorm/moving_variance"] = f"{scope}/{leaf}"
        entries.group[f"{scope}/{leaf}"] = f"{scope}/{leaf}"
    for i in sorted(set(range(len(ops))) - taken):
        entries[f"<unmatched op {i}: {ops[i].kind} {ops[i].shape}>"] = (ops[i].shape,
                                                                         lambda: None)
    return entries


def expected_scopes(model: keras.Model, names: Mapping[str, str | None],
                    pooled_scopes: Sequence[str] = ()) -> list[tuple[str, str, tuple, bool]]:
    """``(TF1 scope, kind, kernel shape, pooled)`` of every convolution of ``model`` that
    ``names`` maps to the original, in the model's order (what :func:`structural_entries`
    matches a stripped graph against)."""
    out = []
    for var in model.weights:
        name = names.get(var.path)
        if not name:
            continue
        scope, _, leaf = name.rpartition("/")
        if leaf in ("weights", "depthwise_weights") and len(var.shape) == 4:
            out.append((scope, "depthwise" if leaf == "depthwise_weights" else "conv",
                        tuple(var.shape), scope in pooled_scopes))
    return out


def keras_model_entries(model: keras.Model, scope_of: Callable[[str], str | None]) -> Entries:
    """The weights of a Keras model under TF1 names: ``scope_of(layer name)`` gives the
    original's scope (``.../BatchNorm`` for a BatchNorm layer); layers it has no scope for
    keep their own name (they show as unused)."""
    leaf = {keras.layers.DepthwiseConv2D: {"kernel": "depthwise_weights"},
            keras.layers.Conv2D: {"kernel": "weights", "bias": "biases"}}
    entries = Entries()
    for layer in model._flatten_layers(include_self=False, recursive=True):  # noqa: SLF001
        if not layer.weights:
            continue
        scope = scope_of(layer.name) or layer.name
        names = next((v for k, v in leaf.items() if isinstance(layer, k)), {})
        for w in layer.weights:
            short = w.path.rsplit("/", 1)[-1]
            entries[f"{scope}/{names.get(short, short)}"] = (
                tuple(w.shape), lambda w=w: np.asarray(w.numpy()))
    return entries


def _owners(model: keras.Model) -> dict[int, keras.layers.Layer]:
    owners = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):  # noqa: SLF001
        for v in layer._trainable_variables + layer._non_trainable_variables:  # noqa: SLF001
            owners[id(v)] = layer
    return owners


def load_named_weights(model: keras.Model, entries: Entries,
                       names: Mapping[str, str | None], *, source: str, fmt: str,
                       skip: Callable[[str], str | None] = lambda path: None) -> LoadReport:
    """Copy ``entries`` into ``model``: variable ``v`` gets ``entries[names[v.path]]``.

    ``names[path] = None`` marks a variable the source cannot have (a head the original
    lacks): reported missing with that reason. ``skip(path)`` returns a reason to leave a
    variable as it is. A shape mismatch is skipped, not fatal; a source entry is unused
    when no variable read it (a TFLite bias counts as used under any of its names).
    """
    report = LoadReport(path=source, format=fmt)
    owners = _owners(model)
    used: set[str] = set()
    for var in model.weights:
        name = names.get(var.path)
        reason = skip(var.path)
        if reason:
            report.skipped[var.path] = reason
            if name:
                used.add(entries.group_of(name))
            continue
        if name is None or name not in entries:
            report.missing.append(var.path if name is None else f"{var.path} ({name})")
            continue
        used.add(entries.group_of(name))
        shape, read = entries[name]
        if tuple(shape) != tuple(var.shape):
            report.skipped[var.path] = f"shape {tuple(shape)} in {name} != {tuple(var.shape)}"
            continue
        value = read()
        if value is FOLDED_VARIANCE:
            value = np.full(var.shape, 1.0 - owners[id(var)].epsilon, np.float32)
        var.assign(np.asarray(value).astype(var.dtype))
        report.loaded.append(var.path)
        report._num_values += int(np.prod(var.shape))
    report.unused = sorted({entries.group_of(n) for n in entries} - used)
    return report
