"""tf.distribute strategy selection and synchronised BatchNorm.

Build the network, the weighting and compile the MultiTaskModel inside
`strategy.scope()`. MultiTaskModel scales every loss term by 1/num_replicas_in_sync,
so gradients summed over replicas equal the single-device gradient.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker_mirrored", "one_device")


def get_strategy(name: str = "default", num_gpus: int | None = None) -> tf.distribute.Strategy:
    """Returns a strategy by name (flag --distribution_strategy).

    "mirrored": all GPUs (or the first `num_gpus`); with no GPU, all logical CPU
    devices (useful for tests that split the CPU with
    tf.config.set_logical_device_configuration). "one_device": GPU 0 if any, else CPU.
    """
    if name == "multi_worker_mirrored":
        # Before anything initialises the runtime (listing devices does): the strategy
        # configures collective ops, which TensorFlow accepts only at startup.
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if num_gpus is not None and num_gpus > len(gpus):
        raise ValueError(
            f"--num_gpus={num_gpus} but only {len(gpus)} GPU(s) are visible; lower --num_gpus."
        )
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if gpus:
            devices = [d.name for d in gpus[: num_gpus or len(gpus)]]
        else:
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus and num_gpus != 0 else "/cpu:0")
    raise ValueError(
        f"--distribution_strategy={name!r} is not known; valid names: {', '.join(STRATEGIES)}."
    )


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's files: always, except for the non-chief
    workers of a multi-worker cluster (the chief is task ``chief``, or worker 0 when the
    cluster has no chief)."""
    resolver = getattr(strategy.extended, "_cluster_resolver", None) or getattr(
        strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def batch_norm(sync: bool = False, **kwargs: Any) -> keras.layers.BatchNormalization:
    """BatchNormalization whose statistics are all-reduced across replicas if `sync`.

    Keras 3 replaces tf.keras' SyncBatchNormalization with `synchronized=True`; it
    matters when the per-replica batch is small (the original needs batch >= 12).
    """
    return keras.layers.BatchNormalization(synchronized=sync, **kwargs)


def split_cpu(num_devices: int) -> list[str]:
    """Splits the physical CPU into `num_devices` logical devices (before TF starts)."""
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * num_devices
        )
    except RuntimeError as exc:
        raise RuntimeError(
            "split_cpu() must run before TensorFlow initialises its devices; call it "
            "first thing in a fresh process."
        ) from exc
    return [d.name for d in tf.config.list_logical_devices("CPU")]
