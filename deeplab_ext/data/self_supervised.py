"""Targets made from the image itself (self-supervised auxiliary tasks, the UCL SegNet /
MTAN study): computed on the augmented crop, so they stay aligned with what the network
sees.

* ``edges``: Canny edges (OpenCV, thresholds :data:`CANNY_THRESHOLDS`) of the crop's grey
  image, int32 ``[h, w]`` in {0, 1}; pixels the label map ignores (padding, void) are the
  ignore label, so padding borders teach no edges.
* ``noisy``: the crop plus Gaussian noise (std :data:`NOISE_STDDEV` in 0..255 units),
  clipped to 0..255, drawn from the example's own seed (training) or a fixed one.
* ``lab``: the crop in CIE L*a*b* (OpenCV on float RGB in 0..1: L in 0..100, a and b
  about -128..127), float32 ``[h, w, 3]``.
"""

from __future__ import annotations

import cv2
import numpy as np
import tensorflow as tf

from deeplab_ext.data.targets import DENSE, TargetContext, register_target

__all__ = ["CANNY_THRESHOLDS", "NOISE_STDDEV", "canny_edges", "rgb_to_lab"]

CANNY_THRESHOLDS = (100, 200)  # OpenCV's documented example; the study does not give its own
NOISE_STDDEV = 25.5  # a tenth of the pixel range


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


def rgb_to_lab(image: np.ndarray) -> np.ndarray:
    """float32 L*a*b* of an RGB image in 0..255 (OpenCV's float conversion)."""
    rgb = np.clip(np.asarray(image, dtype=np.float32) / 255.0, 0.0, 1.0)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)


@register_target("noisy", stage=DENSE)
def _noisy(ctx: TargetContext) -> tf.Tensor:
    seed = ctx.seed if ctx.seed is not None else tf.constant([0, 0], tf.int64)
    noise = tf.random.stateless_normal(tf.shape(ctx.image), seed, stddev=NOISE_STDDEV)
    return tf.clip_by_value(ctx.image + noise, 0.0, 255.0)


@register_target("lab", stage=DENSE)
def _lab(ctx: TargetContext) -> tf.Tensor:
    lab = tf.numpy_function(rgb_to_lab, [ctx.image], tf.float32, stateful=False)
    return tf.reshape(lab, tf.shape(ctx.image))
