"""``--format=litert``: ``model.tflite`` through Keras 3's LiteRT exporter, optionally
quantised after training (``--quantize``), run by ``ai-edge-litert``."""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from deeplab_ext.run.formats.base import ExportFormat, Runtime, register_format

__all__ = ["QUANTIZE", "LiteRTFormat", "litert_quantization"]

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


class LiteRTFormat(ExportFormat):
    name = "litert"
    description = "model.tflite, fixed size, --quantize"
    suffix = ".tflite"
    quantize = QUANTIZE

    def settings(self, quantize: str, calibration: Callable[[], Iterable[np.ndarray]] | None
                 ) -> dict[str, Any]:
        return litert_quantization(quantize, calibration)

    def convert(self, model: Any, path: pathlib.Path, settings: dict[str, Any]) -> None:
        model.export(str(path), format="litert", verbose=False, **settings)

    def quantised_dtype(self, settings: dict[str, Any]) -> str | None:
        if not settings.get("optimizations"):
            return None
        return ("int8" if "representative_dataset" in settings else "float16"
                if settings.get("target_spec") else "int8")

    def load(self, path: pathlib.Path) -> Runtime:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(str(path))
        interpreter.allocate_tensors()
        (inp,) = interpreter.get_input_details()
        runner = interpreter.get_signature_runner()
        (input_name,) = runner.get_input_details()
        dtypes = [np.dtype(d["dtype"]).name for d in interpreter.get_tensor_details()]
        return Runtime(lambda image: runner(**{input_name: image}),
                       tuple(int(d) for d in inp["shape"][1:3]), dtypes)


FORMAT = register_format(LiteRTFormat())
