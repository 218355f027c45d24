"""Atrous backbones with output-stride control, each described once in ``BACKBONES``.

Each ``build_<name>(x, output_stride, ...)`` takes the *normalised* image tensor and
returns a dict of KerasTensors with keys ``stride2``, ``stride4``, ``stride8``,
``stride16`` (the last feature computed at that stride), ``final`` and ``low_level``.
A ``strideN`` key is absent when the network never reaches stride N, i.e. at output
stride 8 there is no ``stride16`` (the model then aliases its ``stride16`` layer to
``final``). Every layer is named ``backbone_...``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras

from deeplab_ext.models.deeplab.backbones.mobilenet_v2 import (
    build_mobilenet_v2,
    keras_applications_scope,
    mobilenet_v2_scope,
)
from deeplab_ext.models.deeplab.backbones.resnet_beta import (
    build_resnet_v1_50_beta,
    build_resnet_v1_101_beta,
    resnet_v1_beta_scope,
)
from deeplab_ext.models.deeplab.backbones.stride import OutputStrideTracker, Tap, no_tap
from deeplab_ext.models.deeplab.backbones.xception import build_xception_65, xception_65_scope
from deeplab_ext.models.layers import NormConfig

__all__ = ["BACKBONES", "BackboneSpec", "OutputStrideTracker", "Tap", "build_backbone", "no_tap"]


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """Everything the zoo knows about one backbone, in one place.

    ``preprocess``: the :class:`~deeplab_ext.models.layers.Preprocess` mode it was trained
    with; ``bn_epsilon``: the BatchNorm epsilon of the original's slim arg scope (the
    heads use ``DeepLabConfig.bn_epsilon``); ``original_scope``: our layer name (without
    ``backbone_``) -> the original's variable scope (importing its released weights);
    ``keras_application``: ``(depth_multiplier -> the keras.applications model whose
    ImageNet .h5 initialises this backbone, its layer name -> the original's scope)``.
    """

    build: Callable[..., dict]
    preprocess: str
    bn_epsilon: float
    original_scope: Callable[[str], str] | None = None
    keras_application: tuple[Callable[[float], keras.Model], Callable[[str], str | None]] | None = (
        None)


BACKBONES: dict[str, BackboneSpec] = {
    "xception_65": BackboneSpec(build_xception_65, "inception", 1e-3, xception_65_scope),
    "mobilenet_v2": BackboneSpec(
        build_mobilenet_v2, "inception", 1e-3, mobilenet_v2_scope,
        (lambda dm: keras.applications.MobileNetV2(weights=None, include_top=False, alpha=dm),
         keras_applications_scope)),
    "resnet_v1_50_beta": BackboneSpec(build_resnet_v1_50_beta, "mean_subtraction", 1e-5,
                                      resnet_v1_beta_scope(50)),
    "resnet_v1_101_beta": BackboneSpec(build_resnet_v1_101_beta, "mean_subtraction", 1e-5,
                                       resnet_v1_beta_scope(101)),
}


def get_backbone(name: str) -> BackboneSpec:
    """The spec of ``name``; unknown names raise a ValueError listing the valid ones."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid: {sorted(BACKBONES)}")
    return BACKBONES[name]


def build_backbone(name: str, x: keras.KerasTensor, output_stride: int, *, norm: NormConfig,
                   **kwargs) -> dict:
    """Build backbone ``name`` on ``x``: the network's ``norm`` with the backbone's own
    BatchNorm epsilon (the original's arg scope per backbone)."""
    spec = get_backbone(name)
    return spec.build(x, output_stride, norm=norm.replace(epsilon=spec.bn_epsilon), **kwargs)
