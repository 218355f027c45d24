"""TFDS builders that work offline: VOC-layout and CamVid-layout folders, and shapes_evidence.

    import deeplab_ext.data.tfds_builders  # registers the builders
    ds = tfds.load("voc_layout_seg", split="train", data_dir=DATA_DIR,
                   download_and_prepare_kwargs={"download_config":
                       tfds.download.DownloadConfig(manual_dir=".../coco128-voc")})

Nothing is downloaded: the VOC/CamVid builders read `manual_dir`; `shapes_evidence` is
generated. Features: `image` (uint8 HxWx3), `segmentation_mask` (uint8 HxWx1 class
indices, ignore label kept), `tags` (float32 multi-hot over `DatasetInfo.tag_class_ids`),
`file_name`. Configs `small` cap the examples per split for quick tests.
"""

from __future__ import annotations

import inspect
import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from deeplab_ext.data import build_data, synthetic
from deeplab_ext.data.datasets import DatasetInfo, get_dataset_info


class _OfflineBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base: TFDS 4.9.10's default `code_path` imports `importlib_resources`, which is not
    a dependency of this project; the builder's own source file is all it needs."""

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        return tfds.core.Path(inspect.getfile(cls))

    def _info(self) -> tfds.core.DatasetInfo:
        info = get_dataset_info(self.builder_config.dataset)
        return self.dataset_info_from_configs(
            features=_features(info), supervised_keys=("image", "segmentation_mask")
        )


class SegConfig(tfds.core.BuilderConfig):
    """`max_examples` caps each split (None = all); `dataset` names the DatasetInfo."""

    def __init__(self, *, dataset: str, max_examples: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.dataset = dataset
        self.max_examples = max_examples


def _features(info: DatasetInfo) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=(None, None, 3)),
            "segmentation_mask": tfds.features.Image(shape=(None, None, 1), use_colormap=False),
            "tags": tfds.features.Tensor(shape=(info.num_tags,), dtype=np.float32),
            "file_name": tfds.features.Text(),
        }
    )


def _tags(label: np.ndarray, info: DatasetInfo) -> np.ndarray:
    present = set(np.unique(label).tolist())
    return np.array([c in present for c in info.tag_class_ids], np.float32)


def _examples(pairs, info: DatasetInfo, max_examples: int | None):
    for image_path, label_path in pairs[:max_examples]:
        _, _, height, width = build_data.read_image(image_path)
        label, _, _ = build_data.read_label_indices(label_path)
        if label.shape != (height, width):
            raise build_data.BadExampleError(label_path, "label size differs from its image")
        key = pathlib.Path(image_path).stem
        yield (
            key,
            {
                "image": image_path,  # the file's own bytes (JPEG/PNG), not re-encoded
                "segmentation_mask": label.astype(np.uint8)[..., None],
                "tags": _tags(label, info),
                "file_name": os.path.basename(image_path),
            },
        )


def _manual_dir(dl_manager, name: str) -> pathlib.Path:
    path = pathlib.Path(dl_manager.manual_dir)
    if not path.is_dir():
        raise FileNotFoundError(
            f"{name}: manual_dir {path} does not exist; pass "
            "download_config=tfds.download.DownloadConfig(manual_dir=...)"
        )
    return path


class VocLayoutSeg(_OfflineBuilder):
    """Any VOC2012-layout folder (JPEGImages, SegmentationClass, ImageSets/Segmentation)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = "manual_dir = a VOC2012-layout folder (e.g. coco128-voc)."
    BUILDER_CONFIGS = [
        SegConfig(name="default", dataset="pascal_voc_seg", description="all examples"),
        SegConfig(name="small", dataset="pascal_voc_seg", max_examples=8, description="8/split"),
    ]

    def _split_generators(self, dl_manager):
        root = _manual_dir(dl_manager, self.name)
        lists = sorted((root / "ImageSets" / "Segmentation").glob("*.txt"))
        if not lists:
            raise FileNotFoundError(f"{root}/ImageSets/Segmentation has no <split>.txt files")
        info = get_dataset_info(self.builder_config.dataset)
        return {
            lf.stem: _examples(
                build_data.voc_pairs(lf, root / "JPEGImages", root / "SegmentationClass"),
                info,
                self.builder_config.max_examples,
            )
            for lf in lists
        }

    def _generate_examples(self, *args, **kwargs):  # pragma: no cover - unused (see above)
        raise NotImplementedError


class CamvidLayoutSeg(_OfflineBuilder):
    """CamVid in SegNet layout (train.txt / val.txt / test.txt of "image label" pairs)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = "manual_dir = the SegNet CamVid folder with train.txt."
    BUILDER_CONFIGS = [
        SegConfig(name="default", dataset="camvid", description="all examples"),
        SegConfig(name="small", dataset="camvid", max_examples=4, description="4/split"),
    ]

    def _split_generators(self, dl_manager):
        root = _manual_dir(dl_manager, self.name)
        info = get_dataset_info(self.builder_config.dataset)
        splits = [s for s in ("train", "val", "test") if (root / f"{s}.txt").is_file()]
        if not splits:
            raise FileNotFoundError(f"{root} holds no train.txt/val.txt/test.txt")
        return {
            s: _examples(
                build_data.camvid_pairs(root / f"{s}.txt", root),
                info,
                self.builder_config.max_examples,
            )
            for s in splits
        }

    def _generate_examples(self, *args, **kwargs):  # pragma: no cover
        raise NotImplementedError


class ShapesEvidence(_OfflineBuilder):
    """The built-in synthetic dataset (deeplab_ext.data.synthetic), generated, seed 0."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        SegConfig(name="default", dataset="shapes_evidence", description="registry sizes"),
        SegConfig(name="small", dataset="shapes_evidence", max_examples=16, description="16"),
    ]

    def _split_generators(self, dl_manager):
        del dl_manager
        sizes = get_dataset_info(synthetic.NAME).splits_to_sizes
        cap = self.builder_config.max_examples
        return {s: self._generate(s, min(n, cap or n)) for s, n in sizes.items()}

    def _generate(self, split: str, n: int):
        info = get_dataset_info(synthetic.NAME)
        for i in range(n):
            image, label = synthetic.generate_example(synthetic.example_rng(0, split, i), 64)
            yield (
                f"{split}_{i:06d}",
                {
                    "image": image,
                    "segmentation_mask": label[..., None],
                    "tags": _tags(label, info),
                    "file_name": f"{split}_{i:06d}.png",
                },
            )

    def _generate_examples(self, *args, **kwargs):  # pragma: no cover
        raise NotImplementedError
