"""Random Loss Weighting (Lin et al., TMLR 2022): weights softmax(z), z ~ N(0, I) per step."""

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


@register_weighting("rlw", "Lin et al., Reasonable Effectiveness of Random Weighting, TMLR 2022",
                    seed=0)
@keras.saving.register_keras_serializable(package="tf_mtl")
class RandomLossWeighting(LossWeighting):
    """total = sum_i w_i L_i with w = softmax(z), z ~ N(0, I) drawn afresh each step.

    The draw is stateless from (seed, step): every replica draws the same weights, and a
    resumed run the ones an uninterrupted run would have."""

    def __init__(self, tasks: Sequence[Task] | None = None, seed: int = 0,
                 task_names: Sequence[str] | None = None,
                 weights: Mapping[str, float] | None = None, **kwargs: Any) -> None:
        names = task_names_of(tasks, task_names)
        super().__init__(names, **kwargs)
        self.seed = int(seed)
        self.weights_by_task = prior_weights(tasks, names, weights)
        self.built = True

    def draw(self, step: tf.Tensor | None) -> tf.Tensor:
        step = tf.cast(step if step is not None else 0, tf.int64)
        z = tf.random.stateless_normal([len(self.task_names)],
                                       seed=tf.stack([tf.constant(self.seed, tf.int64), step]))
        return tf.nn.softmax(z)

    def combine(self, task_losses, tasks=None, step=None):
        prior = self.prior_vector()
        w = self.draw(step) * prior
        return tf.reduce_sum(w * self.loss_vector(task_losses)), self.weight_logs(w)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(seed=self.seed, weights=dict(self.weights_by_task))
        return config
