"""Atrous backbones with output-stride control.

Each ``build_<name>(x, output_stride, ...)`` takes the *normalised* image tensor and
returns a dict of KerasTensors with keys ``stride2``, ``stride4``, ``stride8``,
``stride16`` (the last feature computed at that stride), ``final`` and ``low_level``.
A ``strideN`` key is absent when the network never reaches stride N, i.e. at output
stride 8 there is no ``stride16`` (the model then aliases its ``stride16`` layer to
``final``). Every layer is named ``backbone_...``.
"""

from __future__ import annotations

from collections.abc import Callable

import keras

__all__ = [
    "BACKBONE_BUILDERS",
    "OutputStrideTracker",
    "Tap",
    "build_backbone",
    "no_tap",
    "preprocess_mode",
]


Tap = Callable[[str, keras.KerasTensor], keras.KerasTensor]


def no_tap(name: str, x: keras.KerasTensor) -> keras.KerasTensor:
    """Default tap: leave the graph unchanged."""
    del name
    return x


class OutputStrideTracker:
    """The original's ``stack_blocks_dense`` bookkeeping, plus feature taps.

    Once the running stride reaches ``output_stride``, further strides become 1 and
    multiply the dilation rate used by later units instead. ``tap(name, x)`` is applied
    *inline* to the last feature at stride 8 and 16 (so named identity layers stay on the
    path from input to output and survive in a functional model).
    """

    TAPPED = (8, 16)

    def __init__(self, output_stride: int, tap: Tap | None = None):
        if output_stride not in (8, 16, 32):
            raise ValueError(f"--output_stride={output_stride}: use 8, 16 or 32")
        self.output_stride = int(output_stride)
        self.current_stride = 1
        self.rate = 1
        self.tap = tap or no_tap
        self.features: dict[str, keras.KerasTensor] = {}

    def _tap_current(self, x: keras.KerasTensor) -> keras.KerasTensor:
        name = f"stride{self.current_stride}"
        if self.current_stride in self.TAPPED and name not in self.features:
            x = self.tap(name, x)
            self.features[name] = x
        return x

    def next_unit(self, x: keras.KerasTensor, stride: int) -> tuple[keras.KerasTensor, int, int]:
        """(input, stride, rate) for the next unit whose nominal stride is ``stride``."""
        if self.current_stride == self.output_stride:
            rate = self.rate
            self.rate *= stride
            return x, 1, rate
        if self.current_stride > self.output_stride:
            raise ValueError("the target output_stride cannot be reached")
        if stride > 1:
            x = self._tap_current(x)
        self.current_stride *= stride
        return x, stride, 1

    def record(self, x: keras.KerasTensor) -> None:
        """Remember ``x`` as the latest feature at the current stride (stride2/stride4)."""
        if self.current_stride in (2, 4):
            self.features[f"stride{self.current_stride}"] = x

    def finish(self, x: keras.KerasTensor) -> dict[str, keras.KerasTensor]:
        """Tap the final feature and return the feature dict (``final`` included)."""
        x = self._tap_current(x)
        feats = dict(self.features)
        feats["final"] = x
        return feats


def preprocess_mode(backbone: str) -> str:
    """Which :class:`~deeplab_ext.layers.Preprocess` mode the backbone was trained with."""
    return "mean_subtraction" if backbone.startswith("resnet") else "inception"


def _builders() -> dict[str, Callable[..., dict]]:
    from deeplab_ext.backbones.mobilenet_v2 import build_mobilenet_v2
    from deeplab_ext.backbones.resnet_beta import build_resnet_v1_50_beta, build_resnet_v1_101_beta
    from deeplab_ext.backbones.xception import build_xception_65

    return {
        "xception_65": build_xception_65,
        "mobilenet_v2": build_mobilenet_v2,
        "resnet_v1_50_beta": build_resnet_v1_50_beta,
        "resnet_v1_101_beta": build_resnet_v1_101_beta,
    }


BACKBONE_BUILDERS = ("xception_65", "mobilenet_v2", "resnet_v1_50_beta", "resnet_v1_101_beta")


def build_backbone(name: str, x: keras.KerasTensor, output_stride: int, **kwargs) -> dict:
    """Dispatch to ``build_<name>``; unknown names raise a ValueError listing the valid ones."""
    builders = _builders()
    if name not in builders:
        raise ValueError(f"unknown backbone {name!r}; valid: {sorted(builders)}")
    return builders[name](x, output_stride, **kwargs)
