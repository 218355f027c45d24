"""Pictures of class maps that a person can read: the map overlaid on its photo, titled
panels side by side at a size where objects are visible, and a legend naming each colour.

Masks on black at thumbnail size all look alike; overlaid on the photo, with the class
names beside their colours, a reader sees what each prediction got right. Used by
``tools.predict`` (its side-by-side picture) and the demo's report. RGB uint8 in and out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import cv2
import numpy as np

from deeplab_ext.data.colormap import label_to_color_image

__all__ = ["legend", "overlay", "panel_row", "with_legend"]

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_WHITE, _BLACK = (255, 255, 255), (0, 0, 0)


def overlay(image: np.ndarray, label: np.ndarray, colormap: str | np.ndarray,
            alpha: float = 0.65, *, ignore_label: int | None = None,
            background: int | None = 0) -> np.ndarray:
    """``label``'s colours blended onto ``image`` (same height and width); the background
    class and ignored pixels leave the photo as it is, so objects stand out."""
    image = np.asarray(image, np.float32)[..., :3]
    label = np.asarray(label)
    colours = label_to_color_image(np.where(label == ignore_label, 0, label).astype(np.int64),
                                   colormap).astype(np.float32)
    painted = np.ones(label.shape, bool)
    if background is not None:
        painted &= label != background
    if ignore_label is not None:
        painted &= label != ignore_label
    out = np.where(painted[..., None], (1 - alpha) * image + alpha * colours, image)
    # Class borders in white: neighbouring objects of similar colours stay apart.
    edges = cv2.dilate((cv2.Canny(label.astype(np.uint8), 0, 0) > 0).astype(np.uint8),
                       np.ones((2, 2), np.uint8)) > 0
    out[edges] = _WHITE
    return np.clip(out, 0, 255).astype(np.uint8)


def _text(canvas: np.ndarray, text: str, org: tuple[int, int], scale: float,
          colour: tuple[int, int, int] = _BLACK) -> None:
    cv2.putText(canvas, text, org, _FONT, scale, colour, max(1, round(scale * 2)), cv2.LINE_AA)


def panel_row(panels: Sequence[tuple[str, np.ndarray]], height: int = 360,
              gap: int = 8) -> np.ndarray:
    """Images side by side, each resized to ``height`` (aspect kept) under its title."""
    title_h = max(22, height // 12)
    widths = [max(1, round(image.shape[1] * height / image.shape[0])) for _, image in panels]
    # One text size for the row: the largest at which every title fits its panel.
    scale = min([title_h / 40] + [title_h / 40 * (w - 8) / max(1, cv2.getTextSize(
        title, _FONT, title_h / 40, 1)[0][0]) for (title, _), w in zip(panels, widths,
                                                                        strict=True)])
    tiles = []
    for (title, image), width in zip(panels, widths, strict=True):
        resized = cv2.resize(np.asarray(image, np.uint8), (width, height),
                             interpolation=cv2.INTER_NEAREST if image.ndim == 2
                             else cv2.INTER_AREA)
        if resized.ndim == 2:
            resized = np.repeat(resized[..., None], 3, -1)
        head = np.full((title_h, width, 3), 255, np.uint8)
        _text(head, title, (4, round(title_h * 0.75)), scale)
        tiles.append(np.concatenate([head, resized], 0))
    spacer = np.full((height + title_h, gap, 3), 255, np.uint8)
    row = [tiles[0]]
    for tile in tiles[1:]:
        row += [spacer, tile]
    return np.concatenate(row, 1)


def legend(class_ids: Iterable[int], names: Sequence[str], colormap: str | np.ndarray,
           width: int, swatch: int = 18) -> np.ndarray:
    """A strip ``width`` wide: a colour swatch and the class name for each of
    ``class_ids``, wrapped onto as many lines as needed."""
    ids = sorted({int(c) for c in class_ids})
    colours = label_to_color_image(np.asarray(ids, np.int64)[None], colormap)[0]
    scale = swatch / 30
    items, x, y, line_h = [], 6, 6, swatch + 8
    for cid, colour in zip(ids, colours, strict=True):
        name = names[cid] if cid < len(names) else str(cid)
        text_w = cv2.getTextSize(name, _FONT, scale, 1)[0][0]
        item_w = swatch + 6 + text_w + 18
        if x + item_w > width and x > 6:
            x, y = 6, y + line_h
        items.append((x, y, colour, name))
        x += item_w
    canvas = np.full((y + line_h, width, 3), 255, np.uint8)
    for x, y, colour, name in items:
        cv2.rectangle(canvas, (x, y), (x + swatch, y + swatch), tuple(int(c) for c in colour),
                      -1)
        cv2.rectangle(canvas, (x, y), (x + swatch, y + swatch), (120, 120, 120), 1)
        _text(canvas, name, (x + swatch + 6, y + round(swatch * 0.8)), scale)
    return canvas


def with_legend(picture: np.ndarray, class_ids: Iterable[int], names: Sequence[str],
                colormap: str | np.ndarray, *, unpainted: Iterable[int | None] = ()
                ) -> np.ndarray:
    """``picture`` with :func:`legend` of ``class_ids`` below it (``unpainted``: classes
    :func:`overlay` leaves as the photo, background and ignore, left out)."""
    skip = {int(c) for c in unpainted if c is not None}
    shown = [c for c in class_ids if int(c) not in skip]
    return np.concatenate([picture, legend(shown, names, colormap, picture.shape[1])], 0)
