"""FAMO: Fast Adaptive Multitask Optimization (Liu et al., NeurIPS 2023)."""

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

_EPS = 1e-8


@register_weighting("famo", "Liu et al., FAMO, NeurIPS 2023", w_lr=0.025, w_gamma=1e-3)
@keras.saving.register_keras_serializable(package="tf_mtl")
class FAMO(LossWeighting):
    """Loss weights that equalise the tasks' log-loss decrease, in O(1) memory and time.

    total = sum_i z_i log(L_i - m_i + eps) / c, z = softmax(w), c = sum_i z_i /
    (L_i - m_i + eps) (a constant), so the effective weight on L_i is
    z_i / (c (L_i - m_i + eps)). The logits w follow Adam (lr ``w_lr``, L2 ``w_gamma``) on
    the gradient J_softmax(w)^T delta, delta_i = log(L_i(prev) - m_i) - log(L_i(now) - m_i).

    One departure from the paper and LibMTL, for the cost: they measure the decrease on
    the same batch after the update (a second forward pass); here the update of w at step
    t uses the losses of steps t-1 and t (the next batch), so no pass is added. On
    full-batch steps the two are the same (``bench/bench_libmtl_parity.py``: LibMTL's FAMO
    within 2e-5). m_i (the minimum losses) are 0 as in LibMTL.
    """

    def __init__(self, tasks: Sequence[Task] | None = None, w_lr: float = 0.025,
                 w_gamma: float = 1e-3, task_names: Sequence[str] | None = None,
                 weights: Mapping[str, float] | None = None, **kwargs: Any) -> None:
        names = task_names_of(tasks, task_names)
        super().__init__(names, **kwargs)
        self.weights_by_task = prior_weights(tasks, names, weights)
        self.w_lr, self.w_gamma = float(w_lr), float(w_gamma)
        k = len(names)
        state = dict(trainable=False, dtype="float32", aggregation="only_first_replica")
        self.logits = self.add_weight(shape=(k,), initializer="zeros", name="logits", **state)
        self.m = self.add_weight(shape=(k,), initializer="zeros", name="adam_m", **state)
        self.v = self.add_weight(shape=(k,), initializer="zeros", name="adam_v", **state)
        self.t = self.add_weight(shape=(), initializer="zeros", name="adam_t", **state)
        self.prev = self.add_weight(shape=(k,), initializer="zeros", name="prev_losses", **state)
        self.min_losses = self.add_weight(shape=(k,), initializer="zeros", name="min_losses",
                                          **state)
        self.built = True

    def _update_logits(self, losses: tf.Tensor) -> None:
        """One Adam step of w (torch.optim.Adam with weight_decay: L2 added to the grad)."""
        m0 = tf.convert_to_tensor(self.min_losses)
        delta = (tf.math.log(tf.convert_to_tensor(self.prev) - m0 + _EPS)
                 - tf.math.log(losses - m0 + _EPS))
        w = tf.convert_to_tensor(self.logits)
        z = tf.nn.softmax(w)
        d = z * (delta - tf.reduce_sum(z * delta))  # J_softmax(w)^T delta
        d = d + self.w_gamma * w
        t = self.t + 1.0
        m = 0.9 * self.m + 0.1 * d
        v = 0.999 * self.v + 0.001 * tf.square(d)
        step = self.w_lr * (m / (1.0 - 0.9 ** t)) / (tf.sqrt(v / (1.0 - 0.999 ** t)) + 1e-8)
        for var, value in ((self.logits, w - step), (self.m, m), (self.v, v), (self.t, t)):
            var.assign(value)

    def combine(self, task_losses, tasks=None, step=None):
        prior = self.prior_vector()
        losses = prior * self.loss_vector(task_losses)
        if step is not None:  # training: learn from the change since the last step
            observed = tf.stop_gradient(losses)
            tf.cond(tf.cast(step, tf.int64) > 0, lambda: self._update_logits(observed),
                    lambda: None)
            self.prev.assign(observed)
        z = tf.nn.softmax(tf.convert_to_tensor(self.logits))
        d = losses - tf.convert_to_tensor(self.min_losses) + _EPS
        c = tf.stop_gradient(tf.reduce_sum(z / d))
        total = tf.reduce_sum(tf.math.log(d) * z) / c
        w = tf.stop_gradient(z / (c * d)) * prior
        return total, self.weight_logs(w)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(w_lr=self.w_lr, w_gamma=self.w_gamma, weights=dict(self.weights_by_task))
        return config
