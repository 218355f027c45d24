"""PCGrad: gradient surgery (Yu et al., NeurIPS 2020)."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tf_mtl.weighting.base import GradientWeighting, register_weighting


def random_orders(seed: tf.Tensor, n: int) -> tf.Tensor:
    """``[n, n]``: row i is the random order in which task i meets the others."""
    return tf.argsort(tf.random.stateless_uniform([n, n], seed=seed), axis=-1)


@register_weighting("pcgrad", "Yu et al., Gradient Surgery for Multi-Task Learning, NeurIPS 2020")
@keras.saving.register_keras_serializable(package="tf_mtl")
class PCGrad(GradientWeighting):
    """Each task gradient g_i, visiting the tasks j in a random order, loses its component
    along g_j when they conflict (pc_i . g_j < 0): pc_i -= (pc_i . g_j) / |g_j|^2 g_j.
    The update is sum_i pc_i. Every pc_i stays a combination of the g_j, so the method
    works on the Gram matrix alone (and on representation gradients)."""

    def __init__(self, tasks: Any = None, **kwargs: Any) -> None:
        super().__init__(tasks, **kwargs)
        self.built = True

    def coefficients(self, k, losses, step):
        n = len(self.task_names)
        orders = random_orders(self.random_seed(step), n)
        return pcgrad_coefficients(k, orders), {}


def pcgrad_coefficients(k: tf.Tensor, orders: tf.Tensor) -> tf.Tensor:
    """The weights alpha with sum_i pc_i = sum_j alpha_j g_j (LibMTL's batch_weight)."""
    n = int(k.shape[0])
    eye = tf.eye(n, dtype=k.dtype)
    total = tf.zeros([n], k.dtype)
    for i in range(n):
        a = eye[i]  # pc_i = a @ G
        for r in range(n):
            j = orders[i, r]
            dot = tf.tensordot(a, k[:, j], 1)
            coef = tf.where(dot < 0, dot / (k[j, j] + 1e-8), 0.0)
            a = a - coef * tf.one_hot(j, n, dtype=k.dtype)
        total = total + a
    return total
