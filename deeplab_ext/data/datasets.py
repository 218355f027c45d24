"""Dataset descriptors, like the original's `_DATASETS_INFORMATION` (data_generator.py).

A `DatasetInfo` says how many classes a dataset has, which label is ignored, which class
is background, and the split sizes. Image-level tags (the multi-task "evidence" target)
cover every class except background and the ignore label: `tag_class_ids`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from deeplab_ext.data import colormap as cmap
from tf_mtl.registry import Registry


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static facts about one segmentation dataset."""

    name: str
    num_classes: int
    ignore_label: int
    class_names: tuple[str, ...]
    splits_to_sizes: Mapping[str, int]
    background_class: int | None = 0
    colormap: str = cmap.PASCAL
    # Classes whose connected regions count as objects for the image-level class and box
    # targets (the largest object's class and box); None = every tagged class.
    object_classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"dataset {self.name!r}: {len(self.class_names)} class_names for "
                f"num_classes={self.num_classes}"
            )
        if not 0 <= self.ignore_label <= 255:
            raise ValueError(f"dataset {self.name!r}: ignore_label must be in 0..255")
        if self.background_class is not None and not 0 <= self.background_class < self.num_classes:
            raise ValueError(f"dataset {self.name!r}: background_class out of range")
        object.__setattr__(self, "class_names", tuple(self.class_names))
        if self.object_classes is not None:
            unknown = sorted(set(self.object_classes) - set(self.class_names))
            if unknown:
                raise ValueError(f"dataset {self.name!r}: object_classes {unknown} are not "
                                 f"among its class_names {list(self.class_names)}")
            object.__setattr__(self, "object_classes", tuple(self.object_classes))
        object.__setattr__(self, "splits_to_sizes", dict(self.splits_to_sizes))

    @property
    def tag_class_ids(self) -> tuple[int, ...]:
        """Class ids that get an image-level tag: all but background and the ignore label."""
        skip = {self.background_class, self.ignore_label}
        return tuple(c for c in range(self.num_classes) if c not in skip)

    @property
    def keep_classes(self) -> tuple[int, ...]:
        """Classes pruning to the tags never removes: the background, when there is one."""
        return () if self.background_class is None else (int(self.background_class),)

    @property
    def object_class_ids(self) -> tuple[int, ...]:
        """Class ids of the objects the class / box targets pick the largest of."""
        if self.object_classes is None:
            return self.tag_class_ids
        return tuple(self.class_names.index(c) for c in self.object_classes)

    @property
    def num_tags(self) -> int:
        return len(self.tag_class_ids)

    @property
    def tag_names(self) -> tuple[str, ...]:
        return tuple(self.class_names[c] for c in self.tag_class_ids)


VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
    "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip

