"""Converters from image folders to the original DeepLab TFRecords.

- VOC layout (`build_voc2012_data.py` of the original): `JPEGImages/*.jpg`,
  `SegmentationClass/*.png` (palette or index PNGs), `ImageSets/Segmentation/<split>.txt`.
- CamVid, SegNet layout: `<split>.txt` with "image label" path pairs, single-channel labels.
- Cityscapes (`build_cityscapes_data.py` of the original): `leftImg8bit/<split>/<city>/
  *_leftImg8bit.png` with `gtFine/.../*_gtFine_labelTrainIds.png`, written as the splits
  `train_fine` / `val_fine`; optionally `*_gtFine_instanceIds.png` and
  `disparity/.../*_disparity.png`, stored as the scene maps (`tfrecord.MAP_KEYS`).

`image/encoded` is always the source file's bytes (never re-encoded). The stored label is
a single-channel *index* PNG: palette PNGs are read as their palette indices (Pillow's
"P" mode, which matplotlib already requires; without Pillow a small PNG-chunk reader maps
the decoded RGB back through the PLTE table), never as colours. Every example is decoded
and validated before it is written; all shards of a split are published atomically.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import os
import pathlib
import re
import struct
import zlib
from collections.abc import Mapping, Sequence

import cv2
import numpy as np
import tensorflow as tf

from deeplab_ext.data import tfrecord
from deeplab_ext.data.datasets import DatasetInfo, get_dataset_info, info_to_dict
from deeplab_ext.paths import check_outputs

try:  # Pillow is a dependency (pyproject.toml); keep a fallback anyway.
    from PIL import Image as _PILImage
except ImportError:  # pragma: no cover - exercised by monkeypatching _PILImage in tests
    _PILImage = None

log = logging.getLogger(__name__)

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class BadExampleError(ValueError):
    """One input file is unusable; the message names the file and what to do."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclasses.dataclass
class ConversionReport:
    """What a conversion of one split did (returned, and logged at the end)."""

    split: str
    num_written: int
    shard_paths: list[str]
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def summary(self) -> str:
        text = f"split {self.split!r}: wrote {self.num_written} examples in {len(self.shard_paths)} shards"
        if self.skipped:
            text += f", skipped {self.num_skipped} bad examples:\n" + "\n".join(
                f"  {p}: {r}" for p, r in self.skipped
            )
        return text


