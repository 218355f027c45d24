"""Dataset descriptors and colormaps."""

from __future__ import annotations

import numpy as np
import pytest

from deeplab_ext.data import colormap, datasets


def test_registry_descriptors():
    voc = datasets.get_dataset_info("pascal_voc_seg")
    assert (voc.num_classes, voc.ignore_label, voc.background_class) == (21, 255, 0)
    assert voc.tag_class_ids == tuple(range(1, 21)) and voc.splits_to_sizes["train_aug"] == 10582
    city = datasets.get_dataset_info("cityscapes")
    assert (city.num_classes, city.ignore_label, city.background_class) == (19, 255, None)
    assert city.tag_class_ids == tuple(range(19))
    ade = datasets.get_dataset_info("ade20k")
    assert (ade.num_classes, ade.ignore_label) == (151, 0)
    assert ade.tag_class_ids == tuple(range(1, 151))
    cam = datasets.get_dataset_info("camvid")
    assert cam.num_classes == 11 and cam.ignore_label == 11 and cam.background_class is None
    assert cam.class_names[0] == "Sky" and cam.class_names[-1] == "Bicyclist"
    assert cam.tag_class_ids == tuple(range(11))
    coco = datasets.get_dataset_info("coco128_voc")
    assert coco.class_names == voc.class_names
    assert coco.splits_to_sizes["train"] == 65 and coco.splits_to_sizes["val"] == 32
    shapes = datasets.get_dataset_info("shapes_evidence")
    assert shapes.num_tags == 8 and shapes.tag_names[0] == "disk_h"


def test_unknown_dataset_names_flag_and_valid_names():
    with pytest.raises(ValueError, match="--dataset") as err:
        datasets.get_dataset_info("pascal")
    assert "pascal_voc_seg" in str(err.value) and "camvid" in str(err.value)


def test_register_custom_dataset():
    info = datasets.register_custom_dataset(
        "my_roads_test", ["bg", "lane", "car"], ignore_label=9, overwrite=True
    )
    assert datasets.get_dataset_info("my_roads_test") is info
    assert info.tag_class_ids == (1, 2) and info.num_classes == 3
    with pytest.raises(ValueError, match="already registered"):
        datasets.register_custom_dataset("my_roads_test", ["a", "b"])
    with pytest.raises(ValueError, match="class_names"):
        datasets.DatasetInfo("x", 3, 255, ("a",), {})


def test_pascal_colormap_bit_shuffle():
    cm = colormap.create_pascal_label_colormap()
    assert cm.shape == (512, 3)
    np.testing.assert_array_equal(cm[[0, 1, 2, 3, 15, 20]], [
        [0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [192, 128, 128], [0, 64, 128],
    ])  # fmt: skip
    np.testing.assert_array_equal(cm[255], [224, 224, 192])  # the VOC void colour


def test_other_colormaps():
    ade = colormap.create_ade20k_label_colormap()
    assert ade.shape == (151, 3)
    np.testing.assert_array_equal(ade[[0, 1, 150]], [[0, 0, 0], [120, 120, 120], [92, 0, 255]])
    city = colormap.create_cityscapes_label_colormap()
    np.testing.assert_array_equal(city[[0, 18, 19]], [[128, 64, 128], [119, 11, 32], [0, 0, 0]])
    cam = colormap.create_camvid_label_colormap()
    np.testing.assert_array_equal(cam[[0, 3, 11]], [[128, 128, 128], [128, 64, 128], [0, 0, 0]])


def test_label_to_color_image_and_errors():
    label = np.array([[0, 1], [15, 255]])
    rgb = colormap.label_to_color_image(label, "pascal")
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[1, 0], [192, 128, 128])
    with pytest.raises(ValueError, match="2-D"):
        colormap.label_to_color_image(np.zeros((1, 2, 2), int))
    with pytest.raises(ValueError, match="out of range"):
        colormap.label_to_color_image(np.array([[151]]), "ade20k")
    with pytest.raises(ValueError, match="valid"):
        colormap.label_to_color_image(label, "nope")


def test_cityscapes_train_id_to_eval_id():
    ids = colormap.cityscapes_train_id_to_eval_id(np.array([[0, 1, 18, 255]]))
    np.testing.assert_array_equal(ids, [[7, 8, 33, 0]])
    assert colormap.CITYSCAPES_TRAIN_ID_TO_EVAL_ID[10] == 23


def test_dataset_record_round_trip_reregisters_custom_dataset():
    """Checkpoints/exports record their dataset, so a run-time dataset stays decodable."""
    info = datasets.register_custom_dataset(
        "my_fields_record", ["soil", "crop", "weed"], ignore_label=255, background_class=0,
        overwrite=True)
    record = datasets.info_to_dict(info)
    assert record["tag_names"] == ["crop", "weed"] and record["tag_class_ids"] == [1, 2]
    datasets.DATASETS.unregister("my_fields_record")  # as in a new process
    back = datasets.info_from_dict(record)
    assert back == info and datasets.get_dataset_info("my_fields_record") == info
    assert datasets.info_from_dict("pascal_voc_seg").num_classes == 21  # older records
