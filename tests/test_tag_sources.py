"""Where an evaluation's tags come from (deeplab_ext.run.tag_sources): seeded noise on the
true tags, a user's file, and soft tags by name (issue 43)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from deeplab_ext.data.datasets import get_dataset_info
from deeplab_ext.data.input_pipeline import tags_from_names
from deeplab_ext.run.tag_sources import TagNoise, TagSource, read_tags_file, tag_source

VOC = get_dataset_info("pascal_voc_seg")


def _tags(*names: str) -> np.ndarray:
    return tags_from_names(names, VOC)


def test_noise_drops_and_adds_exactly_k_seeded_per_image():
    true = _tags("person", "dog", "car")
    drop, add = TagNoise(drop=1, seed=3), TagNoise(add=1, seed=3)
    both = TagNoise(drop=1, add=1, seed=3)
    for index in range(20):
        d, dropped, _ = drop.apply(true, index)
        a, _, added = add.apply(true, index)
        b, b_dropped, b_added = both.apply(true, index)
        assert len(dropped) == 1 and true[dropped[0]] == 1 and d.sum() == 2
        assert len(added) == 1 and true[added[0]] == 0 and a.sum() == 4
        # one stream each: "both" drops what drop:1 drops and adds what add:1 adds
        assert (b_dropped, b_added) == (dropped, added)
        expect = true.copy()
        expect[dropped], expect[added] = 0, 1
        np.testing.assert_array_equal(b, expect)
        assert b.sum() == 3 and b[dropped[0]] == 0 and b[added[0]] == 1
        # the same image index always gets the same noise (every row, every candidate)
        np.testing.assert_array_equal(drop.apply(true, index)[0], d)
    picks = [tuple(drop.apply(true, i)[1]) for i in range(20)]
    assert len(set(picks)) == 3  # every true tag is dropped for some image
    assert [tuple(TagNoise(drop=1, seed=4).apply(true, i)[1]) for i in range(20)] != picks
    # rate: that share of the images, the others untouched; those touched get the noise
    # rate 1 gives them (the same streams)
    half = TagNoise(drop=1, seed=3, rate=0.5)
    touched = [i for i in range(200) if half.apply(true, i)[1]]
    assert 70 <= len(touched) <= 130
    for i in range(20):
        noisy, dropped, _ = half.apply(true, i)
        if dropped:
            assert dropped == drop.apply(true, i)[1]
        else:
            np.testing.assert_array_equal(noisy, true)
    # fewer tags than asked: all of them; none: nothing
    assert TagNoise(drop=5).apply(true, 0)[0].sum() == 0
    assert TagNoise(drop=1).apply(np.zeros(20, np.float32), 0)[1] == []


@pytest.mark.parametrize("spec, message", [
    ("drop:x", "'drop:x' needs a whole number"),
    ("flip:1", "'flip:1' is not one of drop:K, add:K, seed:N"),
    ("drop:1,drop:2", "'drop:2' is not one of"),
    ("drop:-1", "'drop:-1' must be >= 0"),
    ("seed:3", "drops and adds nothing"),
    ("drop:1,rate:0", "must be in \\(0, 1\\]"),
    ("drop:1,rate:nan", "must be in \\(0, 1\\]"),
])
def test_bad_noise_specs_name_the_flag(spec, message):
    with pytest.raises(ValueError, match=f"--tag_noise={spec}: .*{message}"):
        TagNoise.parse(spec)


def test_noise_spec_round_trip():
    assert TagNoise.parse("add:2, drop:1,seed:7") == TagNoise(drop=1, add=2, seed=7)
    assert TagNoise.parse("drop:1").describe() == "drop:1,add:0,seed:0"
    assert TagNoise.parse("drop:1,rate:0.5").describe() == "drop:1,add:0,seed:0,rate:0.5"


def test_soft_tags_by_name_and_their_refusals():
    tags = tags_from_names(["person", "dog:0.6", "Car:0"], VOC)
    assert tags[VOC.tag_names.index("person")] == 1.0
    assert tags[VOC.tag_names.index("dog")] == pytest.approx(0.6)
    assert tags.sum() == pytest.approx(1.6)
    for bad, message in (("dog:1.5", "must be a number in \\[0, 1\\]"),
                         ("dog:nan", "must be a number in \\[0, 1\\]"),
                         ("dog:-0.1", "must be a number in \\[0, 1\\]"),
                         ("dog:high", "must be a number in \\[0, 1\\]"),
                         ("unicorn:0.5", "unknown class name 'unicorn'")):
        with pytest.raises(ValueError, match=f"--tags: .*{message}"):
            tags_from_names(["person", bad], VOC)
    with pytest.raises(ValueError, match="class 'dog' is named twice"):
        tags_from_names(["dog", "dog:0.5"], VOC)


def test_tags_files_json_and_csv(tmp_path):
    js = tmp_path / "tags.json"
    js.write_text(json.dumps({"a.jpg": ["person", "dog:0.5"], "b": {"car": 0.9}, "c": []}))
    csv = tmp_path / "tags.csv"
    csv.write_text("image,tags\na.jpg,person;dog:0.5\nb,car:0.9\nc,\n")
    for path in (js, csv):
        by_image = read_tags_file(path, VOC)
        assert sorted(by_image) == ["a", "b", "c"]
        np.testing.assert_allclose(by_image["a"], _tags("person", "dog:0.5"))
        np.testing.assert_allclose(by_image["b"], _tags("car:0.9"))
        assert by_image["c"].sum() == 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"a": ["unicorn"]}))
    with pytest.raises(ValueError, match=r"--tags_from=.*bad.json: image 'a': unknown class"):
        read_tags_file(bad, VOC)
    bad.write_text(json.dumps({"a": "person"}))
    with pytest.raises(ValueError, match="expected a list of class names"):
        read_tags_file(bad, VOC)
    (tmp_path / "tags.txt").write_text("a person")
    with pytest.raises(ValueError, match=r"expected a \.json or \.csv file"):
        read_tags_file(tmp_path / "tags.txt", VOC)
    with pytest.raises(ValueError, match="cannot be read"):
        read_tags_file(tmp_path / "missing.json", VOC)


def test_a_source_replaces_the_tags_keeps_the_truth_and_records_each_image(tmp_path):
    true = _tags("person", "dog")
    batches = [(tf.zeros([1, 4, 4, 3]), {"tags": tf.constant(true[None])}) for _ in range(3)]
    source = tag_source("drop:1,add:1,seed:0", None, VOC)
    given, records = source.apply(batches, ["x.jpg", "y.jpg", "z.jpg"], VOC)
    for index, ((_, targets), record) in enumerate(zip(given, records, strict=True)):
        np.testing.assert_array_equal(targets["true_tags"].numpy()[0], true)
        noisy, dropped, added = source.noise.apply(true, index)
        np.testing.assert_array_equal(targets["tags"].numpy()[0], noisy)
        assert record["dropped"] == [VOC.tag_names[i] for i in dropped]
        assert record["added"] == [VOC.tag_names[i] for i in added]
        assert sorted(record["given"]) == sorted(VOC.tag_names[i] for i in np.flatnonzero(noisy))
    assert source.describe["tag_noise"] == "drop:1,add:1,seed:0"
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"x": ["car:0.7"], "y": []}))
    source = tag_source(None, str(path), VOC)
    with pytest.raises(ValueError, match=r"no tags for 1 of the 3 images \(first: 'z.jpg'\)"):
        source.apply(batches, ["x.jpg", "y.jpg", "z.jpg"], VOC)
    given, records = source.apply(batches[:2], ["x.jpg", "y.jpg"], VOC)
    assert records[0]["given"] == {"car": 0.7} and records[1]["given"] == {}
    with pytest.raises(ValueError, match="at most one of --tag_noise"):
        tag_source("drop:1", str(path), VOC)
    assert TagSource().describe == {"source": "ground truth"}
