"""Dynamic Weight Average (Liu, Johns & Davison, CVPR 2019)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from tf_mtl.tasks import Task
from tf_mtl.weighting.base import LossWeighting, at_least, register_weighting
from tf_mtl.weighting.base import task_names_of as _names


@register_weighting("dwa", "Liu, Johns & Davison, CVPR 2019", temperature=2.0,
                    window_steps=0,
                    checks={"temperature": at_least(0.0, strict=True),
                            "window_steps": at_least(0)})
@keras.saving.register_keras_serializable(package="tf_mtl")
class DynamicWeightAverage(LossWeighting):
    """Dynamic Weight Average (Liu, Johns & Davison, CVPR 2019, MTAN).

    w_k = K * softmax_k(r_k / T), r_k = Lbar_k(t-1) / Lbar_k(t-2), where Lbar are the
    task's average losses over the last two completed windows (epochs, or
    `window_steps` train steps). Weights are 1 until two windows are complete. The
    state is non-trainable; with `window_steps=None` (or 0) call `end_window()` at each
    epoch end (`DWAEpochCallback` does it). In a run, `window_steps=0` is one pass over the
    training split (``epoch_option``).
    """

    epoch_option = "window_steps"

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
        if window_steps is not None and int(window_steps) < 0:
            raise ValueError(f"DWA window_steps must be >= 0 or None, got {window_steps}.")
        self.temperature = float(temperature)
        self.window_steps = int(window_steps) if window_steps else None
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
