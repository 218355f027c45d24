"""IMTL: impartial multi-task learning (Liu et al., ICLR 2021), IMTL-L + IMTL-G."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tf_mtl.weighting.base import GradientWeighting, register_weighting


@register_weighting("imtl", "Liu et al., Towards Impartial Multi-task Learning, ICLR 2021")
@keras.saving.register_keras_serializable(package="tf_mtl")
class IMTL(GradientWeighting):
    """IMTL-L: each loss becomes exp(s_i) L_i - s_i with learned s_i (init 0). IMTL-G:
    weights alpha (summing to 1) such that the update has equal projections on every
    task's unit gradient u_i: alpha_{2..T} = g_1 U^T (D U^T)^-1, D = g_1 - g_j,
    U = u_1 - u_j, alpha_1 = 1 - sum alpha_{2..T}. Solved in float64 from the Gram
    matrix (a pseudo-inverse, which is the inverse unless the system is singular):
    LibMTL's float32 inverse of D U^T, and our earlier float32 pseudo-inverse, land up to
    1e-3 from the float64 solution on nearly parallel or very unequal gradients."""

    gram_dtype = tf.float64

    def __init__(self, tasks: Any = None, **kwargs: Any) -> None:
        super().__init__(tasks, **kwargs)
        self.loss_scale = self.add_weight(shape=(len(self.task_names),), initializer="zeros",
                                          dtype="float32", trainable=True, name="loss_scale")
        self.built = True

    def transform_losses(self, losses):
        s = tf.convert_to_tensor(self.loss_scale)
        return tf.exp(s) * super().transform_losses(losses) - s

    def coefficients(self, k, losses, step):
        n = len(self.task_names)
        if n == 1:
            return tf.ones([1]), {}
        # float64: the T x T system is ill-conditioned for nearly parallel gradients, and
        # its entries are differences of nearly equal Gram terms
        k64 = tf.cast(k, tf.float64)
        norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(k64), 1e-300))
        # dot(g_a, u_b) = K[a, b] / |g_b|
        gu = k64 / norms[None, :]
        first = gu[0, 0] - gu[0, 1:]                       # g_1 . (u_1 - u_j)
        du = (gu[0, 0] - gu[0, 1:][None, :] - gu[1:, 0][:, None] + gu[1:, 1:])
        # pinv (an inverse unless identical or vanishing task gradients make it singular)
        rest = tf.linalg.matvec(tf.linalg.pinv(tf.transpose(du)), first)
        alpha = tf.concat([[1.0 - tf.reduce_sum(rest)], rest], 0)
        return tf.cast(alpha, k.dtype), {}
