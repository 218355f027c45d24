"""CAGrad: conflict-averse gradient descent (Liu et al., NeurIPS 2021)."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tf_mtl.weighting.base import GradientWeighting, register_weighting
from tf_mtl.weighting.solvers import cagrad_weights


@register_weighting("cagrad", "Liu et al., Conflict-Averse Gradient Descent, NeurIPS 2021",
                    calpha=0.5, rescale=1)
@keras.saving.register_keras_serializable(package="tf_mtl")
class CAGrad(GradientWeighting):
    """d = g0 + lambda g_w, g0 the mean gradient, w the solution of
    min_w g_w . g0 + c |g_w| (c = calpha |g0|), lambda = c / |g_w|; rescaled by
    1 / (1 + calpha^2) (rescale=1, LibMTL's default), 1 / (1 + calpha) (2) or not (0).
    A combination of the task gradients with weights 1/T + lambda w_i. The inner problem
    is LibMTL's (its 1e-8 terms included), solved in float64 by an interior-point method
    to a duality gap of 1e-13 (``tf_mtl.weighting.solvers.cagrad_weights``; its steps are
    logged as ``cagrad_steps``). LibMTL calls scipy's SLSQP (default tolerance 1e-6),
    which lands up to 2e-3 from the optimum on some of ``bench/bench_libmtl_parity.py``'s
    cases; ours is within 1e-6 of the exact (float64) solution on all of them. (Our
    earlier 100 FISTA steps stopped short on nearly parallel gradients.)"""

    gram_dtype = tf.float64

    def __init__(self, tasks: Any = None, calpha: float = 0.5, rescale: int = 1,
                 **kwargs: Any) -> None:
        super().__init__(tasks, **kwargs)
        if rescale not in (0, 1, 2):
            raise ValueError(f"--weighting_options: rescale={rescale} must be 0, 1 or 2")
        self.calpha, self.rescale = float(calpha), int(rescale)
        self.built = True

    def coefficients(self, k, losses, step):
        n = len(self.task_names)
        w, steps = cagrad_weights(k, self.calpha)
        g0_norm = tf.sqrt(tf.maximum(tf.reduce_mean(k), 0.0) + 1e-8)  # rounding: mean < 0
        c = self.calpha * g0_norm + 1e-8
        gw_norm = tf.sqrt(tf.maximum(tf.tensordot(w, tf.linalg.matvec(k, w), 1), 0.0))
        alpha = 1.0 / n + (c / (gw_norm + 1e-8)) * w
        alpha = alpha / {0: 1.0, 1: 1.0 + self.calpha ** 2, 2: 1.0 + self.calpha}[self.rescale]
        return alpha, {"cagrad_steps": tf.cast(steps, tf.float32)}

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(calpha=self.calpha, rescale=self.rescale)
        return config
