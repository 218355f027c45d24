"""Auxiliary modules (Liu, Zhuang, Shen et al., "Auxiliary learning for deep multi-task
learning", arXiv 1909.02214): a training-only module per task, fed by several
intermediate features of the shared layers, supervised by that task's loss, dropped at
inference. Their extra gradients reach the shared layers at several depths.

A module walks its taps from the first named (shallowest) to the last: each tap goes
through an *adaptor*; the hidden state so far is resized to that tap's size and
*aggregated* with it (``sum``, or ``concat`` followed by a 1x1 conv back to
``channels``); a 1x1 conv turns the last state into the task's prediction.

Adaptors (the paper's search space): ``basic`` (1x1 conv + BN + ReLU), ``conv3x3``,
``sep3x3``, ``sep3x3_d3``, ``sep3x3_d6`` (separable 3x3, dilation 1 / 3 / 6; each + BN +
ReLU) and ``skip`` (a 1x1 conv only to match the channels).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from tf_mtl.branches import TrainingHead

__all__ = ["ADAPTORS", "AGGREGATORS", "AuxiliaryModule", "StageHeads"]

ADAPTORS = ("basic", "conv3x3", "sep3x3", "sep3x3_d3", "sep3x3_d6", "skip")
AGGREGATORS = ("sum", "concat")


def _adaptor(kind: str, channels: int, name: str) -> keras.Sequential:
    if kind not in ADAPTORS:
        raise ValueError(f"adaptor {kind!r}: choose one of {ADAPTORS}")
    if kind == "skip":
        return keras.Sequential([keras.layers.Conv2D(channels, 1, name="project")], name=name)
    if kind == "basic":
        conv = keras.layers.Conv2D(channels, 1, use_bias=False, name="conv")
    elif kind == "conv3x3":
        conv = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False, name="conv")
    else:
        rate = {"sep3x3": 1, "sep3x3_d3": 3, "sep3x3_d6": 6}[kind]
        conv = keras.layers.SeparableConv2D(channels, 3, padding="same", dilation_rate=rate,
                                            use_bias=False, name="conv")
    return keras.Sequential([conv, keras.layers.BatchNormalization(name="bn"),
                             keras.layers.ReLU(name="relu")], name=name)


class AuxiliaryModule(TrainingHead):
    """Taps -> adaptors -> aggregated state -> ``{output: prediction}`` (at the last
    tap's resolution; the task's loss resizes it to its target)."""

    def __init__(self, features: Sequence[str], channels: int, out_channels: int,
                 output: str, adaptor: str = "basic", aggregator: str = "sum",
                 **kwargs: Any) -> None:
        super().__init__(features=features, **kwargs)
        if aggregator not in AGGREGATORS:
            raise ValueError(f"aggregator {aggregator!r}: choose one of {AGGREGATORS}")
        self.channels, self.out_channels, self.output_key = channels, out_channels, output
        self.adaptor_kind, self.aggregator = adaptor, aggregator
        # Sub-layers as plain attributes, not lists: tf.train.Checkpoint (resume) tracks
        # a Keras 3 layer's attributes but not the layers inside a list attribute.
        for i in range(len(self.features)):
            setattr(self, f"adaptor_{i}", _adaptor(adaptor, channels, f"adaptor_{i}"))
            if aggregator == "concat" and i:
                setattr(self, f"mix_{i}", keras.layers.Conv2D(channels, 1, name=f"mix_{i}"))
        self.predict = keras.layers.Conv2D(out_channels, 1, name="predict")

    def call(self, features: dict, training: bool | None = None) -> dict:
        state = None
        for i, name in enumerate(self.features):
            tapped = getattr(self, f"adaptor_{i}")(features[name], training=training)
            if state is not None:
                state = tf.image.resize(state, tf.shape(tapped)[1:3], method="bilinear")
                state = tf.cast(state, tapped.dtype)
                if self.aggregator == "sum":
                    tapped = state + tapped
                else:
                    tapped = getattr(self, f"mix_{i}")(tf.concat([state, tapped], axis=-1))
            state = tapped
        return {self.output_key: self.predict(state)}

    def get_config(self) -> dict:
        return {**super().get_config(), "channels": self.channels,
                "out_channels": self.out_channels, "output": self.output_key,
                "adaptor": self.adaptor_kind, "aggregator": self.aggregator}


class StageHeads(TrainingHead):
    """Deep supervision: a 1x1 conv on each tapped stage predicts the task there
    (``{f"{prefix}_{feature}": prediction}``); each gets the task's loss, scaled."""

    def __init__(self, features: Sequence[str], out_channels: int, prefix: str,
                 **kwargs: Any) -> None:
        super().__init__(features=features, **kwargs)
        self.out_channels, self.prefix = out_channels, prefix
        for i, f in enumerate(self.features):  # attributes: see AuxiliaryModule
            setattr(self, f"predict_{i}", keras.layers.Conv2D(out_channels, 1,
                                                               name=f"predict_{f}"))

    def output_name(self, feature: str) -> str:
        return f"{self.prefix}_{feature}"

    def call(self, features: dict, training: bool | None = None) -> dict:
        return {self.output_name(f): getattr(self, f"predict_{i}")(features[f])
                for i, f in enumerate(self.features)}

    def get_config(self) -> dict:
        return {**super().get_config(), "out_channels": self.out_channels,
                "prefix": self.prefix}
