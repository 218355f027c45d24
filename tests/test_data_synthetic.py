"""The built-in `shapes_evidence` dataset: determinism, design properties, reader path."""

from __future__ import annotations

import numpy as np
import pytest

from deeplab_ext.data import synthetic, tfrecord
from deeplab_ext.data.datasets import get_dataset_info
from deeplab_ext.data.input_pipeline import make_dataset


@pytest.fixture(scope="module")
def samples():
    return [
        synthetic.generate_example(synthetic.example_rng(0, "train", i), 64) for i in range(300)
    ]


def test_deterministic_per_seed():
    a = synthetic.generate_example(synthetic.example_rng(3, "train", 7), 64)
    b = synthetic.generate_example(synthetic.example_rng(3, "train", 7), 64)
    c = synthetic.generate_example(synthetic.example_rng(4, "train", 7), 64)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_label_values_pairs_and_ignore_band(samples):
    seen = set()
    for image, label in samples:
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        values = set(np.unique(label).tolist())
        assert values <= set(range(9)) | {255}
        seen |= values
        for a, b in synthetic.PAIRS:  # never both members of a pair in one image
            assert not (a in values and b in values)
        fg = (label > 0) & (label < 255)
        if fg.any():
            assert 255 in values  # void band around objects
    assert seen == set(range(9)) | {255}


def test_pairs_are_look_alikes_that_tags_disambiguate(samples):
    """Within a pair the mean colours differ by far less than between pairs."""
    means = {}
    for image, label in samples:
        for c in range(1, 9):
            if (label == c).sum() > 30:
                means.setdefault(c, []).append(image[label == c].mean(0))
    mean = {c: np.mean(v, 0) for c, v in means.items()}
    within = [np.linalg.norm(mean[a] - mean[b]) for a, b in synthetic.PAIRS]
    between = [np.linalg.norm(mean[1] - mean[c]) for c in (3, 5, 7)]
    assert max(within) < 12 < min(between), (within, between)


def test_pixels_learnable_well_above_chance(samples):
    """A nearest-colour-centroid rule on 5x5-smoothed pixels finds the shape pair."""
    import cv2

    train, test = samples[:200], samples[200:]

    def feats(img):
        return cv2.blur(img.astype(np.float32), (5, 5)).reshape(-1, 3)

    def pair_of(lab):
        return np.where((lab > 0) & (lab < 255), (lab + 1) // 2, lab).reshape(-1)

    x = np.concatenate([feats(i) for i, _ in train])
    y = np.concatenate([pair_of(lab) for _, lab in train])
    cent = np.stack([x[y == k].mean(0) for k in range(1, 5)])
    xt = np.concatenate([feats(i) for i, _ in test])
    yt = np.concatenate([pair_of(lab) for _, lab in test])
    fg = (yt > 0) & (yt < 255)
    pred = np.argmin(((xt[fg, None] - cent[None]) ** 2).sum(-1), 1) + 1
    acc = (pred == yt[fg]).mean()
    assert acc > 0.6, acc  # chance among 4 pairs is 0.25


def test_write_tfrecords_reads_through_make_dataset(tmp_path):
    counts = synthetic.write_tfrecords(tmp_path, num_train=12, num_val=5, size=48, seed=1)
    assert counts == {"train": 12, "val": 5}
    again = tmp_path / "again"
    synthetic.write_tfrecords(again, num_train=12, num_val=5, size=48, seed=1)
    for i in range(4):
        name = tfrecord.SHARD_PATTERN % ("train", i, 4)
        assert (tmp_path / name).read_bytes() == (again / name).read_bytes()
    info = get_dataset_info("shapes_evidence")
    ds = make_dataset("shapes_evidence", tmp_path, "val", crop_size=(48, 48), batch_size=5,
                      is_training=False)  # fmt: skip
    images, targets = next(iter(ds))
    assert images.shape == (5, 48, 48, 3) and targets["tags"].shape == (5, info.num_tags)
    for k in range(5):
        img, lab = synthetic.generate_example(synthetic.example_rng(1, "val", k), 48)
        np.testing.assert_array_equal(images[k].numpy(), img.astype(np.float32))
        np.testing.assert_array_equal(targets["semantic"][k].numpy(), lab)
        present = set(np.unique(lab).tolist()) - {0, 255}
        assert {info.tag_class_ids[i] for i in np.flatnonzero(targets["tags"][k])} == present
    train = make_dataset("shapes_evidence", tmp_path, "train", crop_size=(33, 33), batch_size=4,
                         seed=0)  # fmt: skip
    x, y = next(iter(train))
    assert x.shape == (4, 33, 33, 3) and y["semantic"].shape == (4, 33, 33)
    # A further split by name: its own stream, readable like the others.
    assert synthetic.write_tfrecords(tmp_path, size=48, seed=1, splits=("holdout",),
                                     split_sizes={"holdout": 3}) == {"holdout": 3}
    hold = make_dataset("shapes_evidence", tmp_path, "holdout", crop_size=(48, 48),
                        batch_size=3, is_training=False)  # fmt: skip
    _, t = next(iter(hold))
    lab = synthetic.generate_example(synthetic.example_rng(1, "holdout", 2), 48)[1]
    np.testing.assert_array_equal(t["semantic"][2].numpy(), lab)


def test_faint_options_change_contrast_not_labels():
    """p_faint / faint_alpha set how hard objects are to find; the labels stay the same."""
    rng = lambda: synthetic.example_rng(0, "train", 11)  # noqa: E731
    base = synthetic.generate_example(rng(), 64)
    explicit = synthetic.generate_example(rng(), 64, p_small=0.25, p_faint=0.3,
                                          faint_alpha=(0.3, 0.5))
    np.testing.assert_array_equal(base[0], explicit[0])  # defaults are the built-in dataset
    clear = synthetic.generate_example(rng(), 64, p_faint=0.0)
    faint = synthetic.generate_example(rng(), 64, p_faint=1.0, faint_alpha=(0.1, 0.1))
    np.testing.assert_array_equal(clear[1], faint[1])
    obj = (clear[1] > 0) & (clear[1] != synthetic.IGNORE_LABEL)
    bg = clear[1] == 0

    def contrast(image):
        return float(np.abs(image[obj].mean(0) - image[bg].mean(0)).sum())

    assert contrast(faint[0]) < 0.3 * contrast(clear[0])
    for bad in (dict(p_faint=1.5), dict(p_small=-0.1), dict(faint_alpha=(0.5, 0.3)),
                dict(faint_alpha=(0.0, 0.2))):
        with pytest.raises(ValueError, match=next(iter(bad))):
            synthetic.generate_example(rng(), 64, **bad)


def test_extra_split_names_are_stable_across_processes():
    """A split outside train/val/test (e.g. a large hold-out) must be the same every run."""
    import subprocess
    import sys

    code = ("from deeplab_ext.data import synthetic; "
            "print(synthetic.example_rng(0, 'holdout', 3).integers(0, 2**62))")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**__import__("os").environ, "PYTHONHASHSEED": str(seed)},
                           check=True).stdout.strip() for seed in (1, 2)}
    assert len(outs) == 1, outs
    here = synthetic.example_rng(0, "holdout", 3).integers(0, 2**62)
    assert outs == {str(here)}
    assert here != synthetic.example_rng(0, "test", 3).integers(0, 2**62)