def sniff_image_format(data: bytes) -> str:
    """'jpeg', 'png' or 'bmp' from the magic bytes ('' when none)."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == _PNG_MAGIC:
        return "png"
    if data[:2] == b"BM":
        return "bmp"
    return ""


def decode_image_file(path: str | os.PathLike) -> tuple[np.ndarray, bytes, str]:
    """Read and fully decode an image file: (RGB uint8 [H, W, 3], raw bytes, format). The
    one reader of the converters and of ``tools.predict``, so an image is accepted by both
    or refused by both (TensorFlow's decoders catch truncated JPEGs, which OpenCV silently
    accepts, grey at the bottom)."""
    path = str(path)
    if not os.path.isfile(path):
        raise BadExampleError(path, "image file does not exist")
    with open(path, "rb") as f:
        data = f.read()
    fmt = sniff_image_format(data)
    if not fmt:
        raise BadExampleError(path, "not a JPEG, PNG or BMP image (unreadable or corrupt file)")
    try:
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
        detail = re.sub(r"\{\{.*?\}\}", "", e.message).strip()[:120]
        raise BadExampleError(path, f"corrupt or truncated {fmt} image ({detail})") from None
    return image.numpy(), data, fmt


def read_image(path: str | os.PathLike) -> tuple[bytes, str, int, int]:
    """Read and fully decode an image file; returns (raw bytes, format, height, width).

    Decoding with TensorFlow's own decoders guarantees the reader can decode it at train time
    (and catches truncated JPEGs, which OpenCV silently accepts).
    """
    image, data, fmt = decode_image_file(path)
    if fmt not in ("jpeg", "png"):  # the TFRecord format's image/format
        raise BadExampleError(path, f"a {fmt} image: convert it to JPEG or PNG first")
    return data, fmt, int(image.shape[0]), int(image.shape[1])


def _png_chunks(data: bytes) -> dict[str, bytes]:
    chunks: dict[str, bytes] = {}
    pos = 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8].decode("latin-1")
        chunks.setdefault(kind, data[pos + 8 : pos + 8 + length])
        pos += 12 + length
        if kind == "IEND":
            break
    return chunks


def _png_label_without_pil(path: str, data: bytes) -> np.ndarray:
    """Palette/grey PNG -> index array without Pillow (cv2 would expand palettes to BGR)."""
    chunks = _png_chunks(data)
    if "IHDR" not in chunks:
        raise BadExampleError(path, "corrupt PNG (no IHDR chunk)")
    bit_depth, color_type = chunks["IHDR"][8], chunks["IHDR"][9]
    if color_type == 3:  # palette: decode to RGB, map colours back through PLTE
        plte = np.frombuffer(chunks.get("PLTE", b""), np.uint8).reshape(-1, 3).astype(np.int64)
        keys = (plte[:, 0] << 16) | (plte[:, 1] << 8) | plte[:, 2]
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise BadExampleError(path, "corrupt or unreadable PNG label")
        rgb = bgr[..., ::-1].astype(np.int64)
        pix = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        first = {}
        for i, k in enumerate(keys.tolist()):
            first.setdefault(k, i)
        uniq, inverse = np.unique(pix, return_inverse=True)
        if any(u not in first for u in uniq.tolist()):
            raise BadExampleError(path, "palette PNG decodes to colours missing from its PLTE")
        lut = np.array([first[u] for u in uniq.tolist()], np.int64)
        return lut[inverse].reshape(pix.shape)
    if color_type == 0 and bit_depth <= 16:
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if arr is None:
            raise BadExampleError(path, "corrupt or unreadable PNG label")
        return arr.astype(np.int64)
    raise BadExampleError(
        path,
        "label is a colour image, not a class-index PNG; run `python -m "
        "tools.remove_gt_colormap` (palette PNG) or convert it to single-channel indices",
    )


def read_label_indices(path: str | os.PathLike) -> tuple[np.ndarray, bytes, bool]:
    """Read a segmentation label as class indices.

    Returns (int64 [H, W] indices, raw bytes, is_plain_index_png) where the last flag says
    the file already is an 8-bit single-channel PNG whose bytes can be stored unchanged.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise BadExampleError(path, "label file does not exist")
    with open(path, "rb") as f:
        data = f.read()
    if sniff_image_format(data) != "png":
        raise BadExampleError(path, "label is not a PNG file (unreadable or corrupt)")
    if _PILImage is None:
        arr = _png_label_without_pil(path, data)
        chunks = _png_chunks(data)
        plain = chunks["IHDR"][9] == 0 and chunks["IHDR"][8] == 8
        return arr, data, plain
    try:
        with _PILImage.open(io.BytesIO(data)) as im:
            im.load()
            mode = im.mode
            if mode in ("P", "L", "I", "I;16", "I;16B", "1"):
                arr = np.array(im).astype(np.int64)
            else:
                raise BadExampleError(
                    path,
                    f"label is a {mode} colour image, not a class-index PNG; run `python -m "
                    "tools.remove_gt_colormap` (palette PNG) or convert it to single-channel "
                    "class indices",
                )
    except (OSError, SyntaxError, zlib.error) as e:
        raise BadExampleError(path, f"corrupt or unreadable PNG label ({e})") from None
    return arr, data, mode == "L"


