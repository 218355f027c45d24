"""Initialise a model from a local checkpoint, with a loaded/skipped/missing/unused report.

The Keras counterpart of the original's ``--tf_initial_checkpoint`` +
``--initialize_last_layer`` logic: weights are matched by name and shape, so a
21-class VOC checkpoint initialises a 12-class model (the logits are reported as
skipped, everything else is loaded).

Supported files (all local, nothing is downloaded):

* ``*.weights.h5`` (``model.save_weights``) and ``*.keras`` (``model.save``): matched by
  the layer-name path stored in the file (``aspp/aspp0/conv`` + the variable's index in
  its layer), which is the variable's ``.path`` without the variable name.
* TF checkpoints (``tf.train.Checkpoint(model=model).write/save``; pass the prefix, e.g.
  ``ckpt-3``, or a directory holding a ``checkpoint`` file): matched by the object-graph
  key (``model/_operations/12/bn/gamma``); the root object name may differ (a checkpoint
  of a wrapper that holds the network as an attribute also works).
"""

from __future__ import annotations

import dataclasses
import io
import os
import zipfile
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

__all__ = ["LoadReport", "load_initial_checkpoint", "checkpoint_format"]

FLAG = "--tf_initial_checkpoint"
_VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


@dataclasses.dataclass
class LoadReport:
    """What ``load_initial_checkpoint`` did, by target variable path (``var.path``)."""

    path: str
    format: str
    loaded: list[str] = dataclasses.field(default_factory=list)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)  # var path -> reason
    missing: list[str] = dataclasses.field(default_factory=list)
    unused: list[str] = dataclasses.field(default_factory=list)  # checkpoint keys

    @property
    def num_loaded_values(self) -> int:
        return self._num_values

    _num_values: int = 0

    def summary(self, max_items: int = 10) -> str:
        """Readable multi-line summary (counts and the first few names of each kind)."""
        lines = [
            f"checkpoint {self.path} ({self.format}): loaded {len(self.loaded)} variables "
            f"({self._num_values:,} values), skipped {len(self.skipped)}, "
            f"missing {len(self.missing)}, unused {len(self.unused)}"
        ]

        def _block(title: str, items: Sequence[str]) -> None:
            if not items:
                return
            lines.append(f"  {title}:")
            for item in items[:max_items]:
                lines.append(f"    {item}")
            if len(items) > max_items:
                lines.append(f"    ... and {len(items) - max_items} more")

        _block("skipped", [f"{k}: {v}" for k, v in self.skipped.items()])
        _block("missing (kept their initial values)", self.missing)
        _block("unused checkpoint entries", self.unused)
        return "\n".join(lines)


# ----------------------------------------------------------------------------- sources


def _resolve_tf_prefix(path: str) -> str | None:
    if os.path.isdir(path):
        return tf.train.latest_checkpoint(path)
    if os.path.exists(path + ".index"):
        return path
    if path.endswith(".index") and os.path.exists(path):
        return path[: -len(".index")]
    return None


def checkpoint_format(path: str, flag: str = FLAG) -> str:
    """``weights.h5``, ``keras`` or ``tf_checkpoint``; clear error when nothing is there."""
    path = os.fspath(path)
    if path.endswith(".keras") and os.path.isfile(path):
        return "keras"
    if path.endswith((".h5", ".hdf5")) and os.path.isfile(path):
        return "weights.h5"
    if _resolve_tf_prefix(path) is not None:
        return "tf_checkpoint"
    raise FileNotFoundError(
        f"{flag}={path}: no such checkpoint. Give an existing *.weights.h5 or *.keras file, "
        "a TF checkpoint prefix (the part before .index, e.g. ckpt-3), or a directory "
        "containing a 'checkpoint' file."
    )


