"""Phase 1 of the label-structure regulariser: train the label-map autoencoder
(``tools.train_label_autoencoder``), and load it back for phase 2.

The data are the project's TFRecords, of which only the label maps are read (the same
augmentation as training a segmenter: scale, crop, flip). The model trains through the
same ``MultiTaskModel`` step as every network here (one ``semantic`` task: softmax
cross-entropy with the ignore label masked out, streaming mIoU); checkpoints resume
after a kill. The run directory's ``model_config.json`` says ``"kind":
"label_autoencoder"``, the variant and the dataset, so phase 2 rebuilds it.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from deeplab_ext.data import input_pipeline
from deeplab_ext.data.datasets import DatasetInfo, get_dataset_info, info_from_dict, info_to_dict
from deeplab_ext.models.label_autoencoder import STRIDE, build_label_autoencoder, one_hot_labels
from deeplab_ext.run.callbacks import ProgressCallback, SaverCallback
from deeplab_ext.run.options import LabelAutoencoderOptions
from deeplab_ext.run.rundir import MODEL_CONFIG_FILE, atomic_write
from tf_mtl.inference import InputAlignment
from tf_mtl.losses import SoftmaxCrossEntropyWithIgnore
from tf_mtl.metrics import StreamingMeanIoU, image_iou_counts, iou_from_counts
from tf_mtl.model import MultiTaskModel
from tf_mtl.schedules import get_learning_rate_schedule
from tf_mtl.tasks import Task

__all__ = ["KIND", "load_label_autoencoder", "reconstruction_miou", "train_label_autoencoder"]

KIND = "label_autoencoder"


def _as_autoencoder_data(ds: tf.data.Dataset, num_classes: int) -> tf.data.Dataset:
    """(images, {"semantic": labels}) -> (one-hot labels, {"semantic": labels})."""
    return ds.map(lambda _, y: (one_hot_labels(y["semantic"], num_classes),
                                {"semantic": y["semantic"]}),
                  num_parallel_calls=tf.data.AUTOTUNE)


def reconstruction_miou(autoencoder: keras.Model, info: DatasetInfo, dataset_dir: str,
                        split: str, max_examples: int | None = None) -> float:
    """mIoU of the reconstructed label maps of a split (full size, padded to the stride
    with ignore pixels, i.e. all-zero one-hot vectors, and cropped back)."""
    return float(np.nanmean(reconstruction_iou(autoencoder, info, dataset_dir, split,
                                               max_examples)))


def reconstruction_iou(autoencoder: keras.Model, info: DatasetInfo, dataset_dir: str,
                       split: str, max_examples: int | None = None) -> np.ndarray:
    """Per-class IoU of the reconstructed label maps (NaN for classes absent from both)."""
    ds = input_pipeline.make_dataset(info, dataset_dir, split, crop_size=None, batch_size=1,
                                     is_training=False, targets=("semantic",))
    if max_examples:
        ds = ds.take(max_examples)
    align = InputAlignment(STRIDE, (0, 0), (0.0,))
    predict = tf.function(align.wrap(lambda x: autoencoder(x, training=False)),
                          reduce_retracing=True)
    counts = []
    for _, y in ds:
        labels = y["semantic"]
        onehot = one_hot_labels(labels, info.num_classes)
        pred = tf.argmax(predict(onehot)["semantic"], -1).numpy()
        counts.append(image_iou_counts(labels.numpy()[0], pred[0], info.num_classes,
                                       info.ignore_label))
    if not counts:
        raise ValueError(f"split {split!r} in {dataset_dir} is empty")
    return iou_from_counts(np.sum(counts, axis=0))


def train_label_autoencoder(options: LabelAutoencoderOptions,
                            printer: Callable[[str], None] = print) -> dict:
    """Train (or resume), then report the reconstruction mIoU on ``eval_split``."""
    info = get_dataset_info(options.dataset)
    crop = tuple(int(c) for c in options.train_crop_size)
    if any(c % STRIDE for c in crop):
        raise ValueError(f"--train_crop_size={crop[0]},{crop[1]}: use multiples of {STRIDE} "
                         "(the autoencoder pools four times)")
    input_pipeline.check_shards_match(info, options.dataset_dir, options.train_split)
    logdir = pathlib.Path(options.train_logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    if options.seed is not None:
        keras.utils.set_random_seed(options.seed)
    network = build_label_autoencoder(info.num_classes, options.variant)
    task = Task("semantic", SoftmaxCrossEntropyWithIgnore(info.num_classes, info.ignore_label),
                metrics=[StreamingMeanIoU(info.num_classes, info.ignore_label, name="miou")])
    writer = tf.summary.create_file_writer(str(logdir / "train"))
    model = MultiTaskModel(network, [task], summary_writer=writer,
                           summary_every_n_steps=options.save_summaries_steps)
    schedule = get_learning_rate_schedule(
        "poly", options.base_learning_rate,
        training_number_of_steps=options.training_number_of_steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule))
    model.optimizer.build(model.trainable_variables)
    manager = tf.train.CheckpointManager(model.make_checkpoint(), str(logdir), max_to_keep=3)
    resumed = 0
    if manager.latest_checkpoint:
        manager.checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        resumed = int(model.optimizer.iterations.numpy())
        printer(f"Resuming from {manager.latest_checkpoint} (step {resumed}).")
    atomic_write(logdir / MODEL_CONFIG_FILE, json.dumps(
        {"kind": KIND, "variant": options.variant, "dataset": info_to_dict(info),
         "train_crop_size": list(crop)}, indent=2))
    total = options.training_number_of_steps
    if resumed < total:
        data = _as_autoencoder_data(input_pipeline.make_dataset(
            info, options.dataset_dir, options.train_split, crop_size=crop,
            batch_size=options.train_batch_size, is_training=True,
            min_scale_factor=options.min_scale_factor,
            max_scale_factor=options.max_scale_factor, seed=options.seed,
            targets=("semantic",)), info.num_classes)
        chunk = max(1, min(options.save_interval_steps, total - resumed))
        printer(f"Training the label autoencoder {options.variant} on {info.name}:"
                f"{options.train_split} label maps for {total - resumed} steps. Logs: {logdir}")
        model.fit(data, steps_per_epoch=chunk, epochs=math.ceil((total - resumed) / chunk),
                  verbose=0, callbacks=[ProgressCallback(total, options.log_every_n_steps,
                                                         printer),
                                        SaverCallback(manager, options.save_interval_steps)])
        writer.flush()
    per_class = reconstruction_iou(network, info, options.dataset_dir, options.eval_split,
                                   options.max_eval_examples)
    miou = float(np.nanmean(per_class))
    with writer.as_default():
        tf.summary.scalar("eval/reconstruction_miou", miou, step=model.optimizer.iterations)
    writer.flush()
    printer(f"Reconstruction mIoU on {info.name}:{options.eval_split}: {100 * miou:.2f}%")
    printer("  per-class IoU: " + ", ".join(f"{n} {100 * v:.2f}" for n, v in
                                           zip(info.class_names, per_class, strict=True)))
    return {"reconstruction_miou": miou, "per_class_iou": [float(v) for v in per_class], "checkpoint": manager.latest_checkpoint,
            "step": int(model.optimizer.iterations.numpy())}


def load_label_autoencoder(path: str | os.PathLike) -> tuple[keras.Model, DatasetInfo, dict]:
    """A phase-1 run directory -> (trained autoencoder, its dataset, its config)."""
    meta_path = pathlib.Path(path) / MODEL_CONFIG_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"--label_decoder={path}: no {MODEL_CONFIG_FILE}; give a "
                                "--train_logdir of tools.train_label_autoencoder")
    meta = json.loads(meta_path.read_text())
    if meta.get("kind") != KIND:
        raise ValueError(f"--label_decoder={path}: not a label autoencoder run (kind "
                         f"{meta.get('kind', 'a segmentation run')!r})")
    info = info_from_dict(meta["dataset"])
    network = build_label_autoencoder(info.num_classes, meta["variant"])
    latest = tf.train.latest_checkpoint(str(path))
    if latest is None:
        raise FileNotFoundError(f"--label_decoder={path}: no checkpoint in it")
    tf.train.Checkpoint(network=network).restore(latest).expect_partial() \
        .assert_existing_objects_matched()
    return network, info, meta
