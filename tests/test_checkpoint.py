"""load_initial_checkpoint: formats, class-count change, last-layer exclusion, errors."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_ext.models import build_network, variable_groups
from tf_mtl.checkpoint import _tf_targets, load_initial_checkpoint

VARIANT = "deeplabv3plus_mobilenetv2_tiny"


def _randomise(model: keras.Model, seed: int) -> None:
    """Give every variable (BN statistics too) distinctive values."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        v.assign(rng.uniform(0.5, 1.5, v.shape).astype(v.dtype))


@pytest.fixture(scope="module")
def source_files(tmp_path_factory):
    """A 21-class model saved in the three supported formats."""
    keras.utils.set_random_seed(0)
    src = build_network(VARIANT, num_classes=21)
    _randomise(src, 1)
    d = tmp_path_factory.mktemp("ckpt")
    src.save_weights(d / "src.weights.h5")
    src.save(d / "src.keras")
    prefix = tf.train.Checkpoint(model=src).write(str(d / "tf" / "ckpt"))
    files = {"weights.h5": d / "src.weights.h5", "keras": d / "src.keras", "tf_checkpoint": prefix}
    values = {v.path: np.asarray(v) for v in src.weights}
    return files, values


@pytest.fixture(scope="module")
def target12():
    return build_network(VARIANT, num_classes=12)


@pytest.mark.parametrize("fmt", ["weights.h5", "keras", "tf_checkpoint"])
def test_21_to_12_classes_loads_all_but_logits(source_files, target12, fmt):
    files, values = source_files
    _randomise(target12, 2)
    report = load_initial_checkpoint(target12, files[fmt])
    assert report.format == fmt
    assert sorted(report.skipped) == ["logits/bias", "logits/kernel"]
    assert "shape" in report.skipped["logits/kernel"]
    assert report.missing == [] and report.unused == []
    assert len(report.loaded) == len(target12.weights) - 2
    groups = variable_groups(target12, trainable_only=False)
    for group in ("backbone", "aspp", "decoder"):
        assert groups[group]
        for v in groups[group]:
            np.testing.assert_array_equal(np.asarray(v), values[v.path], err_msg=v.path)
    # the 12-class logits kept their own (non-checkpoint) values
    assert not np.allclose(
        np.asarray(target12.get_layer("logits").bias), values["logits/bias"][:12]
    )
    text = report.summary()
    assert f"loaded {len(report.loaded)} variables" in text and "logits/kernel" in text


def test_initialize_last_layer_false_keeps_logits(source_files):
    files, values = source_files
    model = build_network(VARIANT, num_classes=21)
    before = np.asarray(model.get_layer("logits").kernel).copy()
    report = load_initial_checkpoint(model, files["tf_checkpoint"], initialize_last_layer=False)
    assert sorted(report.skipped) == ["logits/bias", "logits/kernel"]
    assert "initialize_last_layer" in report.skipped["logits/kernel"]
    np.testing.assert_array_equal(np.asarray(model.get_layer("logits").kernel), before)
    assert report.unused == []  # excluded entries are not "unused"
    # same-class model, last layer included: logits now equal the checkpoint's
    load_initial_checkpoint(model, files["keras"])
    np.testing.assert_array_equal(
        np.asarray(model.get_layer("logits").kernel), values["logits/kernel"]
    )


def test_tf_checkpoint_tracks_every_variable(target12):
    # guards against layers kept in Python lists, which tf.train.Checkpoint would not save
    assert len(_tf_targets(target12)) == len(target12.weights)


def test_different_backbone_reports_missing_and_unused(source_files):
    files, _ = source_files
    other = build_network("deeplabv3_mobilenetv2_tiny", num_classes=21)  # no decoder, no atrous
    report = load_initial_checkpoint(other, files["weights.h5"])
    assert report.missing == []
    assert any(k.startswith("decoder/") for k in report.unused)
    assert not any("decoder" in name for name in report.loaded)


def test_bad_paths_name_the_flag(tmp_path, target12):
    missing = tmp_path / "nope.weights.h5"
    with pytest.raises(FileNotFoundError, match="--tf_initial_checkpoint") as e:
        load_initial_checkpoint(target12, missing)
    assert str(missing) in str(e.value)
    junk = tmp_path / "junk.weights.h5"
    junk.write_bytes(b"not an h5 file")
    with pytest.raises(ValueError, match="--tf_initial_checkpoint"):
        load_initial_checkpoint(target12, junk)
