"""The callbacks of a training run: progress lines, checkpoints, and the guard that
stops a run whose loss or weights stop being finite. A module of their own: the trainer and
the training-only plug-ins (the label autoencoder's phase 1) both use them, and a plug-in
must not import the trainer that imports it."""

from __future__ import annotations

import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from deeplab_ext.run.rundir import non_finite_weights

__all__ = ["FiniteGuard", "ProgressCallback", "SaverCallback"]

_PROGRESS_SUFFIXES = ("_loss", "_miou", "_f1", "_sigma", "learning_rate")


class ProgressCallback(keras.callbacks.Callback):
    """Prints a line every N steps (no silent minutes) and stops at the step budget."""

    def __init__(self, total: int, every: int, printer: Callable[[str], None]):
        super().__init__()
        self.total, self.every, self.printer = total, max(1, every), printer
        self.t0 = time.time()
        self.start_step: int | None = None

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if self.start_step is None:
            self.start_step = step - 1
        if step % self.every == 0 or step >= self.total:
            rate = (step - self.start_step) / max(time.time() - self.t0, 1e-6)
            logs = logs or {}
            parts = [f"step {step}/{self.total}", f"{rate:.2f} steps/s"]
            for key, value in logs.items():
                if key == "loss" or key.endswith(_PROGRESS_SUFFIXES):
                    parts.append(f"{key}={float(np.asarray(value)):.4g}")
            self.printer("  ".join(parts))
        if step >= self.total:
            self.model.stop_training = True


class FiniteGuard(keras.callbacks.Callback):
    """Stops training at the first step whose loss is not finite (a diverged run must not
    end "Done" with a NaN checkpoint that every later tool would use)."""

    def __init__(self) -> None:
        super().__init__()
        self.bad_step: int | None = None
        self.value = float("nan")

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and self.bad_step is None:
            value = float(np.asarray(loss))
            if not np.isfinite(value):
                self.bad_step, self.value = int(self.model.optimizer.iterations.numpy()), value
                self.model.stop_training = True

    def diverged(self, network: keras.Model) -> bool:
        """A step already failed, or the weights about to be saved are not finite."""
        if self.bad_step is None and non_finite_weights(network):
            self.bad_step = int(self.model.optimizer.iterations.numpy())
            self.model.stop_training = True
        return self.bad_step is not None


class SaverCallback(keras.callbacks.Callback):
    """A checkpoint every ``every`` steps and at the end, never of non-finite weights."""

    def __init__(self, manager: tf.train.CheckpointManager, every: int,
                 guard: FiniteGuard | None = None, network: keras.Model | None = None):
        super().__init__()
        self.manager, self.every, self.guard, self.network = manager, max(1, every), guard, network

    def _diverged(self) -> bool:
        return self.guard is not None and self.guard.diverged(self.network or self.model)

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step % self.every == 0 and not self._diverged():
            self.manager.save(checkpoint_number=step)

    def on_train_end(self, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if self._diverged():
            return
        if self.manager.latest_checkpoint is None or not self.manager.latest_checkpoint.endswith(
            f"-{step}"
        ):
            self.manager.save(checkpoint_number=step)
