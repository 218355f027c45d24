"""tf.data reader for the original DeepLab TFRecords (`make_dataset`).

Yields `(images, targets)` as fixed in ARCHITECTURE.md: by default
`{"semantic": labels, "tags": multi-hot}`; any target registered in
`deeplab_ext.data.targets` can be asked for by name.
Fast path: shards are read by a parallel interleave, serialized records are shuffled
(cheap) before decoding, decode + augmentation run in a parallel `map` (AUTOTUNE), and
batches are prefetched. Tags are computed from the full label map BEFORE any crop: they
are image-level facts, a crop that cuts an object out does not remove its tag (the
targets hook's "image" stage); dense targets follow the augmentation ("dense" stage).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import tensorflow as tf

from deeplab_ext.data import preprocess, tfrecord
from deeplab_ext.data.datasets import DatasetInfo, get_dataset_info
from deeplab_ext.data.targets import (
    DEFAULT_TARGETS,
    DENSE,
    IMAGE,
    compute_targets,
    get_target,
    maps_of,
)

AUTOTUNE = tf.data.AUTOTUNE

CONVERTERS = (
    "python -m tools.build_voc2012_data (VOC layout), python -m tools.build_camvid_data "
    "(CamVid), python -m tools.build_synthetic_data (shapes_evidence)"
)


def list_shards(dataset_dir: str | os.PathLike, split: str, flag: str = "--dataset_dir"
                ) -> list[str]:
    """Sorted shard paths of `split`; a clear error (dir, pattern, converter) when none."""
    pattern = tfrecord.shard_glob(dataset_dir, split)
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(
            f"no TFRecord shards for split {split!r} in {flag}={dataset_dir} "
            f"(expected files matching {os.path.basename(pattern)}, e.g. "
            f"{os.path.basename(tfrecord.shard_filename('', split, 0, 4))}); build them with "
            f"{CONVERTERS}"
        )
    return files


def split_filenames(dataset_dir: str | os.PathLike, split: str) -> list[str]:
    """Each example's ``image/filename``, in the order evaluation reads them (shard after
    shard, each in the converter's list order)."""
    ds = tf.data.TFRecordDataset(list_shards(dataset_dir, split)).map(
        lambda s: tfrecord.parse_example(s)["image/filename"])
    return [name.decode() for name in ds.as_numpy_iterator()]


def tags_from_names(names: Sequence[str], info: DatasetInfo | str,
                    flag: str = "--tags") -> np.ndarray:
    """Float32 ``[num_tags]`` evidence from a user's class names (the tags): ``person``
    is present for sure (1), ``person:0.7`` present with probability 0.7; unnamed classes
    0. Anything else (an unknown class, a probability outside [0, 1] or NaN, a class
    named twice) is an error naming ``flag``."""
    info = get_dataset_info(info)
    lookup = {n: i for i, n in enumerate(info.tag_names)}
    lookup.update({n.lower(): i for i, n in enumerate(info.tag_names)})
    tags = np.zeros([info.num_tags], np.float32)
    seen: set[int] = set()
    for item in names:
        name, sep, value = str(item).rpartition(":") if ":" in str(item) else (item, "", "")
        key = name if name in lookup else name.strip().lower()
        if key not in lookup:
            raise ValueError(
                f"{flag}: unknown class name {name!r} for dataset {info.name!r}; valid tag "
                f"names (background and ignore have no tag): {list(info.tag_names)}"
            )
        try:
            p = float(value) if sep else 1.0
        except ValueError:
            p = float("nan")
        if not 0.0 <= p <= 1.0:  # NaN fails too
            raise ValueError(f"{flag}: {item!r}: a tag's probability must be a number in "
                             "[0, 1] (name:p, e.g. person:0.8; a name alone means 1)")
        if lookup[key] in seen:
            raise ValueError(f"{flag}: class {name!r} is named twice; give each class once")
        seen.add(lookup[key])
        tags[lookup[key]] = p
    return tags


