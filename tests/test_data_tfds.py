"""Offline TFDS builders: VOC layout, CamVid layout (manual_dir) and the built-in dataset."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import deeplab_ext.data.tfds_builders  # noqa: F401  (registers the builders)
from deeplab_ext.data import synthetic
from deeplab_ext.data.datasets import get_dataset_info


def _load(name, split, data_dir, manual_dir=None):
    kwargs = {}
    if manual_dir is not None:
        kwargs["download_and_prepare_kwargs"] = {
            "download_config": tfds.download.DownloadConfig(manual_dir=str(manual_dir))
        }
    return tfds.load(name, split=split, data_dir=str(data_dir), **kwargs)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


def _check_tags(tags, mask, info):
    present = set(np.unique(mask).tolist()) - {info.ignore_label, info.background_class}
    assert {info.tag_class_ids[i] for i in np.flatnonzero(tags)} == present


def test_voc_layout_builder(data_dir, real_data):
    voc = real_data / "coco128-voc"
    info = get_dataset_info("pascal_voc_seg")
    ds = _load("voc_layout_seg/small", "val", data_dir, voc)
    examples = list(ds.as_numpy_iterator())
    assert len(examples) == 8
    for ex in examples:
        name = ex["file_name"].decode().removesuffix(".jpg")
        source = np.array(Image.open(voc / "SegmentationClass" / f"{name}.png"))
        np.testing.assert_array_equal(ex["segmentation_mask"][..., 0], source)
        assert ex["image"].shape == (*source.shape, 3)
        assert ex["tags"].shape == (20,)
        _check_tags(ex["tags"], source, info)


def test_camvid_layout_builder(data_dir, real_data):
    camvid = real_data / "camvid-sample"
    info = get_dataset_info("camvid")
    ds = _load("camvid_layout_seg/small", "train", data_dir, camvid)
    examples = list(ds.as_numpy_iterator())
    assert len(examples) == 4
    for ex in examples:
        name = ex["file_name"].decode()
        source = np.array(Image.open(camvid / "trainannot" / name))
        np.testing.assert_array_equal(ex["segmentation_mask"][..., 0], source)
        np.testing.assert_array_equal(ex["image"], np.array(Image.open(camvid / "train" / name)))
        _check_tags(ex["tags"], source, info)


def test_shapes_evidence_builder(data_dir):
    info = get_dataset_info("shapes_evidence")
    builder = tfds.builder("shapes_evidence/small", data_dir=str(data_dir))
    builder.download_and_prepare()
    assert builder.info.splits["train"].num_examples == 16
    ex = next(
        e
        for e in builder.as_dataset(split="val").as_numpy_iterator()
        if e["file_name"] == b"val_000003.png"
    )
    image, label = synthetic.generate_example(synthetic.example_rng(0, "val", 3), 64)
    np.testing.assert_array_equal(ex["image"], image)
    np.testing.assert_array_equal(ex["segmentation_mask"][..., 0], label)
    _check_tags(ex["tags"], label, info)


def test_missing_manual_dir_is_a_clear_error(tmp_path):
    with pytest.raises(Exception, match="manual_dir"):
        _load("voc_layout_seg/small", "train", tmp_path / "d", tmp_path / "nope")
