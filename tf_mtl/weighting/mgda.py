"""MGDA (Sener & Koltun, NeurIPS 2018): the min-norm point of the task gradients' hull;
``mgda_ub`` is its upper bound, on the shared representation's gradients."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tf_mtl.weighting.base import GradientWeighting, register_weighting
from tf_mtl.weighting.solvers import min_norm_element

_NORMALIZERS = ("none", "l2", "loss", "loss+")


@register_weighting("mgda", "Sener & Koltun, Multi-Task Learning as Multi-Objective "
                    "Optimization, NeurIPS 2018", mgda_gn="none")
@keras.saving.register_keras_serializable(package="tf_mtl")
class MGDA(GradientWeighting):
    """w = argmin_{w in simplex} |sum_i w_i g_i / n_i|^2 with the gradient normaliser n_i
    of ``mgda_gn``: none (the default of LibMTL and of the authors' code), l2 (|g_i|),
    loss (L_i) or loss+ (L_i |g_i|, the authors' sample configuration). The normalisers
    only choose the weights: the update is sum_i w_i g_i of the raw gradients, as the
    authors' code does (it scales the raw losses by w; the normalisation is "optional and
    not included in the paper") and LibMTL's representation-gradient path; LibMTL's
    parameter-gradient path applies w to g_i / n_i instead. The min-norm point is exact
    (``solvers.min_norm_element``: the closed form for two tasks, with weights exactly 1
    and 0 at a vertex; Wolfe's algorithm in float64 for more): the authors'
    MinNormSolver, copied by LibMTL, returns 0.999 / 0.001 at a vertex of two tasks and
    stops its Frank-Wolfe iteration up to 5e-2 short for three (BENCHMARKS 26).
    Task-specific variables get their task's unweighted gradient, as in LibMTL (the
    authors' code scales those losses by w too)."""

    gram_dtype = tf.float64

    def __init__(self, tasks: Any = None, mgda_gn: str = "none", **kwargs: Any) -> None:
        super().__init__(tasks, **kwargs)
        if mgda_gn not in _NORMALIZERS:
            raise ValueError(f"--weighting_options: mgda_gn={mgda_gn!r} is not one of "
                             f"{', '.join(_NORMALIZERS)}")
        self.mgda_gn = mgda_gn
        self.built = True

    def normalizers(self, k: tf.Tensor, losses: tf.Tensor) -> tf.Tensor:
        norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(k), 0.0))
        losses = tf.cast(losses, k.dtype)
        return {"none": tf.ones_like(losses), "l2": norms, "loss": losses,
                "loss+": losses * norms}[self.mgda_gn]

    def coefficients(self, k, losses, step):
        inv = 1.0 / (self.normalizers(k, losses) + 1e-12)
        w, steps = min_norm_element(k * inv[:, None] * inv[None, :])
        return w, {"mgda_steps": tf.cast(steps, tf.float32)}

    def get_config(self) -> dict:
        config = super().get_config()
        config["mgda_gn"] = self.mgda_gn
        return config


@register_weighting("mgda_ub", "Sener & Koltun 2018, MGDA-UB: min-norm on the shared "
                    "representation", mgda_gn="none", rep_grad=True)
class MGDAUpperBound(MGDA):
    """MGDA on the gradients of the shared representation (rep_grad on by default)."""
