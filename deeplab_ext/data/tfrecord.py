"""The original DeepLab TFRecord format (`datasets/build_data.py`) and atomic shard writing.

One `tf.train.Example` per image with the keys in `KEYS`; shards are named
`%s-%05d-of-%05d.tfrecord` (split, shard id, number of shards). Two optional keys, ours,
carry the scene tasks' maps as 16-bit PNGs when a converter has them (`MAP_KEYS`):
instance ids in Cityscapes' `gtFine_instanceIds` encoding (class id * 1000 + k for an
instance, a class id below 1000 for pixels of no instance) and disparity in Cityscapes'
encoding (d = (p - 1) / 256, p = 0 invalid). Readers of the original keys ignore them. Shards are first written
under hidden temporary names and only renamed once every shard of the split is complete,
so a reader never sees a half-written shard set.
"""

from __future__ import annotations

import json
import os
import pathlib
import uuid
from collections.abc import Iterable

import tensorflow as tf

SHARD_PATTERN = "%s-%05d-of-%05d.tfrecord"

KEYS = (
    "image/encoded",
    "image/filename",
    "image/format",
    "image/height",
    "image/width",
    "image/channels",
    "image/segmentation/class/encoded",
    "image/segmentation/class/format",
)

# Optional dense maps: name -> Example key (16-bit PNG, absent = empty string).
MAP_KEYS = {"instance": "image/segmentation/instance/encoded",
            "disparity": "image/disparity/encoded"}

FEATURE_SPEC = {
    "image/encoded": tf.io.FixedLenFeature((), tf.string, default_value=""),
    "image/filename": tf.io.FixedLenFeature((), tf.string, default_value=""),
    "image/format": tf.io.FixedLenFeature((), tf.string, default_value="jpeg"),
    "image/height": tf.io.FixedLenFeature((), tf.int64, default_value=0),
    "image/width": tf.io.FixedLenFeature((), tf.int64, default_value=0),
    "image/channels": tf.io.FixedLenFeature((), tf.int64, default_value=3),
    "image/segmentation/class/encoded": tf.io.FixedLenFeature((), tf.string, default_value=""),
    "image/segmentation/class/format": tf.io.FixedLenFeature((), tf.string, default_value="png"),
    **{key: tf.io.FixedLenFeature((), tf.string, default_value="") for key in MAP_KEYS.values()},
}


def shard_filename(
    output_dir: str | os.PathLike, split: str, shard_id: int, num_shards: int
) -> str:
    """Path of one shard, `<dir>/<split>-<id:05d>-of-<n:05d>.tfrecord` as in the original."""
    return os.path.join(str(output_dir), SHARD_PATTERN % (split, shard_id, num_shards))


def record_path(dataset_dir: str | os.PathLike, split: str) -> str:
    """The JSON record of the dataset a split's shards hold (written with the shards)."""
    return os.path.join(str(dataset_dir), f"{split}.dataset.json")


def shard_glob(dataset_dir: str | os.PathLike, split: str) -> str:
    """Glob pattern matching every shard of `split` (any number of shards)."""
    return os.path.join(str(dataset_dir), f"{split}-*-of-*.tfrecord")


def _bytes(value: bytes | str) -> tf.train.Feature:
    if isinstance(value, str):
        value = value.encode()
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int64(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def image_seg_to_tfexample(
    image_data: bytes,
    filename: str,
    height: int,
    width: int,
    seg_data: bytes,
    image_format: str = "jpeg",
    seg_format: str = "png",
    channels: int = 3,
    maps: dict[str, bytes] | None = None,
) -> tf.train.Example:
    """Build one Example with the original's keys (same name/signature order as the
    original); ``maps``: optional 16-bit PNGs by name (``MAP_KEYS``)."""
    extra = {MAP_KEYS[name]: _bytes(data) for name, data in (maps or {}).items()}
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                **extra,
                "image/encoded": _bytes(image_data),
                "image/filename": _bytes(filename),
                "image/format": _bytes(image_format),
                "image/height": _int64(height),
                "image/width": _int64(width),
                "image/channels": _int64(channels),
                "image/segmentation/class/encoded": _bytes(seg_data),
                "image/segmentation/class/format": _bytes(seg_format),
            }
        )
    )


