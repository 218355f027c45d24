"""Image-level object targets made from the label map (the UCL SegNet / MTAN study's
classification and box heads, on datasets that have only masks).

The *largest object* of a crop is the largest 8-connected region of one object class
(``DatasetInfo.object_class_ids``: every tagged class unless the dataset names its
objects, e.g. CamVid's car, pedestrian and bicyclist); ties go to the lower class id,
then to OpenCV's component order. Both targets are computed after augmentation, from the
crop the network sees, so a scale, crop or flip moves the box with the image.

* ``object_class``: int32 scalar, the largest object's class id, -1 when the crop has none
  (the class loss and accuracy skip it).
* ``object_box``: float32 ``[5]`` = ``[present, ymin, xmin, ymax, xmax]``, the object's
  bounding box with pixel-edge coordinates divided by the crop's height / width (a box
  covering rows 3..5 of 10 is ``0.3 .. 0.6``); zeros when absent.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import tensorflow as tf

from deeplab_ext.data.targets import DENSE, TargetContext, register_target

__all__ = ["largest_object"]


def largest_object(label: np.ndarray, class_ids: Sequence[int]) -> tuple[int, np.ndarray]:
    """``(class id or -1, int box [ymin, xmin, ymax, xmax] in pixel edges)`` of the largest
    8-connected region of any of ``class_ids`` in a ``[H, W]`` (or ``[H, W, 1]``) label."""
    label = np.asarray(label).reshape(np.shape(label)[:2])
    best_area, best_class, best_box = 0, -1, np.zeros(4, np.int64)
    for c in class_ids:
        mask = (label == c).astype(np.uint8)
        if not mask.any():
            continue
        _, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        for x, y, w, h, area in stats[1:]:  # row 0 is the complement
            if area > best_area:
                best_area, best_class = int(area), int(c)
                best_box = np.array([y, x, y + h, x + w], np.int64)
    return best_class, best_box


def _object(label: np.ndarray, class_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cls, box = largest_object(label, class_ids.tolist())
    h, w = label.shape[:2]
    norm = box.astype(np.float32) / np.array([h, w, h, w], np.float32)
    present = np.float32(cls >= 0)
    return np.int32(cls), np.concatenate([[present], norm * present]).astype(np.float32)


def _object_targets(ctx: TargetContext) -> tuple[tf.Tensor, tf.Tensor]:
    """The class and the box, from one connected-components pass per example."""
    def build() -> tuple[tf.Tensor, tf.Tensor]:
        ids = tf.constant(ctx.info.object_class_ids, tf.int64)
        cls, box = tf.numpy_function(_object, [tf.cast(ctx.label, tf.int32), ids],
                                     (tf.int32, tf.float32), stateful=False)
        return tf.reshape(cls, []), tf.reshape(box, [5])

    return ctx.shared("largest_object", build)


@register_target("object_class", stage=DENSE)
def _object_class(ctx: TargetContext) -> tf.Tensor:
    return _object_targets(ctx)[0]


@register_target("object_box", stage=DENSE)
def _object_box(ctx: TargetContext) -> tf.Tensor:
    return _object_targets(ctx)[1]
