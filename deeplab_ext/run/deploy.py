"""Deployment formats beside the SavedModel: LiteRT (``model.tflite``) and ONNX
(``model.onnx``), written by ``tools.export_model --format=...`` into the export
directory, and the client that runs them (``tools.predict --model=FILE``).

Both files hold a *serving network*: raw RGB ``images`` in 0..255 at a fixed size in,
``semantic_probabilities`` (softmax), ``semantic_predictions`` (argmax) and, when the
family has them, ``tag_probabilities`` (sigmoid) and its other outputs (the scene
network's ``instance`` and ``depth``) out. The size is fixed (``--export_input_size``,
default the training crop, which is on the network's stride grid): LiteRT interpreters
allocate tensors for one shape, and the released DeepLab TFLite files are fixed-size too;
the client resizes each image to it and the probabilities back. The SavedModel in the same
directory takes any size. Files are produced by Keras 3's own exporters
(``keras.Model.export(format="litert" | "onnx")``; ONNX through ``tf2onnx``) and read with
``ai-edge-litert`` and ``onnxruntime``.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence
from typing import Any

import cv2
import keras
import numpy as np

from deeplab_ext.data.datasets import info_from_dict
from deeplab_ext.models.registry import family_of

__all__ = ["FILE_FORMATS", "FileSegmenter", "serving_network", "write_model_files"]

# Format -> the file it writes in the export directory.
FILE_FORMATS = {"litert": "model.tflite", "onnx": "model.onnx"}


class ArgMax(keras.layers.Layer):
    """int32 argmax over the last axis with TensorFlow's own op: ``keras.ops.argmax``
    adds Bitcast / BitwiseAnd ops (its handling of -0.0) that ONNX cannot express."""

    def call(self, x):
        import tensorflow as tf

        return tf.argmax(x, axis=-1, output_type=tf.int32)


def serving_network(network: keras.Model, size: Sequence[int]) -> keras.Model:
    """The deployed function as a Keras model at a fixed ``size`` (h, w)."""
    family = family_of(network)
    images = keras.Input((int(size[0]), int(size[1]), 3), batch_size=1, name="images",
                         dtype="float32")
    raw = network(images, training=False)
    probs = keras.ops.softmax(keras.ops.cast(raw[family.semantic_output], "float32"), axis=-1)
    out = {"semantic_probabilities": probs,
           "semantic_predictions": ArgMax(name="semantic_predictions")(probs)}
    for key, value in raw.items():
        if key == family.semantic_output:
            continue
        value = keras.ops.cast(value, "float32")
        out["tag_probabilities" if key == family.tags_output else key] = (
            keras.ops.sigmoid(value) if key == family.tags_output else value)
    return keras.Model(images, out, name="serving")


def write_model_files(network: keras.Model, directory: pathlib.Path, formats: Sequence[str],
                      size: Sequence[int]) -> dict[str, str]:
    """Write each of ``formats`` (``FILE_FORMATS``) into ``directory``; ``{format: file}``."""
    unknown = sorted(set(formats) - set(FILE_FORMATS))
    if unknown:
        raise ValueError(f"--format: unknown {unknown}; known: saved_model, "
                         f"{', '.join(FILE_FORMATS)}")
    if not formats:
        return {}
    model = serving_network(network, size)
    written = {}
    for fmt in formats:
        path = directory / FILE_FORMATS[fmt]
        if fmt == "onnx":
            try:
                import tf2onnx  # noqa: F401
            except ImportError as e:
                raise ValueError("--format=onnx needs the onnx and tf2onnx packages "
                                 "(pip install onnx tf2onnx)") from e
        model.export(str(path), format=fmt, verbose=False)
        written[fmt] = path.name
    return written


class FileSegmenter:
    """A LiteRT (``.tflite``) or ONNX (``.onnx``) file of ``tools.export_model``, with the
    classes recorded beside it (``assets/deeplab_export.json`` of its directory)."""

    def __init__(self, path: str | pathlib.Path) -> None:
        from deeplab_ext.run.export import METADATA_FILE

        self.path = pathlib.Path(path)
        if not self.path.is_file():
            raise ValueError(f"--model={path}: no such file (a model.tflite or model.onnx "
                             "written by tools.export_model --format=litert,onnx)")
        marker = self.path.parent / "assets" / METADATA_FILE
        if not marker.is_file():
            raise ValueError(f"--model={path}: {marker} is missing; the file must sit in the "
                             "export directory tools.export_model wrote")
        self.meta = json.loads(marker.read_text())
        self.info = info_from_dict(self.meta["dataset"])
        self.input_range = dict(self.meta.get("input_range") or {})
        suffix = self.path.suffix.lower()
        try:
            if suffix == ".tflite":
                self._load_litert()
            elif suffix == ".onnx":
                self._load_onnx()
            else:
                raise ValueError("not a .tflite or .onnx file")
        except Exception as e:  # noqa: BLE001 - each runtime raises its own types
            why = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise ValueError(f"--model={path}: cannot load it as a {suffix or '?'} model "
                             f"({why}); it is corrupt or truncated, or not a model file. "
                             "Export it again with tools.export_model --format=...") from None

    def _load_litert(self) -> None:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(str(self.path))
        interpreter.allocate_tensors()
        (inp,) = interpreter.get_input_details()
        self.size = tuple(int(d) for d in inp["shape"][1:3])
        outputs = interpreter.get_signature_runner().get_output_details()
        runner = interpreter.get_signature_runner()
        self.output_names = sorted(outputs)
        (input_name,) = runner.get_input_details()

        def run(image: np.ndarray) -> dict[str, np.ndarray]:
            return runner(**{input_name: image})

        self._run = run

    def _load_onnx(self) -> None:
        import onnxruntime as ort

        session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        (inp,) = session.get_inputs()
        self.size = tuple(int(d) for d in inp.shape[1:3])
        self.output_names = sorted(o.name for o in session.get_outputs())

        def run(image: np.ndarray) -> dict[str, np.ndarray]:
            values = session.run(None, {inp.name: image})
            return dict(zip([o.name for o in session.get_outputs()], values, strict=True))

        self._run = run

    def predict(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """One RGB image ``[H, W, 3]`` (0..255): resized to the file's input size, run, and
        the probabilities resized back (bilinear); ``{output: [1, ...]}``."""
        image = np.asarray(image, np.float32)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"image: expected [H, W, 3], got {list(image.shape)}")
        h, w = image.shape[:2]
        x = cv2.resize(image, (self.size[1], self.size[0]), interpolation=cv2.INTER_LINEAR)
        out = self._run(x[None])
        probs = out["semantic_probabilities"][0]
        if (h, w) != self.size:
            probs = cv2.resize(probs, (w, h), interpolation=cv2.INTER_LINEAR)
            if probs.ndim == 2:  # one class: cv2 drops the channel axis
                probs = probs[..., None]
        result = {"semantic_probabilities": probs[None].astype(np.float32)}
        if "tag_probabilities" in out:
            result["tag_probabilities"] = np.asarray(out["tag_probabilities"], np.float32)
        return result

    def describe(self) -> dict[str, Any]:
        return {"model": str(self.path), "input_size": list(self.size),
                "outputs": self.output_names}
