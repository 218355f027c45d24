"""Geometric Loss Strategy (Chennupati et al., MultiNet++, CVPR 2019 workshops)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import tensorflow as tf

from tf_mtl.tasks import Task
from tf_mtl.weighting.base import (
    LossWeighting,
    prior_weights,
    register_weighting,
    task_names_of,
)


@register_weighting("gls", "Chennupati et al., MultiNet++, CVPRW 2019")
@keras.saving.register_keras_serializable(package="tf_mtl")
class GeometricLossStrategy(LossWeighting):
    """total = (prod_i L_i)^(1/T), computed as exp(mean_i log L_i) (no overflow of the
    product). Its effective weight on L_i is total / (T L_i): a task whose loss is small
    weighs more. Losses must be positive."""

    def __init__(self, tasks: Sequence[Task] | None = None,
                 task_names: Sequence[str] | None = None,
                 weights: Mapping[str, float] | None = None, **kwargs: Any) -> None:
        names = task_names_of(tasks, task_names)
        super().__init__(names, **kwargs)
        self.weights_by_task = prior_weights(tasks, names, weights)
        self.built = True

    def combine(self, task_losses, tasks=None, step=None):
        prior = self.prior_vector()
        losses = prior * self.loss_vector(task_losses)
        total = tf.exp(tf.reduce_mean(tf.math.log(losses)))
        w = tf.stop_gradient(total / (len(self.task_names) * losses)) * prior
        return total, self.weight_logs(w)

    def get_config(self) -> dict:
        config = super().get_config()
        config["weights"] = dict(self.weights_by_task)
        return config
