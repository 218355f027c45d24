"""tools.vis / deeplab_ext.run.vis: the original vis.py's output layout, colours and the
Cityscapes trainId -> labelId conversion of raw predictions."""

from __future__ import annotations

import pathlib

import cv2
import numpy as np
import pytest

from deeplab_ext.data import colormap as cmap
from deeplab_ext.data import synthetic
from deeplab_ext.data.datasets import get_dataset_info
from deeplab_ext.run import vis as vislib
from deeplab_ext.run.options import VisOptions
from tests.conftest import run_tool

REPO = pathlib.Path(__file__).resolve().parents[1]
SIZE = 40
CITYSCAPES_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)


# ------------------------------------------------------------------ unit tests
def test_cityscapes_raw_predictions_are_label_ids():
    train_ids = np.array([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
                          [10, 11, 12, 13, 14, 15, 16, 17, 18, 255]], np.int64)
    raw = vislib.raw_prediction_for_saving(train_ids, "cityscapes")
    assert raw.dtype == np.uint8
    np.testing.assert_array_equal(raw.ravel()[:19], CITYSCAPES_LABEL_IDS)
    assert raw[1, 9] == 0  # ignore / unknown -> 0 (unlabeled)
    # Other datasets: unchanged class ids.
    np.testing.assert_array_equal(vislib.raw_prediction_for_saving(train_ids, "pascal_voc_seg"),
                                  train_ids.astype(np.uint8))
    with pytest.raises(ValueError, match="0..255"):
        vislib.raw_prediction_for_saving(np.array([[300]]), "ade20k")


def test_save_annotation_colour_and_raw(tmp_path):
    label = np.arange(20, dtype=np.int32).reshape(4, 5) % 19
    colour = vislib.save_annotation(label, tmp_path, "c", colormap_type="cityscapes")
    raw = vislib.save_annotation(label, tmp_path, "r", add_colormap=False)
    assert colour.name == "c.png" and raw.name == "r.png"
    np.testing.assert_array_equal(cv2.imread(str(colour))[..., ::-1],
                                  cmap.label_to_color_image(label, "cityscapes"))
    np.testing.assert_array_equal(cv2.imread(str(raw), cv2.IMREAD_UNCHANGED), label)


# ------------------------------------------------------------- end to end
def _make_checkpoint(logdir: pathlib.Path, dataset: str, seed: int):
    """A restorable run dir (random weights, spread-out logits) without training."""
    import keras
    import tensorflow as tf

    from deeplab_ext.models import build_network, get_variant
    from deeplab_ext.run.rundir import save_run_config

    keras.utils.set_random_seed(seed)  # the same weights (and predictions) on every run
    info = get_dataset_info(dataset)
    family, cfg = get_variant("deeplabv3plus_mobilenetv2_tiny", num_classes=info.num_classes)
    network = build_network(cfg)
    rng = np.random.default_rng(seed)
    kernel, bias = network.get_layer("logits").weights  # several classes per image, not one
    kernel.assign(rng.normal(0, 30.0, kernel.shape).astype(np.float32))
    bias.assign(np.zeros(bias.shape, np.float32))
    tf.train.CheckpointManager(tf.train.Checkpoint(network=network), str(logdir), 1).save(7)
    save_run_config(logdir, family, cfg, info)
    return network


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("shapes")
    synthetic.write_tfrecords(out, 1, 3, size=SIZE, seed=0, splits=("val",))
    return out


@pytest.fixture(scope="module")
def val_images(data_dir):
    return list(vislib._examples(data_dir, "val"))


