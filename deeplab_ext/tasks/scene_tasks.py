"""The instance and depth tasks of Kendall, Gal and Cipolla's scene network (CVPR 2018);
any family whose network has an ``instance`` or ``depth`` output gets them (DeepLab's
``*_scene`` variants: per-task decoders on the shared encoder).

``instance``: L1 of the predicted centroid offsets (dy, dx, pixels) on instance pixels
(target ``instance``, ``deeplab_ext.data.scene_targets``); metrics the mean offset error in
pixels and the panoptic quality of the instances clustered from the offsets on the true
instance pixels (``tf_mtl.instances``). ``depth``: L1 of the predicted disparity (inverse depth, pixels) on valid pixels
(target ``depth``); metrics MAE, abs rel, delta < 1.25. Both are regression tasks: under
uncertainty weighting their terms are L / (2 sigma^2) + log sigma.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from deeplab_ext.tasks.base import TaskContext, TaskSpec, register_task
from tf_mtl.instances import InstanceQuality
from tf_mtl.losses import masked_l1
from tf_mtl.metrics import DepthErrors, OffsetError
from tf_mtl.tasks import Task


def _instance(ctx: TaskContext) -> Task:
    return Task("instance", masked_l1, kind="regression", metrics=[OffsetError()],
                eval_metrics=[InstanceQuality()])  # clustering: too slow for every step


def _depth(ctx: TaskContext) -> Task:
    return Task("depth", masked_l1, kind="regression", metrics=[DepthErrors()])


def _panels(output: tf.Tensor, target: Any,
            draw: Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]) -> tf.Tensor:
    """``draw(values, mask, scale)`` of the output, preceded by the target's (its values
    masked by its last channel) when there is a target, both at the target's scale (the
    largest magnitude), side by side."""
    values = tf.cast(output, tf.float32)
    if target is None:
        scale = tf.reduce_max(tf.norm(values, axis=-1))
        return draw(values, tf.ones_like(values[..., :1]), tf.maximum(scale, 1e-6))
    target = tf.cast(target, tf.float32)
    truth, mask = target[..., : values.shape[-1]], target[..., -1:]
    scale = tf.maximum(tf.reduce_max(tf.norm(truth * mask, axis=-1)), 1e-6)
    return tf.concat([draw(truth, mask, scale), draw(values, tf.ones_like(mask), scale)], 2)


def _flow(values: tf.Tensor, mask: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
    angle = (tf.atan2(values[..., 0], values[..., 1]) + math.pi) / (2 * math.pi)
    value = tf.clip_by_value(tf.norm(values, axis=-1) / scale, 0.0, 1.0)
    hsv = tf.stack([angle, tf.ones_like(angle), value], -1)
    return tf.cast(tf.image.hsv_to_rgb(hsv) * mask * 255.0, tf.uint8)


def _grey(values: tf.Tensor, mask: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
    grey = tf.clip_by_value(values / scale, 0.0, 1.0) * mask
    return tf.cast(tf.tile(grey, [1, 1, 1, 3]) * 255.0, tf.uint8)


def offsets_picture(output: tf.Tensor, target: Any = None) -> tf.Tensor:
    """Centroid offsets as a flow picture (hue: direction, brightness: length; the target
    black off its instance pixels)."""
    return _panels(output, target, _flow)


def depth_picture(output: tf.Tensor, target: Any = None) -> tf.Tensor:
    """Disparity in grey: white is near (large disparity), black far (or invalid)."""
    return _panels(output, target, _grey)


register_task(TaskSpec("instance", _instance, targets=("instance",),
                       output=lambda family: "instance", picture=offsets_picture))
register_task(TaskSpec("depth", _depth, targets=("depth",), output=lambda family: "depth",
                       picture=depth_picture))