def encode_index_png(label: np.ndarray) -> bytes:
    """Encode an index map as an 8-bit single-channel PNG (what the reader decodes)."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(label.astype(np.uint8)))
    if not ok:  # pragma: no cover
        raise RuntimeError("cv2.imencode failed to encode a label PNG")
    return buf.tobytes()


def read_map_png(path: str | os.PathLike) -> bytes:
    """A scene map (instance ids, disparity) as 16-bit single-channel PNG bytes: a 16-bit
    file is stored unchanged, an 8-bit one re-encoded; anything else is an error."""
    path = str(path)
    if not os.path.isfile(path):
        raise BadExampleError(path, "map file does not exist")
    with open(path, "rb") as f:
        data = f.read()
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or sniff_image_format(data) != "png" or arr.ndim != 2:
        raise BadExampleError(path, "not a single-channel PNG (instance ids and disparity are "
                                    "stored as 8- or 16-bit single-channel PNGs)")
    if arr.dtype == np.uint16:
        return data
    return cv2.imencode(".png", arr.astype(np.uint16))[1].tobytes()


def _map_shape(data: bytes) -> tuple[int, int]:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED).shape


def load_example(
    image_path: str | os.PathLike,
    label_path: str | os.PathLike,
    info: DatasetInfo,
    filename: str | None = None,
    maps: Mapping[str, str | os.PathLike] | None = None,
) -> tuple[tf.train.Example, np.ndarray]:
    """Validate one image/label pair (and its scene ``maps`` by name, paths) and build its
    Example; returns (example, label)."""
    image_data, fmt, height, width = read_image(image_path)
    # A map is a file, or a function making its 16-bit PNG (VOC's instances need the
    # class map too).
    map_data = {name: source() if callable(source) else read_map_png(source)
                for name, source in (maps or {}).items()}
    for name, data in map_data.items():
        shape = _map_shape(data)
        if shape != (height, width):
            where = getattr(maps[name], "path", maps[name])
            raise BadExampleError(where, f"{name} map is {shape[1]}x{shape[0]} (WxH) but "
                                         f"its image {image_path} is {width}x{height}")
    label, label_data, plain = read_label_indices(label_path)
    if label.shape != (height, width):
        raise BadExampleError(
            label_path,
            f"label is {label.shape[1]}x{label.shape[0]} (WxH) but its image {image_path} is "
            f"{width}x{height}; labels must have the image's size",
        )
    values = np.unique(label)
    bad = values[(values >= info.num_classes) & (values != info.ignore_label)]
    bad = np.concatenate([values[values < 0], bad])
    if bad.size:
        raise BadExampleError(
            label_path,
            f"label values {bad[:10].tolist()} are neither class indices 0..{info.num_classes - 1} "
            f"nor the ignore label {info.ignore_label} of dataset {info.name!r} (wrong --dataset, "
            "or a colour mask that needs tools.remove_gt_colormap?)",
        )
    seg_data = label_data if plain else encode_index_png(label)
    name = filename if filename is not None else pathlib.Path(image_path).stem
    example = tfrecord.image_seg_to_tfexample(
        image_data, name, height, width, seg_data, image_format=fmt, seg_format="png",
        maps=map_data,
    )
    return example, label


def convert_split(
    pairs: Sequence[tuple[str, str] | tuple[str, str, Mapping[str, str], str]],
    output_dir: str | os.PathLike,
    split: str,
    info: DatasetInfo | str,
    *,
    num_shards: int = 4,
    skip_bad_examples: bool = False,
    list_file: str | None = None,
) -> ConversionReport:
    """Write (image, label) pairs of one split as `num_shards` shards, atomically (or
    (image, label, scene maps {name: path}, image/filename) quadruples).

    Sharding follows the original: ceil(n / num_shards) consecutive examples per shard.
    A bad example raises `BadExampleError` (nothing is published) unless
    `skip_bad_examples`, which skips and lists it in the report.
    """
    info = get_dataset_info(info)
    where = list_file or split
    if num_shards < 1:
        raise ValueError(f"--num_shards must be >= 1, got {num_shards}")
    if not pairs:
        raise BadExampleError(where, f"split {split!r} is empty: no examples listed")
    num_per_shard = math.ceil(len(pairs) / num_shards)
    skipped: list[tuple[str, str]] = []
    with tfrecord.AtomicShardWriter(output_dir, split, num_shards,
                                    record=info_to_dict(info)) as writer:
        for shard_id in range(num_shards):
            for i in range(
                shard_id * num_per_shard, min((shard_id + 1) * num_per_shard, len(pairs))
            ):
                image_path, label_path, *extra = pairs[i]
                try:
                    example, _ = load_example(image_path, label_path, info,
                                              filename=extra[1] if len(extra) > 1 else None,
                                              maps=extra[0] if extra else None)
                except BadExampleError as e:
                    if not skip_bad_examples:
                        raise
                    skipped.append((e.path, e.reason))
                    continue
                writer.write(shard_id, example)
        written = sum(writer.counts)
        if written == 0:
            raise BadExampleError(
                where, f"split {split!r} is empty: all {len(pairs)} examples were bad and skipped"
            )
        paths = writer.commit()
    report = ConversionReport(split, written, paths, skipped)
    log.info(report.summary())
    return report


def _read_list(list_file: str | os.PathLike) -> list[str]:
    list_file = str(list_file)
    if not os.path.isfile(list_file):
        raise BadExampleError(list_file, "list file does not exist")
    with open(list_file) as f:
        lines = [ln.strip() for ln in f]
    return [ln for ln in lines if ln and not ln.startswith("#")]


class VocInstances:
    """VOC's `SegmentationObject/<name>.png` (palette indices: object k = 1.., 0 none, 255
    void) with its class map, as Cityscapes-encoded instance ids (class * 1000 + k; a pixel
    of no object keeps its class id): a zero-argument callable making the 16-bit PNG."""

    def __init__(self, path: str, label_path: str) -> None:
        self.path, self.label_path = path, label_path

    def __call__(self) -> bytes:
        objects, _, _ = read_label_indices(self.path)
        classes, _, _ = read_label_indices(self.label_path)
        if objects.shape != classes.shape:
            raise BadExampleError(self.path, f"object map is {objects.shape[1]}x"
                                             f"{objects.shape[0]} (WxH) but its class map "
                                             f"{self.label_path} is {classes.shape[1]}x"
                                             f"{classes.shape[0]}")
        thing = (objects >= 1) & (objects < 255) & (classes >= 1) & (classes < 255)
        ids = np.where(thing, classes * 1000 + objects, classes).astype(np.uint16)
        return cv2.imencode(".png", ids)[1].tobytes()


def voc_pairs(
    list_file: str | os.PathLike,
    image_folder: str | os.PathLike,
    semantic_segmentation_folder: str | os.PathLike,
    image_format: str = "jpg",
    label_format: str = "png",
    instance_folder: str | os.PathLike | None = None,
) -> list[tuple]:
    """(image, label) paths for every name in a VOC `ImageSets/Segmentation/<split>.txt`;
    with ``instance_folder`` (VOC's `SegmentationObject`), (image, label, {"instance":
    :class:`VocInstances`}, name)."""
    names = _read_list(list_file)
    pairs = []
    for n in names:
        image = os.path.join(str(image_folder), f"{n}.{image_format}")
        label = os.path.join(str(semantic_segmentation_folder), f"{n}.{label_format}")
        if instance_folder is None:
            pairs.append((image, label))
        else:
            objects = os.path.join(str(instance_folder), f"{n}.png")
            pairs.append((image, label, {"instance": VocInstances(objects, label)}, n))
    return pairs


def _check_listed_files(
    pairs: Sequence[tuple], list_file: str, skip: bool
) -> tuple[list, list]:
    """Fail fast (before any decoding) on list entries naming missing files (the image,
    the label and any map read from a file)."""
    good, missing = [], []
    for entry in pairs:
        image_path, label_path, *extra = entry
        files = [(image_path, "image"), (label_path, "label")]
        for name, source in (extra[0] if extra else {}).items():
            files.append((getattr(source, "path", source), f"{name} map"))
        for p, what in files:
            if not os.path.isfile(p):
                if not skip:
                    raise BadExampleError(
                        p, f"{what} named in list file {list_file} does not exist"
                    )
                missing.append((p, f"{what} named in list file {list_file} does not exist"))
                break
        else:
            good.append(entry)
    return good, missing


def _convert_listed(
    pairs: list[tuple[str, str]],
    list_file: str,
    output_dir: str | os.PathLike,
    split: str,
    info: DatasetInfo,
    num_shards: int,
    skip_bad_examples: bool,
) -> ConversionReport:
    if not pairs:
        raise BadExampleError(
            list_file, f"split {split!r} is empty: the list file names no examples"
        )
    good, missing = _check_listed_files(pairs, list_file, skip_bad_examples)
    if not good:
        raise BadExampleError(list_file, f"split {split!r} is empty: every listed file is missing")
    report = convert_split(
        good, output_dir, split, info, num_shards=num_shards,
        skip_bad_examples=skip_bad_examples, list_file=list_file,
    )  # fmt: skip
    report.skipped = missing + report.skipped
    return report


def build_voc_dataset(
    image_folder: str | os.PathLike,
    semantic_segmentation_folder: str | os.PathLike,
    list_folder: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    image_format: str = "jpg",
    label_format: str = "png",
    num_shards: int = 4,
    dataset: DatasetInfo | str = "pascal_voc_seg",
    skip_bad_examples: bool = False,
    splits: Sequence[str] | None = None,
    instance_folder: str | os.PathLike | None = "auto",
) -> dict[str, ConversionReport]:
    """Convert every `<list_folder>/*.txt` split (or just `splits`) of a VOC-layout folder.
    ``instance_folder``: VOC's `SegmentationObject` (instance ids for the ``instance``
    task; the original's converter ignores it); "auto": the `SegmentationObject` folder
    beside the class labels when there is one; None: none."""
    info = get_dataset_info(dataset)
    if instance_folder == "auto":
        sibling = pathlib.Path(semantic_segmentation_folder).parent / "SegmentationObject"
        instance_folder = sibling if sibling.is_dir() else None
    elif instance_folder is not None and not os.path.isdir(str(instance_folder)):
        raise FileNotFoundError(f"--instance_folder={instance_folder} is not a directory")
    for folder, flag in (
        (image_folder, "--image_folder"),
        (semantic_segmentation_folder, "--semantic_segmentation_folder"),
        (list_folder, "--list_folder"),
    ):
        if not os.path.isdir(str(folder)):
            raise FileNotFoundError(f"{flag}={folder} is not a directory")
    if splits is None:
        list_files = sorted(pathlib.Path(list_folder).glob("*.txt"))
        if not list_files:
            raise FileNotFoundError(f"--list_folder={list_folder} holds no <split>.txt files")
    else:
        list_files = [pathlib.Path(list_folder) / f"{s}.txt" for s in splits]
    reports = {}
    for lf in list_files:
        split = lf.stem
        pairs = voc_pairs(
            lf, image_folder, semantic_segmentation_folder, image_format, label_format,
            instance_folder,
        )
        reports[split] = _convert_listed(
            pairs, str(lf), output_dir, split, info, num_shards, skip_bad_examples
        )
    return reports


def camvid_pairs(
    list_file: str | os.PathLike, camvid_dir: str | os.PathLike
) -> list[tuple[str, str]]:
    """Parse a SegNet list file ("image label" per line, relative to `camvid_dir`).

    Absolute SegNet paths such as `/SegNet/CamVid/train/x.png` that do not exist locally
    are re-rooted at `camvid_dir` using their last two components.
    """
    pairs = []
    for lineno, line in enumerate(_read_list(list_file), start=1):
        parts = line.split()
        if len(parts) != 2:
            raise BadExampleError(
                list_file, f"line {lineno} should be 'image_path label_path', got {line!r}"
            )
        resolved = []
        for p in parts:
            cand = p if os.path.isabs(p) else os.path.join(str(camvid_dir), p)
            if not os.path.exists(cand) and os.path.isabs(p):
                cand = os.path.join(str(camvid_dir), *pathlib.Path(p).parts[-2:])
            resolved.append(cand)
        pairs.append((resolved[0], resolved[1]))
    return pairs


def build_camvid_dataset(
    camvid_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    num_shards: int = 4,
    dataset: DatasetInfo | str = "camvid",
    skip_bad_examples: bool = False,
    list_files: Mapping[str, str | os.PathLike] | None = None,
) -> dict[str, ConversionReport]:
    """Convert CamVid in SegNet layout; splits from `<camvid_dir>/{train,val,test}.txt`.

    `list_files` maps split -> list file to convert other/smaller lists instead.
    """
    info = get_dataset_info(dataset)
    if not os.path.isdir(str(camvid_dir)):
        raise FileNotFoundError(f"--camvid_dir={camvid_dir} is not a directory")
    if list_files is None:
        list_files = {
            s: os.path.join(str(camvid_dir), f"{s}.txt")
            for s in ("train", "val", "test")
            if os.path.isfile(os.path.join(str(camvid_dir), f"{s}.txt"))
        }
        if not list_files:
            raise FileNotFoundError(
                f"--camvid_dir={camvid_dir} holds no train.txt/val.txt/test.txt list files"
            )
    reports = {}
    for split, lf in list_files.items():
        pairs = camvid_pairs(lf, camvid_dir)
        reports[split] = _convert_listed(
            pairs, str(lf), output_dir, split, info, num_shards, skip_bad_examples
        )
    return reports


def remove_gt_colormap(
    original_gt_folder: str | os.PathLike,
    output_dir: str | os.PathLike,
    segmentation_format: str = "png",
) -> int:
    """Like the original `remove_gt_colormap.py`: palette PNGs -> single-channel index PNGs."""
    src = pathlib.Path(original_gt_folder)
    if not src.is_dir():
        raise FileNotFoundError(f"--original_gt_folder={src} is not a directory")
    files = sorted(src.glob(f"*.{segmentation_format}"))
    if not files:
        raise FileNotFoundError(
            f"--original_gt_folder={src} holds no *.{segmentation_format} files"
        )
    check_outputs({"--original_gt_folder": src}, {"--output_dir": output_dir})
    out = pathlib.Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for path in files:
        label, _, _ = read_label_indices(path)
        if label.max() > 255:
            raise BadExampleError(path, "label indices above 255 cannot be stored in 8 bits")
        tmp = out / f".{path.stem}.png.tmp"
        tmp.write_bytes(encode_index_png(label))
        os.replace(tmp, out / f"{path.stem}.png")
    return len(files)


# Cityscapes' file name suffixes, by what they hold.
CITYSCAPES_SUFFIXES = {"image": "_leftImg8bit.png", "label": "_gtFine_labelTrainIds.png",
                       "instance": "_gtFine_instanceIds.png", "disparity": "_disparity.png"}


def cityscapes_examples(cityscapes_root: str | os.PathLike, split: str,
                        maps: Sequence[str] = ()) -> list[tuple[str, str, dict[str, str], str]]:
    """(image, trainId label, {map: path}, name) of one split, sorted by image path. Labels come
    from cityscapesScripts' createTrainIdLabelImgs; a missing file is an error naming it."""
    root = pathlib.Path(cityscapes_root)
    folders = {"image": root / "leftImg8bit", "label": root / "gtFine",
               "instance": root / "gtFine", "disparity": root / "disparity"}
    images = sorted((folders["image"] / split).glob(f"*/*{CITYSCAPES_SUFFIXES['image']}"))
    if not images:
        raise FileNotFoundError(
            f"--cityscapes_root={cityscapes_root}: no {folders['image'] / split}/<city>/"
            f"*{CITYSCAPES_SUFFIXES['image']} images")
    examples = []
    for image in images:
        stem = image.name[: -len(CITYSCAPES_SUFFIXES["image"])]
        path = {k: folders[k] / split / image.parent.name / f"{stem}{CITYSCAPES_SUFFIXES[k]}"
                for k in ("label", *maps)}
        for kind, p in path.items():
            if not p.is_file():
                hint = (" (make the trainId labels with cityscapesScripts' "
                        "createTrainIdLabelImgs)" if kind == "label" else "")
                raise BadExampleError(p, f"the {kind} file of {image} does not exist{hint}")
        examples.append((str(image), str(path["label"]), {m: str(path[m]) for m in maps}, stem))
    return examples


def build_cityscapes_dataset(
    cityscapes_root: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    splits: Sequence[str] = ("train", "val"),
    num_shards: int = 10,
    maps: Sequence[str] = (),
    skip_bad_examples: bool = False,
) -> dict[str, ConversionReport]:
    """Convert Cityscapes' fine annotations as the original's build_cityscapes_data.py does
    (10 shards per split, split ``<split>_fine``, the image's name without its suffix as
    ``image/filename``), with the scene ``maps`` (instance, disparity) when asked."""
    unknown = sorted(set(maps) - set(tfrecord.MAP_KEYS))
    if unknown:
        raise ValueError(f"unknown maps {unknown}; known: {sorted(tfrecord.MAP_KEYS)}")
    info = get_dataset_info("cityscapes")
    reports = {}
    for split in splits:
        examples = cityscapes_examples(cityscapes_root, split, maps)
        reports[split] = convert_split(examples, output_dir, f"{split}_fine", info,
                                       num_shards=num_shards,
                                       skip_bad_examples=skip_bad_examples)
    return reports
