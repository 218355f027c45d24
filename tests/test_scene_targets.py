"""Instance and depth targets of the scene network (issue 31): the shards' optional
instance-id and disparity maps, carried through the augmentation, and the targets made
from them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import tensorflow as tf

from deeplab_ext.data import input_pipeline, tfrecord
from deeplab_ext.data.datasets import get_dataset_info
from deeplab_ext.data.scene_targets import centroid_offsets, decode_disparity
from tf_mtl.instances import InstanceQuality, cluster_instances, match_instances

INFO = get_dataset_info("cityscapes")


def _reference_offsets(ids: np.ndarray) -> np.ndarray:
    """(dy, dx, mask) written from the definition: per instance (id >= 1000), the mean row
    and column of its pixels minus the pixel's own."""
    out = np.zeros(ids.shape + (3,), np.float32)
    for k in np.unique(ids[ids >= 1000]):
        ys, xs = np.nonzero(ids == k)
        out[ys, xs, 0] = ys.mean() - ys
        out[ys, xs, 1] = xs.mean() - xs
        out[ys, xs, 2] = 1
    return out


def _scene(h: int = 20, w: int = 28) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Semantic trainIds, instance ids (two cars, a person, stuff with no instance) and
    raw disparity (0 = invalid in the top rows)."""
    ids = np.full((h, w), 7, np.int32)  # road: no instance
    ids[2:9, 3:12] = 26000  # car 0
    ids[10:18, 14:26] = 26001  # car 1
    ids[4:8, 18:21] = 24000  # person
    semantic = np.where(ids >= 1000, np.where(ids // 1000 == 26, 13, 11), 0).astype(np.uint8)
    semantic[0, :] = 255
    raw = (np.arange(h * w).reshape(h, w) * 37 % 60000 + 1).astype(np.uint16)
    raw[:2] = 0
    return semantic, ids, raw


def _png(a: np.ndarray) -> bytes:
    return cv2.imencode(".png", a)[1].tobytes()


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("scene")
    semantic, ids, raw = _scene()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, semantic.shape + (3,), dtype=np.uint8)
    with tfrecord.AtomicShardWriter(out, "train", 1) as writer:
        for i in range(4):
            writer.write(0, tfrecord.image_seg_to_tfexample(
                _png(image), f"scene{i}", *semantic.shape, _png(semantic), image_format="png",
                maps={"instance": _png(ids.astype(np.uint16)), "disparity": _png(raw)}))
        writer.commit()
    return out


def test_centroid_offsets_match_the_definition():
    _, ids, _ = _scene()
    np.testing.assert_allclose(centroid_offsets(tf.constant(ids)).numpy(),
                               _reference_offsets(ids), atol=1e-5)


def test_disparity_decoding_is_cityscapes_rule():
    raw = np.array([0, 1, 2, 257, 65535], np.uint16)
    d, valid = decode_disparity(tf.constant(raw.astype(np.int32)))
    np.testing.assert_array_equal(valid.numpy(), [False, True, True, True, True])
    np.testing.assert_allclose(d.numpy(), [0.0, 0.0, 1 / 256, 1.0, 65534 / 256], rtol=1e-6)


def test_maps_survive_eval_decoding_exactly(scene_dir):
    semantic, ids, raw = _scene()
    ds = input_pipeline.make_dataset(INFO, scene_dir, "train", crop_size=None, batch_size=1,
                                     is_training=False,
                                     targets=("semantic", "instance", "instance_ids", "depth"))
    _, t = next(iter(ds))
    np.testing.assert_array_equal(t["semantic"][0], semantic)
    np.testing.assert_array_equal(t["instance_ids"][0], np.where(ids >= 1000, ids, 0))
    np.testing.assert_allclose(t["instance"][0], _reference_offsets(ids), atol=1e-5)
    depth = t["depth"][0].numpy()
    np.testing.assert_array_equal(depth[..., 1], raw > 0)
    np.testing.assert_allclose(depth[..., 0], np.where(raw > 0, (raw - 1.0) / 256, 0), rtol=1e-6)


def test_crop_and_flip_move_the_targets_with_the_image(scene_dir):
    """Training crops (scale 0.75-1.5, padded past the image) and flips: the offsets are
    those of the crop's visible instances, the padding is no instance and invalid depth,
    and with the scale fixed at 1 and a crop of the whole image a flipped example is the
    unflipped one mirrored with its x offsets negated."""
    ds = input_pipeline.make_dataset(
        INFO, scene_dir, "train", crop_size=(25, 33), batch_size=4, is_training=True, seed=1,
        min_scale_factor=0.75, max_scale_factor=1.5, scale_factor_step_size=0.25,
        targets=("semantic", "instance", "instance_ids", "depth"))
    for _, t in ds.take(2):
        for sem, inst, ids, depth in zip(t["semantic"].numpy(), t["instance"].numpy(),
                                         t["instance_ids"].numpy(), t["depth"].numpy(),
                                         strict=True):
            np.testing.assert_allclose(inst, _reference_offsets(ids), atol=1e-4)
            assert ids.max() >= 1000  # instances are in view
            pad = sem == INFO.ignore_label  # the padding, and row 0 (no instance, invalid)
            assert not ids[pad].any() and not depth[pad, 1].any()
            # Raw disparity values are kept (nearest sampling): on the 1/256 grid.
            d = depth[depth[..., 1] > 0, 0] * 256
            np.testing.assert_allclose(d, np.round(d), atol=1e-3)
    _, ids0, _ = _scene()
    unflipped = _reference_offsets(ids0)
    ds = input_pipeline.make_dataset(
        INFO, scene_dir, "train", crop_size=ids0.shape, batch_size=4, is_training=True,
        seed=3, min_scale_factor=1.0, max_scale_factor=1.0, scale_factor_step_size=0.0,
        targets=("instance", "instance_ids"))
    flips = 0
    for _, t in ds.take(3):
        for inst, ids in zip(t["instance"].numpy(), t["instance_ids"].numpy(), strict=True):
            if np.array_equal(ids, np.where(ids0 >= 1000, ids0, 0)):
                np.testing.assert_allclose(inst, unflipped, atol=1e-4)
            else:
                flips += 1
                want = unflipped[:, ::-1] * np.array([1, -1, 1], np.float32)
                np.testing.assert_allclose(inst, want, atol=1e-4)
    assert flips > 0


def test_clustering_recovers_the_instances_of_a_clean_offset_field():
    ids = np.repeat(np.repeat(_scene()[1], 2, 0), 2, 1)  # instances of 50-200 pixels
    field = _reference_offsets(ids)
    got = cluster_instances(field[..., :2], ids >= 1000, bandwidth=2.0, min_pixels=8)
    assert not got[ids < 1000].any()
    pairs = {(int(a), int(b)) for a, b in zip(ids[ids >= 1000], got[ids >= 1000], strict=True)}
    assert len(pairs) == 3 and len({a for a, _ in pairs}) == len({b for _, b in pairs}) == 3
    # Noise of a pixel on the field keeps the partition.
    noisy = field[..., :2] + np.random.default_rng(0).normal(0, 0.7, field[..., :2].shape)
    got = cluster_instances(noisy, ids >= 1000, bandwidth=2.0, min_pixels=8)
    pairs = {(int(a), int(b)) for a, b in zip(ids[ids >= 1000], got[ids >= 1000], strict=True)}
    assert len(pairs) == 3


def test_default_built_in_images_are_unchanged():
    """The scene variant is an option: the default generator's first examples of every
    split hash as they did before it existed (sha256 of images and labels, taken at
    commit 'tools.build_cityscapes_data' before the variant was added)."""
    import hashlib

    from deeplab_ext.data import synthetic

    h = hashlib.sha256()
    for split in ("train", "val", "test"):
        for i in range(6):
            image, label = synthetic.generate_example(synthetic.example_rng(0, split, i), 64)
            h.update(image.tobytes())
            h.update(label.tobytes())
    assert h.hexdigest() == "4efd09957945c7ec19272d9d578f2d0a87459a5b4f604c92066c80f096294f05"


def test_scene_variant_ties_instances_depth_and_appearance(tmp_path):
    """Instance ids carry their class; every instance has one disparity, and nearer
    instances (drawn later) occlude farther ones and are larger; shards carry the maps."""
    from deeplab_ext.data import synthetic

    sizes = []
    for i in range(30):
        image, label, instance, raw = synthetic.generate_scene_example(
            synthetic.example_rng(0, "train", i), 64)
        d = (raw.astype(np.float64) - 1) / 256
        things = instance >= 1000
        core = things & (label != 255)
        np.testing.assert_array_equal(instance[core] // 1000, label[core])
        order = sorted((int(k) % 1000, float(d[instance == k].mean()),
                        float(d[instance == k].std())) for k in np.unique(instance[things]))
        assert all(std < 1e-2 for _, _, std in order)  # one disparity per instance
        assert [m for _, m, _ in order] == sorted(m for _, m, _ in order)  # later = nearer
        sizes += [(m, np.sum(instance == k)) for k, (_, m, _) in
                  zip(sorted(np.unique(instance[things]), key=lambda v: v % 1000), order,
                      strict=True)]
        assert not things[label == 0].any()
    m, area = map(np.array, zip(*sizes, strict=True))
    assert np.corrcoef(m, np.sqrt(area))[0, 1] > 0.6  # size grows with disparity
    synthetic.write_tfrecords(tmp_path, 3, 2, size=48, scene=True, num_shards=1)
    ds = input_pipeline.make_dataset("shapes_scene", tmp_path, "train", crop_size=(33, 33),
                                     batch_size=3, seed=0, targets=("instance", "depth"))
    _, t = next(iter(ds))
    assert t["instance"][..., 2].numpy().any() and t["depth"][..., 1].numpy().mean() > 0.5


def test_instance_quality_scores_clusters_against_the_true_instances():
    """PQ of a perfect field is 1; merging two instances (the person's offsets pointing at
    car 0's centre) loses the person and lowers car 0's IoU; match counts by hand."""
    ids = np.repeat(np.repeat(_scene()[1], 2, 0), 2, 1)
    target = _reference_offsets(ids)
    m = InstanceQuality(bandwidth=2.0)
    m.update_state(target[None], target[None, ..., :2])
    assert float(m.result()) == pytest.approx(1.0)
    # Merge the person into car 0: its pixels point at car 0's centroid.
    merged = target.copy()
    ys, xs = np.nonzero(ids == 24000)
    cy, cx = np.argwhere(ids == 26000).mean(0)
    merged[ys, xs, 0], merged[ys, xs, 1] = cy - ys, cx - xs
    m = InstanceQuality(bandwidth=2.0)
    m.update_state(target[None], merged[None, ..., :2])
    r = {k: float(v) for k, v in m.results().items()}
    # Two clusters, both matched (car 0 at IoU 252 / 300, car 1 at 1); the person is missed.
    assert r["rq"] == pytest.approx(2 / (2 + 0.5 * 1), abs=1e-6)
    assert r["sq"] == pytest.approx((252 / 300 + 1) / 2, abs=1e-6)
    assert r["pq"] == pytest.approx(r["sq"] * r["rq"], abs=1e-6)
    truth = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [0, 0, 3, 3]])
    pred = np.array([[5, 5, 5, 6], [5, 5, 5, 6], [0, 0, 0, 0]])
    tp, fp, fn, iou = match_instances(truth, pred)
    assert (tp, fp, fn) == (1, 1, 2) and iou == pytest.approx(4 / 6)
