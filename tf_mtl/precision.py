"""Mixed precision set-up: global dtype policy and loss-scaled optimizers.

Under mixed_float16 the loss must be multiplied by the loss scale before gradients
(`optimizer.scale_loss`) and the gradients unscaled in `apply`; a
`keras.optimizers.LossScaleOptimizer` does both. bfloat16 has float32's range and
needs no loss scaling.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras

POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")


def _check(name: str) -> str:
    if name not in POLICIES:
        raise ValueError(f"--precision={name!r} is not supported; use one of {POLICIES}.")
    return name


def set_policy(name: str) -> keras.DTypePolicy:
    """Sets Keras' global dtype policy ("float32" | "mixed_float16" | "mixed_bfloat16")."""
    keras.mixed_precision.set_global_policy(_check(name))
    return keras.mixed_precision.global_policy()


@contextlib.contextmanager
def policy_scope(name: str) -> Iterator[keras.DTypePolicy]:
    """Temporarily sets the global policy (layers built inside keep it); restores after."""
    previous = keras.mixed_precision.global_policy()
    try:
        yield set_policy(name)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def wrap_optimizer(
    optimizer: keras.optimizers.Optimizer, policy: str | keras.DTypePolicy | None = None
) -> keras.optimizers.Optimizer:
    """Wraps `optimizer` in a LossScaleOptimizer for mixed_float16 (idempotent)."""
    if policy is None:
        policy = keras.mixed_precision.global_policy()
    name = policy if isinstance(policy, str) else policy.name
    _check(name)
    if name == "mixed_float16" and not isinstance(
        optimizer, keras.optimizers.LossScaleOptimizer
    ):
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
