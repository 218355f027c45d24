"""Learning-rate policies of the original DeepLab (`train_utils.get_model_learning_rate`).

poly: base_lr * (1 - min(s, decay_steps) / decay_steps)^power (+ end_lr), with
s = max(step - slow_start_step, 0) and decay_steps = total - slow_start_step.
step: base_lr * decay_factor^floor(s / decay_step).
Both return `slow_start_learning_rate` while step < slow_start_step.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

LEARNING_POLICIES = ("poly", "step")


class _SlowStart(keras.optimizers.schedules.LearningRateSchedule):
    def __init__(self, base_learning_rate: float, slow_start_step: int = 0,
                 slow_start_learning_rate: float = 1e-4) -> None:
        if base_learning_rate <= 0:
            raise ValueError(f"--base_learning_rate must be > 0, got {base_learning_rate}.")
        if slow_start_step < 0:
            raise ValueError(f"--slow_start_step must be >= 0, got {slow_start_step}.")
        self.base_learning_rate = float(base_learning_rate)
        self.slow_start_step = int(slow_start_step)
        self.slow_start_learning_rate = float(slow_start_learning_rate)

    def _decayed(self, adjusted_step: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def __call__(self, step: Any) -> tf.Tensor:
        step = tf.cast(step, tf.float32)
        adjusted = tf.maximum(step - self.slow_start_step, 0.0)
        lr = self._decayed(adjusted)
        return tf.where(step < self.slow_start_step,
                        tf.constant(self.slow_start_learning_rate, tf.float32), lr)

    def get_config(self) -> dict:
        return {"base_learning_rate": self.base_learning_rate,
                "slow_start_step": self.slow_start_step,
                "slow_start_learning_rate": self.slow_start_learning_rate}


@keras.saving.register_keras_serializable(package="tf_mtl")
class PolyLearningRate(_SlowStart):
    """The original 'poly' policy (tf.train.polynomial_decay after an optional slow start)."""

    def __init__(self, base_learning_rate: float, training_number_of_steps: int,
                 learning_power: float = 0.9, end_learning_rate: float = 0.0,
                 slow_start_step: int = 0, slow_start_learning_rate: float = 1e-4,
                 decay_steps: int | None = None) -> None:
        super().__init__(base_learning_rate, slow_start_step, slow_start_learning_rate)
        self.training_number_of_steps = int(training_number_of_steps)
        self.learning_power = float(learning_power)
        self.end_learning_rate = float(end_learning_rate)
        self.decay_steps = None if decay_steps is None else int(decay_steps)
        steps = self.decay_steps or self.training_number_of_steps - self.slow_start_step
        if steps <= 0:
            raise ValueError(
                f"--training_number_of_steps ({training_number_of_steps}) must exceed "
                f"--slow_start_step ({slow_start_step}) for the poly policy."
            )
        self._steps = float(steps)

    def _decayed(self, adjusted_step: tf.Tensor) -> tf.Tensor:
        s = tf.minimum(adjusted_step, self._steps)
        frac = 1.0 - s / self._steps
        return ((self.base_learning_rate - self.end_learning_rate)
                * tf.pow(frac, self.learning_power) + self.end_learning_rate)

    def get_config(self) -> dict:
        return {**super().get_config(),
                "training_number_of_steps": self.training_number_of_steps,
                "learning_power": self.learning_power,
                "end_learning_rate": self.end_learning_rate,
                "decay_steps": self.decay_steps}


@keras.saving.register_keras_serializable(package="tf_mtl")
class StepLearningRate(_SlowStart):
    """The original 'step' policy (staircase exponential decay after a slow start)."""

    def __init__(self, base_learning_rate: float, learning_rate_decay_step: int = 2000,
                 learning_rate_decay_factor: float = 0.1, slow_start_step: int = 0,
                 slow_start_learning_rate: float = 1e-4) -> None:
        super().__init__(base_learning_rate, slow_start_step, slow_start_learning_rate)
        if learning_rate_decay_step <= 0:
            raise ValueError(
                f"--learning_rate_decay_step must be > 0, got {learning_rate_decay_step}."
            )
        self.learning_rate_decay_step = int(learning_rate_decay_step)
        self.learning_rate_decay_factor = float(learning_rate_decay_factor)

    def _decayed(self, adjusted_step: tf.Tensor) -> tf.Tensor:
        k = tf.floor(adjusted_step / self.learning_rate_decay_step)
        return self.base_learning_rate * tf.pow(self.learning_rate_decay_factor, k)

    def get_config(self) -> dict:
        return {**super().get_config(),
                "learning_rate_decay_step": self.learning_rate_decay_step,
                "learning_rate_decay_factor": self.learning_rate_decay_factor}


def get_learning_rate_schedule(
    learning_policy: str, base_learning_rate: float, **kwargs: Any
) -> keras.optimizers.schedules.LearningRateSchedule:
    """Builds the schedule for --learning_policy ("poly" | "step")."""
    if learning_policy == "poly":
        return PolyLearningRate(base_learning_rate, **kwargs)
    if learning_policy == "step":
        return StepLearningRate(base_learning_rate, **kwargs)
    raise ValueError(
        f"--learning_policy={learning_policy!r} is not supported; use one of {LEARNING_POLICIES}."
    )
