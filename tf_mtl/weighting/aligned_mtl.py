"""Aligned-MTL (Senushkin et al., CVPR 2023): align the principal components."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tf_mtl.weighting.base import GradientWeighting, register_weighting


@register_weighting("aligned_mtl", "Senushkin et al., Independent Component Alignment for "
                    "Multi-Task Learning, CVPR 2023")
@keras.saving.register_keras_serializable(package="tf_mtl")
class AlignedMTL(GradientWeighting):
    """With K = V diag(lambda) V^T (eigenvalues above the numerical rank tolerance), the
    weights are the column sums of B = sqrt(lambda_min) V diag(lambda)^-1/2 V^T: the
    update whose components along the tasks' principal directions are equal
    (condition number 1). The eigendecomposition is of the float64 Gram matrix: LibMTL's
    float32 one (torch.symeig) lands up to 1e-3 from the float64 solution on nearly
    parallel gradients, whose smallest eigenvalue is tiny."""

    gram_dtype = tf.float64

    def __init__(self, tasks: Any = None, **kwargs: Any) -> None:
        super().__init__(tasks, **kwargs)
        self.built = True

    def coefficients(self, k, losses, step):
        lam, v = tf.linalg.eigh(k)
        tol = tf.reduce_max(lam) * float(k.shape[0]) * 1.1920929e-07
        keep = lam > tol
        inv_sqrt = tf.where(keep, tf.math.rsqrt(tf.where(keep, lam, 1.0)), 0.0)
        lam_min = tf.reduce_min(tf.where(keep, lam, tf.reduce_max(lam)))
        b = tf.sqrt(tf.maximum(lam_min, 0.0)) * tf.matmul(v * inv_sqrt[None, :], v, transpose_b=True)
        return tf.reduce_sum(b, axis=0), {}
