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

import os
from collections.abc import Callable, Mapping

import keras
import numpy as np
import tensorflow as tf

from tf_mtl.checkpoint import LoadReport

__all__ = [
    "FOLDED_VARIANCE",
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


def tf1_checkpoint_entries(path: str | os.PathLike) -> Entries:
    """Every variable of a TF1 checkpoint (prefix ``model.ckpt-N`` or its directory)."""
    path = os.fspath(path)
    prefix = tf.train.latest_checkpoint(path) if os.path.isdir(path) else path
    try:
        reader = tf.train.load_checkpoint(prefix)
        shapes = reader.get_variable_to_shape_map()
    except Exception as e:  # noqa: BLE001 - TF raises several types here
        raise ValueError(f"--source={path}: cannot read it as a TF1 checkpoint ({e})") from e
    return Entries({name: (tuple(shape), lambda n=name: np.asarray(reader.get_tensor(n)))
                    for name, shape in shapes.items() if name != "global_step"})


def tflite_entries(path: str | os.PathLike) -> Entries:
    """The constant tensors of a TFLite model, renamed and laid out as TF1 variables."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as e:  # pragma: no cover - a pinned requirement
        raise ImportError("reading a TFLite model needs ai-edge-litert (pip install "
                          "ai-edge-litert)") from e
    path = os.fspath(path)
    try:
        interpreter = Interpreter(model_path=path)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise ValueError(f"--source={path}: cannot read it as a TFLite model ({e})") from e
    entries = Entries()
    for detail in interpreter.get_tensor_details():
        name, index, shape = detail["name"], detail["index"], tuple(detail["shape"])

        def read(i: int = index) -> np.ndarray:
            return np.array(interpreter.get_tensor(i))

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
    if not entries:
        raise ValueError(f"--source={path}: no named conv weights in this TFLite model")
    return entries


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
