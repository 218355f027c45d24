"""Gradient Vaccine (Wang et al., ICLR 2021): adaptive gradient similarity targets."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tf_mtl.weighting.base import GradientWeighting, between, register_weighting
from tf_mtl.weighting.pcgrad import random_orders


@register_weighting("gradvac", "Wang et al., Gradient Vaccine, ICLR 2021", beta=0.5,
                    checks={"beta": between(0.0, 1.0)})
@keras.saving.register_keras_serializable(package="tf_mtl")
class GradVac(GradientWeighting):
    """Keeps an EMA target phi_ij (decay ``beta``) of the cosine between tasks i and j.
    Visiting the other tasks in a random order, when cos(pc_i, g_j) < phi_ij, pc_i gains
    w g_j with w = |pc_i| (phi sqrt(1 - rho^2) - rho sqrt(1 - phi^2)) /
    (|g_j| sqrt(1 - phi^2)), which lifts the cosine to phi. The update is sum_i pc_i.
    One parameter group (the whole shared model), LibMTL's default group_type=0."""

    def __init__(self, tasks: Any = None, beta: float = 0.5, **kwargs: Any) -> None:
        super().__init__(tasks, **kwargs)
        self.beta = float(beta)
        n = len(self.task_names)
        self.rho_target = self.add_weight(shape=(n, n), initializer="zeros", dtype="float32",
                                          trainable=False, name="rho_target",
                                          aggregation="only_first_replica")
        self.built = True

    def coefficients(self, k, losses, step):
        n = len(self.task_names)
        orders = random_orders(self.random_seed(step), n)
        alpha, targets = gradvac_coefficients(k, orders, tf.convert_to_tensor(self.rho_target),
                                              self.beta)
        self.commit(self.rho_target, targets)
        return alpha, {}

    def get_config(self) -> dict:
        config = super().get_config()
        config["beta"] = self.beta
        return config


def gradvac_coefficients(k: tf.Tensor, orders: tf.Tensor, targets: tf.Tensor, beta: float
                         ) -> tuple[tf.Tensor, tf.Tensor]:
    """(alpha with sum_i pc_i = alpha @ G, the updated targets phi)."""
    n = int(k.shape[0])
    eye = tf.eye(n, dtype=k.dtype)
    norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(k), 0.0))
    total = tf.zeros([n], k.dtype)
    phi = targets
    for i in range(n):
        a = eye[i]
        for r in range(n):
            j = orders[i, r]
            ka = tf.linalg.matvec(k, a)
            pc_norm = tf.sqrt(tf.maximum(tf.tensordot(a, ka, 1), 0.0))
            rho = tf.clip_by_value(ka[j] / (pc_norm * norms[j] + 1e-8), -1.0, 1.0)  # rounding
            target = phi[i, j]
            w = pc_norm * (target * tf.sqrt(1 - rho ** 2) - rho * tf.sqrt(1 - target ** 2)) / (
                norms[j] * tf.sqrt(1 - target ** 2) + 1e-8)
            lift = tf.logical_and(rho < target, tf.not_equal(j, i))
            a = a + tf.where(lift, w, 0.0) * tf.one_hot(j, n, dtype=k.dtype)
            new_target = tf.where(tf.equal(j, i), target, (1 - beta) * target + beta * rho)
            phi = tf.tensor_scatter_nd_update(phi, [[i, j]], [new_target])
        total = total + a
    return total, phi
