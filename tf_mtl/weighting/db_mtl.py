"""DB-MTL: dual-balancing multi-task learning (Lin et al., 2023)."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tf_mtl.weighting.base import GradientWeighting, at_least, between, gram, register_weighting


@register_weighting("db_mtl", "Lin et al., Dual-Balancing for Multi-Task Learning, 2023",
                    beta=0.9, beta_sigma=0.0,
                    checks={"beta": between(0.0, 1.0), "beta_sigma": at_least(0.0)})
@keras.saving.register_keras_serializable(package="tf_mtl")
class DBMTL(GradientWeighting):
    """Loss-scale balancing: every task descends log(L_i + 1e-8). Gradient-magnitude
    balancing: an EMA h_i of each task's gradient (h = g + beta / t^beta_sigma (h - g))
    is rescaled to the largest norm, the update sum_i max_j |h_j| / |h_i| h_i. The EMA
    is elementwise over the shared variables (T copies of them): parameter gradients
    only, as in LibMTL."""

    supports_rep_grad = False

    def __init__(self, tasks: Any = None, beta: float = 0.9, beta_sigma: float = 0.0,
                 **kwargs: Any) -> None:
        super().__init__(tasks, **kwargs)
        self.beta, self.beta_sigma = float(beta), float(beta_sigma)
        self.count = self.add_weight(shape=(), initializer="zeros", dtype="float32",
                                     trainable=False, name="count",
                                     aggregation="only_first_replica")
        self._buffers: dict[str, Any] = {}
        self.built = True

    def transform_losses(self, losses):
        return tf.math.log(super().transform_losses(losses) + 1e-8)

    def build_state(self, variables):
        n = len(self.task_names)
        for i, v in enumerate(variables):
            key = v.path
            if key in self._buffers:
                continue
            buf = self.add_weight(shape=(n, *v.shape), initializer="zeros", dtype="float32",
                                  trainable=False, name=f"buffer_{i}",
                                  aggregation="only_first_replica")
            self._buffers[key] = buf
            setattr(self, f"buffer_{i}", buf)  # reachable by tf.train.Checkpoint

    def combine_gradients(self, grads, losses, step, variables=None, k=None):
        if variables is None or any(v.path not in self._buffers for v in variables):
            raise ValueError("db_mtl keeps an EMA of each shared variable's task gradients: "
                             "the model must call build_state(variables) before training")
        t = self.count + 1.0
        decay = self.beta / t ** self.beta_sigma
        ema = []
        for g, v in zip(grads, variables, strict=True):
            buf = self._buffers[v.path]
            h = g + decay * (tf.convert_to_tensor(buf) - g)
            self.commit(buf, h)
            ema.append(h)
        self.commit(self.count, t)
        norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gram(ema)), 0.0))
        alpha = tf.reduce_max(norms) / (norms + 1e-8)
        return [tf.tensordot(alpha, h, axes=1) for h in ema], alpha, {}

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(beta=self.beta, beta_sigma=self.beta_sigma)
        return config
