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
    from deeplab_ext.run.rundir import input_alignment, restore_network
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
    network, info, run_meta = restore_network(tmp_path / "run")
    plain = build_network("toy_segmenter_mt", num_classes=info.num_classes,
                          num_tags=info.num_tags)
    assert [v.path for v in network.variables] == [v.path for v in plain.variables]

    with pytest.raises(ValueError, match="--aux_tasks: unknown"):
        train(TrainOptions(aux_tasks=("sharpness",), **{**opts, "train_logdir": str(
            tmp_path / "bad")}), printer=lambda s: None)


    # tools.eval scores the training-only edge head on val: the F1 of its logits, read
    # back from the checkpoint, against the Canny target. Reference: the head's 1x1 conv
    # applied in NumPy to the tapped feature, its kernel and bias found in the checkpoint by
    # shape (the only [1, 1, C, 1] kernel; the trainable variables are stored under the
    # optimizer's object path).
    import tensorflow as tf

    from deeplab_ext.models.registry import family_of
    from deeplab_ext.run.evaluation import evaluate
    from deeplab_ext.run.options import EvalOptions
    from deeplab_ext.tasks import branches_from_record, restore_branch_outputs
    from tf_mtl.graph import feature_model

    res = evaluate(EvalOptions(checkpoint_dir=str(tmp_path / "run"), dataset_dir=str(data_dir),
                               eval_split="val", bootstrap_samples=0, num_vis_examples=0),
                   printer=lambda s: None)
    ckpt = tf.train.load_checkpoint(result.checkpoint)
    features = feature_model(network, ["encoder"])
    channels = features.output["encoder"].shape[-1]
    stored = [(n, tuple(s)) for n, s in tf.train.list_variables(result.checkpoint)
              if n.startswith("optimizer/_trainable_variables/")]
    (kernel_name,) = [n for n, s in stored if s == (1, 1, channels, 1)]
    kernel = ckpt.get_tensor(kernel_name)
    index = int(kernel_name.split("/")[-3])  # its bias is the next trainable variable
    bias = ckpt.get_tensor(kernel_name.replace(f"/{index}/", f"/{index + 1}/"))
    assert bias.shape == (1,)
    alignment = input_alignment(network, run_meta)  # eval pads to the training grid
    ds = input_pipeline.make_dataset(info, str(data_dir), "val", crop_size=None, batch_size=1,
                                     is_training=False, targets=("semantic", "edges"))
    heads = None
    probs, truth = [], []
    for images, targets in ds:
        padded = alignment.pad(images)
        f = features(padded, training=False)["encoder"].numpy()
        logits = f @ kernel.reshape(kernel.shape[-2:]) + bias
        logits = tf.image.resize(logits, tf.shape(padded)[1:3]).numpy()[0, ..., 0]
        logits = logits[: images.shape[1], : images.shape[2]]
        if heads is None:  # the trained head, not a fresh one, is what tools score
            branch = branches_from_record(network, family_of(network), info,
                                          run_meta["training_branches"])
            heads = restore_branch_outputs(result.checkpoint, network, branch, alignment, images)
        np.testing.assert_allclose(heads(images)["edges_logits"][0, ..., 0], logits, atol=1e-4)
        edge = targets["edges"].numpy()[0]
        valid = edge != info.ignore_label
        probs.append(1 / (1 + np.exp(-logits[valid])))
        truth.append(edge[valid] == 1)
    probs, truth = np.concatenate(probs), np.concatenate(truth)
    assert truth.any() and not truth.all()
    # The metric's definition: thresholds k/100 on the probability; ODS = the best F1 over
    # them, AP = sum of precision x recall gained, F1 at 0.5.
    bins = np.minimum(np.floor(probs * 100).astype(int), 99)
    curve = []
    for k in range(100):
        pred = bins >= k
        tp, fp, fn = np.sum(pred & truth), np.sum(pred & ~truth), np.sum(~pred & truth)
        curve.append((tp / max(tp + fp, 1), tp / (tp + fn), 2 * tp / (2 * tp + fp + fn)))
    precision, recall, f1 = map(np.array, zip(*curve, strict=True))
    ap = np.sum(precision * (recall - np.append(recall[1:], 0.0)))
    got = res["edges"]
    np.testing.assert_allclose([got["ods_f1"], got["ap"], got["f1"]],
                               [f1.max(), ap, f1[50]], atol=1e-5)
    assert got["ods_threshold"] == pytest.approx(np.argmax(f1) / 100)


