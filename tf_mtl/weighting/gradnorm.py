"""GradNorm (Chen et al., ICML 2018): weights that balance the tasks' training rates."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tf_mtl.weighting.base import GradientWeighting, register_weighting


@register_weighting("gradnorm", "Chen et al., GradNorm, ICML 2018", alpha=1.5)
@keras.saving.register_keras_serializable(package="tf_mtl")
class GradNorm(GradientWeighting):
    """Weights w = T softmax(v) (LibMTL's parametrisation: they sum to T). The update is
    sum_i w_i g_i; v descends L_grad = sum_i |w_i |g_i| - Gbar r_i^alpha| with Gbar the
    mean of w_i |g_i| and r_i = (L_i / L_i(0)) / mean_j (L_j / L_j(0)) held constant.
    L_i(0) are the losses of the first step (the paper's t = 0; LibMTL uses the first
    epoch's mean and keeps equal weights during it; given the same L_i(0) the two agree
    to 1e-6, ``bench/bench_libmtl_parity.py``). v gets its gradient from this
    objective through the model's optimizer, like the network's weights."""

    def __init__(self, tasks: Any = None, alpha: float = 1.5, **kwargs: Any) -> None:
        super().__init__(tasks, **kwargs)
        self.alpha = float(alpha)
        n = len(self.task_names)
        self.loss_scale = self.add_weight(shape=(n,), initializer="ones", dtype="float32",
                                          trainable=True, name="loss_scale")
        self.initial_losses = self.add_weight(shape=(n,), initializer="zeros", dtype="float32",
                                              trainable=False, name="initial_losses",
                                              aggregation="only_first_replica")
        self._pending: list = []
        self.built = True

    def coefficients(self, k, losses, step):
        n = len(self.task_names)
        norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(k), 0.0))
        first = tf.reduce_all(tf.equal(self.initial_losses, 0.0))
        l0 = tf.where(first, losses, tf.convert_to_tensor(self.initial_losses))
        self.commit(self.initial_losses, l0)
        ratio = losses / l0
        r = ratio / tf.reduce_mean(ratio)
        with tf.GradientTape() as tape:
            v = tf.convert_to_tensor(self.loss_scale)
            tape.watch(v)
            w = n * tf.nn.softmax(v)
            g = w * norms
            target = tf.stop_gradient(tf.reduce_mean(g) * r ** self.alpha)
            l_grad = tf.reduce_sum(tf.abs(g - target))
        self._pending = [(tape.gradient(l_grad, v), self.loss_scale)]
        return tf.stop_gradient(w), {"gradnorm_loss": l_grad}

    def own_gradients(self):
        pending, self._pending = self._pending, []
        return pending

    def get_config(self) -> dict:
        config = super().get_config()
        config["alpha"] = self.alpha
        return config
