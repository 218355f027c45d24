"""Fixed weights: the equal-weight (EW) baseline and hand-set priors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import tensorflow as tf

from tf_mtl.tasks import Task
from tf_mtl.weighting.base import LossWeighting, prior_weights, register_weighting
from tf_mtl.weighting.base import task_names_of as _names


@register_weighting("fixed", "equal or hand-set weights (LibMTL EW)")
@keras.saving.register_keras_serializable(package="tf_mtl")
class FixedWeighting(LossWeighting):
    """total = sum_i w_i * L_i with constant weights (default: each Task.weight)."""

    def __init__(
        self,
        tasks: Sequence[Task] | None = None,
        weights: Mapping[str, float] | None = None,
        task_names: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        if task_names is None and tasks is None and weights is not None:
            task_names = list(weights)
        super().__init__(_names(tasks, task_names), **kwargs)
        self.weights_by_task = prior_weights(tasks, self.task_names, weights)
        self.built = True

    def combine(self, task_losses, tasks=None, step=None):
        self._check_losses(task_losses)
        total = tf.constant(0.0, tf.float32)
        logs = {}
        for n in self.task_names:
            w = self.weights_by_task[n]
            total = total + w * tf.cast(task_losses[n], tf.float32)
            logs[f"{n}_weight"] = tf.constant(w, tf.float32)
        return total, logs

    def get_config(self) -> dict:
        config = super().get_config()
        config["weights"] = dict(self.weights_by_task)
        return config
