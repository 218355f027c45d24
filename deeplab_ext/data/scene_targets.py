"""Targets of Kendall, Gal and Cipolla's scene network (CVPR 2018): instance centroid
offsets and inverse depth, from the shards' instance-id and disparity maps.

* ``instance``: float32 ``[h, w, 3]``: per pixel of an instance, the vector ``(dy, dx)``
  in pixels from the pixel to its instance's centroid, then 1 on instance pixels (0
  elsewhere: the loss is masked there). Computed on the augmented crop, from the
  instance's visible pixels in it, so crops and flips need no correction (a flip negates
  the x offsets because the crop is flipped before the centroids are taken).
* ``instance_ids``: int32 ``[h, w]``: the instance id (Cityscapes encoding, >= 1000) or 0,
  for the instance metrics.
* ``depth``: float32 ``[h, w, 2]``: the disparity in pixels (Cityscapes' encoding
  d = (p - 1) / 256; proportional to inverse depth, d = f B / Z) and 1 where it is valid
  (p > 0). The values are those of the original camera: random scaling changes the apparent
  size of things but not the target, so depth runs train without it (Kendall's did).
"""

from __future__ import annotations

import tensorflow as tf

from deeplab_ext.data.targets import DENSE, TargetContext, register_target

__all__ = ["INSTANCE_ID_OFFSET", "centroid_offsets", "decode_disparity"]

# Cityscapes' instanceIds: class id * 1000 + k for a pixel of instance k; below 1000 a
# pixel belongs to no instance (its value is its class id).
INSTANCE_ID_OFFSET = 1000


def decode_disparity(raw: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Cityscapes' 16-bit disparity PNG values -> (disparity in pixels, valid mask):
    d = (p - 1) / 256 for p > 0; p = 0 is invalid."""
    raw = tf.cast(raw, tf.float32)
    valid = raw > 0
    return tf.where(valid, (raw - 1.0) / 256.0, 0.0), valid


def centroid_offsets(instance_ids: tf.Tensor) -> tf.Tensor:
    """``[h, w]`` instance ids -> float32 ``[h, w, 3]``: (dy, dx) to the centroid of the
    pixel's instance, and the instance mask (ids >= ``INSTANCE_ID_OFFSET``)."""
    ids = tf.cast(instance_ids, tf.int32)
    h, w = tf.shape(ids)[0], tf.shape(ids)[1]
    flat = tf.reshape(ids, [-1])
    unique, index = tf.unique(flat)
    n = tf.size(unique)
    yy, xx = tf.meshgrid(tf.range(h, dtype=tf.float32), tf.range(w, dtype=tf.float32),
                         indexing="ij")
    yy, xx = tf.reshape(yy, [-1]), tf.reshape(xx, [-1])
    cy = tf.gather(tf.math.unsorted_segment_mean(yy, index, n), index)
    cx = tf.gather(tf.math.unsorted_segment_mean(xx, index, n), index)
    mask = tf.cast(flat >= INSTANCE_ID_OFFSET, tf.float32)
    out = tf.stack([(cy - yy) * mask, (cx - xx) * mask, mask], -1)
    return tf.reshape(out, [h, w, 3])


@register_target("instance", stage=DENSE, maps=("instance",))
def _instance(ctx: TargetContext) -> tf.Tensor:
    return centroid_offsets(ctx.maps["instance"])


@register_target("instance_ids", stage=DENSE, maps=("instance",))
def _instance_ids(ctx: TargetContext) -> tf.Tensor:
    ids = ctx.maps["instance"]
    return tf.where(ids >= INSTANCE_ID_OFFSET, ids, 0)


@register_target("depth", stage=DENSE, maps=("disparity",))
def _depth(ctx: TargetContext) -> tf.Tensor:
    disparity, valid = decode_disparity(ctx.maps["disparity"])
    return tf.stack([disparity, tf.cast(valid, tf.float32)], -1)