def _h5_entries(h5file) -> dict[str, tuple[tuple[int, ...], Callable[[], np.ndarray]]]:
    """Keras-3 weights file -> {layer-name path/index: (shape, reader)}.

    Keras stores each layer's variables under ``<attr path>/vars/<i>`` and the layer's
    name in that ``vars`` group's ``name`` attribute; the name chain of the enclosing
    groups gives the same path as ``Variable.path`` (minus the variable name).
    """
    entries = {}

    def names_of(group_path: str) -> list[str]:
        names, parts = [], group_path.split("/")
        for i in range(1, len(parts) + 1):
            g = h5file["/".join(parts[:i])]
            if isinstance(g, type(h5file)) or "vars" not in g:
                continue
            name = g["vars"].attrs.get("name")
            if name is not None:
                names.append(name.decode() if isinstance(name, bytes) else str(name))
        return names

    def visit(name: str, obj) -> None:
        parts = name.split("/")
        if len(parts) < 3 or parts[-2] != "vars" or not hasattr(obj, "shape"):
            return
        layer_path = "/".join(parts[:-2])
        chain = names_of(layer_path)
        key = "/".join([*chain, parts[-1]]) if chain else name
        entries[key] = (tuple(obj.shape), lambda o=obj: np.asarray(o[()]))

    h5file.visititems(visit)
    return entries


def _read_h5_source(path: str, fmt: str, flag: str = FLAG):
    import h5py

    try:
        if fmt == "keras":
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                if "model.weights.h5" not in names:
                    raise ValueError(f"no model.weights.h5 inside (entries: {names[:10]})")
                data = zf.read("model.weights.h5")
            h5 = h5py.File(io.BytesIO(data), "r")
        else:
            h5 = h5py.File(path, "r")
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"{flag}={path}: cannot read it as a Keras {fmt} file ({e})") from e
    return h5, _h5_entries(h5)


def _read_tf_source(path: str, flag: str = FLAG):
    prefix = _resolve_tf_prefix(path)
    try:
        reader = tf.train.load_checkpoint(prefix)
        shapes = reader.get_variable_to_shape_map()
    except Exception as e:  # noqa: BLE001 - TF raises several types here
        raise ValueError(f"{flag}={path}: cannot read the TF checkpoint ({e})") from e
    entries, stored = {}, {}
    for path_key, key in _object_paths(reader, shapes).items():
        entries[path_key] = (tuple(shapes[key]), lambda k=key: np.asarray(reader.get_tensor(k)))
        stored[path_key] = key[: -len(_VALUE_SUFFIX)]
    return entries, stored


def _object_paths(reader: Any, shapes: Mapping[str, Any]) -> dict[str, str]:
    """{object path: stored key} for every variable of a TF object-graph checkpoint, under
    *every* path that reaches it.

    Why: TF stores each variable once, under the first path its saver met. In a training
    checkpoint that is the optimizer's list (``optimizer/_trainable_variables/7``), not the
    network's ``network/_operations/12/conv/kernel``: reading stored keys alone finds only
    the BatchNorm statistics under ``network/`` (the optimizer does not track them), so a
    fine-tune from a run directory kept every kernel at its initial value. The object graph
    (``_CHECKPOINTABLE_OBJECT_GRAPH``) names every edge, so every alias is recovered.
    """
    keys = {k[: -len(_VALUE_SUFFIX)]: k for k in shapes if k.endswith(_VALUE_SUFFIX)}
    if "_CHECKPOINTABLE_OBJECT_GRAPH" not in shapes:
        return keys
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    value = {i: a.checkpoint_key for i, node in enumerate(graph.nodes)
             for a in node.attributes if a.name == "VARIABLE_VALUE"}
    paths = dict(keys)
    queue, expanded = deque([(0, "")]), {0}
    while queue:
        node, path = queue.popleft()
        for child in graph.nodes[node].children:
            name = _escape(child.local_name)
            child_path = f"{path}/{name}" if path else name
            if child.node_id in value:
                paths.setdefault(child_path, value[child.node_id])
            if child.node_id not in expanded:
                expanded.add(child.node_id)
                queue.append((child.node_id, child_path))
    return {p: k for p, k in paths.items() if k in shapes}


# ----------------------------------------------------------------------------- targets


