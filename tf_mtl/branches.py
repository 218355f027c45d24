"""Training-only additions to a multi-task model: extra loss terms and heads.

Both live in the :class:`~tf_mtl.model.MultiTaskModel`, not in the network, so they
are trained and checkpointed with the model (a resume restores them) and never reach
the exported network. Both may ask for named intermediate features of the network
(``features=("encoder",)``); the model taps them in the same forward pass the losses
use (:class:`tf_mtl.graph.FeatureTaps`), so BatchNorm statistics move once per step.

What a step computes, by name, is one dict (the *step outputs*): the network's outputs,
then every head's outputs, then the tapped features. Tasks read it by
``Task.output``, loss terms receive it whole.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import tensorflow as tf

__all__ = [
    "LossTerm",
    "LossTermLike",
    "OutputLoss",
    "TrainingHead",
    "requested_features",
    "term_name",
]


class LossTerm(keras.layers.Layer):
    """An extra loss term (regulariser, auxiliary or self-supervised loss).

    Subclasses implement ``compute(x, y, outputs, training) -> scalar``; the model adds
    ``weight * compute(...)`` to the total outside the task weighting, logged as
    ``<name>``. ``outputs`` are the step outputs (see the module docstring), including
    the features named in ``features``. A term may own variables (create them in
    ``__init__`` or ``build``); they are trained and checkpointed with the model.
    """

    def __init__(self, weight: float = 1.0, features: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.weight = float(weight)
        self.features = tuple(features)

    def compute(self, x: Any, y: Any, outputs: Mapping[str, tf.Tensor],
                training: bool) -> tf.Tensor:
        raise NotImplementedError

    def loss_value(self, x: Any, y: Any, outputs: Mapping[str, tf.Tensor],
                   training: bool) -> tf.Tensor:
        """weight * compute(...), as float32."""
        return self.weight * tf.cast(self.compute(x, y, outputs, training), tf.float32)

    def get_config(self) -> dict:
        return {**super().get_config(), "weight": self.weight, "features": list(self.features)}


LossTermLike = LossTerm | Callable[..., tf.Tensor]


class TrainingHead(keras.layers.Layer):
    """A training-only branch: reads tapped features, adds named outputs to the step.

    Subclasses pass ``features`` (names of the network's intermediate layers) and
    implement ``call(features: dict[str, Tensor], training) -> dict[str, Tensor]``;
    tasks then read the new outputs like any other (``Task(output=...)``). The head's
    variables are created when the model is built (a symbolic pass over the tapped
    features), before the optimizer sees the trainable variables.
    """

    def __init__(self, features: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.features = tuple(features)
        if not self.features:
            raise ValueError(f"{type(self).__name__}: name at least one feature to read")

    def get_config(self) -> dict:
        return {**super().get_config(), "features": list(self.features)}


def term_name(term: LossTermLike) -> str:
    return getattr(term, "name", None) or getattr(term, "__name__", type(term).__name__)


def requested_features(branches: Sequence[Any]) -> tuple[str, ...]:
    """The features any of ``branches`` asks for, in order, without repeats."""
    names: dict[str, None] = {}
    for branch in branches:
        for name in getattr(branch, "features", ()):
            names[name] = None
    return tuple(names)


class OutputLoss(LossTerm):
    """``weight * loss(y[target], outputs[output])`` as a term outside the task weighting
    (the same loss as a ``Task`` would be inside it): e.g. a training-only head's output
    against a target the network's own task also reads."""

    def __init__(self, output: str, target: str, loss: Callable[..., tf.Tensor],
                 weight: float = 1.0, **kwargs: Any) -> None:
        super().__init__(weight=weight, **kwargs)
        self.output_key, self.target_key, self.loss_fn = output, target, loss

    def compute(self, x: Any, y: Any, outputs: Mapping[str, tf.Tensor],
                training: bool) -> tf.Tensor:
        return self.loss_fn(y[self.target_key], tf.cast(outputs[self.output_key], tf.float32))
