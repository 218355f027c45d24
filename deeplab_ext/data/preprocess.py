"""The original DeepLab preprocessing (`input_preprocess.py`, `preprocess_utils.py`) in TF2 ops.

Order as in the original: resize to range -> random scale (0.5..2.0 step 0.25) -> pad to
the crop size (image with the mean pixel, label with the ignore label) -> random crop ->
random left-right flip (p = 0.5). Images are resized bilinearly with aligned corners,
labels ONLY with nearest neighbour, so a label never holds an interpolated value.
Randomness is stateless (`tf.random.stateless_*` with an explicit `[2]` seed), so one
pipeline seed makes every crop reproducible even under a parallel `map`.
Eval mode has no randomness: pad to the crop size; an image larger than the crop is
centre-cropped (pass `crop_height=None` to keep the whole image).
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

MEAN_PIXEL_INCEPTION = (127.5, 127.5, 127.5)  # mobilenet / xception: 2/255*x - 1 maps it to 0
MEAN_PIXEL_RESNET = (123.15, 115.90, 103.06)


def _hw(t: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    shape = tf.shape(t)
    return shape[0], shape[1]


def _resize_bilinear(image: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    out = tf.raw_ops.ResizeBilinear(
        images=image[tf.newaxis], size=size, align_corners=True, half_pixel_centers=False
    )
    return out[0]


def _resize_nearest(label: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    out = tf.raw_ops.ResizeNearestNeighbor(
        images=label[tf.newaxis], size=size, align_corners=True, half_pixel_centers=False
    )
    return out[0]


def resize_to_range(
    image: tf.Tensor,
    label: tf.Tensor | None = None,
    min_size: int | None = None,
    max_size: int | None = None,
    factor: int | None = None,
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Scale so the short side is `min_size` unless the long side would exceed `max_size`.

    As the original: if `factor` is set, each side becomes a multiple of `factor` plus 1.
    """
    if min_size is None and max_size is None:
        return image, label
    h, w = _hw(image)
    hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
    min_side, max_side = tf.minimum(hf, wf), tf.maximum(hf, wf)
    scale = tf.constant(1.0) if min_size is None else float(min_size) / min_side
    size = tf.cast(tf.floor(tf.stack([hf, wf]) * scale), tf.int32)
    if max_size is not None:
        small_scale = float(max_size) / max_side
        small_size = tf.cast(tf.floor(tf.stack([hf, wf]) * small_scale), tf.int32)
        size = tf.cond(tf.reduce_max(size) > max_size, lambda: small_size, lambda: size)
    if factor is not None:
        size += (factor - (size - 1) % factor) % factor
    image = _resize_bilinear(tf.cast(image, tf.float32), size)
    if label is not None:
        label = _resize_nearest(label, size)
    return image, label


def get_random_scale(
    min_scale_factor: float, max_scale_factor: float, step_size: float, seed: tf.Tensor
) -> tf.Tensor:
    """A scale drawn from {min, min+step, ..., max} (uniform in [min, max] if step is 0)."""
    if min_scale_factor < 0 or min_scale_factor > max_scale_factor:
        raise ValueError(
            f"need 0 <= min_scale_factor <= max_scale_factor, got {min_scale_factor}, "
            f"{max_scale_factor} (--min_scale_factor / --max_scale_factor)"
        )
    if min_scale_factor == max_scale_factor:
        return tf.constant(float(min_scale_factor))
    if step_size == 0:
        return tf.random.stateless_uniform(
            [], seed, minval=min_scale_factor, maxval=max_scale_factor
        )
    num_steps = int(round((max_scale_factor - min_scale_factor) / step_size + 1))
    scales = tf.linspace(float(min_scale_factor), float(max_scale_factor), num_steps)
    idx = tf.random.stateless_uniform([], seed, minval=0, maxval=num_steps, dtype=tf.int32)
    return tf.gather(scales, idx)


