"""Label colormaps of the original DeepLab (`utils/get_dataset_colormap.py`) plus CamVid.

Kept as plain numpy so visualisation tools and tests can use them without TensorFlow.
"""

from __future__ import annotations

import numpy as np

PASCAL = "pascal"
CITYSCAPES = "cityscapes"
ADE20K = "ade20k"
CAMVID = "camvid"

# Max number of entries in each colormap (as in the original; CamVid: 11 classes + void).
MAX_ENTRIES = {PASCAL: 512, CITYSCAPES: 256, ADE20K: 151, CAMVID: 256}

# Cityscapes trainId (0..18) -> official labelId, for writing results in the benchmark format.
CITYSCAPES_TRAIN_ID_TO_EVAL_ID = (
    7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33,
)  # fmt: skip

_ADE20K_COLORS = (
    (0, 0, 0), (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50),
    (4, 200, 3), (120, 120, 80), (140, 140, 140), (204, 5, 255), (230, 230, 230),
    (4, 250, 7), (224, 5, 255), (235, 255, 7), (150, 5, 61), (120, 120, 70),
    (8, 255, 51), (255, 6, 82), (143, 255, 140), (204, 255, 4), (255, 51, 7),
    (204, 70, 3), (0, 102, 200), (61, 230, 250), (255, 6, 51), (11, 102, 255),
    (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220), (255, 9, 92),
    (112, 9, 255), (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71),
    (255, 41, 10), (7, 255, 255), (224, 255, 8), (102, 8, 255), (255, 61, 6),
    (255, 194, 7), (255, 122, 8), (0, 255, 20), (255, 8, 41), (255, 5, 153),
    (6, 51, 255), (235, 12, 255), (160, 150, 20), (0, 163, 255), (140, 140, 140),
    (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0),
    (153, 255, 0), (0, 0, 255), (255, 71, 0), (0, 235, 255), (0, 173, 255),
    (31, 0, 255), (11, 200, 200), (255, 82, 0), (0, 255, 245), (0, 61, 255),
    (0, 255, 112), (0, 255, 133), (255, 0, 0), (255, 163, 0), (255, 102, 0),
    (194, 255, 0), (0, 143, 255), (51, 255, 0), (0, 82, 255), (0, 255, 41),
    (0, 255, 173), (10, 0, 255), (173, 255, 0), (0, 255, 153), (255, 92, 0),
    (255, 0, 255), (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20),
    (255, 184, 184), (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204),
    (0, 255, 194), (0, 255, 82), (0, 10, 255), (0, 112, 255), (51, 0, 255),
    (0, 194, 255), (0, 122, 255), (0, 255, 163), (255, 153, 0), (0, 255, 10),
    (255, 112, 0), (143, 255, 0), (82, 0, 255), (163, 255, 0), (255, 235, 0),
    (8, 184, 170), (133, 0, 255), (0, 255, 92), (184, 0, 255), (255, 0, 31),
    (0, 184, 255), (0, 214, 255), (255, 0, 112), (92, 255, 0), (0, 224, 255),
    (112, 224, 255), (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0),
    (255, 0, 163), (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0),
    (255, 0, 235), (245, 0, 255), (255, 0, 122), (255, 245, 0), (10, 190, 212),
    (214, 255, 0), (0, 204, 255), (20, 0, 255), (255, 255, 0), (0, 153, 255),
    (0, 41, 255), (0, 255, 204), (41, 0, 255), (41, 255, 0), (173, 0, 255),
    (0, 245, 255), (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255),
    (184, 255, 0), (0, 133, 255), (255, 214, 0), (25, 194, 194), (102, 255, 0),
    (92, 0, 255),
)  # fmt: skip

_CITYSCAPES_COLORS = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
    (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip

# SegNet's CamVid colours: Sky, Building, Pole, Road, Pavement, Tree, SignSymbol, Fence,
# Car, Pedestrian, Bicyclist, Unlabelled (11, the ignore label).
_CAMVID_COLORS = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
    (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0),
    (0, 128, 192), (0, 0, 0),
)  # fmt: skip


def _bit_get(val: np.ndarray, idx: int) -> np.ndarray:
    return (val >> idx) & 1


def create_pascal_label_colormap() -> np.ndarray:
    """PASCAL VOC colormap: the bit-shuffle of the class index (512 entries, 255 = cream)."""
    colormap = np.zeros((MAX_ENTRIES[PASCAL], 3), dtype=np.int64)
    ind = np.arange(MAX_ENTRIES[PASCAL], dtype=np.int64)
    for shift in reversed(range(8)):
        for channel in range(3):
            colormap[:, channel] |= _bit_get(ind, channel) << shift
        ind >>= 3
    return colormap.astype(np.uint8)


def create_cityscapes_label_colormap() -> np.ndarray:
    """Cityscapes trainId colormap (19 classes, the rest black, 256 entries)."""
    colormap = np.zeros((MAX_ENTRIES[CITYSCAPES], 3), dtype=np.uint8)
    colormap[: len(_CITYSCAPES_COLORS)] = _CITYSCAPES_COLORS
    return colormap


def create_ade20k_label_colormap() -> np.ndarray:
    """The original's 151-entry ADE20K table (entry 0 = 'other'/ignore, black)."""
    return np.asarray(_ADE20K_COLORS, dtype=np.uint8)


def create_camvid_label_colormap() -> np.ndarray:
    """SegNet CamVid colours; 256 entries so any uint8 label can be coloured."""
    colormap = np.zeros((MAX_ENTRIES[CAMVID], 3), dtype=np.uint8)
    colormap[: len(_CAMVID_COLORS)] = _CAMVID_COLORS
    return colormap


_CREATORS = {
    PASCAL: create_pascal_label_colormap,
    CITYSCAPES: create_cityscapes_label_colormap,
    ADE20K: create_ade20k_label_colormap,
    CAMVID: create_camvid_label_colormap,
}


def create_label_colormap(name: str) -> np.ndarray:
    """Colormap `[N, 3]` uint8 by name (pascal, cityscapes, ade20k, camvid)."""
    if name not in _CREATORS:
        raise ValueError(f"unknown colormap {name!r} (--colormap_type); valid: {sorted(_CREATORS)}")
    return _CREATORS[name]()


def label_to_color_image(label: np.ndarray, colormap: str | np.ndarray = PASCAL) -> np.ndarray:
    """Colour a 2-D integer label map with a named colormap or an explicit `[N, 3]` table."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"expected a 2-D label map, got shape {label.shape}")
    table = create_label_colormap(colormap) if isinstance(colormap, str) else np.asarray(colormap)
    if label.size and (label.min() < 0 or label.max() >= len(table)):
        raise ValueError(
            f"label value {int(label.max())} out of range for a colormap of {len(table)} entries"
        )
    return table[label].astype(np.uint8)


def cityscapes_train_id_to_eval_id(label: np.ndarray) -> np.ndarray:
    """Map Cityscapes trainIds 0..18 to labelIds; other values (e.g. 255) map to 0."""
    lut = np.zeros(256, dtype=np.uint8)
    lut[: len(CITYSCAPES_TRAIN_ID_TO_EVAL_ID)] = CITYSCAPES_TRAIN_ID_TO_EVAL_ID
    return lut[np.asarray(label, dtype=np.int64)]
