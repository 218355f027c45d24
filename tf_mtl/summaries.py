"""TensorBoard summaries written from inside the train step.

Keras' TensorBoard callback only writes in-step summaries with update_freq=1, so the
MultiTaskModel owns a writer and records every N steps with `tf.summary.record_if`.
TensorBoard itself is not a dependency: scalars and images are written with
`tf.summary.write` and the same plugin metadata TensorBoard's own ops use, so the
event files open in TensorBoard. `tf_mtl.tbevents` reads them back (tests, tools, the report).
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import tensorflow as tf
from tensorflow.core.framework import summary_pb2

_SCALAR_META = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
    data_class=summary_pb2.DATA_CLASS_SCALAR,
)
_IMAGE_META = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="images"),
    data_class=summary_pb2.DATA_CLASS_BLOB_SEQUENCE,
)

ImageSummaryFn = Callable[[Any, Any, Mapping[str, tf.Tensor]], Mapping[str, tf.Tensor]]


def scalar(name: str, value: Any, step: Any = None) -> tf.Tensor:
    """Writes one float32 scalar to the default writer (TensorBoard 'scalars' plugin)."""
    return tf.summary.write(
        name, tf.cast(tf.reshape(value, []), tf.float32), step=step, metadata=_SCALAR_META
    )


def image(name: str, images: tf.Tensor, step: Any = None, max_outputs: int = 3) -> tf.Tensor:
    """Writes up to `max_outputs` images [B, H, W, C] (float in [0, 1] or uint8) as PNGs."""

    def encoded() -> tf.Tensor:
        imgs = tf.convert_to_tensor(images)[:max_outputs]
        if imgs.dtype != tf.uint8:
            imgs = tf.image.convert_image_dtype(tf.cast(imgs, tf.float32), tf.uint8,
                                                saturate=True)
        pngs = tf.map_fn(tf.image.encode_png, imgs, fn_output_signature=tf.string)
        dims = tf.shape(imgs)
        return tf.concat([tf.stack([tf.as_string(dims[2]), tf.as_string(dims[1])]), pngs], 0)

    return tf.summary.write(name, encoded, step=step, metadata=_IMAGE_META)


def write_scalars(scalars: Mapping[str, Any], step: Any = None, prefix: str = "") -> None:
    """Writes each entry of `scalars` (name -> scalar tensor) under `prefix`."""
    for key in sorted(scalars):
        scalar(f"{prefix}{key}", scalars[key], step=step)


def _is_first_replica() -> tf.Tensor:
    ctx = tf.distribute.get_replica_context()
    if ctx is None:  # cross-replica context
        return tf.constant(True)
    return tf.equal(ctx.replica_id_in_sync_group, 0)


class StepSummaries:
    """A writer plus the every-N-steps policy used inside a (distributed) train step.

    Only the first replica writes. `image_fn(x, y, outputs) -> {name: images}` is
    evaluated only on recording steps (inside `tf.cond`).
    """

    def __init__(
        self,
        writer: tf.summary.SummaryWriter | str | pathlib.Path,
        every_n_steps: int = 100,
        image_fn: ImageSummaryFn | None = None,
        image_every_n_steps: int | None = None,
        max_images: int = 3,
    ) -> None:
        if isinstance(writer, (str, pathlib.Path)):
            writer = tf.summary.create_file_writer(str(writer))
        if int(every_n_steps) < 1:
            raise ValueError(f"--summary_every_n_steps must be >= 1, got {every_n_steps}.")
        self.writer = writer
        self.every_n_steps = int(every_n_steps)
        self.image_fn = image_fn
        self.image_every_n_steps = int(image_every_n_steps or every_n_steps)
        self.max_images = int(max_images)

    def _due(self, step: tf.Tensor, every: int) -> tf.Tensor:
        step = tf.cast(step, tf.int64)
        return tf.logical_and(tf.equal(step % every, 0), _is_first_replica())

    def write(
        self,
        step: Any,
        scalars: Mapping[str, Any],
        x: Any = None,
        y: Any = None,
        outputs: Mapping[str, tf.Tensor] | None = None,
        prefix: str = "train/",
    ) -> None:
        """Writes `scalars` (and images via image_fn) when `step` is a recording step."""
        step = tf.cast(tf.convert_to_tensor(step), tf.int64)
        with self.writer.as_default(step=step):
            with tf.summary.record_if(self._due(step, self.every_n_steps)):
                write_scalars(scalars, step=step, prefix=prefix)
            if self.image_fn is not None:
                due = self._due(step, self.image_every_n_steps)

                def write_images() -> tf.Tensor:
                    with tf.summary.record_if(True):
                        images = self.image_fn(x, y, outputs)
                        for key in sorted(images):
                            image(f"{prefix}{key}", images[key], step=step,
                                  max_outputs=self.max_images)
                    return tf.constant(True)

                tf.cond(due, write_images, lambda: tf.constant(False))

    def flush(self) -> None:
        self.writer.flush()
