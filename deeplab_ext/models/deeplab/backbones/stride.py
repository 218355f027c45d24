"""The original's output-stride bookkeeping (``stack_blocks_dense``) plus feature taps."""

from __future__ import annotations

from collections.abc import Callable

import keras

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
