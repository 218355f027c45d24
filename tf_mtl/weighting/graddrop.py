"""GradDrop: gradient sign dropout (Chen et al., NeurIPS 2020)."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tf_mtl.weighting.base import GradientWeighting, between, register_weighting


@register_weighting("graddrop", "Chen et al., Just Pick a Sign, NeurIPS 2020", leak=0.0,
                    rep_grad=True, checks={"leak": between(0.0, 1.0)})
@keras.saving.register_keras_serializable(package="tf_mtl")
class GradDrop(GradientWeighting):
    """At the shared representation x: per element, the sign purity
    P = (1 + sum_i s_i / sum_i |s_i|) / 2 of the batch-summed signals s_i = sum_b
    g_i sign(x); with U ~ uniform, task i keeps its gradient where (P > U and s_i > 0)
    or (P < U and s_i < 0), a fraction ``leak`` of it elsewhere. Representation
    gradients only (the method is defined at an activation layer), as in LibMTL."""

    supports_param_grad = False

    def __init__(self, tasks: Any = None, leak: float = 0.0, **kwargs: Any) -> None:
        super().__init__(tasks, **kwargs)
        self.leak = float(leak)
        self.built = True

    def masks(self, signals: list[tf.Tensor], step: tf.Tensor) -> list[tf.Tensor]:
        """Per feature ``[T, ...]`` keep masks (1 keep, 0 drop) from the signals."""
        out = []
        for f, s in enumerate(signals):
            p = 0.5 * (1.0 + tf.reduce_sum(s, 0) / (tf.reduce_sum(tf.abs(s), 0) + 1e-7))
            u = tf.random.stateless_uniform(tf.shape(p), seed=self.random_seed(step, salt=f))
            keep = (tf.cast(p > u, tf.float32)[None] * tf.cast(s > 0, tf.float32)
                    + tf.cast(p < u, tf.float32)[None] * tf.cast(s < 0, tf.float32))
            out.append(keep)
        return out

    def combine_representation(self, per_example, reps, losses, step, reduce, k=None):
        signals = reduce([tf.reduce_sum(g * tf.sign(tf.cast(x, tf.float32))[None], axis=1)
                          for g, x in zip(per_example, reps, strict=True)])
        masks = self.masks(signals, step)
        combined = [tf.reduce_sum(g * (self.leak + (1.0 - self.leak) * m[:, None]), axis=0)
                    for g, m in zip(per_example, masks, strict=True)]
        return combined, tf.ones([len(self.task_names)]), {}

    def get_config(self) -> dict:
        config = super().get_config()
        config["leak"] = self.leak
        return config
