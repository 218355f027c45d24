"""A static, self-contained HTML report of a run: tables, per-class IoU, curves, images.

The user's first hour ends with "did it work?"; a page that opens from disk
(no server, no TensorBoard, no internet) answers it and can be attached to
an issue. Everything lives in one folder with relative links: the HTML file
and the PNGs next to it, all named after the HTML file's stem so several
reports can share a folder. Every file is written to a temporary name and
renamed into place, so a crash never leaves a half-written page.

Curves are drawn with matplotlib's Agg canvas directly (no pyplot, no global
backend switch), so this is safe to call inside a training process.
"""

from __future__ import annotations

import html
import io
import math
import os
import pathlib
import re
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

Table = tuple[str, Sequence[str], Sequence[Sequence[Any]]]
ImageInput = tuple[str, "str | os.PathLike | np.ndarray | bytes"]

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; }
caption { text-align: left; font-weight: 600; padding-bottom: 0.3em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.7em; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
figure { display: inline-block; margin: 0.5em 1em 1em 0; vertical-align: top; }
figcaption { font-size: 0.9em; color: #555; max-width: 640px; }
img { max-width: 640px; border: 1px solid #ddd; }
figure.wide { display: block; margin: 0.5em 0 1.6em; }
figure.wide img { max-width: 100%; }
figure.wide figcaption { max-width: none; font-size: 1em; color: #222; }
.bar { background: #4c72b0; height: 0.8em; display: inline-block; }
.notes { white-space: pre-wrap; background: #fafafa; border-left: 3px solid #ccc; padding: 0.5em 1em; }
"""


# --------------------------------------------------------------------------- atomic files


def _atomic_write_bytes(path: pathlib.Path, data: bytes) -> None:
    """Write via a temp file in the same folder + rename, so readers never see half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _slug(text: str, limit: int = 48) -> str:
    """A file-name part from a caption (captions can be long: a whole command line)."""
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()[:limit].strip("_") or "x"


def _fmt(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return "nan" if math.isnan(v) else f"{v:.6g}"
    return str(value)


# --------------------------------------------------------------------------- figures


def _new_figure(width: float = 6.4, height: float = 3.6):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def group_scalars(
    scalars: Mapping[str, Sequence[tuple[int, float]]],
) -> dict[str, list[str]]:
    """Default plot grouping: one plot per tag prefix (`sigma/semantic`, `sigma/tags` -> `sigma`).

    Tags without a `/` get a plot of their own.
    """
    groups: dict[str, list[str]] = {}
    for tag in scalars:
        key = tag.rsplit("/", 1)[0] if "/" in tag else tag
        groups.setdefault(key, []).append(tag)
    return groups


def _plot_scalars(title: str, series: Mapping[str, Sequence[tuple[int, float]]]) -> bytes:
    fig = _new_figure()
    ax = fig.subplots()
    for tag, points in series.items():
        if not points:
            continue
        steps, values = zip(*points, strict=True)
        ax.plot(steps, values, label=tag, marker="." if len(points) < 30 else None)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(True, alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize="small")
    return _figure_png(fig)


def _plot_iou(per_class_iou: Mapping[str, float]) -> bytes:
    names = list(per_class_iou)
    values = [float(per_class_iou[n]) for n in names]
    fig = _new_figure(width=max(6.4, 0.35 * len(names) + 1.5), height=3.8)
    ax = fig.subplots()
    ax.bar(range(len(names)), [0.0 if math.isnan(v) else v for v in values], color="#4c72b0")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize="small")
    ax.set_ylim(0, 1)
    ax.set_ylabel("IoU")
    finite = [v for v in values if not math.isnan(v)]
    if finite:
        ax.axhline(sum(finite) / len(finite), color="#c44e52", linestyle="--", label="mean")
        ax.legend(fontsize="small")
    ax.grid(True, axis="y", alpha=0.3)
    return _figure_png(fig)


# --------------------------------------------------------------------------- images


def _image_png(caption: str, image: Any) -> bytes:
    """PNG bytes of an image given as a PNG path, PNG bytes or an HxWx3 (or HxW) uint8 array."""
    if isinstance(image, (str, os.PathLike)):
        path = pathlib.Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"report image {caption!r}: {path} does not exist.")
        data = path.read_bytes()
        if not data.startswith(_PNG_SIGNATURE):
            raise ValueError(
                f"report image {caption!r}: {path} is not a PNG file; convert it or pass "
                "the pixels as an HxWx3 uint8 array."
            )
        return data
    if isinstance(image, (bytes, bytearray)):
        if not bytes(image).startswith(_PNG_SIGNATURE):
            raise ValueError(f"report image {caption!r}: bytes given are not a PNG.")
        return bytes(image)
    array = np.asarray(image)
    if array.dtype != np.uint8 or not (
        array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))
    ):
        raise ValueError(
            f"report image {caption!r}: expected an HxWx3 uint8 array (or a PNG path), got "
            f"shape {array.shape} dtype {array.dtype}; use np.clip(x, 0, 255).astype(np.uint8)."
        )
    from PIL import Image  # a dependency of matplotlib

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------- HTML


def _table_html(caption: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = ["<table>", f"<caption>{html.escape(caption)}</caption>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
    for row in rows:
        if header and len(row) != len(header):
            raise ValueError(
                f"report table {caption!r}: row {list(row)!r} has {len(row)} cells, the "
                f"header has {len(header)}."
            )
        out.append("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _figure_html(src: str, caption: str) -> str:
    cap = html.escape(caption)
    return (
        f'<figure><img src="{html.escape(src, quote=True)}" alt="{cap}">'
        f"<figcaption>{cap}</figcaption></figure>"
    )


class _Page:
    """One report being written: its body, section by section, and the PNGs beside it
    (named after the page's stem, each written atomically)."""

    def __init__(self, path: pathlib.Path, title: str) -> None:
        self.path, self.folder, self.stem = path, path.parent, _slug(path.stem)
        self.written: list[pathlib.Path] = []
        self.used: set[str] = set()
        self.body: list[str] = [f"<h1>{html.escape(title)}</h1>"]
        self.title = title

    def png(self, kind: str, name: str, data: bytes) -> str:
        base = f"{self.stem}_{kind}_{_slug(name)}"
        fname, i = f"{base}.png", 1
        while fname in self.used:
            i += 1
            fname = f"{base}_{i}.png"
        self.used.add(fname)
        _atomic_write_bytes(self.folder / fname, data)
        self.written.append(self.folder / fname)
        return fname

    def notes(self, heading: str, text: str | Sequence[str] | None) -> None:
        if text:
            paragraphs = [text] if isinstance(text, str) else list(text)
            self.body.append(f"<h2>{html.escape(heading)}</h2>")
            self.body.extend(f'<p class="notes">{html.escape(str(p))}</p>' for p in paragraphs)

    def gallery(self, title: str, pictures: Sequence[ImageInput]) -> None:
        self.body.append(f"<h2>{html.escape(title)}</h2>")
        for caption, image in pictures:
            src = self.png("photo", caption[:40], _image_png(caption, image))
            cap = html.escape(caption)
            self.body.append(f'<figure class="wide"><img src="{html.escape(src, quote=True)}" '
                             f'alt="{cap}"><figcaption>{cap}</figcaption></figure>')

    def tables(self, tables: Sequence[Table]) -> None:
        self.body.append("<h2>Results</h2>")
        self.body.extend(_table_html(caption, header, rows) for caption, header, rows in tables)

    def per_class_iou(self, per_class_iou: Mapping[str, float]) -> None:
        finite = [float(v) for v in per_class_iou.values() if not math.isnan(float(v))]
        mean = sum(finite) / len(finite) if finite else float("nan")
        rows = []
        for name, v in per_class_iou.items():
            v = float(v)
            width = 0 if math.isnan(v) else int(round(200 * min(max(v, 0.0), 1.0)))
            rows.append(
                f"<tr><td>{html.escape(str(name))}</td><td>{html.escape(_fmt(v))}</td>"
                f'<td style="text-align:left"><span class="bar" style="width:{width}px">'
                "</span></td></tr>")
        self.body += [
            "<h2>Per-class IoU</h2>",
            "<table><caption>IoU per class (mean over classes with data: "
            f"{html.escape(_fmt(mean))})</caption>"
            "<tr><th>class</th><th>IoU</th><th></th></tr>" + "\n".join(rows) + "</table>",
            _figure_html(self.png("plot", "per_class_iou", _plot_iou(per_class_iou)),
                         "Per-class IoU (dashed: mean)")]

    def curves(self, scalars: Mapping[str, Sequence[tuple[int, float]]],
               scalar_groups: Mapping[str, Sequence[str]] | None) -> None:
        groups = dict(scalar_groups) if scalar_groups is not None else group_scalars(scalars)
        missing = sorted({t for ts in groups.values() for t in ts} - set(scalars))
        if missing:
            raise ValueError(f"scalar_groups names tags not in scalars: {missing}")
        self.body.append("<h2>Curves</h2>")
        for group, tags in groups.items():
            series = {t: scalars[t] for t in tags}
            if not any(series.values()):
                continue
            src = self.png("plot", group, _plot_scalars(group, series))
            last = ", ".join(
                f"{t} = {_fmt(series[t][-1][1])} @ {series[t][-1][0]}" for t in tags if series[t])
            self.body.append(_figure_html(src, f"{group} (last: {last})"))

    def images(self, images: Sequence[ImageInput]) -> None:
        self.body.append("<h2>Images</h2>")
        for caption, image in images:
            self.body.append(_figure_html(self.png("img", caption, _image_png(caption, image)),
                                          caption))

    def write(self) -> list[pathlib.Path]:
        page = (
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(self.title)}</title>\n<style>{_CSS}</style>\n</head>\n"
            "<body>\n" + "\n".join(self.body) + "\n</body>\n</html>\n")
        _atomic_write_bytes(self.path, page.encode("utf-8"))
        return [*self.written, self.path]


def write_html_report(
    path: str | os.PathLike,
    *,
    title: str,
    tables: Sequence[Table] = (),
    per_class_iou: Mapping[str, float] | None = None,
    scalars: Mapping[str, Sequence[tuple[int, float]]] | None = None,
    images: Sequence[ImageInput] = (),
    notes: str | Sequence[str] | None = None,
    scalar_groups: Mapping[str, Sequence[str]] | None = None,
    gallery: Sequence[ImageInput] = (),
    gallery_title: str = "Examples",
    notes_after: str | Sequence[str] | None = None,
) -> list[pathlib.Path]:
    """Write a self-contained HTML report to `path` (PNGs next to it); return the files written.

    In reading order: `notes` (the summary), `gallery` (the pictures a reader looks at
    first, at the page's full width, under `gallery_title`), the tables, per-class IoU,
    curves, `images` (smaller figures) and `notes_after`.

    - `tables`: `(caption, header, rows)`; numbers are shown with 6 significant digits.
    - `per_class_iou`: `{class_name: IoU in [0, 1]}` -> table with bars + bar chart + mean.
    - `scalars`: `{tag: [(step, value), ...]}` (e.g. `tbevents.read_scalars(logdir)`)
      -> one line plot per group (`scalar_groups`, default: by tag prefix).
    - `images`: `(caption, PNG path | PNG bytes | HxWx3 uint8 array)`; copied into the folder.
    - `notes`: free text (escaped), one paragraph per item.
    """
    path = pathlib.Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"report path {path} should end in .html")
    path.parent.mkdir(parents=True, exist_ok=True)
    page = _Page(path, title)
    page.notes("Summary" if gallery else "Notes", notes)
    if gallery:
        page.gallery(gallery_title, gallery)
    if tables:
        page.tables(tables)
    if per_class_iou:
        page.per_class_iou(per_class_iou)
    if scalars:
        page.curves(scalars, scalar_groups)
    if images:
        page.images(images)
    page.notes("Notes", notes_after)
    return page.write()
