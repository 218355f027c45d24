"""Multi-scale + left-right flip inference over any segmentation network.

Mirrors the original DeepLab's ``eval_scales`` / ``add_flipped_images``
(``model.predict_labels_multi_scale``): for every scale the input is resized to
``(dim - 1) * scale + 1`` (bilinear, ``align_corners=True``), the network is run,
its logits are resized back to the input size (bilinear, ``align_corners=True``),
soft-maxed, and the probabilities are averaged over all scales and flips.

Everything takes a plain ``logits_fn: images -> logits`` so that the evidence
refitter (``tf_mtl.evidence``) can pass ``lambda x: stateless_call(refitted, x)``
and every evidence mode combines with multi-scale inference. :class:`InputAlignment`
pads any input onto the size grid the network was trained on and crops the outputs back.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

LogitsFn = Callable[[tf.Tensor], tf.Tensor]

# The original's multi-scale evaluation setting (eval.py flags for the model zoo).
ORIGINAL_MULTI_SCALE = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def scale_dimension(dim: tf.Tensor | int, scale: float) -> tf.Tensor:
    """``(dim - 1) * scale + 1`` as int32, like the original's ``scale_dimension``.

    Keeps crops of the form ``output_stride * k + 1`` aligned across scales.
    """
    dim = tf.cast(dim, tf.float32)
    return tf.cast((dim - 1.0) * scale + 1.0, tf.int32)


def resize_bilinear_align_corners(x: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """Bilinear resize with ``align_corners=True`` (TF1 semantics the original uses).

    Returns ``x`` unchanged (bit-exact) when the size already matches, so the
    single-scale path equals a plain forward pass.
    """
    size = tf.cast(size, tf.int32)
    same = tf.reduce_all(tf.equal(tf.shape(x)[1:3], size))

    def _resize() -> tf.Tensor:
        y = tf.raw_ops.ResizeBilinear(
            images=x, size=size, align_corners=True, half_pixel_centers=False
        )
        return tf.cast(y, x.dtype)

    return tf.cond(same, lambda: tf.identity(x), _resize)


def validate_scales(scales: Sequence[float], name: str = "eval_scales") -> tuple[float, ...]:
    """Check the scale list early so a typo fails before any graph is built."""
    try:
        out = tuple(float(s) for s in scales)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a list of positive floats, got {scales!r}") from err
    if not out or any(s <= 0 for s in out):
        raise ValueError(
            f"{name} must be a non-empty list of positive floats (e.g. 0.5,0.75,1.0), "
            f"got {scales!r}"
        )
    return out


def multi_scale_probabilities(
    logits_fn: LogitsFn,
    images: tf.Tensor,
    scales: Sequence[float] = (1.0,),
    add_flipped_images: bool = False,
    flipped_logits_fn: LogitsFn | None = None,
    unscaled_logits: tf.Tensor | None = None,
) -> tf.Tensor:
    """Average softmax probabilities over scales (and left-right flips).

    Args:
      logits_fn: images ``[B, h, w, 3]`` -> logits ``[B, h', w', C]`` (any spatial size;
        resized back to the input size here).
      images: ``[B, H, W, 3]``.
      scales: the original's ``eval_scales``.
      add_flipped_images: also run on the left-right flipped input and flip the
        logits back (the original's ``add_flipped_images``).
      flipped_logits_fn: optional logits function for flipped inputs (e.g. the
        latent evidence mode needs to flip its feature-map offset too); defaults to
        ``logits_fn``.
      unscaled_logits: ``logits_fn(images)`` when the caller already has it (a server
        that also reads the network's other outputs): scale 1.0 unflipped reuses it
        instead of running the network a second time.
    Returns:
      float32 probabilities ``[B, H, W, C]``.
    """
    scales = validate_scales(scales)
    flipped_logits_fn = flipped_logits_fn or logits_fn
    images = tf.convert_to_tensor(images)
    size = tf.shape(images)[1:3]
    probs = []
    for scale in scales:
        if scale == 1.0:
            scaled = images
        else:
            scaled_size = tf.stack(
                [scale_dimension(size[0], scale), scale_dimension(size[1], scale)]
            )
            scaled = resize_bilinear_align_corners(images, scaled_size)
        variants = [(logits_fn, False)]
        if add_flipped_images:
            variants.append((flipped_logits_fn, True))
        for fn, flipped in variants:
            if scale == 1.0 and not flipped and unscaled_logits is not None:
                logits = tf.cast(unscaled_logits, tf.float32)
            else:
                inp = tf.reverse(scaled, axis=[2]) if flipped else scaled
                logits = tf.cast(fn(inp), tf.float32)
            if flipped:
                logits = tf.reverse(logits, axis=[2])
            logits = resize_bilinear_align_corners(logits, size)
            probs.append(tf.nn.softmax(logits, axis=-1))
    if len(probs) == 1:
        return probs[0]
    return tf.reduce_mean(tf.stack(probs, axis=-1), axis=-1)


def network_logits_fn(network: keras.Model, key: str = "semantic") -> LogitsFn:
    """``images -> network(images, training=False)[key]`` (BatchNorm in inference mode)."""

    def fn(images: tf.Tensor) -> tf.Tensor:
        out = network(images, training=False)
        return out[key] if isinstance(out, dict) else out

    return fn


def predict_segmentation(
    network: keras.Model,
    images: tf.Tensor,
    scales: Sequence[float] = (1.0,),
    add_flipped_images: bool = False,
    key: str = "semantic",
) -> dict[str, tf.Tensor]:
    """Plain (evidence-free) multi-scale prediction: probabilities + int32 class map."""
    probs = multi_scale_probabilities(
        network_logits_fn(network, key), images, scales, add_flipped_images
    )
    return {"probabilities": probs, "predictions": tf.argmax(probs, axis=-1, output_type=tf.int32)}


@dataclasses.dataclass(frozen=True)
class InputAlignment:
    """Pad inputs onto the size grid a network was trained on; crop its outputs back.

    Why: a network trained on crops of size ``k * stride + residue`` (the original's
    513 = 32 * 16 + 1) samples every strided layer on that grid; an image of another size
    shifts the grid and costs accuracy (a model trained at 65x65 lost 12 mIoU points on
    64x64 images fed as they are). The original pads every input to ``eval_crop_size``
    with the mean pixel; this pads each input only to the next size on the grid (bottom
    and right, as the original's ``pad_to_bounding_box`` at offset 0) and crops every
    spatial output (rank >= 3) back to the input size. ``stride=1`` changes nothing.
    """

    stride: int = 1
    residue: tuple[int, int] = (0, 0)
    pad_value: tuple[float, float, float] = (127.5, 127.5, 127.5)

    def __post_init__(self) -> None:
        if int(self.stride) < 1:
            raise ValueError(f"InputAlignment.stride must be >= 1, got {self.stride}")
        object.__setattr__(self, "stride", int(self.stride))
        object.__setattr__(self, "residue",
                           tuple(int(r) % self.stride for r in self.residue))
        object.__setattr__(self, "pad_value", tuple(float(v) for v in self.pad_value))

    @classmethod
    def from_crop(cls, crop: Sequence[int], stride: int,
                  pad_value: Sequence[float] = (127.5, 127.5, 127.5)) -> InputAlignment:
        """The grid of a network of total ``stride`` trained on ``crop`` (h, w) crops."""
        return cls(stride, (int(crop[0]), int(crop[1])), tuple(pad_value))

    def aligned_size(self, height: Any, width: Any) -> tuple[Any, Any]:
        """The smallest size on the grid that holds ``height x width`` (ints or tensors)."""
        return tuple(d + (r - d) % self.stride
                     for d, r in zip((height, width), self.residue, strict=True))

    def is_aligned(self, height: int, width: int) -> bool:
        return tuple(self.aligned_size(height, width)) == (height, width)

    def pad(self, images: tf.Tensor) -> tf.Tensor:
        """``[B, H, W, C]`` padded bottom/right with ``pad_value`` (one value per channel,
        or one for all) onto the grid."""
        images = tf.convert_to_tensor(images)
        if self.stride == 1:
            return images
        h, w = tf.shape(images)[1], tf.shape(images)[2]
        target_h, target_w = self.aligned_size(h, w)
        value = tf.reshape(tf.constant(self.pad_value, images.dtype), [1, 1, 1, -1])
        paddings = [[0, 0], [0, target_h - h], [0, target_w - w], [0, 0]]
        outside = 1.0 - tf.pad(tf.ones_like(images[..., :1]), paddings)  # 0 on the image
        return tf.pad(images, paddings) + outside * value  # image pixels stay bit-exact

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn(images, *args) -> dict`` on padded images, spatial outputs cropped back."""
        if self.stride == 1:
            return fn

        # wraps: keeps fn's parameter names, so a tf.function of it takes keywords
        # (a SavedModel-style call ``serve(images=...)``).
        @functools.wraps(fn)
        def aligned(images: tf.Tensor, *args: Any) -> Any:
            images = tf.convert_to_tensor(images)
            h, w = tf.shape(images)[1], tf.shape(images)[2]
            out = fn(self.pad(images), *args)
            return {k: v[:, :h, :w] if v.shape.rank is not None and v.shape.rank >= 3 else v
                    for k, v in out.items()}

        return aligned