def parse_example(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Parse one serialized Example into a dict keyed like `KEYS` (graph-mode safe)."""
    return tf.io.parse_single_example(serialized, FEATURE_SPEC)


def read_examples(paths: Iterable[str | os.PathLike]) -> list[dict[str, object]]:
    """Eagerly read every Example of some shard files into python dicts (tests, tools)."""
    out = []
    for path in paths:
        for record in tf.data.TFRecordDataset(str(path)):
            ex = parse_example(record)
            out.append({k: v.numpy() for k, v in ex.items()})
    return out


class AtomicShardWriter:
    """Write `num_shards` shards of one split; publish them only on `commit()`.

    Use as a context manager: an exception inside the block deletes the temporary files,
    leaving the output directory as it was. On commit, stale shards of the same split with
    another shard count are removed so readers never mix two conversions.
    """

    def __init__(self, output_dir: str | os.PathLike, split: str, num_shards: int,
                 record: dict | None = None) -> None:
        self.record = record  # what dataset the shards hold (record_path), written on commit
        if num_shards < 1:
            raise ValueError(f"--num_shards must be >= 1, got {num_shards}")
        self.output_dir = pathlib.Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.split = split
        self.num_shards = num_shards
        token = uuid.uuid4().hex[:8]
        self.final_paths = [
            shard_filename(self.output_dir, split, i, num_shards) for i in range(num_shards)
        ]
        # Temporary files of an earlier conversion of this split that was killed: never
        # published, nothing reads them; removed so they do not pile up.
        shards = os.path.basename(shard_glob(self.output_dir, split))
        record = os.path.basename(record_path(self.output_dir, split))
        for leftover in [*self.output_dir.glob(f".{shards}.tmp-*"),
                         *self.output_dir.glob(f"{record}.tmp-*")]:
            leftover.unlink(missing_ok=True)
        self.temp_paths = [
            str(self.output_dir / f".{os.path.basename(p)}.tmp-{token}") for p in self.final_paths
        ]
        self._writers: list[tf.io.TFRecordWriter | None] = [None] * num_shards
        self.counts = [0] * num_shards
        self._done = False

    def write(self, shard_id: int, example: tf.train.Example | bytes) -> None:
        if self._writers[shard_id] is None:
            self._writers[shard_id] = tf.io.TFRecordWriter(self.temp_paths[shard_id])
        data = example if isinstance(example, bytes) else example.SerializeToString()
        self._writers[shard_id].write(data)
        self.counts[shard_id] += 1

    def _close(self) -> None:
        for w in self._writers:
            if w is not None:
                w.close()
        self._writers = [None] * self.num_shards

    def commit(self) -> list[str]:
        """Close, create empty shards for unused ids, then rename all temp files into place."""
        self._close()
        for tmp in self.temp_paths:
            if not os.path.exists(tmp):
                tf.io.TFRecordWriter(tmp).close()  # an empty but valid shard
        for old in tf.io.gfile.glob(shard_glob(self.output_dir, self.split)):
            if old not in self.final_paths:
                os.remove(old)
        for tmp, final in zip(self.temp_paths, self.final_paths, strict=True):
            os.replace(tmp, final)
        record = record_path(self.output_dir, self.split)
        if self.record is not None:
            tmp = f"{record}.tmp-{uuid.uuid4().hex[:8]}"
            with open(tmp, "w") as f:
                json.dump({**self.record, "split": self.split,
                           "examples": int(sum(self.counts))}, f, indent=2)
            os.replace(tmp, record)
        elif os.path.exists(record):  # these shards replace those the record described
            os.remove(record)
        self._done = True
        return list(self.final_paths)

    def abort(self) -> None:
        """Drop every temporary file; published shards (from earlier runs) are untouched."""
        self._close()
        for tmp in self.temp_paths:
            if os.path.exists(tmp):
                os.remove(tmp)
        self._done = True

    def __enter__(self) -> AtomicShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self._done:
            self.abort()
