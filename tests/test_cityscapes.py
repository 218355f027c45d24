"""tools.build_cityscapes_data (issue 31): the original's converter (names, shards, split
names) plus instance ids and disparity, on a small Cityscapes-layout folder made here."""

from __future__ import annotations

import pathlib

import cv2
import numpy as np
import pytest

from deeplab_ext.data import build_data, input_pipeline, tfrecord
from deeplab_ext.data.datasets import get_dataset_info
from tests.conftest import run_tool

INFO = get_dataset_info("cityscapes")
FRAMES = {"train": [("aachen", "aachen_000000_000019"), ("bochum", "bochum_000000_000313")],
          "val": [("frankfurt", "frankfurt_000000_000294")]}


def _write_layout(root: pathlib.Path) -> dict[str, dict]:
    """Images, trainIds, instanceIds (16-bit) and disparity (16-bit) per frame."""
    rng = np.random.default_rng(0)
    truth = {}
    for split, frames in FRAMES.items():
        for city, stem in frames:
            h, w = 16, 32
            image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            train_ids = rng.choice([0, 1, 11, 13, 255], (h, w)).astype(np.uint8)
            instance = np.where(train_ids == 13, 26000 + (np.arange(w) >= 16), 7)
            disparity = rng.integers(0, 30000, (h, w)).astype(np.uint16)
            files = {("leftImg8bit", "_leftImg8bit.png"): image[..., ::-1],
                     ("gtFine", "_gtFine_labelTrainIds.png"): train_ids,
                     ("gtFine", "_gtFine_instanceIds.png"): instance.astype(np.uint16),
                     ("disparity", "_disparity.png"): disparity}
            for (folder, suffix), array in files.items():
                path = root / folder / split / city / f"{stem}{suffix}"
                path.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(path), array)
            truth[stem] = {"image": image, "label": train_ids, "instance": instance,
                           "disparity": disparity}
    return truth


def test_converted_maps_read_back_exactly(tmp_path):
    truth = _write_layout(tmp_path / "cityscapes")
    reports = build_data.build_cityscapes_dataset(tmp_path / "cityscapes", tmp_path / "tf",
                                                  maps=("instance", "disparity"), num_shards=2)
    assert {r.split: r.num_written for r in reports.values()} == {"train_fine": 2,
                                                                 "val_fine": 1}
    examples = tfrecord.read_examples(sorted((tmp_path / "tf").glob("train_fine-*")))
    assert [e["image/filename"].decode() for e in examples] == [s for _, s in FRAMES["train"]]
    ds = input_pipeline.make_dataset(INFO, tmp_path / "tf", "train_fine", crop_size=None,
                                     batch_size=1, is_training=False,
                                     targets=("semantic", "instance_ids", "depth"))
    for (_, stem), (image, t) in zip(FRAMES["train"], ds, strict=True):
        want = truth[stem]
        np.testing.assert_array_equal(image[0].numpy(), want["image"])
        np.testing.assert_array_equal(t["semantic"][0], want["label"])
        np.testing.assert_array_equal(t["instance_ids"][0],
                                      np.where(want["instance"] >= 1000, want["instance"], 0))
        raw = want["disparity"].astype(np.float64)
        np.testing.assert_allclose(t["depth"][0, ..., 0], np.where(raw > 0, (raw - 1) / 256, 0),
                                   rtol=1e-6)
        np.testing.assert_array_equal(t["depth"][0, ..., 1], raw > 0)


def test_missing_files_are_named(tmp_path):
    _write_layout(tmp_path / "cityscapes")
    gone = next((tmp_path / "cityscapes" / "disparity" / "val").rglob("*.png"))
    gone.unlink()
    with pytest.raises(build_data.BadExampleError, match=f"{gone.name}.*does not exist"):
        build_data.build_cityscapes_dataset(tmp_path / "cityscapes", tmp_path / "tf",
                                            maps=("disparity",))
    assert not list((tmp_path / "tf").glob("val_fine-*"))
    with pytest.raises(FileNotFoundError, match="leftImg8bit"):
        build_data.build_cityscapes_dataset(tmp_path / "nothing", tmp_path / "tf")


def test_cli_writes_the_original_shard_names(tmp_path):
    _write_layout(tmp_path / "cityscapes")
    proc = run_tool("build_cityscapes_data", f"--cityscapes_root={tmp_path / 'cityscapes'}",
                    f"--output_dir={tmp_path / 'tf'}", "--instances", "--disparity")
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = sorted(p.name for p in (tmp_path / "tf").glob("*.tfrecord"))
    assert names[0] == "train_fine-00000-of-00010.tfrecord" and len(names) == 20
    example = tfrecord.read_examples([tmp_path / "tf" / "val_fine-00000-of-00010.tfrecord"])[0]
    assert example[tfrecord.MAP_KEYS["instance"]] and example[tfrecord.MAP_KEYS["disparity"]]
    assert "split 'val_fine': wrote 1 examples" in proc.stdout


def test_voc_segmentation_object_is_read_when_present(tmp_path):
    """VOC layout with SegmentationObject/: instance ids class * 1000 + object on object
    pixels, the class id elsewhere (void 255 kept); without the folder, no map."""
    from PIL import Image

    root = tmp_path / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "SegmentationObject", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True)
    classes = np.zeros((12, 16), np.uint8)
    classes[2:6, 2:6], classes[6:10, 8:14], classes[0, :] = 15, 7, 255
    objects = np.zeros_like(classes)
    objects[2:6, 2:6], objects[6:10, 8:14], objects[0, :] = 1, 2, 255
    cv2.imwrite(str(root / "JPEGImages" / "a.jpg"), np.full((12, 16, 3), 90, np.uint8))
    for folder, array in (("SegmentationClass", classes), ("SegmentationObject", objects)):
        im = Image.fromarray(array, mode="P")
        im.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
        im.save(root / folder / "a.png")
    (root / "ImageSets/Segmentation/train.txt").write_text("a\n")
    build_data.build_voc_dataset(root / "JPEGImages", root / "SegmentationClass",
                                 root / "ImageSets/Segmentation", tmp_path / "tf")
    ex = tfrecord.read_examples([next((tmp_path / "tf").glob("train-*"))])[0]
    ids = cv2.imdecode(np.frombuffer(ex[tfrecord.MAP_KEYS["instance"]], np.uint8),
                       cv2.IMREAD_UNCHANGED)
    want = np.where((objects >= 1) & (objects < 255), classes.astype(np.int64) * 1000 + objects,
                    classes)
    np.testing.assert_array_equal(ids, want)
    assert ids.dtype == np.uint16 and set(np.unique(ids)) == {0, 255, 15001, 7002}
    build_data.build_voc_dataset(root / "JPEGImages", root / "SegmentationClass",
                                 root / "ImageSets/Segmentation", tmp_path / "tf2",
                                 instance_folder=None)
    ex = tfrecord.read_examples([next((tmp_path / "tf2").glob("train-*"))])[0]
    assert ex[tfrecord.MAP_KEYS["instance"]] == b""
