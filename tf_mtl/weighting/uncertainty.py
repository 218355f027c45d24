"""Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import tensorflow as tf

from tf_mtl.tasks import VALID_KINDS, Task
from tf_mtl.weighting.base import LossWeighting, prior_weights, register_weighting
from tf_mtl.weighting.base import task_names_of as _names


@register_weighting("uncertainty", "Kendall, Gal & Cipolla, CVPR 2018", normalize=False)
@keras.saving.register_keras_serializable(package="tf_mtl")
class UncertaintyWeighting(LossWeighting):
    """Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018).

    Learns s_i = log sigma_i^2 (float32 trainable scalars) per task:
      regression:      0.5 * exp(-s_i) * L_i + 0.5 * s_i   (= L/(2 sigma^2) + log sigma)
      classification:        exp(-s_i) * L_i + 0.5 * s_i   (= L/sigma^2     + log sigma)
    At the optimum sigma_i^2 = L_i (regression, MSE) -- the task's noise variance.
    Each L_i is first multiplied by a constant prior weight (default `Task.weight`, so
    e.g. --tag_loss_weight is honoured here too; 1 = the paper's formulation).

    ``normalize=True`` (``--weighting_options=normalize=true``): the paper reports the
    weights can be unstable (a sigma collapsing toward 0 gives one task an unbounded
    weight). With this option the network's gradient sees the weights rescaled to sum to
    the task count, w_i T / sum_j w_j, while each s_i keeps learning from the paper's
    objective exactly (its gradient is unchanged): the relative weighting is learned, the
    overall scale of the step is not.

    Defaults differ from LibMTL's UW, which starts every s_i at -0.5 and uses the
    regression form L_i / (2 exp(s_i)) + s_i / 2 for every task: ours start at sigma = 1
    (s_i = 0) and use each task's ``kind`` (the paper's classification form for
    classification tasks). ``initial_sigma=exp(-0.25)`` with every kind "regression" is
    LibMTL's UW (``bench/bench_libmtl_parity.py`` agrees to 1e-6).
    """

    def __init__(
        self,
        tasks: Sequence[Task] | None = None,
        initial_sigma: float | Mapping[str, float] = 1.0,
        kinds: Mapping[str, str] | None = None,
        task_names: Sequence[str] | None = None,
        weights: Mapping[str, float] | None = None,
        normalize: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(_names(tasks, task_names), **kwargs)
        self.normalize = bool(normalize)
        self.weights_by_task = prior_weights(tasks, self.task_names, weights)
        k = {t.name: t.kind for t in tasks} if tasks is not None else {}
        k.update(dict(kinds or {}))
        self.kinds = {n: k.get(n, "classification") for n in self.task_names}
        for n, kind in self.kinds.items():
            if kind not in VALID_KINDS:
                raise ValueError(f"task {n!r}: kind {kind!r} not in {VALID_KINDS}.")
        if isinstance(initial_sigma, Mapping):
            sig = {n: float(initial_sigma.get(n, 1.0)) for n in self.task_names}
        else:
            sig = {n: float(initial_sigma) for n in self.task_names}
        for n, s in sig.items():
            if not s > 0:
                raise ValueError(f"initial_sigma for task {n!r} must be > 0, got {s}.")
        self.initial_sigma = sig
        self.log_vars = {}
        for n in self.task_names:
            self.log_vars[n] = self.add_weight(
                shape=(),
                initializer=keras.initializers.Constant(math.log(sig[n] ** 2)),
                dtype="float32",
                trainable=True,
                name=f"log_var_{n}",
            )
            # Also an attribute: tf.train.Checkpoint does not follow Keras' dict wrapper,
            # so without it the checkpoint held these only through the optimizer.
            setattr(self, f"log_var_{n}", self.log_vars[n])
        self.built = True

    def sigma(self, name: str) -> tf.Tensor:
        """sigma_i = exp(s_i / 2)."""
        return tf.exp(0.5 * tf.convert_to_tensor(self.log_vars[name]))

    def combine(self, task_losses, tasks=None, step=None):
        self._check_losses(task_losses)
        total = tf.constant(0.0, tf.float32)
        logs, weights = {}, {}
        for n in self.task_names:
            s = tf.convert_to_tensor(self.log_vars[n])
            precision = tf.exp(-s)
            w = 0.5 * precision if self.kinds[n] == "regression" else precision
            weights[n] = w = self.weights_by_task[n] * w
            loss = tf.cast(task_losses[n], tf.float32)
            if self.normalize:  # s learns from the paper's term, the network does not
                total = total + w * tf.stop_gradient(loss) + 0.5 * s
            else:
                total = total + w * loss + 0.5 * s
            logs[f"{n}_weight"] = w
            logs[f"{n}_sigma"] = tf.exp(0.5 * s)
        if self.normalize:
            scale = len(self.task_names) / tf.add_n(list(weights.values()))
            for n in self.task_names:
                w = tf.stop_gradient(weights[n] * scale)
                total = total + w * tf.cast(task_losses[n], tf.float32)
                logs[f"{n}_weight"] = w
        return total, logs

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(initial_sigma=dict(self.initial_sigma), kinds=dict(self.kinds),
                      weights=dict(self.weights_by_task), normalize=self.normalize)
        return config