def decode_example(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Serialized Example -> (uint8 image [H, W, 3], uint8 label [H, W, 1], filename)."""
    return decode_with_maps(serialized, ())[:3]


def decode_with_maps(serialized: tf.Tensor, maps: Sequence[str]
                     ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, dict[str, tf.Tensor]]:
    """:func:`decode_example` and the named dense maps (``tfrecord.MAP_KEYS``), int32
    ``[H, W, 1]`` each; a map the example lacks is zeros (no instance / invalid)."""
    ex = tfrecord.parse_example(serialized)
    image = tf.io.decode_image(ex["image/encoded"], channels=3, expand_animations=False)
    label = tf.io.decode_png(ex["image/segmentation/class/encoded"], channels=1)
    decoded = {}
    for name in maps:
        data = ex[tfrecord.MAP_KEYS[name]]
        decoded[name] = tf.cond(
            tf.equal(tf.strings.length(data), 0),
            lambda: tf.zeros_like(label, tf.int32),
            lambda d=data: tf.cast(tf.io.decode_png(d, channels=1, dtype=tf.uint16), tf.int32))
    return image, label, ex["image/filename"], decoded


def make_dataset(
    dataset: str | DatasetInfo,
    dataset_dir: str | os.PathLike,
    split: str,
    *,
    crop_size: tuple[int, int] | None = (513, 513),
    batch_size: int = 8,
    is_training: bool = True,
    min_scale_factor: float = 0.5,
    max_scale_factor: float = 2.0,
    scale_factor_step_size: float = 0.25,
    min_resize_value: int | None = None,
    max_resize_value: int | None = None,
    resize_factor: int | None = None,
    num_readers: int = 4,
    shuffle_buffer: int = 256,
    seed: int | None = None,
    repeat: bool | None = None,
    drop_remainder: bool | None = None,
    mean_pixel: Sequence[float] = preprocess.MEAN_PIXEL_INCEPTION,
    targets: Sequence[str] = DEFAULT_TARGETS,
    skip_examples: int = 0,
) -> tf.data.Dataset:
    """Batched `(images float32 [B,h,w,3] in 0..255, {target name: tensor})` for one split.

    Training: shuffled, repeated (unless `repeat=False`), randomly scaled/cropped/flipped,
    remainder dropped. Eval: the list order of the converter, no randomness, one pass. With `seed` the whole
    stream (file order, shuffle, augmentation) is reproducible. `crop_size=None` keeps full
    images (eval only, `batch_size` must be 1). `targets` names registered targets
    (`deeplab_ext.data.targets`; default semantic labels and image tags).
    `skip_examples` (training): start the stream that many examples in, where a resumed run
    stopped; the records and their augmentation seeds are skipped before any decoding, so a
    seeded stream continues exactly (a resumed --deterministic run is the same run).
    """
    info = get_dataset_info(dataset)
    targets = tuple(targets)
    for name in targets:
        get_target(name)  # unknown names fail here, not inside tf.data
    files = list_shards(dataset_dir, split)
    _check_batching(batch_size, crop_size, is_training)
    repeat = is_training if repeat is None else repeat
    drop_remainder = is_training if drop_remainder is None else drop_remainder
    deterministic = (not is_training) or seed is not None
    ds = _records(files, is_training, seed, num_readers, shuffle_buffer, repeat, deterministic)
    process = _example_fn(info, targets, is_training, dict(
        crop_height=None if crop_size is None else int(crop_size[0]),
        crop_width=None if crop_size is None else int(crop_size[1]),
        min_resize_value=min_resize_value, max_resize_value=max_resize_value,
        resize_factor=resize_factor, min_scale_factor=min_scale_factor,
        max_scale_factor=max_scale_factor, scale_factor_step_size=scale_factor_step_size,
        mean_pixel=mean_pixel))
    ds = _processed(ds, process, is_training, seed, skip_examples, deterministic)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    # Across workers (MultiWorkerMirroredStrategy) every worker runs this same seeded
    # stream and keeps its part of each global batch: the workers together train on
    # exactly the batches one process would (sharding by file would change them).
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(AUTOTUNE)


def _check_batching(batch_size: int, crop_size: tuple[int, int] | None,
                    is_training: bool) -> None:
    """Refuses a batch size below 1, and full images (no crop) but one at a time in eval."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if crop_size is None and (is_training or batch_size != 1):
        raise ValueError("crop_size=None (full images) needs is_training=False, batch_size=1")


def _processed(ds: tf.data.Dataset, process: Callable, is_training: bool, seed: int | None,
               skip_examples: int, deterministic: bool) -> tf.data.Dataset:
    """The records decoded and preprocessed; in training each paired with its own
    augmentation seed from one seeded stream (skipped together on resume)."""
    if is_training:
        seeds = tf.data.Dataset.random(seed=seed).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds))
        if skip_examples:
            ds = ds.skip(int(skip_examples))
        return ds.map(process, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    return ds.map(lambda s: process(s, None), num_parallel_calls=AUTOTUNE, deterministic=True)


def _records(files: list[str], is_training: bool, seed: int | None, num_readers: int,
             shuffle_buffer: int, repeat: bool, deterministic: bool) -> tf.data.Dataset:
    """The serialized examples of ``files``: shuffled and interleaved for training, shard
    after shard for evaluation (the converter's list order)."""
    ds = tf.data.Dataset.from_tensor_slices(files)
    if is_training:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(
        tf.data.TFRecordDataset,
        cycle_length=max(1, min(num_readers, len(files))) if is_training else 1,
        num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if is_training and shuffle_buffer > 1:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return ds.repeat() if repeat else ds


def _example_fn(info: DatasetInfo, targets: tuple[str, ...], is_training: bool,
                augment: dict) -> Callable:
    """``(serialized, seed) -> (image, {target: tensor})``: decode, the image-stage
    targets, the original's preprocessing (``augment``: its keyword arguments), the
    dense-stage targets. The shards' dense maps ride through the augmentation as more
    label channels, so a crop or flip moves them with the labels."""
    map_names = maps_of(targets)

    def process(serialized: tf.Tensor, elem_seed: tf.Tensor | None):
        image, label, _, maps = decode_with_maps(serialized, map_names)
        out = compute_targets(targets, IMAGE, image, label, info, elem_seed, is_training,
                              {k: v[..., 0] for k, v in maps.items()})
        if map_names:
            # Stored as ignore - value so the label's padding (the ignore label) reads back
            # as 0 (no instance, invalid).
            label = tf.concat([tf.cast(label, tf.int32)]
                              + [info.ignore_label - maps[m] for m in map_names], -1)
        image, label = preprocess.preprocess_image_and_label(
            image, label, ignore_label=info.ignore_label, is_training=is_training,
            seed=elem_seed, **augment)
        maps = {m: info.ignore_label - label[..., i + 1] for i, m in enumerate(map_names)}
        label = label[..., :1]
        out.update(compute_targets(targets, DENSE, image, label, info, elem_seed, is_training,
                                   maps))
        return image, {name: out[name] for name in targets}

    return process


def foreign_label_values(labels: np.ndarray, info: DatasetInfo) -> list[int]:
    """Label values that are neither a class of ``info`` nor its ignore label."""
    values = np.unique(np.asarray(labels))
    return [int(v) for v in values if not (0 <= v < info.num_classes or v == info.ignore_label)]


def check_labels_match(labels: np.ndarray, info: DatasetInfo, dataset_dir: str | os.PathLike,
                       split: str, whose: str = "--dataset") -> None:
    """Refuse shards whose labels do not fit ``info``: they were written for another dataset.

    Why up front: otherwise every metric is silently wrong (a class id beyond the model's
    classes is neither counted nor ignored) until a shape error far downstream.
    """
    bad = foreign_label_values(labels, info)
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
        raise ValueError(
            f"--dataset_dir={dataset_dir} split {split!r} holds label values {shown}, which are "
            f"not classes of {whose} {info.name!r} ({info.num_classes} classes 0.."
            f"{info.num_classes - 1}, ignore label {info.ignore_label}): these shards were "
            f"written for another dataset. Use shards of {info.name!r}, or a model / --dataset "
            "made for these shards."
        )


def check_dataset_record(info: DatasetInfo, dataset_dir: str | os.PathLike, split: str,
                         whose: str = "--dataset", *, named: str | None = None,
                         require_record: bool = False, flag: str = "--dataset_dir") -> None:
    """Refuse shards whose converter recorded another dataset: other classes (by name and
    count) or another ignore label. Shards of a dataset with the same classes under another
    name (coco128_voc for pascal_voc_seg) are the same task and pass. Shards without a
    record (older converters, other tools) hold a dataset nobody wrote down: with
    ``require_record`` (a checkpoint's tools: its classes are not the user's statement about
    the shards) they are refused unless the user ``named`` the dataset they hold (which
    must have ``info``'s classes); otherwise only their label values are checked."""
    path = tfrecord.record_path(dataset_dir, split)
    if not os.path.isfile(path):
        if named is not None:
            stated = get_dataset_info(named)
            if (list(stated.class_names), stated.ignore_label) != (
                    list(info.class_names), info.ignore_label):
                raise ValueError(f"--dataset={named}: {stated.num_classes} classes, ignore "
                                 f"label {stated.ignore_label}, not those of {whose} "
                                 f"{info.name!r} ({info.num_classes}, ignore label "
                                 f"{info.ignore_label}): these shards cannot be scored by it")
        elif require_record:
            raise ValueError(
                f"{flag}={dataset_dir} split {split!r} has no record of its dataset "
                f"({os.path.basename(path)}, which this project's converters write): its "
                f"label values would be read as the classes of {whose} {info.name!r}, whatever "
                f"they are. Convert the split again ({CONVERTERS}), or say which dataset it "
                f"holds with --dataset=NAME")
        return
    try:
        with open(path) as f:
            record = json.load(f)
        names, ignore = list(record["class_names"]), int(record["ignore_label"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: unreadable record of the shards' dataset ({e}); convert the "
                         f"split again ({CONVERTERS})") from e
    if names != list(info.class_names) or ignore != info.ignore_label:
        raise ValueError(
            f"{flag}={dataset_dir} split {split!r} holds {record.get('name')!r} "
            f"({len(names)} classes {', '.join(names[:4])}{', ...' if len(names) > 4 else ''}; "
            f"ignore label {ignore}), not {whose} {info.name!r} ({info.num_classes} classes "
            f"{', '.join(info.class_names[:4])}{', ...' if info.num_classes > 4 else ''}; "
            f"ignore label {info.ignore_label}), as {path} records: they were written for "
            f"another dataset. Use shards of "
            f"{info.name!r}, or a model / --dataset made for these shards.")


def check_shards_match(info: DatasetInfo, dataset_dir: str | os.PathLike, split: str,
                       num_examples: int = 16, whose: str = "--dataset", *,
                       named: str | None = None, require_record: bool = False) -> None:
    """:func:`check_dataset_record`, every shard read through (a corrupt or truncated
    one is named), then :func:`check_labels_match` on the first ``num_examples`` labels."""
    shards = list_shards(dataset_dir, split)  # none at all: that error first
    check_dataset_record(info, dataset_dir, split, whose, named=named,
                         require_record=require_record)
    labels = []
    for path in shards:
        for record in read_checked(path):
            if len(labels) < num_examples:
                labels.append(decode_example(record)[1].numpy().ravel())
    if labels:
        check_labels_match(np.concatenate(labels), info, dataset_dir, split, whose)


def read_checked(path: str) -> Iterator[tf.Tensor]:
    """The records of one shard, read through (one at a time); a corrupt or truncated
    shard is an error naming it."""
    records = iter(tf.data.TFRecordDataset(path))
    while True:
        try:
            record = next(records)
        except StopIteration:
            return
        except tf.errors.OpError as e:
            why = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", str(e)).splitlines()[0]
            raise ValueError(f"TFRecord shard {path} is corrupt or truncated "
                             f"({why.split(chr(39))[0].split(' (')[0][:80]}); convert the "
                             f"split again ({CONVERTERS})") from e
        yield record