def randomly_scale_image_and_label(
    image: tf.Tensor, label: tf.Tensor | None, scale: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Resize by `scale` (new size = floor(size * scale), as the original)."""
    h, w = _hw(image)
    size = tf.cast(tf.cast(tf.stack([h, w]), tf.float32) * scale, tf.int32)
    size = tf.maximum(size, 1)
    image = _resize_bilinear(tf.cast(image, tf.float32), size)
    if label is not None:
        label = _resize_nearest(label, size)
    return image, label


def pad_to_bounding_box(
    image: tf.Tensor,
    offset_height: tf.Tensor | int,
    offset_width: tf.Tensor | int,
    target_height: tf.Tensor | int,
    target_width: tf.Tensor | int,
    pad_value: float | Sequence[float] | tf.Tensor,
) -> tf.Tensor:
    """Pad `[H, W, C]` to the target box with `pad_value` (a scalar or one value per channel)."""
    h, w = _hw(image)
    after_h = target_height - offset_height - h
    after_w = target_width - offset_width - w
    tf.debugging.assert_non_negative(after_h, message="target_height smaller than the image")
    tf.debugging.assert_non_negative(after_w, message="target_width smaller than the image")
    pad_value = tf.cast(tf.convert_to_tensor(pad_value), image.dtype)
    paddings = tf.stack([[offset_height, after_h], [offset_width, after_w], [0, 0]])
    return tf.pad(image - pad_value, paddings) + pad_value


def random_crop(
    image: tf.Tensor, label: tf.Tensor | None, crop_height: int, crop_width: int, seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Crop the same random window from image and label (both must be at least the crop)."""
    h, w = _hw(image)
    off_h = tf.random.stateless_uniform([], seed, 0, h - crop_height + 1, dtype=tf.int32)
    off_w = tf.random.stateless_uniform(
        [], tf.random.experimental.stateless_fold_in(seed, 1), 0, w - crop_width + 1, tf.int32
    )
    image = image[off_h : off_h + crop_height, off_w : off_w + crop_width]
    if label is not None:
        label = label[off_h : off_h + crop_height, off_w : off_w + crop_width]
    return image, label


def fused_scale_pad_crop(
    image: tf.Tensor,
    label: tf.Tensor,
    scale: tf.Tensor,
    crop_height: int,
    crop_width: int,
    mean_pixel: tf.Tensor,
    ignore_label: int,
    seed: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Scale -> pad -> random crop in ONE resampling of just the crop window.

    Same result as `randomly_scale_image_and_label` + `pad_to_bounding_box` + `random_crop`
    (aligned-corner sampling positions, same offset distribution), but the cost scales with
    the crop, not with the up-to-4x enlarged image. Labels use nearest sampling only.
    """
    h, w = _hw(image)
    size = tf.maximum(tf.cast(tf.cast(tf.stack([h, w]), tf.float32) * scale, tf.int32), 1)
    new_h, new_w = size[0], size[1]
    off_h = tf.random.stateless_uniform(
        [], seed, 0, tf.maximum(crop_height, new_h) - crop_height + 1, dtype=tf.int32
    )
    off_w = tf.random.stateless_uniform(
        [], tf.random.experimental.stateless_fold_in(seed, 1), 0,
        tf.maximum(crop_width, new_w) - crop_width + 1, tf.int32,
    )  # fmt: skip
    # Aligned corners: scaled row y' samples source row y' * (h - 1) / (new_h - 1).
    ry = tf.cast(h - 1, tf.float32) / tf.cast(tf.maximum(new_h - 1, 1), tf.float32)
    rx = tf.cast(w - 1, tf.float32) / tf.cast(tf.maximum(new_w - 1, 1), tf.float32)
    # One replicated edge row/col so float round-off at the border never extrapolates.
    hp = tf.cast(h, tf.float32)  # padded height - 1
    wp = tf.cast(w, tf.float32)
    y1 = tf.cast(off_h, tf.float32) * ry / hp
    y2 = tf.cast(off_h + crop_height - 1, tf.float32) * ry / hp
    x1 = tf.cast(off_w, tf.float32) * rx / wp
    x2 = tf.cast(off_w + crop_width - 1, tf.float32) * rx / wp
    boxes = tf.reshape(tf.stack([y1, x1, y2, x2]), [1, 4])
    both = tf.concat([tf.cast(image, tf.float32), tf.cast(label, tf.float32)], -1)
    both = tf.pad(both, [[0, 1], [0, 1], [0, 0]], mode="SYMMETRIC")[tf.newaxis]
    crop = [crop_height, crop_width]
    img = tf.image.crop_and_resize(both[..., :3], boxes, [0], crop, method="bilinear")[0]
    lab = tf.image.crop_and_resize(both[..., 3:], boxes, [0], crop, method="nearest")[0]
    valid = (off_h + tf.range(crop_height) < new_h)[:, None, None] & (
        off_w + tf.range(crop_width) < new_w
    )[None, :, None]
    img = tf.where(valid, img, tf.reshape(mean_pixel, [1, 1, 3]))
    lab = tf.where(valid, tf.cast(tf.round(lab), tf.int32), ignore_label)
    return img, lab


def random_flip_left_right(
    image: tf.Tensor, label: tf.Tensor | None, seed: tf.Tensor, prob: float = 0.5
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Flip image and label together with probability `prob`."""
    flip = tf.random.stateless_uniform([], seed) < prob
    image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
    if label is not None:
        label = tf.cond(flip, lambda: tf.reverse(label, [1]), lambda: label)
    return image, label


def preprocess_image_and_label(
    image: tf.Tensor,
    label: tf.Tensor | None,
    *,
    crop_height: int | None,
    crop_width: int | None,
    ignore_label: int,
    is_training: bool,
    min_resize_value: int | None = None,
    max_resize_value: int | None = None,
    resize_factor: int | None = None,
    min_scale_factor: float = 0.5,
    max_scale_factor: float = 2.0,
    scale_factor_step_size: float = 0.25,
    mean_pixel: Sequence[float] = MEAN_PIXEL_INCEPTION,
    seed: tf.Tensor | None = None,
    fused: bool = True,
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Image `[H, W, 3]` and label `[H, W, C]` -> float32 image and int32 label, augmented
    (more label channels, e.g. instance ids, go through the same geometry).

    Training needs `seed` (int `[2]`); eval ignores it and is deterministic. `fused`
    (training) does scale+pad+crop as one crop-window resampling (`fused_scale_pad_crop`).
    """
    _check_training_args(is_training, label, crop_height, crop_width, seed)
    image = tf.cast(image, tf.float32)
    if label is not None:
        label = tf.cast(label, tf.int32)
    image, label = resize_to_range(image, label, min_resize_value, max_resize_value, resize_factor)
    seeds = None
    if is_training:
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=3)
        scale = get_random_scale(
            min_scale_factor, max_scale_factor, scale_factor_step_size, seeds[0]
        )
        if fused:
            image, label = fused_scale_pad_crop(
                image, label, scale, crop_height, crop_width,
                tf.constant(mean_pixel, tf.float32), ignore_label, seeds[1],
            )  # fmt: skip
            image, label = random_flip_left_right(image, label, seeds[2])
            image = tf.ensure_shape(image, [crop_height, crop_width, 3])
            return image, tf.ensure_shape(label, [crop_height, crop_width, None])
        image, label = randomly_scale_image_and_label(image, label, scale)
    if crop_height is None or crop_width is None:
        return image, label
    return _pad_and_crop(image, label, crop_height, crop_width, mean_pixel, ignore_label,
                         is_training, seeds)


def _check_training_args(is_training: bool, label: tf.Tensor | None,
                         crop_height: int | None, crop_width: int | None,
                         seed: tf.Tensor | None) -> None:
    """Refuses training preprocessing without a label, a crop size or a seed."""
    if is_training and label is None:
        raise ValueError("training preprocessing needs a label")
    if is_training and (crop_height is None or crop_width is None):
        raise ValueError("training needs a crop size (--train_crop_size)")
    if is_training and seed is None:
        raise ValueError("training preprocessing needs a stateless seed tensor of shape [2]")


def _pad_and_crop(image: tf.Tensor, label: tf.Tensor | None, crop_height: int,
                  crop_width: int, mean_pixel: Sequence[float], ignore_label: int,
                  is_training: bool, seeds: tf.Tensor | None
                  ) -> tuple[tf.Tensor, tf.Tensor | None]:
    """The unfused path's end: pad to at least the crop size (mean pixel, ignore label),
    then a random crop and flip (training, ``seeds[1]`` / ``seeds[2]``) or the centre crop."""
    h, w = _hw(image)
    target_h = tf.maximum(crop_height, h)
    target_w = tf.maximum(crop_width, w)
    mean = tf.reshape(tf.constant(mean_pixel, tf.float32), [1, 1, 3])
    image = pad_to_bounding_box(image, 0, 0, target_h, target_w, mean)
    if label is not None:
        label = pad_to_bounding_box(label, 0, 0, target_h, target_w, ignore_label)
    if is_training:
        image, label = random_crop(image, label, crop_height, crop_width, seeds[1])
        image, label = random_flip_left_right(image, label, seeds[2])
    else:  # deterministic centre crop (a no-op when the image fits the crop)
        off_h = (target_h - crop_height) // 2
        off_w = (target_w - crop_width) // 2
        image = image[off_h : off_h + crop_height, off_w : off_w + crop_width]
        if label is not None:
            label = label[off_h : off_h + crop_height, off_w : off_w + crop_width]
    image = tf.ensure_shape(image, [crop_height, crop_width, 3])
    if label is not None:
        label = tf.ensure_shape(label, [crop_height, crop_width, None])
    return image, label
