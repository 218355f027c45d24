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
    """alpha > 0 solving alpha_i (K alpha)_i = 1 for the raw Gram matrix K = G G^T (the
    fixed point of the authors' code and LibMTL's), recomputed every
    ``update_weights_every`` steps (warm-started), the update sum_i alpha_i g_i clipped to
    global norm ``max_norm`` (0 = no clip), as LibMTL does. At the fixed point
    |sum_i alpha_i g_i|^2 = alpha^T K alpha = T, so with max_norm < sqrt(T) (the default
    1) the shared update always has norm max_norm.

    Our solver (damped Newton in float64 on the float64 Gram matrix to a residual of
    1e-9, at most ``optim_niter`` steps; ``tf_mtl.weighting.solvers.nash_weights``; logs
    ``nash_steps`` and ``nash_residual``) replaces the official cvxpy sequence of convex
    programs, which stops once |K_n alpha - 1 / alpha| < 1e-3 (K_n = K / |K|_F), after
    20 programs, or when a program makes no progress (on 3 conflicting gradients in
    ``bench/bench_libmtl_parity.py`` it stalls with alpha 78 % off the fixed point): the
    same fixed point, solved to round-off, no dependency. Task-specific variables descend
    the alpha-weighted losses (the paper's sum alpha_i L_i; not clipped), as in LibMTL."""

    gram_dtype = tf.float64

    def __init__(self, tasks: Any = None, update_weights_every: int = 1, optim_niter: int = 20,
                 max_norm: float = 1.0, **kwargs: Any) -> None:
        super().__init__(tasks, **kwargs)
        if update_weights_every < 1:
            raise ValueError("--weighting_options: update_weights_every must be >= 1")
        if optim_niter < 1:
            raise ValueError("--weighting_options: optim_niter (the most Newton steps per "
                             "solve) must be >= 1")
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
            return nash_weights(k, prev, self.optim_niter)

        def keep():
            return prev, tf.constant(0), tf.constant(0.0)

        alpha, steps, residual = tf.cond(step % self.update_weights_every == 0, solve, keep)
        self.commit(self.alpha, alpha)
        if self.max_norm > 0:  # |sum_i alpha_i g_i| = sqrt(alpha^T K alpha)
            a = tf.cast(alpha, k.dtype)
            norm = tf.sqrt(tf.maximum(tf.tensordot(a, tf.linalg.matvec(k, a), 1), 0.0))
            scale = tf.minimum(tf.constant(1.0, k.dtype), self.max_norm / (norm + 1e-6))
            alpha = alpha * tf.cast(scale, alpha.dtype)
        return alpha, {"nash_steps": tf.cast(steps, tf.float32), "nash_residual": residual}

    def task_specific_weights(self, alpha):
        return tf.convert_to_tensor(self.alpha)  # not clipped: the clip is of the shared update

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(update_weights_every=self.update_weights_every,
                      optim_niter=self.optim_niter, max_norm=self.max_norm)
        return config