def test_noisy_and_lab_targets(data_dir):
    """lab is OpenCV's L*a*b* of the augmented crop; noisy is the crop plus seeded noise
    of the stated std, the same for the same seed, other noise for another."""
    from deeplab_ext.data.self_supervised import NOISE_STDDEV

    def batch(seed):
        ds = input_pipeline.make_dataset(INFO, str(data_dir), "train", crop_size=(33, 33),
                                         batch_size=4, is_training=True, seed=seed,
                                         targets=("semantic", "noisy", "lab"))
        images, targets = next(iter(ds))
        return images.numpy(), {k: v.numpy() for k, v in targets.items()}

    images, targets = batch(5)
    for image, lab in zip(images, targets["lab"], strict=True):
        want = cv2.cvtColor(np.clip(image / 255.0, 0, 1).astype(np.float32), cv2.COLOR_RGB2LAB)
        np.testing.assert_allclose(lab, want, atol=1e-4)
    noise = targets["noisy"] - images
    inside = (targets["noisy"] > 0) & (targets["noisy"] < 255)  # not clipped
    assert abs(noise[inside].std() - NOISE_STDDEV) < 1.5 and abs(noise[inside].mean()) < 1.5
    again_images, again = batch(5)
    np.testing.assert_array_equal(again["noisy"], targets["noisy"])
    other_images, other = batch(6)
    assert not np.allclose(other["noisy"] - other_images, noise)


def test_second_pass_leaves_batchnorm_statistics_and_passes_gradients():
    """The trunk on another input: gradients reach the shared weights, BatchNorm's moving
    statistics stay (a plain training-mode call would move them: the check can fail)."""
    import tensorflow as tf

    from tf_mtl.graph import SecondPass, feature_model
    from tf_mtl.testing import build_toy_network

    network = build_toy_network(5, 4, 8)
    stats = lambda: [v.numpy().copy() for v in network.non_trainable_variables]  # noqa: E731
    before = stats()
    assert before, "the toy has BatchNorm"
    x = tf.random.uniform([2, 33, 33, 3], 0, 255, seed=0)
    with tf.GradientTape() as tape:
        feature = SecondPass(network, ["encoder"])(x)["encoder"]
        loss = tf.reduce_mean(tf.square(feature))
    grads = tape.gradient(loss, network.trainable_variables)
    trunk = [g for g, v in zip(grads, network.trainable_variables, strict=True)
             if v.path.startswith("backbone_")]
    assert trunk and all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in trunk)
    for a, b in zip(before, stats(), strict=True):
        np.testing.assert_array_equal(a, b)
    feature_model(network, ["encoder"])(x, training=True)
    assert any(not np.array_equal(a, b) for a, b in zip(before, stats(), strict=True))


def test_denoise_and_colorize_train_without_moving_the_main_pass_statistics(data_dir, tmp_path):
    """One step with the two second-pass tasks and one without: the same BatchNorm moving
    statistics afterwards (only the main pass moves them), other weights; both losses
    logged."""
    from deeplab_ext.run.options import TrainOptions
    from deeplab_ext.run.rundir import restore_network
    from deeplab_ext.run.trainer import train

    def run(name, **kw):
        opts = TrainOptions(train_logdir=str(tmp_path / name), dataset_dir=str(data_dir),
                            model_variant="toy_segmenter_mt", train_crop_size=(33, 33),
                            train_batch_size=2, training_number_of_steps=1,
                            save_interval_steps=1, save_summaries_images=False,
                            optimizer="adam", base_learning_rate=0.01, seed=0,
                            aux_feature="encoder", **kw)
        result = train(opts, printer=lambda s: None)
        network, _, _ = restore_network(tmp_path / name)
        return result, network

    aux, with_aux = run("aux", aux_tasks=("denoise", "colorize"))
    _, plain = run("plain")
    for key in ("denoise_loss", "colorize_loss"):
        assert key in aux.logs and np.isfinite(float(aux.logs[key])), sorted(aux.logs)
    # Two step graphs (with / without the terms): equal within float32 rounding, 1e-6
    # relative; a moved statistic would differ by the momentum's share of a batch of
    # noisy images, orders of magnitude more.
    for a, b in zip(with_aux.non_trainable_variables, plain.non_trainable_variables,
                    strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7, err_msg=a.path)
    trunk = [(a, b) for a, b in zip(with_aux.trainable_variables, plain.trainable_variables,
                                    strict=True) if a.path.startswith("backbone_")]
    assert any(not np.array_equal(a.numpy(), b.numpy()) for a, b in trunk)
