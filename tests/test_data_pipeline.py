"""Augmentation (original DeepLab semantics) and make_dataset's data contract."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from deeplab_ext.data import build_data, preprocess
from deeplab_ext.data.datasets import get_dataset_info
from deeplab_ext.data.input_pipeline import make_dataset, tags_from_names

MEAN = preprocess.MEAN_PIXEL_INCEPTION


@pytest.fixture(scope="module")
def voc_records(real_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("voc_records")
    voc = real_data / "coco128-voc"
    build_data.build_voc_dataset(
        voc / "JPEGImages",
        voc / "SegmentationClass",
        voc / "ImageSets/Segmentation",
        out,
        dataset="coco128_voc",
        splits=["train", "val"],
    )
    return out


def _toy(h=20, w=30):
    rng = np.random.default_rng(0)
    image = tf.constant(rng.integers(0, 256, (h, w, 3)), tf.uint8)
    label = np.zeros((h, w, 1), np.int32)
    label[3:12, 4:20] = 3
    label[10:18, 15:28] = 7
    label[0, :] = 255
    return image, tf.constant(label)


def test_labels_never_interpolated_under_random_scale():
    image, label = _toy()
    allowed = {0, 3, 7, 255}
    for i in range(25):
        _, lab = preprocess.preprocess_image_and_label(
            image, label, crop_height=25, crop_width=25, ignore_label=255,
            is_training=True, seed=tf.constant([i, 7], tf.int64),
        )  # fmt: skip
        assert set(np.unique(lab.numpy()).tolist()) <= allowed
        assert lab.shape == (25, 25, 1) and lab.dtype == tf.int32


def test_random_scale_takes_the_original_steps():
    got = {
        round(float(preprocess.get_random_scale(0.5, 2.0, 0.25, tf.constant([i, 0]))), 4)
        for i in range(200)
    }
    assert got == {0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0}
    assert float(preprocess.get_random_scale(1.0, 1.0, 0.25, tf.constant([0, 0]))) == 1.0


def test_padding_uses_ignore_label_and_mean_pixel():
    image, label = _toy(20, 30)
    for seed in range(4):  # scale fixed to 1, so the padded region is 41*41 - 20*30 pixels
        img, lab = preprocess.preprocess_image_and_label(
            image, label, crop_height=41, crop_width=41, ignore_label=255, is_training=True,
            min_scale_factor=1.0, max_scale_factor=1.0, seed=tf.constant([seed, 1]),
        )  # fmt: skip
        img, lab = img.numpy(), lab.numpy()[..., 0]
        pad = np.ones((41, 41), bool)
        pad[:20, :30] = False
        if not np.array_equal(img[:20, :30], tf.cast(image, tf.float32).numpy()):
            pad = pad[:, ::-1]  # flipped
        np.testing.assert_array_equal(img[:20, 11:] if pad[0, 0] else img[:20, :30],
                                      tf.cast(image, tf.float32).numpy()[:, ::-1]
                                      if pad[0, 0] else tf.cast(image, tf.float32).numpy())  # fmt: skip
        assert (lab[pad] == 255).all()
        np.testing.assert_allclose(img[pad], np.broadcast_to(MEAN, img[pad].shape))


def test_eval_pads_without_randomness():
    image, label = _toy(20, 30)
    outs = [
        preprocess.preprocess_image_and_label(
            image, label, crop_height=33, crop_width=33, ignore_label=255, is_training=False
        )
        for _ in range(2)
    ]
    (i1, l1), (i2, l2) = outs
    np.testing.assert_array_equal(i1.numpy(), i2.numpy())
    np.testing.assert_array_equal(l1.numpy(), l2.numpy())
    np.testing.assert_array_equal(l1.numpy()[:20, :30], label.numpy())  # top-left, unscaled
    assert (l1.numpy()[20:] == 255).all() and (l1.numpy()[:, 30:] == 255).all()
    np.testing.assert_allclose(i1.numpy()[20:, :, 1], MEAN[1])


def test_resize_to_range_matches_original_rule():
    image, label = _toy(20, 30)
    img, lab = preprocess.resize_to_range(image, label, min_size=40, max_size=50)
    assert img.shape[:2] == (33, 50)  # 40/20 would make the long side 60 > 50
    assert set(np.unique(lab.numpy()).tolist()) <= {0, 3, 7, 255}
    img, _ = preprocess.resize_to_range(image, label, min_size=40, max_size=100, factor=8)
    assert img.shape[:2] == (41, 65)  # (40, 60) rounded up to 8k+1


def test_make_dataset_contract_and_crop_size(voc_records):
    info = get_dataset_info("coco128_voc")
    ds = make_dataset("coco128_voc", voc_records, "train", crop_size=(97, 129), batch_size=4,
                      seed=1, shuffle_buffer=16)  # fmt: skip
    images, targets = next(iter(ds))
    assert images.shape == (4, 97, 129, 3) and images.dtype == tf.float32
    assert targets["semantic"].shape == (4, 97, 129) and targets["semantic"].dtype == tf.int32
    assert targets["tags"].shape == (4, info.num_tags) and targets["tags"].dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 255.0
    assert set(np.unique(targets["semantic"].numpy()).tolist()) <= set(range(21)) | {255}


def test_training_stream_reproducible_with_seed(voc_records):
    def first(seed):
        ds = make_dataset("coco128_voc", voc_records, "train", crop_size=(65, 65),
                          batch_size=2, seed=seed, shuffle_buffer=8)  # fmt: skip
        x, y = next(iter(ds))
        return x.numpy(), y["semantic"].numpy()

    a, b, c = first(5), first(5), first(6)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_eval_deterministic_and_tags_are_image_level(voc_records, real_data):
    """Eval: same output every pass; tags come from the full mask, not the 17x17 crop."""
    info = get_dataset_info("coco128_voc")
    ds = make_dataset("coco128_voc", voc_records, "val", crop_size=(17, 17), batch_size=8,
                      is_training=False)  # fmt: skip
    p1 = [(x.numpy(), y["tags"].numpy()) for x, y in ds]
    p2 = [(x.numpy(), y["tags"].numpy()) for x, y in ds]
    assert sum(len(t) for _, t in p1) == 32  # no remainder dropped in eval
    for (x1, t1), (x2, t2) in zip(p1, p2, strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(t1, t2)
    tags = np.concatenate([t for _, t in p1])
    voc = real_data / "coco128-voc"
    names = (voc / "ImageSets/Segmentation/val.txt").read_text().split()
    for name, row in zip(names, tags, strict=True):
        mask = np.array(Image.open(voc / "SegmentationClass" / f"{name}.png"))
        want = set(np.unique(mask).tolist()) - {0, 255}
        assert {info.tag_class_ids[i] for i in np.flatnonzero(row)} == want


def test_missing_shards_error_names_dir_pattern_and_tool(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        make_dataset("pascal_voc_seg", tmp_path, "train_aug")
    msg = str(err.value)
    assert str(tmp_path) in msg and "train_aug-*-of-*.tfrecord" in msg
    assert "tools.build_voc2012_data" in msg


def test_full_image_eval_needs_batch_one(voc_records):
    with pytest.raises(ValueError, match="batch_size=1"):
        make_dataset("coco128_voc", voc_records, "val", crop_size=None, batch_size=2,
                     is_training=False)  # fmt: skip
    ds = make_dataset("coco128_voc", voc_records, "val", crop_size=None, batch_size=1,
                      is_training=False)  # fmt: skip
    x, y = next(iter(ds))
    assert x.shape[1:3] == y["semantic"].shape[1:3] and x.shape[1] > 17


def test_tags_from_names():
    info = get_dataset_info("pascal_voc_seg")
    tags = tags_from_names(["person", "Dog"], info)
    assert tags.shape == (20,) and tags.sum() == 2
    assert tags[info.tag_class_ids.index(15)] == 1 and tags[info.tag_class_ids.index(12)] == 1
    with pytest.raises(ValueError, match="unicorn") as err:
        tags_from_names(["unicorn"], "pascal_voc_seg")
    assert "aeroplane" in str(err.value)
    with pytest.raises(ValueError, match="background"):
        tags_from_names(["background"], info)


def test_fused_scale_crop_equals_scale_then_pad_then_crop():
    """The fast path resamples only the crop window but must match the original's order."""
    rng = np.random.default_rng(0)
    image = tf.constant(rng.integers(0, 256, (37, 53, 3)), tf.uint8)
    label = tf.constant(rng.integers(0, 5, (37, 53, 1)), tf.int32)
    for scale in (0.5, 0.75, 1.0, 1.5, 2.0):
        for i in range(3):
            kw = dict(crop_height=41, crop_width=41, ignore_label=255, is_training=True,
                      min_scale_factor=scale, max_scale_factor=scale,
                      seed=tf.constant([i, 3]))  # fmt: skip
            fi, fl = preprocess.preprocess_image_and_label(image, label, fused=True, **kw)
            si, sl = preprocess.preprocess_image_and_label(image, label, fused=False, **kw)
            np.testing.assert_allclose(fi.numpy(), si.numpy(), atol=0.01)
            np.testing.assert_array_equal(fl.numpy(), sl.numpy())
