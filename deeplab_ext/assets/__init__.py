"""Real files shipped with the package, so tests, the demo and a first prediction work
offline from a clone or a wheel alone (``NOTICE.md`` beside this file: each file's source
and licence). Nothing here is written to at run time."""

from __future__ import annotations

import pathlib

__all__ = ["ASSETS", "CAMVID_SAMPLE", "COCO128_VOC", "WEIGHTS", "shipped_weights"]

ASSETS = pathlib.Path(__file__).resolve().parent
COCO128_VOC = ASSETS / "real-data" / "coco128-voc"  # 97 photos, VOC 2012 layout (65 train, 32 val)
CAMVID_SAMPLE = ASSETS / "real-data" / "camvid-sample"  # 6 CamVid frames, SegNet's layout
WEIGHTS = ASSETS / "released-weights"  # released files, described in deeplab_ext/weights/released.json


def shipped_weights(filename: str) -> pathlib.Path:
    """The shipped file of a released model (``released.json``'s ``filename``)."""
    return WEIGHTS / filename
