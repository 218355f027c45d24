"""Deployment formats beside the SavedModel: LiteRT (``model.tflite``) and ONNX
(``model.onnx``), written by ``tools.export_model --format=...`` into the export
directory, and the client that runs them (``tools.predict --model=FILE``).

Both files hold a *serving network*: raw RGB ``images`` in 0..255 at a fixed size in,
``semantic_probabilities`` (softmax), ``semantic_predictions`` (argmax) and, when the
family has them, ``tag_probabilities`` (sigmoid) and its other outputs (the scene
network's ``instance`` and ``depth``) out. The size is fixed (``--export_input_size``,
default the training crop, which is on the network's stride grid): LiteRT interpreters
allocate tensors for one shape, and the released DeepLab TFLite files are fixed-size too;
the client letterboxes each image into it (aspect ratio kept, mean-pixel padding, as the
original's demo feeds its 513 model) and resizes the probabilities back. The SavedModel in the same
directory takes any size. Files are produced by Keras 3's own exporters
(``keras.Model.export(format="litert" | "onnx")``; ONNX through ``tf2onnx``) and read with
``ai-edge-litert`` and ``onnxruntime``.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import cv2
import keras
import numpy as np

from deeplab_ext.data.datasets import info_from_dict
from deeplab_ext.data.preprocess import MEAN_PIXEL_INCEPTION
from deeplab_ext.models.registry import family_of

__all__ = ["FILE_FORMATS", "QUANTIZE", "FileSegmenter", "calibration_images", "check_file",
           "litert_quantization", "open_runtime", "serving_network", "write_model_files"]

# Format -> the file it writes in the export directory.
FILE_FORMATS = {"litert": "model.tflite", "onnx": "model.onnx"}
MEAN_PIXEL = np.asarray(MEAN_PIXEL_INCEPTION, np.float32)  # what DeepLab pads images with
QUANTIZE = ("none", "dynamic_range", "float16", "int8")


def litert_quantization(mode: str, calibration: Callable[[], Iterable[np.ndarray]] | None
                        ) -> dict[str, Any]:
    """The LiteRT converter's settings for ``--quantize`` (Keras passes them through):
    ``dynamic_range`` int8 weights; ``float16`` float16 weights; ``int8`` int8 weights and
    activations, the activation ranges calibrated on ``calibration()``'s images (float
    input and outputs stay, so clients are unchanged)."""
    import tensorflow as tf

    if mode not in QUANTIZE:
        raise ValueError(f"--quantize={mode}: choose one of {', '.join(QUANTIZE)}")
    if mode == "none":
        return {}
    settings: dict[str, Any] = {"optimizations": [tf.lite.Optimize.DEFAULT]}
    if mode == "float16":
        settings["target_spec"] = {"supported_types": [tf.float16]}
    elif mode == "int8":
        if calibration is None:
            raise ValueError("--quantize=int8 needs images to calibrate on: give "
                             "--calibration_dataset_dir (and --calibration_split)")

        def representative() -> Iterable[list[np.ndarray]]:
            for image in calibration():
                yield [image[None].astype(np.float32)]

        settings["representative_dataset"] = representative
    return settings


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
                      size: Sequence[int], litert_settings: dict | None = None
                      ) -> dict[str, str]:
    """Write each of ``formats`` (``FILE_FORMATS``) into ``directory``; ``{format: file}``.
    ``litert_settings``: the converter's quantisation (:func:`litert_quantization`)."""
    unknown = sorted(set(formats) - set(FILE_FORMATS))
    if unknown:
        raise ValueError(f"--format: unknown {unknown}; known: saved_model, "
                         f"{', '.join(FILE_FORMATS)}")
    if not formats:
        return {}
    model = serving_network(network, size)
    # Keras' ONNX exporter refuses a model that was never called (the LiteRT one calls it
    # itself): one call on the fixed-size input, so each format works alone, in any order.
    model(np.zeros((1, int(size[0]), int(size[1]), 3), np.float32), training=False)
    written = {}
    for fmt in formats:
        path = directory / FILE_FORMATS[fmt]
        if fmt == "onnx":
            try:
                import tf2onnx  # noqa: F401
            except ImportError as e:
                raise ValueError("--format=onnx needs the onnx and tf2onnx packages "
                                 "(pip install onnx tf2onnx)") from e
        extra = dict(litert_settings or {}) if fmt == "litert" else {}
        model.export(str(path), format=fmt, verbose=False, **extra)
        check_file(path, model, extra)
        written[fmt] = path.name
    return written


