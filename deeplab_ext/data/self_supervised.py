"""Targets made from the image itself (self-supervised auxiliary tasks, the UCL SegNet /
MTAN study): computed on the augmented crop, so they stay aligned with what the network
sees.

* ``edges``: Canny edges (OpenCV, thresholds :data:`CANNY_THRESHOLDS`) of the crop's grey
  image, int32 ``[h, w]`` in {0, 1}; pixels the label map ignores (padding, void) are the
  ignore label, so padding borders teach no edges.
"""

from __future__ import annotations

import cv2
import numpy as np
import tensorflow as tf

from deeplab_ext.data.targets import DENSE, TargetContext, register_target

__all__ = ["CANNY_THRESHOLDS", "canny_edges"]

CANNY_THRESHOLDS = (100, 200)  # OpenCV's documented example; the study does not give its own


def canny_edges(image: np.ndarray) -> np.ndarray:
    """uint8 {0, 1} ``[h, w]`` Canny edges of an RGB image (float 0..255 or uint8)."""
    rgb = np.clip(np.rint(np.asarray(image, dtype=np.float32)), 0, 255).astype(np.uint8)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return (cv2.Canny(grey, *CANNY_THRESHOLDS) > 0).astype(np.uint8)


@register_target("edges", stage=DENSE)
def _edges(ctx: TargetContext) -> tf.Tensor:
    edges = tf.numpy_function(canny_edges, [ctx.image], tf.uint8, stateful=False)
    edges = tf.reshape(tf.cast(edges, tf.int32), tf.shape(ctx.image)[:2])
    label = tf.cast(ctx.label[..., 0], tf.int32)
    return tf.where(tf.equal(label, ctx.info.ignore_label), ctx.info.ignore_label, edges)
