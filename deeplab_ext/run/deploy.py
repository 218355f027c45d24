"""The client of the file formats (``tools.predict`` / ``tools.eval --model=FILE``): a
file an export wrote, in the runtime of its format (``deeplab_ext.run.formats``), with the
classes recorded beside it; and the images the LiteRT int8 quantisation is calibrated on.

Every file holds the *serving network* (``deeplab_ext.run.serving``): raw RGB ``images`` in
0..255 at a fixed size in, the serving outputs out. The size is fixed
(``--export_input_size``, default the training crop, which is on the network's stride
grid): LiteRT interpreters allocate tensors for one shape, and the released DeepLab TFLite
files are fixed-size too; the client letterboxes each image into it (aspect ratio kept,
mean-pixel padding, as the original's demo feeds its 513 model) and resizes the
probabilities back. The SavedModel in the same directory takes any size.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterable, Sequence
from typing import Any

import cv2
import numpy as np

from deeplab_ext.data.datasets import info_from_dict
from deeplab_ext.data.preprocess import MEAN_PIXEL_INCEPTION
from deeplab_ext.run.formats import METADATA_FILE, format_for_file, model_files_help
from deeplab_ext.run.outputs import SEMANTIC_PROBABILITIES, TAG_PROBABILITIES

__all__ = ["FileSegmenter", "calibration_images", "letterbox", "unletterbox"]

MEAN_PIXEL = np.asarray(MEAN_PIXEL_INCEPTION, np.float32)  # what DeepLab pads images with


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
    """A file of ``tools.export_model`` in its format's runtime (the format found by the
    file's suffix), with the classes recorded beside it (``assets/deeplab_export.json`` of
    its directory)."""

    def __init__(self, path: str | pathlib.Path) -> None:
        self.path = pathlib.Path(path)
        if not self.path.is_file():
            raise ValueError(f"--model={path}: no such file ({model_files_help()})")
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
            self._run, self.size, _ = format_for_file(self.path).load(self.path)
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
        probs = unletterbox(out[SEMANTIC_PROBABILITIES][0], region, image.shape[:2])
        result = {SEMANTIC_PROBABILITIES: probs[None].astype(np.float32)}
        if TAG_PROBABILITIES in out:
            result[TAG_PROBABILITIES] = np.asarray(out[TAG_PROBABILITIES], np.float32)
        return result

    def describe(self) -> dict[str, Any]:
        return {"model": str(self.path), "input_size": list(self.size),
                "outputs": self.output_names}