# objectInfo150 order; index 0 is "other" (the ignore label of the original).
ADE20K_CLASSES = (
    "other", "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed",
    "windowpane", "grass", "cabinet", "sidewalk", "person", "earth", "door", "table",
    "mountain", "plant", "curtain", "chair", "car", "water", "painting", "sofa", "shelf",
    "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk", "rock",
    "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column",
    "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace",
    "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table",
    "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind",
    "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine",
    "hovel", "bus", "towel", "light", "truck", "tower", "chandelier", "awning",
    "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel",
    "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike",
    "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave", "pot",
    "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen",
    "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip

CAMVID_CLASSES = (
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
    "Pedestrian", "Bicyclist",
)  # fmt: skip

# The built-in synthetic dataset (deeplab_ext.data.synthetic): 4 look-alike pairs.
SHAPES_EVIDENCE_CLASSES = (
    "background", "disk_h", "disk_v", "square_h", "square_v", "triangle_h", "triangle_v",
    "cross_h", "cross_v",
)  # fmt: skip

DATASETS: Registry[DatasetInfo] = Registry("dataset", "--dataset")


def register_dataset(info: DatasetInfo, *, overwrite: bool = False) -> DatasetInfo:
    """Add a dataset descriptor to `DATASETS` (refuses to replace one unless `overwrite`)."""
    if info.name in DATASETS and DATASETS[info.name] == info:
        return info  # the same descriptor again (a module imported twice)
    if info.name in DATASETS and not overwrite:
        raise ValueError(f"dataset {info.name!r} is already registered (pass overwrite=True)")
    return DATASETS.register(info.name, info, override=overwrite)


def register_custom_dataset(
    name: str,
    class_names: Sequence[str],
    ignore_label: int = 255,
    *,
    background_class: int | None = 0,
    splits_to_sizes: Mapping[str, int] | None = None,
    colormap: str = cmap.PASCAL,
    object_classes: Sequence[str] | None = None,
    overwrite: bool = False,
) -> DatasetInfo:
    """Register a user's own dataset at run time (the original needed a code edit for this)."""
    info = DatasetInfo(
        name=name,
        num_classes=len(class_names),
        ignore_label=ignore_label,
        class_names=tuple(class_names),
        splits_to_sizes=dict(splits_to_sizes or {}),
        background_class=background_class,
        colormap=colormap,
        object_classes=None if object_classes is None else tuple(object_classes),
    )
    return register_dataset(info, overwrite=overwrite)


def get_dataset_info(name: str | DatasetInfo) -> DatasetInfo:
    """Look a dataset up by name; unknown names raise a ValueError naming --dataset."""
    if isinstance(name, DatasetInfo):
        return name
    if name not in DATASETS:
        raise ValueError(
            f"unknown dataset {name!r} (--dataset); valid names: {sorted(DATASETS)}. "
            "Register your own with deeplab_ext.data.datasets.register_custom_dataset(...)."
        )
    return DATASETS[name]


register_dataset(DatasetInfo(
    name="pascal_voc_seg", num_classes=21, ignore_label=255, class_names=VOC_CLASSES,
    splits_to_sizes={"train": 1464, "train_aug": 10582, "trainval": 2913, "val": 1449},
    background_class=0, colormap=cmap.PASCAL,
))  # fmt: skip
register_dataset(DatasetInfo(
    name="cityscapes", num_classes=19, ignore_label=255, class_names=CITYSCAPES_CLASSES,
    splits_to_sizes={"train_fine": 2975, "val_fine": 500, "test_fine": 1525},
    background_class=None, colormap=cmap.CITYSCAPES,
))  # fmt: skip
register_dataset(DatasetInfo(
    name="ade20k", num_classes=151, ignore_label=0, class_names=ADE20K_CLASSES,
    splits_to_sizes={"train": 20210, "val": 2000},
    background_class=0, colormap=cmap.ADE20K,
))  # fmt: skip
register_dataset(DatasetInfo(
    name="camvid", num_classes=11, ignore_label=11, class_names=CAMVID_CLASSES,
    splits_to_sizes={"train": 367, "val": 101},
    background_class=None, colormap=cmap.CAMVID,
    # Road scenes: the movable things are the objects (mostly the largest car).
    object_classes=("Car", "Pedestrian", "Bicyclist"),
))  # fmt: skip
register_dataset(DatasetInfo(
    name="coco128_voc", num_classes=21, ignore_label=255, class_names=VOC_CLASSES,
    splits_to_sizes={"train": 65, "val": 32, "trainval": 97},
    background_class=0, colormap=cmap.PASCAL,
))  # fmt: skip
register_dataset(DatasetInfo(
    name="shapes_evidence", num_classes=9, ignore_label=255, class_names=SHAPES_EVIDENCE_CLASSES,
    splits_to_sizes={"train": 2000, "val": 200},
    background_class=0, colormap=cmap.PASCAL,
))  # fmt: skip
# The built-in scene variant (deeplab_ext.data.synthetic.generate_scene_example): one class
# per shape, with instance ids and disparity, for the semantic + instance + depth system.
register_dataset(DatasetInfo(
    name="shapes_scene", num_classes=5, ignore_label=255,
    class_names=("background", "disk", "square", "triangle", "cross"),
    splits_to_sizes={"train": 2000, "val": 300}, background_class=0, colormap=cmap.PASCAL,
))  # fmt: skip


def info_to_dict(info: DatasetInfo) -> dict:
    """What a checkpoint or an export records of its dataset, so it can be decoded later."""
    return {"name": info.name, "num_classes": info.num_classes,
            "ignore_label": info.ignore_label, "class_names": list(info.class_names),
            "background_class": info.background_class, "colormap": info.colormap,
            "tag_class_ids": list(info.tag_class_ids), "tag_names": list(info.tag_names),
            "object_classes": None if info.object_classes is None else list(info.object_classes)}


def info_from_dict(d: dict | str) -> DatasetInfo:
    """The DatasetInfo recorded by `info_to_dict` (a bare name for older records).

    A dataset registered at run time when the model was trained (one unknown here) is
    registered again from the record, so its checkpoints and exports stay usable.
    """
    if isinstance(d, str):
        return get_dataset_info(d)
    if d["name"] in DATASETS:
        return DATASETS[d["name"]]
    return register_custom_dataset(
        d["name"], class_names=d["class_names"], ignore_label=d["ignore_label"],
        background_class=d["background_class"], colormap=d["colormap"],
        object_classes=d.get("object_classes"))