# A written file must compute the model: its probabilities on a probe image within this of
# the Keras model's (float files), or the same class on this share of pixels (quantised).
FILE_ATOL, QUANTISED_AGREEMENT = 1e-3, 0.9


def check_file(path: pathlib.Path, model: keras.Model, litert_settings: dict) -> None:
    """Refuse a file its converter wrote wrong: one that its runtime cannot load (an op the
    format lacks), that computes something else than ``model``, or that is not quantised
    as ``litert_settings`` asked. The file is removed; the error says why."""
    size = tuple(int(d) for d in model.inputs[0].shape[1:3])
    probe = np.random.default_rng(0).uniform(0, 255, (1, *size, 3)).astype(np.float32)
    want = np.asarray(model(probe, training=False)["semantic_probabilities"])
    flag = f"--format={'litert' if path.suffix == '.tflite' else 'onnx'}"
    try:
        run, _, dtypes = open_runtime(path)
        got = np.asarray(run(probe)["semantic_probabilities"])
    except Exception as e:  # noqa: BLE001 - each runtime raises its own types
        path.unlink(missing_ok=True)
        why = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ValueError(f"{flag}: the converter wrote {path.name}, but its runtime cannot run "
                         f"it ({why}); nothing was exported. The network has an op the "
                         "format lacks: export --format=saved_model, or report it") from None
    quantised = bool(litert_settings.get("optimizations"))
    if quantised:
        asked = ("int8" if "representative_dataset" in litert_settings else "float16"
                 if litert_settings.get("target_spec") else "int8")
        if not any(d == asked for d in dtypes):
            path.unlink(missing_ok=True)
            raise ValueError(f"--quantize: the converter wrote a file with no {asked} tensor "
                             f"(a float file) for {path.name}; nothing was exported. Try "
                             "another --quantize, or more --calibration_examples")
        agree = float(np.mean(got.argmax(-1) == want.argmax(-1)))
        ok, detail = agree >= QUANTISED_AGREEMENT, f"{100 * agree:.1f}% of the pixels agree"
    else:
        diff = float(np.max(np.abs(got - want)))
        ok, detail = diff <= FILE_ATOL, f"probabilities differ by up to {diff:.2g}"
    if not ok:
        path.unlink(missing_ok=True)
        raise ValueError(f"{flag}: {path.name} does not compute the network ({detail} on a "
                         "probe image); nothing was exported")


def open_runtime(path: pathlib.Path) -> tuple[Callable[[np.ndarray], dict], tuple[int, int],
                                               list[str]]:
    """A LiteRT or ONNX file in its runtime: (run(images [1, h, w, 3]) -> {output: array},
    its input size (h, w), the dtypes of its tensors)."""
    suffix = path.suffix.lower()
    if suffix == ".tflite":
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(str(path))
        interpreter.allocate_tensors()
        (inp,) = interpreter.get_input_details()
        runner = interpreter.get_signature_runner()
        (input_name,) = runner.get_input_details()
        dtypes = [np.dtype(d["dtype"]).name for d in interpreter.get_tensor_details()]
        return (lambda image: runner(**{input_name: image}),
                tuple(int(d) for d in inp["shape"][1:3]), dtypes)
    if suffix == ".onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (inp,) = session.get_inputs()
        names = [o.name for o in session.get_outputs()]

        def run(image: np.ndarray) -> dict[str, np.ndarray]:
            return dict(zip(names, session.run(None, {inp.name: image}), strict=True))

        return run, tuple(int(d) for d in inp.shape[1:3]), [
            t.type for t in (*session.get_inputs(), *session.get_outputs())]
    raise ValueError("not a .tflite or .onnx file")


