"""Nash-MTL: multi-task learning as a bargaining game (Navon et al., ICML 2022)."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tf_mtl.weighting.base import GradientWeighting, register_weighting
from tf_mtl.weighting.solvers import nash_weights


@register_weighting("nash_mtl", "Navon et al., Multi-Task Learning as a Bargaining Game, "
                    "ICML 2022", update_weights_every=1, optim_niter=20, max_norm=1.0)
@keras.saving.register_keras_serializable(package="tf_mtl")
class NashMTL(GradientWeighting):
    """alpha > 0 solving (K alpha)_i = 1 / alpha_i for K = G G^T / |G G^T|_F, recomputed
    every ``update_weights_every`` steps (warm-started), the update sum_i alpha_i g_i
    clipped to global norm ``max_norm`` (0 = no clip), as LibMTL does. Our own solver
    (damped Newton, ``tf_mtl.weighting.solvers.nash_weights``) replaces the official
    cvxpy sequence of convex problems: same fixed point, no dependency. Task-specific
    variables descend the alpha-weighted losses too (the paper's sum alpha_i L_i)."""

    def __init__(self, tasks: Any = None, update_weights_every: int = 1, optim_niter: int = 20,
                 max_norm: float = 1.0, **kwargs: Any) -> None:
        super().__init__(tasks, **kwargs)
        if update_weights_every < 1:
            raise ValueError("--weighting_options: update_weights_every must be >= 1")
        self.update_weights_every = int(update_weights_every)
        self.optim_niter = int(optim_niter)
        self.max_norm = float(max_norm)
        self.alpha = self.add_weight(shape=(len(self.task_names),), initializer="ones",
                                     dtype="float32", trainable=False, name="alpha",
                                     aggregation="only_first_replica")
        self.built = True

    def coefficients(self, k, losses, step):
        step = tf.cast(step if step is not None else 0, tf.int64)
        prev = tf.convert_to_tensor(self.alpha)

        def solve():
            kn = k / (tf.norm(k) + 1e-12)
            return nash_weights(kn, prev, self.optim_niter)

        alpha = tf.cond(step % self.update_weights_every == 0, solve, lambda: prev)
        self.commit(self.alpha, alpha)
        if self.max_norm > 0:
            norm = tf.sqrt(tf.maximum(tf.tensordot(alpha, tf.linalg.matvec(k, alpha), 1), 0.0))
            alpha = alpha * tf.minimum(1.0, self.max_norm / (norm + 1e-6))
        return alpha, {}

    def task_specific_weights(self, alpha):
        return tf.convert_to_tensor(self.alpha)  # not clipped: the clip is of the shared update

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(update_weights_every=self.update_weights_every,
                      optim_niter=self.optim_niter, max_norm=self.max_norm)
        return config
