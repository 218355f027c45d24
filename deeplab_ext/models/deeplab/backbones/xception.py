"""DeepLab's modified aligned Xception-65 (the original ``core/xception.py``).

Entry flow: conv 32 s2, conv 64, then blocks [128]*3 s2, [256]*3 s2, [728]*3 s2 with
1x1-conv skips; middle flow: 16 units of [728]*3 with identity skips; exit flow:
[728, 1024, 1024] s2 with conv skip and [1536, 1536, 2048] without skip. Max pooling
is replaced by strided separable convs. As in the original, units of all blocks but
the last are built with ``activation_fn_in_separable_conv=False`` (ReLU before each
separable conv, BN after its depthwise and pointwise parts), the last block with
ReLU after each depthwise and pointwise BN.
"""

from __future__ import annotations

import re

import keras

from deeplab_ext.models.deeplab.backbones.stride import OutputStrideTracker, Tap, no_tap
from deeplab_ext.models.layers import ConvBN, NormConfig, SeparableConvBN

__all__ = ["build_xception_65", "XCEPTION_65_BLOCKS"]

# (scope, depth_list, skip, activation_in_separable_conv, num_units, stride)
XCEPTION_65_BLOCKS = (
    ("entry_flow_block1", (128, 128, 128), "conv", False, 1, 2),
    ("entry_flow_block2", (256, 256, 256), "conv", False, 1, 2),
    ("entry_flow_block3", (728, 728, 728), "conv", False, 1, 2),
    ("middle_flow_block1", (728, 728, 728), "sum", False, 16, 1),
    ("exit_flow_block1", (728, 1024, 1024), "conv", False, 1, 2),
    ("exit_flow_block2", (1536, 1536, 2048), "none", True, 1, 1),
)


def _xception_unit(
    x,
    name: str,
    depth_list,
    skip: str,
    act_in_sep: bool,
    stride: int,
    rate: int,
    unit_rates,
    norm: NormConfig,
    tap_low_level=None,
):
    """One ``xception_module``; returns (output, outputs of its three separable convs)."""
    residual = x
    sep_outputs = []
    for i, depth in enumerate(depth_list):
        residual = SeparableConvBN(
            depth,
            3,
            strides=stride if i == 2 else 1,
            dilation_rate=rate * unit_rates[i],
            activation="relu" if act_in_sep else None,
            pre_activation=None if act_in_sep else "relu",
            name=f"{name}_separable_conv{i + 1}",
            norm=norm,
        )(residual)
        if i == 1 and tap_low_level is not None:
            residual = tap_low_level("low_level", residual)
        sep_outputs.append(residual)
    if skip == "conv":
        shortcut = ConvBN(
            depth_list[-1], 1, strides=stride, activation=None, name=f"{name}_shortcut", norm=norm
        )(x)
        out = keras.layers.Add(name=f"{name}_add")([residual, shortcut])
    elif skip == "sum":
        out = keras.layers.Add(name=f"{name}_add")([residual, x])
    else:
        out = residual
    return out, sep_outputs


def build_xception_65(
    x: keras.KerasTensor,
    output_stride: int = 16,
    *,
    multi_grid: tuple[int, ...] | None = None,
    depth_multiplier: float = 1.0,
    depth_divisible_by: int | None = None,
    norm: NormConfig,
    prefix: str = "backbone_",
    tap: Tap | None = None,
) -> dict[str, keras.KerasTensor]:
    """Xception-65 features; ``low_level`` is entry_flow/block2's 2nd separable conv (stride 4, 256 ch).

    ``depth_multiplier`` is accepted for a uniform signature; the original Xception has
    none, so only 1.0 is allowed.
    """
    if depth_multiplier != 1.0:
        raise ValueError(
            f"xception_65 has no depth_multiplier (got {depth_multiplier}); use 1.0 "
            "or a mobilenet_v2 variant for small models."
        )
    unit_rates_last = tuple(multi_grid) if multi_grid else (1, 1, 1)
    if len(unit_rates_last) != 3:
        raise ValueError(f"xception_65 multi_grid needs 3 rates, got {multi_grid}")
    tap = tap or no_tap
    tracker = OutputStrideTracker(output_stride, tap)
    # Root: conv 32 s2 (counted in the running stride), conv 64.
    x, stride, _ = tracker.next_unit(x, 2)
    x = ConvBN(32, 3, strides=stride, name=f"{prefix}entry_flow_conv1_1", norm=norm)(x)
    x = ConvBN(64, 3, name=f"{prefix}entry_flow_conv1_2", norm=norm)(x)
    tracker.record(x)
    low_level = None
    for scope, depth_list, skip, act_in_sep, num_units, block_stride in XCEPTION_65_BLOCKS:
        unit_rates = unit_rates_last if scope == "exit_flow_block2" else (1, 1, 1)
        for u in range(num_units):
            x, stride, rate = tracker.next_unit(x, block_stride)
            x, seps = _xception_unit(
                x,
                f"{prefix}{scope}_unit{u + 1}",
                depth_list,
                skip,
                act_in_sep,
                stride,
                rate,
                unit_rates,
                norm,
                tap if scope == "entry_flow_block2" else None,
            )
            if scope == "entry_flow_block2":
                low_level = seps[1]
            tracker.record(x)
    feats = tracker.finish(x)
    feats["low_level"] = low_level
    return feats


def xception_65_scope(layer: str) -> str:
    """Our layer name -> the original's scope: ``entry_flow_conv1_1`` ->
    ``xception_65/entry_flow/conv1_1``; ``middle_flow_block1_unit3_separable_conv2`` ->
    ``xception_65/middle_flow/block1/unit_3/xception_module/separable_conv2``."""
    match = re.fullmatch(r"(entry_flow|middle_flow|exit_flow)_(?:block(\d+)_unit(\d+)_)?(.+)",
                         layer)
    if match is None:
        raise ValueError(f"not an xception_65 layer: {layer!r}")
    flow, block, unit, part = match.groups()
    if block is None:
        return f"xception_65/{flow}/{part}"
    return f"xception_65/{flow}/block{block}/unit_{unit}/xception_module/{part}"
