"""Optimizers whose state is a list of tensors, for loops that carry weights as loop state.

Why: the evidence refitter optimises per-image copies of the weights inside a
``tf.while_loop`` (nothing assigned to variables), so the optimizer state must be loop
state too. The update rules follow ``keras.optimizers.SGD`` / ``keras.optimizers.Adam``
exactly (tested against them).
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

OPTIMIZERS = ("sgd", "adam")


@dataclasses.dataclass(frozen=True)
class FunctionalOptimizer:
    """``init(params) -> state`` and ``update(params, grads, state, t) -> (params, state)``."""

    name: str = "sgd"
    learning_rate: float = 0.01
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"optimizer {self.name!r}: must be one of {OPTIMIZERS}")

    def init(self, params: list[tf.Tensor]) -> list[tf.Tensor]:
        """The state for ``params`` (Adam: first and second moments; SGD: none)."""
        if self.name == "adam":
            return [tf.zeros_like(p) for p in params] + [tf.zeros_like(p) for p in params]
        return []

    def update(self, params: list[tf.Tensor], grads: list[tf.Tensor], state: list[tf.Tensor],
               t: tf.Tensor) -> tuple[list[tf.Tensor], list[tf.Tensor]]:
        """One step; ``t`` = updates already applied (float32, broadcastable to params)."""
        lr = tf.constant(self.learning_rate, tf.float32)
        if self.name == "sgd":
            return [p - lr * g for p, g in zip(params, grads, strict=True)], []
        n = len(params)
        ms, vs = state[:n], state[n:]
        local_step = t + 1.0
        b1 = tf.constant(self.beta_1, tf.float32)
        b2 = tf.constant(self.beta_2, tf.float32)
        alpha = lr * tf.sqrt(1.0 - tf.pow(b2, local_step)) / (1.0 - tf.pow(b1, local_step))
        new_p, new_m, new_v = [], [], []
        for p, g, m, v in zip(params, grads, ms, vs, strict=True):
            m = m + (g - m) * (1.0 - self.beta_1)
            v = v + (tf.square(g) - v) * (1.0 - self.beta_2)
            new_p.append(p - (m * alpha) / (tf.sqrt(v) + self.epsilon))
            new_m.append(m)
            new_v.append(v)
        return new_p, new_m + new_v
