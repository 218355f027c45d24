"""ResNet-v1 "beta" backbones of the original DeepLab (``core/resnet_v1_beta.py``).

Beta = the root 7x7 conv replaced by three 3x3 convs (64 s2, 64, 128) followed by a
3x3/s2 max pool. Bottleneck units as slim ``resnet_v1``: the stride sits on the 3x3
conv of the LAST unit of blocks 1-3; block4 uses ``multi_grid`` unit rates.
"""

from __future__ import annotations

import re

import keras

from deeplab_ext.models.deeplab.backbones.stride import OutputStrideTracker, Tap, no_tap
from deeplab_ext.models.layers import ConvBN, NormConfig

__all__ = ["build_resnet_v1_50_beta", "build_resnet_v1_101_beta", "build_resnet_v1_beta"]

_UNITS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def _bottleneck(
    x, name: str, depth: int, depth_bottleneck: int, stride: int, rate: int, norm: NormConfig, tap=None
):
    """slim ``bottleneck``; returns (output, conv3 output before the residual add)."""
    depth_in = x.shape[-1]
    if depth == depth_in:
        shortcut = x
        if stride > 1:  # resnet_utils.subsample: 1x1 max pool with stride
            shortcut = keras.layers.MaxPooling2D(1, stride, name=f"{name}_shortcut")(x)
    else:
        shortcut = ConvBN(depth, 1, strides=stride, activation=None, name=f"{name}_shortcut", norm=norm)(
            x
        )
    r = ConvBN(depth_bottleneck, 1, name=f"{name}_conv1", norm=norm)(x)
    r = ConvBN(depth_bottleneck, 3, strides=stride, dilation_rate=rate, name=f"{name}_conv2", norm=norm)(
        r
    )
    conv3 = ConvBN(depth, 1, activation=None, name=f"{name}_conv3", norm=norm)(r)
    if tap is not None:
        conv3 = tap("low_level", conv3)
    out = keras.layers.Add(name=f"{name}_add")([shortcut, conv3])
    out = keras.layers.ReLU(name=f"{name}_relu")(out)
    return out, conv3


def build_resnet_v1_beta(
    x: keras.KerasTensor,
    output_stride: int = 16,
    *,
    num_layers: int = 50,
    multi_grid: tuple[int, ...] | None = (1, 2, 4),
    depth_multiplier: float = 1.0,
    depth_divisible_by: int | None = None,
    norm: NormConfig,
    prefix: str = "backbone_",
    tap: Tap | None = None,
) -> dict[str, keras.KerasTensor]:
    """ResNet-v1-{50,101}-beta features.

    ``low_level`` is ``block1/unit_2/bottleneck_v1/conv3`` as in the original's
    decoder end point (stride 4, 256 ch, BN output before the residual add).
    """
    if num_layers not in _UNITS:
        raise ValueError(f"resnet_v1_beta num_layers={num_layers}: use one of {sorted(_UNITS)}")
    if depth_multiplier != 1.0:
        raise ValueError(f"resnet_v1_*_beta has no depth_multiplier (got {depth_multiplier})")
    multi_grid = tuple(multi_grid) if multi_grid else (1, 1, 1)
    if len(multi_grid) != _UNITS[num_layers][3]:
        raise ValueError(f"multi_grid={multi_grid} must have 3 rates for block4")
    tap = tap or no_tap
    tracker = OutputStrideTracker(output_stride, tap)
    x, stride, _ = tracker.next_unit(x, 2)
    x = ConvBN(64, 3, strides=stride, name=f"{prefix}conv1_1", norm=norm)(x)
    x = ConvBN(64, 3, name=f"{prefix}conv1_2", norm=norm)(x)
    x = ConvBN(128, 3, name=f"{prefix}conv1_3", norm=norm)(x)
    tracker.record(x)
    x, stride, _ = tracker.next_unit(x, 2)
    x = keras.layers.MaxPooling2D(3, stride, padding="same", name=f"{prefix}pool1")(x)
    tracker.record(x)
    low_level = None
    for b, (base, units) in enumerate(zip((64, 128, 256, 512), _UNITS[num_layers], strict=True), 1):
        for u in range(units):
            if b == 4:
                unit_stride, unit_rate = 1, multi_grid[u]
            else:
                unit_stride, unit_rate = (2 if u == units - 1 else 1), 1
            x, stride, rate = tracker.next_unit(x, unit_stride)
            is_low = b == 1 and u == units - 2
            x, conv3 = _bottleneck(
                x,
                f"{prefix}block{b}_unit{u + 1}",
                base * 4,
                base,
                stride,
                rate * unit_rate,
                norm,
                tap if is_low else None,
            )
            if is_low:
                low_level = conv3
            tracker.record(x)
    feats = tracker.finish(x)
    feats["low_level"] = low_level
    return feats


def build_resnet_v1_50_beta(x: keras.KerasTensor, output_stride: int = 16, **kwargs) -> dict:
    """ResNet-v1-50-beta (3, 4, 6, 3 units)."""
    return build_resnet_v1_beta(x, output_stride, num_layers=50, **kwargs)


def build_resnet_v1_101_beta(x: keras.KerasTensor, output_stride: int = 16, **kwargs) -> dict:
    """ResNet-v1-101-beta (3, 4, 23, 3 units)."""
    return build_resnet_v1_beta(x, output_stride, num_layers=101, **kwargs)


def resnet_v1_beta_scope(num_layers: int):
    """Our layer name -> the original's scope under ``resnet_v1_{50,101}`` (no ``_beta`` in
    the scope): ``conv1_2`` -> ``resnet_v1_50/conv1_2``; ``block3_unit5_conv2`` ->
    ``resnet_v1_50/block3/unit_5/bottleneck_v1/conv2``."""

    def scope(layer: str) -> str:
        match = re.fullmatch(r"block(\d+)_unit(\d+)_(.+)", layer)
        if match is None:
            return f"resnet_v1_{num_layers}/{layer}"
        block, unit, part = match.groups()
        return f"resnet_v1_{num_layers}/block{block}/unit_{unit}/bottleneck_v1/{part}"

    return scope