def test_tools_vis_cli_writes_original_layout(tmp_path, data_dir, val_images):
    run = tmp_path / "run"
    network = _make_checkpoint(run, "shapes_evidence", seed=1)
    out = tmp_path / "vis"
    proc = run_tool("vis", f"--checkpoint_dir={run}", f"--dataset_dir={data_dir}",
                    f"--vis_logdir={out}", "--vis_split=val", "--also_save_raw_predictions",
                    "--max_number_of_images=2", "--eval_scales=0.75,1.0",
                    "--add_flipped_images")
    assert proc.returncode == 0, proc.stderr[-3000:]
    seg, raw_dir = out / "segmentation_results", out / "raw_segmentation_results"
    assert sorted(p.name for p in seg.iterdir()) == [
        "000000_image.png", "000000_prediction.png", "000001_image.png", "000001_prediction.png"]
    assert sorted(p.name for p in raw_dir.iterdir()) == ["val_000000.png", "val_000001.png"]

    from tf_mtl.inference import predict_segmentation

    info = get_dataset_info("shapes_evidence")
    for i in range(2):
        image, filename = val_images[i]
        assert filename == f"val_{i:06d}"
        np.testing.assert_array_equal(cv2.imread(str(seg / f"{i:06d}_image.png"))[..., ::-1],
                                      image)
        raw = cv2.imread(str(raw_dir / f"{filename}.png"), cv2.IMREAD_UNCHANGED)
        assert raw.shape == (SIZE, SIZE) and raw.max() < info.num_classes
        colour = cv2.imread(str(seg / f"{i:06d}_prediction.png"))[..., ::-1]
        np.testing.assert_array_equal(colour, cmap.label_to_color_image(raw, info.colormap))
        want = predict_segmentation(network, image[None].astype(np.float32), (0.75, 1.0),
                                    True)["predictions"][0].numpy()
        assert np.mean(raw == want) > 0.99
    assert len(np.unique(raw)) > 1  # a meaningful comparison, not one flat class


def _recorded_as(data_dir, dataset: str, tmp_path):
    """A copy of the shards whose records say they hold ``dataset`` (vis reads images only,
    and refuses shards recorded as another dataset than the checkpoint's)."""
    import json
    import shutil

    from deeplab_ext.data.datasets import get_dataset_info

    info = get_dataset_info(dataset)
    out = tmp_path / f"as_{dataset}"
    shutil.copytree(data_dir, out)
    for record in out.glob("*.dataset.json"):
        meta = json.loads(record.read_text())
        meta.update(name=info.name, class_names=list(info.class_names),
                    ignore_label=info.ignore_label)
        record.write_text(json.dumps(meta))
    return out


def test_visualize_cityscapes_converts_raw_and_colours_train_ids(tmp_path, data_dir):
    run = tmp_path / "run"
    _make_checkpoint(run, "cityscapes", seed=2)
    data_dir = _recorded_as(data_dir, "cityscapes", tmp_path)
    result = vislib.visualize(VisOptions(
        checkpoint_dir=str(run), dataset_dir=str(data_dir), vis_logdir=str(tmp_path / "vis"),
        also_save_raw_predictions=True, max_number_of_images=1,
    ), printer=lambda s: None)
    assert result["colormap_type"] == "cityscapes"  # default: the dataset's
    assert len(result["images"]) == 1
    entry = result["images"][0]
    raw = cv2.imread(entry["raw"], cv2.IMREAD_UNCHANGED)
    assert set(np.unique(raw)) <= set(CITYSCAPES_LABEL_IDS)
    assert len(np.unique(raw)) > 1
    inverse = np.zeros(256, np.int64)
    inverse[list(CITYSCAPES_LABEL_IDS)] = np.arange(19)
    train_ids = inverse[raw]
    colour = cv2.imread(entry["prediction"])[..., ::-1]
    np.testing.assert_array_equal(colour, cmap.label_to_color_image(train_ids, "cityscapes"))

    # --colormap_type overrides the dataset's; bad values are refused with the valid list.
    result = vislib.visualize(VisOptions(
        checkpoint_dir=str(run), dataset_dir=str(data_dir), vis_logdir=str(tmp_path / "v2"),
        colormap_type="ade20k", max_number_of_images=1), printer=lambda s: None)
    colour = cv2.imread(result["images"][0]["prediction"])[..., ::-1]
    np.testing.assert_array_equal(colour, cmap.label_to_color_image(train_ids, "ade20k"))
    assert not (tmp_path / "v2" / vislib.RAW_SEMANTIC_PREDICTION_SAVE_FOLDER).exists()
    with pytest.raises(ValueError, match="valid: pascal, cityscapes, ade20k, camvid"):
        vislib.visualize(VisOptions(
            checkpoint_dir=str(run), dataset_dir=str(data_dir), vis_logdir=str(tmp_path / "v3"),
            colormap_type="viridis"), printer=lambda s: None)


def test_visualize_missing_shards_names_the_dir(tmp_path):
    run = tmp_path / "run"
    _make_checkpoint(run, "shapes_evidence", seed=3)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "empty")):
        vislib.visualize(VisOptions(
            checkpoint_dir=str(run), dataset_dir=str(tmp_path / "empty"),
            vis_logdir=str(tmp_path / "vis")), printer=lambda s: None)
