"""Loss weighting strategies for multi-task training.

Keras 3's `compile(loss_weights=...)` only takes constant floats, so learned or
adaptive weights are applied in `MultiTaskModel.train_step` through a
`LossWeighting.combine(task_losses, tasks, step) -> (total, logs)`. Weightings are
Keras layers so their variables are tracked by the model (gradients, checkpoints)
and always float32, also under a mixed precision policy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import tensorflow as tf

from tf_mtl.tasks import VALID_KINDS, Task

WEIGHTINGS = ("fixed", "uncertainty", "dwa")


def _names(tasks: Sequence[Task] | None, names: Sequence[str] | None) -> list[str]:
    if names is not None:
        return list(names)
    if tasks is None:
        raise ValueError("Give the tasks (or task names) the weighting combines.")
    return [t.name for t in tasks]


class LossWeighting(keras.layers.Layer):
    """Interface: combines per-task losses into one scalar and reports the weights.

    Subclasses implement `combine`; `logs` contain `<task>_weight` (the effective
    multiplier of the task loss) and, where meaningful, `<task>_sigma`.
    """

    def __init__(self, task_names: Sequence[str], **kwargs: Any) -> None:
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.task_names = list(task_names)
        if not self.task_names:
            raise ValueError(f"{type(self).__name__} needs at least one task.")

    def _check_losses(self, task_losses: Mapping[str, tf.Tensor]) -> None:
        missing = [n for n in self.task_names if n not in task_losses]
        if missing:
            raise ValueError(
                f"{type(self).__name__}: no loss for task(s) {missing}; got {sorted(task_losses)}."
            )

    def combine(
        self,
        task_losses: Mapping[str, tf.Tensor],
        tasks: Sequence[Task] | None = None,
        step: tf.Tensor | None = None,
    ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """Returns (total float32 scalar, logs with each task's effective weight)."""
        raise NotImplementedError

    def call(self, task_losses: Mapping[str, tf.Tensor]) -> tf.Tensor:
        return self.combine(task_losses)[0]

    def get_config(self) -> dict:
        config = super().get_config()
        config.pop("dtype", None)
        config["task_names"] = self.task_names
        return config


@keras.saving.register_keras_serializable(package="tf_mtl")
class FixedWeighting(LossWeighting):
    """total = sum_i w_i * L_i with constant weights (default: each Task.weight)."""

    def __init__(
        self,
        tasks: Sequence[Task] | None = None,
        weights: Mapping[str, float] | None = None,
        task_names: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        if task_names is None and tasks is None and weights is not None:
            task_names = list(weights)
        super().__init__(_names(tasks, task_names), **kwargs)
        base = {t.name: t.weight for t in tasks} if tasks is not None else {}
        base.update(dict(weights or {}))
        self.weights_by_task = {n: float(base.get(n, 1.0)) for n in self.task_names}
        self.built = True

    def combine(self, task_losses, tasks=None, step=None):
        self._check_losses(task_losses)
        total = tf.constant(0.0, tf.float32)
        logs = {}
        for n in self.task_names:
            w = self.weights_by_task[n]
            total = total + w * tf.cast(task_losses[n], tf.float32)
            logs[f"{n}_weight"] = tf.constant(w, tf.float32)
        return total, logs

    def get_config(self) -> dict:
        config = super().get_config()
        config["weights"] = dict(self.weights_by_task)
        return config


@keras.saving.register_keras_serializable(package="tf_mtl")
class UncertaintyWeighting(LossWeighting):
    """Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018).

    Learns s_i = log sigma_i^2 (float32 trainable scalars) per task:
      regression:      0.5 * exp(-s_i) * L_i + 0.5 * s_i   (= L/(2 sigma^2) + log sigma)
      classification:        exp(-s_i) * L_i + 0.5 * s_i   (= L/sigma^2     + log sigma)
    At the optimum sigma_i^2 = L_i (regression, MSE) -- the task's noise variance.
    Each L_i is first multiplied by a constant prior weight (default `Task.weight`, so
    e.g. --tag_loss_weight is honoured here too; 1 = the paper's formulation).
    """

    def __init__(
        self,
        tasks: Sequence[Task] | None = None,
        initial_sigma: float | Mapping[str, float] = 1.0,
        kinds: Mapping[str, str] | None = None,
        task_names: Sequence[str] | None = None,
        weights: Mapping[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(_names(tasks, task_names), **kwargs)
        base = {t.name: t.weight for t in tasks} if tasks is not None else {}
        base.update(dict(weights or {}))
        self.weights_by_task = {n: float(base.get(n, 1.0)) for n in self.task_names}
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
        logs = {}
        for n in self.task_names:
            s = tf.convert_to_tensor(self.log_vars[n])
            precision = tf.exp(-s)
            w = 0.5 * precision if self.kinds[n] == "regression" else precision
            w = self.weights_by_task[n] * w
            total = total + w * tf.cast(task_losses[n], tf.float32) + 0.5 * s
            logs[f"{n}_weight"] = w
            logs[f"{n}_sigma"] = tf.exp(0.5 * s)
        return total, logs

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(initial_sigma=dict(self.initial_sigma), kinds=dict(self.kinds),
                      weights=dict(self.weights_by_task))
        return config


@keras.saving.register_keras_serializable(package="tf_mtl")
class DynamicWeightAverage(LossWeighting):
    """Dynamic Weight Average (Liu, Johns & Davison, CVPR 2019, MTAN).

    w_k = K * softmax_k(r_k / T), r_k = Lbar_k(t-1) / Lbar_k(t-2), where Lbar are the
    task's average losses over the last two completed windows (epochs, or
    `window_steps` train steps). Weights are 1 until two windows are complete. The
    state is non-trainable; with `window_steps=None` call `end_window()` at each
    epoch end (`DWAEpochCallback` does it).
    """

    def __init__(
        self,
        tasks: Sequence[Task] | None = None,
        temperature: float = 2.0,
        window_steps: int | None = None,
        task_names: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(_names(tasks, task_names), **kwargs)
        if not temperature > 0:
            raise ValueError(f"DWA temperature must be > 0, got {temperature}.")
        if window_steps is not None and int(window_steps) < 1:
            raise ValueError(f"DWA window_steps must be >= 1 or None, got {window_steps}.")
        self.temperature = float(temperature)
        self.window_steps = None if window_steps is None else int(window_steps)
        k = len(self.task_names)
        common = dict(trainable=False, dtype="float32", aggregation="mean")
        self.loss_sum = self.add_weight(shape=(k,), initializer="zeros", name="loss_sum", **common)
        self.count = self.add_weight(shape=(), initializer="zeros", name="count", **common)
        self.prev = self.add_weight(shape=(2, k), initializer="ones", name="prev_avg", **common)
        self.num_windows = self.add_weight(
            shape=(), initializer="zeros", name="num_windows", **common
        )
        self.built = True

    def current_weights(self) -> tf.Tensor:
        """The weights in effect now (vector in task order)."""
        k = len(self.task_names)
        prev = tf.convert_to_tensor(self.prev)
        ratio = tf.math.divide_no_nan(prev[0], prev[1])
        w = k * tf.nn.softmax(ratio / self.temperature)
        ready = tf.convert_to_tensor(self.num_windows) >= 2.0
        return tf.where(ready, w, tf.ones_like(w))

    def _roll(self, do_roll: tf.Tensor) -> None:
        loss_sum = tf.convert_to_tensor(self.loss_sum)
        count = tf.convert_to_tensor(self.count)
        prev = tf.convert_to_tensor(self.prev)
        avg = tf.math.divide_no_nan(loss_sum, count)
        rolled = tf.stack([avg, prev[0]])
        self.prev.assign(tf.where(do_roll, rolled, prev))
        self.num_windows.assign(tf.where(do_roll, self.num_windows + 1.0, self.num_windows))
        self.loss_sum.assign(tf.where(do_roll, tf.zeros_like(loss_sum), loss_sum))
        self.count.assign(tf.where(do_roll, 0.0, count))

    def end_window(self) -> None:
        """Closes the current window (epoch): its mean losses become Lbar(t-1)."""
        self._roll(tf.convert_to_tensor(self.count) > 0.0)

    def combine(self, task_losses, tasks=None, step=None):
        self._check_losses(task_losses)
        w = tf.stop_gradient(self.current_weights())
        losses = tf.stack([tf.cast(task_losses[n], tf.float32) for n in self.task_names])
        total = tf.reduce_sum(w * losses)
        self.loss_sum.assign_add(tf.stop_gradient(losses))
        self.count.assign_add(1.0)
        if self.window_steps is not None:
            self._roll(tf.convert_to_tensor(self.count) >= float(self.window_steps))
        logs = {f"{n}_weight": w[i] for i, n in enumerate(self.task_names)}
        return total, logs

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(temperature=self.temperature, window_steps=self.window_steps)
        return config


class DWAEpochCallback(keras.callbacks.Callback):
    """Ends a DynamicWeightAverage window at each epoch end (epoch-based DWA)."""

    def __init__(self, weighting: DynamicWeightAverage) -> None:
        super().__init__()
        self.weighting = weighting

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.weighting.end_window()


def get_weighting(name: str, tasks: Sequence[Task], **kwargs: Any) -> LossWeighting:
    """Builds a weighting by name: "fixed" | "uncertainty" | "dwa" (flag --loss_weighting)."""
    key = (name or "").strip().lower()
    if key == "fixed":
        return FixedWeighting(tasks, **kwargs)
    if key == "uncertainty":
        return UncertaintyWeighting(tasks, **kwargs)
    if key == "dwa":
        return DynamicWeightAverage(tasks, **kwargs)
    raise ValueError(
        f"--loss_weighting={name!r} is not a known loss weighting; valid names: "
        f"{', '.join(WEIGHTINGS)}."
    )
