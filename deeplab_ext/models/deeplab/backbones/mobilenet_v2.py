"""MobileNetV2 as used by the original DeepLab (slim ``mobilenet_v2`` up to ``layer_18``).

Channels are scaled by ``depth_multiplier`` and rounded like slim's ``_make_divisible``:
to multiples of 8 at depth multiplier 1, to the nearest integer otherwise (the original's
feature extractor passes ``divisible_by=8 if depth_multiplier == 1.0 else 1``; its
released dm 0.5 model has 12 channels where multiples of 8 would give 16);
``depth_divisible_by`` overrides the rule. Expansion sizes are
``_make_divisible(6 * in_channels, 8)``. The final 1x1 conv to 1280 channels
(``layer_19``) is not built, as in DeepLab.
"""

from __future__ import annotations

import keras

from deeplab_ext.models.deeplab.backbones.stride import OutputStrideTracker, Tap, no_tap
from deeplab_ext.models.layers import ConvBN, DepthwiseConvBN, NormConfig

__all__ = [
    "MOBILENET_V2_DEF",
    "build_mobilenet_v2",
    "keras_applications_scope",
    "make_divisible",
    "mobilenet_v2_scope",
]

# (expansion t, output channels c, repeats n, first stride s) -- layers 2..18 of V2_DEF.
MOBILENET_V2_DEF = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """slim mobilenet's ``_make_divisible``: round to a multiple, never drop below 90%."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return int(new_v)


def build_mobilenet_v2(
    x: keras.KerasTensor,
    output_stride: int = 16,
    *,
    depth_multiplier: float = 1.0,
    depth_divisible_by: int | None = None,
    multi_grid: tuple[int, ...] | None = None,
    num_blocks: tuple[int, ...] | None = None,
    norm: NormConfig,
    prefix: str = "backbone_",
    tap: Tap | None = None,
) -> dict[str, keras.KerasTensor]:
    """MobileNetV2 features; ``final`` = the last block's output (layer_18, 320*dm ch),
    ``low_level`` = the depthwise output of the second stage's last block (layer_4).

    ``num_blocks``: inverted-residual blocks per stage, None = the original's
    (1, 2, 3, 4, 3, 3, 1); fewer blocks trace and run faster (the test network).
    """
    del multi_grid  # not used by MobileNetV2 (kept for a uniform signature)
    repeats = num_blocks or tuple(n for _, _, n, _ in MOBILENET_V2_DEF)
    if len(repeats) != len(MOBILENET_V2_DEF) or min(repeats) < 1:
        raise ValueError(f"backbone_blocks={tuple(repeats)}: MobileNetV2 needs "
                         f"{len(MOBILENET_V2_DEF)} stages of >= 1 block each")

    divisor = depth_divisible_by or (8 if depth_multiplier == 1.0 else 1)

    def depth(c: int) -> int:
        return make_divisible(c * depth_multiplier, divisor, divisor)

    tap = tap or no_tap
    tracker = OutputStrideTracker(output_stride, tap)
    x, stride, _ = tracker.next_unit(x, 2)
    x = ConvBN(depth(32), 3, strides=stride, activation="relu6", name=f"{prefix}layer_1", norm=norm)(x)
    layer = 2
    low_level = None
    for stage, ((t, c, _, s), n) in enumerate(zip(MOBILENET_V2_DEF, repeats, strict=True)):
        out_ch = depth(c)
        for i in range(n):
            x, stride, rate = tracker.next_unit(x, s if i == 0 else 1)
            name = f"{prefix}layer_{layer}"
            in_ch = x.shape[-1]
            inner = make_divisible(in_ch * t, 8 if t > 1 else 1)
            h = x
            if inner > in_ch:
                h = ConvBN(inner, 1, activation="relu6", name=f"{name}_expand", norm=norm)(h)
            h = DepthwiseConvBN(3, strides=stride, dilation_rate=rate, activation="relu6",
                                name=f"{name}_depthwise", norm=norm)(h)
            if stage == 1 and i == n - 1:  # stride 4, the decoder's low-level feature
                h = low_level = tap("low_level", h)
            h = ConvBN(out_ch, 1, activation=None, name=f"{name}_project", norm=norm)(h)
            if stride == 1 and in_ch == out_ch:
                h = keras.layers.Add(name=f"{name}_add")([h, x])
            x = h
            tracker.record(x)
            layer += 1
    feats = tracker.finish(x)
    feats["low_level"] = low_level
    return feats


def mobilenet_v2_scope(layer: str) -> str:
    """Our layer name (``layer_4_expand``) -> the original's scope
    (``MobilenetV2/expanded_conv_2/expand``): slim names ``layer_1`` ``Conv`` and
    ``layer_k`` ``expanded_conv[_{k-2}]``."""
    index, _, part = layer.removeprefix("layer_").partition("_")
    k = int(index)
    if k == 1:
        return "MobilenetV2/Conv"
    block = "expanded_conv" if k == 2 else f"expanded_conv_{k - 2}"
    return f"MobilenetV2/{block}/{part}"


def keras_applications_scope(layer: str) -> str | None:
    """A ``keras.applications.MobileNetV2`` layer name -> the original's scope (BatchNorm
    layers -> ``<scope>/BatchNorm``): ``Conv1`` -> ``MobilenetV2/Conv``,
    ``block_3_expand_BN`` -> ``MobilenetV2/expanded_conv_3/expand/BatchNorm``. None for
    layers DeepLab does not build (``Conv_1``, the 1280-channel layer_19)."""
    if layer in ("Conv1", "bn_Conv1"):
        return "MobilenetV2/Conv" + ("/BatchNorm" if layer == "bn_Conv1" else "")
    batch_norm = layer.endswith("_BN")
    base = layer.removesuffix("_BN")
    if base.startswith("expanded_conv_"):
        block, part = "expanded_conv", base.removeprefix("expanded_conv_")
    elif base.startswith("block_"):
        index, _, part = base.removeprefix("block_").partition("_")
        block = f"expanded_conv_{index}"
    else:
        return None
    return f"MobilenetV2/{block}/{part}" + ("/BatchNorm" if batch_norm else "")
