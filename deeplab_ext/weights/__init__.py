"""The original model zoo's released weights by name: the table, the cache, the download.

``released.json`` beside this file is the one table (data, not code): each entry's zoo
variant, classes, the original's figures and its files in order of preference (a TFLite
conversion, the TF1 tarball), each with URL, sha256 where known, the crop and output
stride it computes at and, where measured, the refit settings tuned for it. A name
resolves to a local file (:func:`resolve`):

1. the file shipped with the package (``deeplab_ext/assets/released-weights``),
2. the cache, ``$DEEPLAB_MTL_HOME/weights/<name>/`` (default
   ``$XDG_CACHE_HOME/deeplab_mtl``, else ``~/.cache/deeplab_mtl``), checked against its
   sha256 before it is trusted,
3. a download (``deeplab_ext.data.fetch``: resumed with HTTP Range, verified, renamed
   into place only when whole; a tarball unpacked safely and atomically).

Offline, the error names the URL and the exact file to place in the cache.
``$DEEPLAB_MTL_WEIGHTS_MIRROR=http://host:port`` fetches every URL's path from another
server (a company mirror; the tests' local server).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import pathlib
import urllib.parse
from collections.abc import Callable
from typing import Any

from deeplab_ext.assets import shipped_weights
from deeplab_ext.data.fetch import DownloadError, download_file, safe_extract, sha256_file

__all__ = ["ENV_HOME", "ENV_MIRROR", "Resolved", "WeightsEntry", "WeightsFile", "cache_home",
           "entries", "get_entry", "is_weights_name", "list_weights", "resolve"]

TABLE = pathlib.Path(__file__).resolve().parent / "released.json"
ENV_HOME = "DEEPLAB_MTL_HOME"
ENV_MIRROR = "DEEPLAB_MTL_WEIGHTS_MIRROR"
TFLITE, TF1_TARBALL = "tflite", "tf1_tarball"


@dataclasses.dataclass(frozen=True)
class WeightsFile:
    """One file of a release: ``format`` tflite | tf1_tarball; ``crop`` and
    ``output_stride``: what it was trained at / computes at; ``evidence``: refit settings
    tuned for it (``tools.tune_evidence``'s choice, with where it was tuned)."""

    format: str
    filename: str
    url: str
    sha256: str | None = None
    size: int | None = None
    shipped: bool = False
    crop: tuple[int, int] = (513, 513)
    output_stride: int = 16
    note: str = ""
    evidence: dict | None = None


@dataclasses.dataclass(frozen=True)
class WeightsEntry:
    """One name of the original model zoo."""

    name: str
    variant: str | None  # this zoo's --model_variant; None: not in this zoo
    dataset: str | None  # the classes it was trained on; None: an ImageNet backbone
    description: str
    original: tuple[dict, ...]
    files: tuple[WeightsFile, ...]
    fingerprint: str = ""  # sha256 of the entry's row: an import made from another is stale

    def original_summary(self) -> str:
        """The original's figures, e.g. '75.32 val (OS16) / 77.33 val (OS8, MS + flip)'."""
        parts = []
        for row in self.original:
            extra = ", MS + flip" if row.get("flip") else ""
            parts.append(f"{row['miou']:.2f} {row['split']} (OS{row['output_stride']}{extra})")
        return " / ".join(parts) or "-"


@functools.cache
def entries() -> dict[str, WeightsEntry]:
    """The table, by name (``released.json``)."""
    table = json.loads(TABLE.read_text())
    out = {}
    for raw in table["entries"]:
        files = tuple(WeightsFile(**{**f, "crop": tuple(f.get("crop", (513, 513)))})
                      for f in raw["files"])
        out[raw["name"]] = WeightsEntry(
            name=raw["name"], variant=raw["variant"], dataset=raw["dataset"],
            description=raw["description"], original=tuple(raw["original"]), files=files,
            fingerprint=hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest())
    return out


def is_weights_name(value: str | os.PathLike | None) -> bool:
    """A name of the table that is not also an existing path (a path always wins)."""
    return value is not None and str(value) in entries() and not os.path.exists(value)


def get_entry(name: str, flag: str = "--weights") -> WeightsEntry:
    """The entry of ``name``; an unknown name is an error listing the known ones."""
    if name not in entries():
        raise ValueError(f"{flag}={name}: neither a file nor a released model's name; names: "
                         f"{', '.join(entries())} (python -m tools.model_info --list_weights)")
    return entries()[name]


def cache_home() -> pathlib.Path:
    """``$DEEPLAB_MTL_HOME``, else ``$XDG_CACHE_HOME/deeplab_mtl``, else
    ``~/.cache/deeplab_mtl``."""
    if os.environ.get(ENV_HOME):
        return pathlib.Path(os.environ[ENV_HOME]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "deeplab_mtl"


def cache_path(entry: WeightsEntry, file: WeightsFile) -> pathlib.Path:
    """Where ``file`` of ``entry`` is (or goes) in the cache."""
    return cache_home() / "weights" / entry.name / file.filename


def _url(file: WeightsFile) -> str:
    mirror = os.environ.get(ENV_MIRROR)
    if not mirror:
        return file.url
    parts = urllib.parse.urlsplit(file.url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return mirror.rstrip("/") + "/" + parts.netloc + path


@dataclasses.dataclass(frozen=True)
class Resolved:
    """A name resolved to a file this project's importer reads: a ``.tflite`` file or a
    TF1 checkpoint prefix; ``where``: shipped | cache | download."""

    entry: WeightsEntry
    file: WeightsFile
    path: pathlib.Path
    where: str


def _trusted(path: pathlib.Path, file: WeightsFile) -> bool:
    """A cached file is used only when its sha256 is the table's, or (none published) the
    one recorded when it came (a file the user placed there is recorded on first use)."""
    if not path.is_file():
        return False
    expected = file.sha256 or _recorded_sha256(path)
    actual = sha256_file(path)
    if expected is None:
        _record_sha256(path, actual)
        return True
    return actual == expected


def _record_sha256(path: pathlib.Path, digest: str) -> None:
    path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n")


def _recorded_sha256(path: pathlib.Path) -> str | None:
    record = path.with_name(path.name + ".sha256")
    return record.read_text().split()[0] if record.is_file() else None


def _usable(path: pathlib.Path, file: WeightsFile) -> pathlib.Path:
    """The path the importer reads: the file itself, or a tarball's checkpoint prefix."""
    if file.format != TF1_TARBALL:
        return path
    unpacked = safe_extract(path, path.with_name(path.name.split(".tar")[0]))
    indexes = sorted(unpacked.rglob("*.index"))
    if len(indexes) != 1:
        raise DownloadError(f"{path} unpacked into {unpacked} holds {len(indexes)} checkpoint "
                            "index files, not one: delete both and run again")
    return indexes[0].with_suffix("")


def resolve(name: str, *, flag: str = "--weights", shipped: bool = True,
            download: bool = True, printer: Callable[[str], None] = print,
            progress: Callable[[int, int | None], None] | None = None) -> Resolved:
    """The local file of a released model's name: shipped, then cached, then downloaded
    (``download=False``: an error naming the URL and where to put the file instead)."""
    entry = get_entry(name, flag)
    if entry.variant is None:
        raise ValueError(f"{flag}={name}: {entry.description}; the zoo's variants: python -m "
                         "tools.model_info --list_variants")
    if shipped:
        for file in entry.files:
            path = shipped_weights(file.filename)
            if file.shipped and path.is_file():
                return Resolved(entry, file, path, "shipped")
    for file in entry.files:
        path = cache_path(entry, file)
        if _trusted(path, file):
            return Resolved(entry, file, _usable(path, file), "cache")
    file = entry.files[0]
    path = cache_path(entry, file)
    url = _url(file)
    place = (f"download {file.url} elsewhere and save it as {path}"
             + (f" (sha256 {file.sha256})" if file.sha256 else ""))
    if not download:
        raise FileNotFoundError(f"{flag}={name}: not shipped and not in the cache; {place}")
    printer(f"{flag}={name}: downloading {url} to {path}")
    # No published checksum: the one recorded at the first download is the reference, so a
    # file changed since (upstream or in the cache) is refused, not trusted.
    expected = file.sha256 or _recorded_sha256(path)
    try:
        download_file(url, path, sha256=expected, progress=progress)
    except DownloadError as e:
        raise DownloadError(f"{flag}={name}: {e} To use it offline, {place}.") from e
    actual = sha256_file(path)
    if expected is None:
        _record_sha256(path, actual)
        printer(f"{path.name}: sha256 {actual} (no checksum is published; recorded)")
    return Resolved(entry, file, _usable(path, file), "download")


def list_weights() -> list[dict[str, Any]]:
    """One row per name for ``tools.model_info --list_weights``: what it is, what the
    original measured, and where each of its files is (shipped / cached / not here)."""
    rows = []
    for entry in entries().values():
        where = []
        for file in entry.files:
            if file.shipped and shipped_weights(file.filename).is_file():
                where.append(f"{file.format}: shipped")
            elif cache_path(entry, file).is_file():
                where.append(f"{file.format}: cached")
            else:
                where.append(f"{file.format}: {file.url}")
        rows.append({"name": entry.name, "variant": entry.variant or "(not in this zoo)",
                     "dataset": entry.dataset or "(backbone only)",
                     "original": entry.original_summary(),
                     "tuned": "yes" if any(f.evidence for f in entry.files) else "",
                     "files": "; ".join(where)})
    return rows
