"""Self-supervised auxiliary tasks (issue 17, first part): the edge target and its
training-only branch, on the toy family of tests/test_house.py and tiny data."""

from __future__ import annotations

import json
import pathlib

import cv2
import numpy as np
import pytest

import tests.test_house  # noqa: F401  (registers the toy family)
from deeplab_ext.data import input_pipeline, synthetic
from deeplab_ext.data.datasets import get_dataset_info

INFO = get_dataset_info("shapes_evidence")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("shapes")
    synthetic.write_tfrecords(out, 8, 3, size=48, seed=0)
    return out


def test_edge_target_is_opencv_canny_of_the_augmented_crop(data_dir):
    """Crops of 65 from 48px images scaled 0.5-2: padding and flips happen; the target is
    OpenCV's Canny of exactly the image the network gets, ignore where the labels are."""
    ds = input_pipeline.make_dataset(INFO, str(data_dir), "train", crop_size=(65, 65),
                                     batch_size=4, is_training=True, seed=3,
                                     targets=("semantic", "edges"))
    images, targets = next(iter(ds))
    edges, labels = targets["edges"].numpy(), targets["semantic"].numpy()
    assert edges.shape == labels.shape == (4, 65, 65)
    for image, edge, label in zip(images.numpy(), edges, labels, strict=True):
        grey = cv2.cvtColor(np.clip(np.rint(image), 0, 255).astype(np.uint8),
                            cv2.COLOR_RGB2GRAY)
        want = (cv2.Canny(grey, 100, 200) > 0).astype(np.int32)
        want[label == INFO.ignore_label] = INFO.ignore_label
        np.testing.assert_array_equal(edge, want)
    assert (edges == 1).sum() > 0 and (edges == INFO.ignore_label).sum() > 0  # not trivial


def test_edges_branch_trains_is_recorded_and_is_not_exported(data_dir, tmp_path):
    from deeplab_ext.models import build_network
    from deeplab_ext.run.options import TrainOptions
    from deeplab_ext.run.rundir import restore_network
    from deeplab_ext.run.trainer import train

    opts = dict(train_logdir=str(tmp_path / "run"), dataset_dir=str(data_dir),
                model_variant="toy_segmenter_mt", train_crop_size=(33, 33),
                train_batch_size=2, training_number_of_steps=2, save_interval_steps=2,
                save_summaries_images=False, optimizer="adam", base_learning_rate=0.01,
                seed=0, aux_feature="encoder")
    result = train(TrainOptions(aux_tasks=("edges",), **opts), printer=lambda s: None)
    assert "edges_loss" in result.logs and np.isfinite(float(result.logs["edges_loss"]))
    meta = json.loads((tmp_path / "run" / "model_config.json").read_text())
    assert meta["training_branches"]["aux_tasks"]["aux_tasks"] == ["edges"]
    network, info, _ = restore_network(tmp_path / "run")
    plain = build_network("toy_segmenter_mt", num_classes=info.num_classes,
                          num_tags=info.num_tags)
    assert [v.path for v in network.variables] == [v.path for v in plain.variables]

    with pytest.raises(ValueError, match="--aux_tasks: unknown"):
        train(TrainOptions(aux_tasks=("sharpness",), **{**opts, "train_logdir": str(
            tmp_path / "bad")}), printer=lambda s: None)
