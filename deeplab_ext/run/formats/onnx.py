"""``--format=onnx``: ``model.onnx`` through Keras 3's ONNX exporter (``tf2onnx``), run
by ``onnxruntime`` on the CPU."""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np

from deeplab_ext.run.formats.base import ExportFormat, Runtime, register_format


class ONNXFormat(ExportFormat):
    name = "onnx"
    description = "model.onnx, fixed size"
    suffix = ".onnx"

    def convert(self, model: Any, path: pathlib.Path, settings: dict[str, Any]) -> None:
        try:
            import tf2onnx  # noqa: F401
        except ImportError as e:
            raise ValueError("--format=onnx needs the onnx and tf2onnx packages "
                             "(pip install onnx tf2onnx)") from e
        model.export(str(path), format="onnx", verbose=False, **settings)

    def load(self, path: pathlib.Path) -> Runtime:
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (inp,) = session.get_inputs()
        names = [o.name for o in session.get_outputs()]

        def run(image: np.ndarray) -> dict[str, np.ndarray]:
            return dict(zip(names, session.run(None, {inp.name: image}), strict=True))

        return Runtime(run, tuple(int(d) for d in inp.shape[1:3]), [
            t.type for t in (*session.get_inputs(), *session.get_outputs())])


FORMAT = register_format(ONNXFormat())