def _h5_targets(model: keras.Model) -> dict[str, keras.Variable]:
    """{layer-name path/index: variable}, the same keys ``_h5_entries`` builds."""
    targets = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):  # noqa: SLF001
        own = list(layer._trainable_variables) + list(layer._non_trainable_variables)  # noqa: SLF001
        for i, v in enumerate(own):
            targets[f"{v.path.rsplit('/', 1)[0]}/{i}"] = v
    return targets


def _escape(name: str) -> str:
    return name.replace(".", ".S").replace("/", "..")


def _tf_targets(model: keras.Model) -> dict[str, keras.Variable]:
    """{object-graph path below the model: variable}, breadth first like TF's saver."""
    targets: dict[str, keras.Variable] = {}
    queue = deque([("", model)])
    seen = {id(model)}
    while queue:
        path, obj = queue.popleft()
        if isinstance(obj, keras.Variable):
            targets[path] = obj
            continue
        for name, child in obj._trackable_children(save_type="checkpoint").items():  # noqa: SLF001
            if id(child) in seen:
                continue
            seen.add(id(child))
            queue.append((f"{path}/{_escape(name)}" if path else _escape(name), child))
    return targets


def _align(source_keys: Iterable[str], target_keys: set[str]) -> str:
    """The prefix p (ending in '/' or '') maximising #{source p+k : k in targets}."""
    votes: Counter[str] = Counter()
    for key in source_keys:
        if key in target_keys:
            votes[""] += 1
        idx = key.find("/")
        while idx != -1:
            if key[idx + 1 :] in target_keys:
                votes[key[: idx + 1]] += 1
            idx = key.find("/", idx + 1)
    if not votes:
        return ""
    best = max(votes.values())
    return min((p for p, n in votes.items() if n == best), key=len)


def _is_last_layer(var_path: str, last_layers: Sequence[str]) -> bool:
    top = var_path.split("/", 1)[0]
    return any(top == name or var_path.startswith(name.rstrip("/") + "/") for name in last_layers)


def load_initial_checkpoint(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    initialize_last_layer: bool = True,
    last_layers: Sequence[str] = ("logits",),
    flag: str = FLAG,
) -> LoadReport:
    """Copy matching weights (same name, same shape) from a local checkpoint into ``model``.

    ``initialize_last_layer=False`` leaves the layers named in ``last_layers`` (top-level
    layer names, e.g. ``logits``, ``tag_head``) at their initial values, like the
    original's ``--initialize_last_layer=false``. Shape mismatches are skipped, not fatal.
    """
    path = os.fspath(path)
    fmt = checkpoint_format(path, flag)
    h5 = None
    if fmt == "tf_checkpoint":
        source, stored = _read_tf_source(path, flag)  # several paths may name one stored value
        targets = _tf_targets(model)
    else:
        h5, source = _read_h5_source(path, fmt, flag)
        stored = {k: k for k in source}
        targets = _h5_targets(model)
    try:
        prefix = _align(source, set(targets))
        report = LoadReport(path=path, format=fmt)
        used = set()
        for key, var in targets.items():
            name = var.path
            src_key = prefix + key
            if not initialize_last_layer and _is_last_layer(name, last_layers):
                report.skipped[name] = "last layer (initialize_last_layer=False)"
                if src_key in source:
                    used.add(src_key)
                continue
            if src_key not in source:
                report.missing.append(name)
                continue
            used.add(src_key)
            shape, read = source[src_key]
            if tuple(shape) != tuple(var.shape):
                report.skipped[name] = f"shape {tuple(shape)} in checkpoint != {tuple(var.shape)}"
                continue
            var.assign(read().astype(var.dtype))
            report.loaded.append(name)
            report._num_values += int(np.prod(var.shape))
        read = {stored[k] for k in used}
        report.unused = sorted({stored[k] for k in source} - read)
    finally:
        if h5 is not None:
            h5.close()
    if not report.loaded:
        raise ValueError(
            f"{flag}={path}: no variable of model {model.name!r} matched the checkpoint "
            f"(missing {len(report.missing)}, unused {len(report.unused)}); is it a "
            "checkpoint of a DeepLab model with the same backbone?"
        )
    return report
