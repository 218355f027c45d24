"""Training a multi-task DeepLab: the library behind `tools.train` (the original's train.py).

Wires the zoo (`deeplab_ext.model`), the data (`deeplab_ext.input_pipeline`) and the
model-agnostic multi-task machinery (`tf_mtl`): tasks `semantic` (softmax CE with the
ignore label, hard-pixel mining) and `tags` (sigmoid BCE), a loss weighting, poly LR,
momentum SGD, mixed precision, a tf.distribute strategy, TensorBoard summaries from
inside the step, and checkpoints that training resumes from.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from deeplab_ext import colormap as cmap
from deeplab_ext import input_pipeline
from deeplab_ext.checkpoint import load_initial_checkpoint
from deeplab_ext.config import DeepLabConfig
from deeplab_ext.datasets import DatasetInfo, get_dataset_info, info_from_dict, info_to_dict
from deeplab_ext.model import build_model, resolve_config
from tf_mtl import distribute, precision
from tf_mtl.losses import SoftmaxCrossEntropyWithIgnore, TagBCE
from tf_mtl.metrics import StreamingMeanIoU, TagPrecisionRecallF1
from tf_mtl.model import MultiTaskModel
from tf_mtl.schedules import get_learning_rate_schedule
from tf_mtl.tasks import Task
from tf_mtl.weighting import get_weighting

MODEL_CONFIG_FILE = "model_config.json"


@dataclasses.dataclass
class TrainOptions:
    """Training options; field names follow the original train.py flags."""

    train_logdir: str
    dataset_dir: str
    model_variant: str = "deeplabv3plus_mobilenetv2_mt"
    dataset: str = "pascal_voc_seg"
    train_split: str = "train"
    train_crop_size: tuple[int, int] = (513, 513)
    train_batch_size: int = 8
    base_learning_rate: float = 1e-4
    learning_policy: str = "poly"
    learning_power: float = 0.9
    learning_rate_decay_step: int = 2000
    learning_rate_decay_factor: float = 0.1
    slow_start_step: int = 0
    slow_start_learning_rate: float = 1e-4
    training_number_of_steps: int = 30000
    optimizer: str = "momentum"
    momentum: float = 0.9
    weight_decay: float | None = None
    fine_tune_batch_norm: bool = True
    tf_initial_checkpoint: str | None = None
    initialize_last_layer: bool = True
    output_stride: int | None = None
    atrous_rates: tuple[int, ...] | None = None
    decoder_output_stride: int | None = None
    num_tags: int | None = None
    tag_head_hidden: int | None = None
    tag_head_pooling: str | None = None
    min_scale_factor: float = 0.5
    max_scale_factor: float = 2.0
    scale_factor_step_size: float = 0.25
    min_resize_value: int | None = None
    max_resize_value: int | None = None
    top_k_percent_pixels: float = 1.0
    hard_example_mining_step: int = 0
    loss_weighting: str = "uncertainty"
    initial_sigma: float = 1.0
    tag_loss_weight: float = 1.0
    mixed_precision: str = "float32"
    distribution_strategy: str = "default"
    num_gpus: int | None = None
    sync_batch_norm: bool = False
    save_interval_steps: int = 500
    save_summaries_steps: int = 50
    save_summaries_images: bool = True
    max_checkpoints_to_keep: int = 5
    log_every_n_steps: int = 10
    seed: int | None = None


def model_config_for(options: TrainOptions, info: DatasetInfo) -> DeepLabConfig:
    """The network config: the variant plus dataset class count and flag overrides."""
    overrides: dict[str, Any] = {
        "num_classes": info.num_classes,
        "output_stride": options.output_stride,
        "decoder_output_stride": options.decoder_output_stride,
        "weight_decay": options.weight_decay,
        "sync_batch_norm": options.sync_batch_norm or None,
        "tag_head_hidden": options.tag_head_hidden,
        "tag_head_pooling": options.tag_head_pooling,
    }
    if options.atrous_rates is not None:
        overrides["atrous_rates"] = tuple(options.atrous_rates)
    cfg = resolve_config(options.model_variant, **overrides)
    num_tags = options.num_tags
    if num_tags is None and cfg.num_tags > 0:
        num_tags = len(info.tag_class_ids)
    if num_tags is not None:
        cfg = cfg.replace(num_tags=int(num_tags))
    return cfg


def save_model_config(logdir: str | os.PathLike, cfg: DeepLabConfig, info: DatasetInfo,
                      extra: dict | None = None) -> pathlib.Path:
    """Write the network config + dataset name next to the checkpoints (atomically)."""
    path = pathlib.Path(logdir) / MODEL_CONFIG_FILE
    payload = {"model": cfg.to_dict(), "dataset": info_to_dict(info), **(extra or {})}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=list))
    os.replace(tmp, path)
    return path


def load_model_config(checkpoint_dir: str | os.PathLike) -> dict:
    """Read what `save_model_config` wrote; a clear error names the directory."""
    path = pathlib.Path(checkpoint_dir) / MODEL_CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: --checkpoint_dir must be a --train_logdir written by "
            "tools.train (it holds the checkpoints and model_config.json)."
        )
    return json.loads(path.read_text())


def build_tasks(info: DatasetInfo, cfg: DeepLabConfig, options: TrainOptions) -> list[Task]:
    """The DeepLab tasks: semantic segmentation (+ image tags for `*_mt` variants)."""
    tasks = [
        Task(
            "semantic",
            SoftmaxCrossEntropyWithIgnore(
                num_classes=info.num_classes,
                ignore_label=info.ignore_label,
                top_k_percent_pixels=options.top_k_percent_pixels,
                hard_example_mining_step=options.hard_example_mining_step,
            ),
            kind="classification",
            metrics=[StreamingMeanIoU(info.num_classes, info.ignore_label, name="miou")],
        )
    ]
    if cfg.num_tags > 0:
        tasks.append(
            Task("tags", TagBCE(), kind="classification", weight=options.tag_loss_weight,
                 metrics=[TagPrecisionRecallF1(cfg.num_tags, name="tag_f1")])
        )
    return tasks


def overlay_fn(info: DatasetInfo, max_images: int = 3) -> Callable:
    """Image summaries: input | ground truth | prediction, colourised."""
    colors = tf.constant(cmap.create_label_colormap(info.colormap), tf.uint8)

    def colourise(labels: tf.Tensor) -> tf.Tensor:
        labels = tf.clip_by_value(tf.cast(labels, tf.int32), 0, colors.shape[0] - 1)
        return tf.gather(colors, labels)

    def fn(x, y, outputs):
        images = tf.cast(tf.clip_by_value(x[:max_images], 0, 255), tf.uint8)
        pred = tf.argmax(outputs["semantic"][:max_images], axis=-1)
        gt = y["semantic"][:max_images]
        return {"overlay": tf.concat([images, colourise(gt), colourise(pred)], axis=2)}

    return fn


def _make_optimizer(options: TrainOptions) -> keras.optimizers.Optimizer:
    kw = dict(
        learning_power=options.learning_power,
        training_number_of_steps=options.training_number_of_steps,
        slow_start_step=options.slow_start_step,
        slow_start_learning_rate=options.slow_start_learning_rate,
    )
    if options.learning_policy == "step":
        kw = dict(
            learning_rate_decay_step=options.learning_rate_decay_step,
            learning_rate_decay_factor=options.learning_rate_decay_factor,
            slow_start_step=options.slow_start_step,
            slow_start_learning_rate=options.slow_start_learning_rate,
        )
    schedule = get_learning_rate_schedule(options.learning_policy, options.base_learning_rate, **kw)
    if options.optimizer == "momentum":
        opt = keras.optimizers.SGD(schedule, momentum=options.momentum)
    elif options.optimizer == "adam":
        opt = keras.optimizers.Adam(schedule)
    else:
        raise ValueError(f"--optimizer={options.optimizer!r}: use momentum or adam")
    return precision.wrap_optimizer(opt)


def freeze_batch_norm(network: keras.Model) -> int:
    """--fine_tune_batch_norm=false: BN layers frozen (inference mode in Keras 3)."""
    n = 0
    for layer in network._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
            n += 1
    return n


class _Progress(keras.callbacks.Callback):
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
            for key in ("loss", "semantic_loss", "tags_loss", "semantic_miou", "tags_tag_f1",
                        "semantic_sigma", "tags_sigma", "learning_rate"):
                if key in logs:
                    parts.append(f"{key}={float(np.asarray(logs[key])):.4g}")
            self.printer("  ".join(parts))
        if step >= self.total:
            self.model.stop_training = True


class _Saver(keras.callbacks.Callback):
    def __init__(self, manager: tf.train.CheckpointManager, every: int):
        super().__init__()
        self.manager, self.every = manager, max(1, every)

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step % self.every == 0:
            self.manager.save(checkpoint_number=step)

    def on_train_end(self, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if self.manager.latest_checkpoint is None or not self.manager.latest_checkpoint.endswith(
            f"-{step}"
        ):
            self.manager.save(checkpoint_number=step)


@dataclasses.dataclass
class TrainResult:
    final_step: int
    resumed_from: int
    checkpoint: str | None
    logs: dict


def train(options: TrainOptions, printer: Callable[[str], None] = print) -> TrainResult:
    """Train (or resume) a DeepLab model; checkpoints + TensorBoard in `train_logdir`."""
    info = get_dataset_info(options.dataset)
    logdir = pathlib.Path(options.train_logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    if options.seed is not None:
        keras.utils.set_random_seed(options.seed)
    precision.set_policy(options.mixed_precision)
    strategy = distribute.get_strategy(options.distribution_strategy, options.num_gpus)
    cfg = model_config_for(options, info)
    crop = tuple(int(c) for c in options.train_crop_size)

    with strategy.scope():
        network = build_model(cfg, input_shape=(crop[0], crop[1], 3))
        if options.tf_initial_checkpoint:
            report = load_initial_checkpoint(
                network, options.tf_initial_checkpoint,
                initialize_last_layer=options.initialize_last_layer,
            )
            printer(report.summary())
        if not options.fine_tune_batch_norm:
            printer(f"--fine_tune_batch_norm=false: froze {freeze_batch_norm(network)} BN layers")
        tasks = build_tasks(info, cfg, options)
        weighting = get_weighting(
            options.loss_weighting, tasks,
            **({"initial_sigma": options.initial_sigma}
               if options.loss_weighting == "uncertainty" else {}),
        )
        writer = tf.summary.create_file_writer(str(logdir / "train"))
        model = MultiTaskModel(
            network, tasks, weighting,
            summary_writer=writer,
            summary_every_n_steps=options.save_summaries_steps,
            image_summary_fn=overlay_fn(info) if options.save_summaries_images else None,
        )
        model.compile(optimizer=_make_optimizer(options))
        model.optimizer.build(model.trainable_variables)
        ckpt = model.make_checkpoint()
        manager = tf.train.CheckpointManager(
            ckpt, str(logdir), max_to_keep=options.max_checkpoints_to_keep
        )
        resumed_from = 0
        if manager.latest_checkpoint:
            ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
            resumed_from = int(model.optimizer.iterations.numpy())
            printer(f"Resuming from {manager.latest_checkpoint} (step {resumed_from}).")
    save_model_config(logdir, cfg, info, {"train_crop_size": list(crop)})

    total = options.training_number_of_steps
    if resumed_from >= total:
        printer(f"Already trained for {resumed_from} >= {total} steps; nothing to do.")
        return TrainResult(resumed_from, resumed_from, manager.latest_checkpoint, {})

    dataset = input_pipeline.make_dataset(
        info, options.dataset_dir, options.train_split,
        crop_size=crop, batch_size=options.train_batch_size, is_training=True,
        min_scale_factor=options.min_scale_factor, max_scale_factor=options.max_scale_factor,
        scale_factor_step_size=options.scale_factor_step_size,
        min_resize_value=options.min_resize_value, max_resize_value=options.max_resize_value,
        seed=options.seed,
    )
    remaining = total - resumed_from
    chunk = max(1, min(options.save_interval_steps, remaining))
    epochs = math.ceil(remaining / chunk)
    printer(
        f"Training {cfg.name} ({network.count_params():,} params) on {info.name}:"
        f"{options.train_split} for {remaining} steps, batch {options.train_batch_size}, "
        f"crop {crop[0]}x{crop[1]}, weighting={options.loss_weighting}, "
        f"precision={options.mixed_precision}, strategy={options.distribution_strategy} "
        f"({strategy.num_replicas_in_sync} replicas). Logs: {logdir}"
    )
    history = model.fit(
        dataset,
        steps_per_epoch=chunk,
        epochs=epochs,
        shuffle=False,  # the tf.data pipeline shuffles
        verbose=0,
        callbacks=[
            _Progress(total, options.log_every_n_steps, printer),
            _Saver(manager, options.save_interval_steps),
        ],
    )
    writer.flush()
    final = int(model.optimizer.iterations.numpy())
    logs = {k: float(np.asarray(v[-1])) for k, v in history.history.items() if v}
    printer(f"Done at step {final}; checkpoint {manager.latest_checkpoint}")
    return TrainResult(final, resumed_from, manager.latest_checkpoint, logs)


def restore_network(checkpoint_dir: str | os.PathLike, checkpoint_path: str | None = None,
                    input_shape=(None, None, 3)) -> tuple[keras.Model, DatasetInfo, dict]:
    """Rebuild the network saved by `train` and restore its weights.

    A checkpoint written for another model is refused with a clear error naming it.
    """
    meta = load_model_config(checkpoint_dir)
    info = info_from_dict(meta["dataset"])
    cfg = DeepLabConfig.from_dict(meta["model"])
    network = build_model(cfg, input_shape=input_shape)
    path = checkpoint_path or tf.train.latest_checkpoint(str(checkpoint_dir))
    if path is None:
        raise FileNotFoundError(
            f"No checkpoint in {checkpoint_dir}: run tools.train with --train_logdir there first."
        )
    try:
        # A shape mismatch raises ValueError inside restore() itself, a missing
        # variable an AssertionError at the check: both mean "another model".
        status = tf.train.Checkpoint(network=network).restore(path)
        status.expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError) as e:
        raise ValueError(
            f"Checkpoint {path} does not match model {cfg.name} (was it written for another "
            f"--model_variant or dataset?): {str(e)[:300]}"
        ) from e
    return network, info, meta