def calibration_images(info: Any, dataset_dir: str, split: str, count: int,
                       size: Sequence[int]) -> Iterable[np.ndarray]:
    """The first ``count`` images of a split, resized to the file's input ``size`` as the
    client resizes them (the int8 activation ranges are measured on these)."""
    import tensorflow as tf

    from deeplab_ext.data.input_pipeline import check_dataset_record, decode_example, list_shards

    flag = "--calibration_dataset_dir"  # the ranges are those of the checkpoint's images
    check_dataset_record(info, dataset_dir, split, whose="the checkpoint's dataset", flag=flag)
    records = tf.data.TFRecordDataset(list_shards(dataset_dir, split, flag)).take(count)
    for serialized in records:
        image = decode_example(serialized)[0].numpy().astype(np.float32)
        yield cv2.resize(image, (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR)


def letterbox(image: np.ndarray, size: Sequence[int]) -> tuple[np.ndarray, tuple[int, int]]:
    """``image`` scaled to fit ``size`` (h, w) with its aspect ratio kept, padded at the
    bottom and right with the mean pixel (DeepLab's padding); also the scaled image's
    (h, w), the region of the output that belongs to it."""
    h, w = image.shape[:2]
    scale = min(size[0] / h, size[1] / w)
    nh, nw = max(1, min(size[0], round(h * scale))), max(1, min(size[1], round(w * scale)))
    out = np.full((size[0], size[1], 3), MEAN_PIXEL, np.float32)
    out[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return out, (nh, nw)


def unletterbox(probs: np.ndarray, region: tuple[int, int], shape: Sequence[int]) -> np.ndarray:
    """Probabilities ``[h, w, C]`` of a letterboxed input back to the image's ``shape``."""
    probs = probs[: region[0], : region[1]]
    out = cv2.resize(probs, (int(shape[1]), int(shape[0])), interpolation=cv2.INTER_LINEAR)
    return out[..., None] if out.ndim == 2 else out  # one class: cv2 drops the axis


def _check_fingerprint(path: pathlib.Path, meta: dict, marker: pathlib.Path) -> None:
    """The file must be one its folder's export wrote (its sha256 as recorded there): a
    file copied beside another export's metadata would be read with that export's classes."""
    from deeplab_ext.data.fetch import sha256_file

    recorded = (meta.get("file_sha256") or {}).get(path.name)
    if recorded is None and "file_sha256" not in meta:
        return  # an export written before files carried fingerprints
    if recorded is None:
        raise ValueError(f"--model={path}: {marker} records no such file: it was not written "
                         "by the export in its folder, whose classes and sizes would be read "
                         "for it. Keep each file in the export directory tools.export_model "
                         "wrote it into")
    if sha256_file(path) != recorded:
        raise ValueError(f"--model={path} is not the file the export in its folder wrote (its "
                         f"sha256 differs from the one {marker} records): it was damaged or "
                         "changed since, or copied there from another export. Export it "
                         "again with tools.export_model --format=...")


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
        _check_fingerprint(self.path, self.meta, marker)
        suffix = self.path.suffix.lower()
        try:
            self._run, self.size, _ = open_runtime(self.path)
            self.output_names = sorted(self._run(np.zeros((1, *self.size, 3), np.float32)))
        except Exception as e:  # noqa: BLE001 - each runtime raises its own types
            why = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise ValueError(f"--model={path}: cannot load it as a {suffix or '?'} model "
                             f"({why}); it is corrupt or truncated, or not a model file. "
                             "Export it again with tools.export_model --format=...") from None

    def predict(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """One RGB image ``[H, W, 3]`` (0..255), letterboxed into the file's input size
        (:func:`letterbox`), run, and the probabilities of its region resized back
        (bilinear); ``{output: [1, ...]}``."""
        image = np.asarray(image, np.float32)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"image: expected [H, W, 3], got {list(image.shape)}")
        x, region = letterbox(image, self.size)
        out = self._run(x[None])
        probs = unletterbox(out["semantic_probabilities"][0], region, image.shape[:2])
        result = {"semantic_probabilities": probs[None].astype(np.float32)}
        if "tag_probabilities" in out:
            result["tag_probabilities"] = np.asarray(out["tag_probabilities"], np.float32)
        return result

    def describe(self) -> dict[str, Any]:
        return {"model": str(self.path), "input_size": list(self.size),
                "outputs": self.output_names}
