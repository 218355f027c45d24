"""Fetching files safely, for any dataset: resumable verified downloads and safe unpacking.

1. :func:`download_file`: HTTP(S) with ``urllib`` only; the bytes go to ``<name>.part``
   and a re-run continues with a ``Range`` request (a server that ignores ``Range`` is
   detected and the transfer restarts from zero). The file gets its final name only
   after its sha256 matched; a mismatching file is moved to ``<name>.corrupt`` so the
   next run starts clean.
2. :func:`safe_extract`: tar/zip unpacking that refuses absolute paths, ``..``, links
   that leave the target and device files, into a temporary folder renamed into place
   when complete.

What is downloaded for which dataset, and how it becomes TFRecords, is
``deeplab_ext.data.download``.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
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
            total = _size_when_range_refused(e, part, offset)
            if total == offset:
                return total
            return _transfer_once(
                url, part, timeout=timeout, chunk_size=chunk_size, progress=progress
            )
        raise
    with response:
        offset, total, mode, length = _resume_point(response, url, part, offset)
        _check_space(part, length)
        received = _write_body(response, part, mode, chunk_size, progress, offset, total,
                               length)
        if length is not None and received < length:
            raise _Interrupted(f"got {received} of {length} bytes")
        return total


def _size_when_range_refused(e: urllib.error.HTTPError, part: pathlib.Path, offset: int
                             ) -> int | None:
    """The file's size from a 416 (Range not satisfiable) answer; unless the .part is
    already complete, it is deleted so that the caller restarts from zero."""
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
    return total


def _resume_point(response: Any, url: str, part: pathlib.Path, offset: int
                  ) -> tuple[int, int | None, str, int | None]:
    """(offset, total size, file mode, Content-Length): appending where the server honoured
    the Range request, rewriting from zero where it did not."""
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
    return offset, total, mode, length


def _write_body(response: Any, part: pathlib.Path, mode: str, chunk_size: int,
                progress: Callable[[int, int | None], None] | None, offset: int,
                total: int | None, length: int | None) -> int:
    """Copies the response body into ``part``; returns how many bytes arrived."""
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
    return received


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
