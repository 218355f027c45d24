"""The label-structure regulariser (issue 16): the label autoencoder (phase 1) and the
training-only branches that predict through it (phase 2), on the toy family of
tests/test_house.py (fast) and tiny data."""

from __future__ import annotations

import json
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import tests.test_house  # noqa: F401  (registers the toy family)
from deeplab_ext.data import synthetic
from deeplab_ext.data.datasets import get_dataset_info
from deeplab_ext.models.label_autoencoder import VARIANTS, build_label_autoencoder

INFO = get_dataset_info("shapes_evidence")


def test_autoencoder_variants_and_strides():
    for variant, channels in VARIANTS.items():
        ae = build_label_autoencoder(INFO.num_classes, variant)
        out = ae(np.zeros((1, 48, 64, INFO.num_classes), np.float32))["semantic"]
        assert tuple(out.shape) == (1, 48, 64, INFO.num_classes)
        enc = ae.get_layer("label_encoder")(np.zeros((1, 48, 64, INFO.num_classes), np.float32))
        assert tuple(enc["conv1"].shape) == (1, 48, 64, channels[0])
        assert tuple(enc["conv3"].shape) == (1, 12, 16, channels[2])
        assert tuple(enc["bottleneck"].shape) == (1, 3, 4, channels[-1])  # stride 16
    with pytest.raises(ValueError, match="variant"):
        build_label_autoencoder(9, "64")


@pytest.mark.parametrize("kind", ["phase1", "ce", "mse"])
def test_ignore_pixels_contribute_nothing(kind):
    """Changing the predictions at ignore pixels changes neither the loss nor any
    gradient; the one-hot input of an ignore pixel is all zeros."""
    from deeplab_ext.models.label_autoencoder import one_hot_labels
    from tf_mtl.losses import SoftmaxCrossEntropyWithIgnore, call_loss, label_map_loss

    rng = np.random.default_rng(0)
    labels = rng.integers(0, INFO.num_classes, (2, 8, 8)).astype(np.int32)
    labels[:, :3] = INFO.ignore_label
    if kind == "phase1":
        ce = SoftmaxCrossEntropyWithIgnore(INFO.num_classes, INFO.ignore_label)

        def loss(y, p):
            return call_loss(ce, y, p)
    else:
        loss = label_map_loss(INFO.num_classes, INFO.ignore_label, kind)
    logits = tf.constant(rng.normal(size=(2, 8, 8, INFO.num_classes)).astype(np.float32))
    other = logits.numpy()
    other[:, :3] = rng.normal(size=other[:, :3].shape) * 10  # only where labels are ignored
    values, grads = [], []
    for value in (logits, tf.constant(other)):
        with tf.GradientTape() as tape:
            tape.watch(value)
            out = loss(labels, value)
        values.append(float(out))
        grads.append(tape.gradient(out, value).numpy())
    assert values[0] == pytest.approx(values[1], abs=1e-7)
    np.testing.assert_allclose(grads[0], grads[1], atol=1e-8)
    assert np.all(grads[0][:, :3] == 0) and np.abs(grads[0][:, 3:]).sum() > 0
    assert np.all(one_hot_labels(labels, INFO.num_classes).numpy()[:, :3] == 0)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("shapes")
    synthetic.write_tfrecords(out, 8, 3, size=32, seed=0)
    return out


@pytest.fixture(scope="module")
def autoencoder(data_dir, tmp_path_factory) -> dict:
    """Phase 1 through the library, killed-and-resumed the easy way: two calls."""
    from deeplab_ext.run.label_autoencoder import train_label_autoencoder
    from deeplab_ext.run.options import LabelAutoencoderOptions

    run = tmp_path_factory.mktemp("ae") / "run"
    lines: list[str] = []
    opts = dict(train_logdir=str(run), dataset_dir=str(data_dir), variant="32",
                train_crop_size=(32, 32), train_batch_size=4, save_interval_steps=4,
                log_every_n_steps=4)
    first = train_label_autoencoder(LabelAutoencoderOptions(training_number_of_steps=4, **opts),
                                    printer=lines.append)
    second = train_label_autoencoder(LabelAutoencoderOptions(training_number_of_steps=8, **opts),
                                     printer=lines.append)
    return {"run": run, "lines": lines, "first": first, "second": second}


def test_phase1_trains_resumes_and_reports_reconstruction_miou(autoencoder):
    assert autoencoder["first"]["step"] == 4 and autoencoder["second"]["step"] == 8
    assert any("Resuming from" in line and "(step 4)" in line for line in autoencoder["lines"])
    assert 0.0 <= autoencoder["second"]["reconstruction_miou"] <= 1.0
    assert any("Reconstruction mIoU on shapes_evidence:val" in line
               for line in autoencoder["lines"])
    meta = json.loads((autoencoder["run"] / "model_config.json").read_text())
    assert meta["kind"] == "label_autoencoder" and meta["variant"] == "32"


def _train(tmp_path, data_dir, ae_run, steps, **kw):
    from deeplab_ext.run.options import TrainOptions
    from deeplab_ext.run.trainer import train

    logdir = tmp_path / kw.pop("name", "run")
    opts = dict(train_logdir=str(logdir), dataset_dir=str(data_dir),
                model_variant="toy_segmenter_mt", train_crop_size=(33, 33),
                train_batch_size=2, save_interval_steps=steps, save_summaries_images=False,
                optimizer="adam", base_learning_rate=0.01, seed=0, label_decoder=str(ae_run))
    opts.update(kw)
    result = train(TrainOptions(training_number_of_steps=steps, **opts), printer=lambda s: None)
    return logdir, result


def _head_weights(ckpt, ae_run, trainable: bool = False) -> dict[str, np.ndarray]:
    """The decoder head's variables as a checkpoint's ``heads`` entry holds them."""
    from deeplab_ext.run.label_autoencoder import load_label_autoencoder
    from deeplab_ext.tasks.label_structure import LabelDecoderHead

    ae, _, _ = load_label_autoencoder(ae_run)
    head = LabelDecoderHead(ae.get_layer("label_decoder"), 32, "encoder", trainable,
                            name="label_decoder_head")
    head({"encoder": keras.Input((None, None, 16))})
    tf.train.Checkpoint(heads=[head]).restore(str(ckpt)).expect_partial()
    return {v.path: v.numpy() for v in head.weights}


def test_frozen_decoder_stays_bit_identical_and_the_ablation_moves_it(
        autoencoder, data_dir, tmp_path):
    from deeplab_ext.run.label_autoencoder import load_label_autoencoder

    ae, _, _ = load_label_autoencoder(autoencoder["run"])
    trained = {v.path: v.numpy() for v in ae.get_layer("label_decoder").weights}
    frozen, result = _train(tmp_path, data_dir, autoencoder["run"], 3, name="frozen")
    assert "label_decoder_loss" in result.logs
    after = _head_weights(frozen / "ckpt-3", autoencoder["run"])
    decoder = {k: v for k, v in after.items() if k in trained}
    assert decoder.keys() == trained.keys()
    for key, value in trained.items():  # the same values, bit for bit: nothing moved them
        np.testing.assert_array_equal(decoder[key], value, err_msg=key)
    moved, _ = _train(tmp_path, data_dir, autoencoder["run"], 3, name="unfrozen",
                      label_decoder_trainable=True)
    after = _head_weights(moved / "ckpt-3", autoencoder["run"], trainable=True)
    kernels = [k for k in trained if k.endswith("kernel")]
    assert any(not np.array_equal(after[k], trained[k]) for k in kernels)


def test_regularised_run_exports_the_plain_model_and_resumes_the_branch(
        autoencoder, data_dir, tmp_path):
    from deeplab_ext.models import build_network
    from deeplab_ext.run.export import export_saved_model
    from deeplab_ext.run.rundir import restore_network

    encoder = dict(label_encoder=str(autoencoder["run"]), label_encoder_feature="low_level")
    logdir, result = _train(tmp_path, data_dir, autoencoder["run"], 3, **encoder)
    assert {"label_decoder_loss", "label_encoder_loss"} <= set(result.logs)
    saved = _head_weights(logdir / "ckpt-3", autoencoder["run"])
    conv = [k for k in saved if k.startswith("label_decoder_head/to_bottleneck")]
    assert conv
    # Resume: the first resumed step runs at learning rate 0 and is checkpointed, so the
    # 1x1 conv there holds exactly the restored values.
    _train(tmp_path, data_dir, autoencoder["run"], 5, **encoder, save_interval_steps=1,
           slow_start_step=4, slow_start_learning_rate=0.0)
    resumed = _head_weights(logdir / "ckpt-4", autoencoder["run"])
    for key in conv:
        np.testing.assert_array_equal(resumed[key], saved[key], err_msg=key)

    network, info, _ = restore_network(logdir)
    plain = build_network("toy_segmenter_mt", num_classes=info.num_classes,
                          num_tags=info.num_tags)
    assert [v.path for v in network.variables] == [v.path for v in plain.variables]
    export = export_saved_model(network, info, tmp_path / "export")
    loaded = tf.saved_model.load(str(export))
    assert len(loaded.model_variables) == len(plain.variables)
    assert not any("label" in v.name for v in loaded.model_variables)
    out = loaded.signatures["serving_default"](images=tf.zeros([1, 33, 33, 3]))
    assert set(out) == {"semantic_probabilities", "semantic_predictions", "tag_probabilities"}


def test_decoder_path_miou_reads_the_trained_branch_back(autoencoder, data_dir, tmp_path):
    """tools.eval --label_decoder_path_miou rebuilds the branch from what the run recorded
    and restores its 1x1 conv: the same mIoU as the training model's own forward pass."""
    from deeplab_ext.models.registry import family_of
    from deeplab_ext.run.evaluation import evaluate
    from deeplab_ext.run.modes import load_split
    from deeplab_ext.run.options import EvalOptions, TrainOptions
    from deeplab_ext.run.rundir import restore_network
    from deeplab_ext.run.trainer import build_multitask_model
    from deeplab_ext.tasks import TaskContext, build_branches
    from deeplab_ext.tasks.label_structure import DECODER_OUTPUT, decoder_path
    from tf_mtl.metrics import image_iou_counts, miou_from_counts

    logdir, _ = _train(tmp_path, data_dir, autoencoder["run"], 4, label_decoder_weight=1.0)
    record = json.loads((logdir / "model_config.json").read_text())["training_branches"]
    assert record["label_decoder"]["label_decoder"] == str(autoencoder["run"])
    lines: list[str] = []
    results = evaluate(EvalOptions(checkpoint_dir=str(logdir), dataset_dir=str(data_dir),
                                   eval_crop_size=(33, 33), bootstrap_samples=0,
                                   num_vis_examples=0, label_decoder_path_miou=True),
                       printer=lines.append)
    got = results["label_decoder_path"]["miou"]
    assert any("decoder path" in line for line in lines)

    # The reference: the whole training model (network + heads) restored, one forward pass;
    # the library's decoder path gives the same logits.
    network, info, meta = restore_network(logdir)
    options = TrainOptions(train_logdir=str(logdir), dataset_dir=str(data_dir),
                           model_variant="toy_segmenter_mt", label_decoder=str(autoencoder["run"]))
    family = family_of(network)
    model = build_multitask_model(network, family, info, options, branch=build_branches(
        TaskContext(network, family, info, options), ()))
    model.make_checkpoint().read(meta["checkpoint_path"]).expect_partial()
    batches, alignment = load_split(network, info, meta, str(data_dir), "val", crop=(33, 33))
    predict = decoder_path(meta["checkpoint_path"], network, family, info, record, alignment,
                           batches[0][0])
    counts = []
    for images, targets in batches:
        want = model.forward(images, training=False)[DECODER_OUTPUT]
        want = tf.image.resize(tf.cast(want, tf.float32), tf.shape(images)[1:3])
        np.testing.assert_allclose(predict(images).numpy(), want.numpy(), atol=1e-5)
        counts.append(image_iou_counts(targets["semantic"][0].numpy(),
                                       tf.argmax(want, -1)[0].numpy(), info.num_classes,
                                       info.ignore_label))
    assert abs(got - float(miou_from_counts(np.sum(counts, axis=0)))) < 1e-6
    # ... and not by luck: an untrained 1x1 conv gives other logits.
    fresh = build_branches(TaskContext(network, family, info, options), ()).heads[0]
    feats = {"encoder": network.get_layer("encoder").output}
    untrained = keras.Model(network.inputs, fresh(feats)[DECODER_OUTPUT])(batches[0][0])
    trained = model.forward(batches[0][0], training=False)[DECODER_OUTPUT]
    assert not np.allclose(untrained.numpy(), trained.numpy(), atol=1e-3)

    plain, _ = _train(tmp_path, data_dir, autoencoder["run"], 1, name="plain", label_decoder=None)
    with pytest.raises(ValueError, match="not trained with --label_decoder"):
        evaluate(EvalOptions(checkpoint_dir=str(plain), dataset_dir=str(data_dir),
                             bootstrap_samples=0, num_vis_examples=0,
                             label_decoder_path_miou=True), printer=lambda s: None)


def test_tensorboard_shows_the_decoder_path_beside_the_prediction():
    """The overlay image gains one panel per training-only label map, upsampled from the
    head's own resolution to the input's."""
    from deeplab_ext.run.trainer import overlay_fn

    x = tf.zeros([2, 16, 20, 3])
    y = {"semantic": tf.zeros([2, 16, 20], tf.int32)}
    decoder = tf.one_hot(tf.fill([2, 8, 10], 2), INFO.num_classes)  # class 2 everywhere
    outputs = {"semantic": tf.one_hot(tf.ones([2, 16, 20], tf.int32), INFO.num_classes),
               "label_decoder_semantic": decoder}
    plain = overlay_fn(INFO)(x, y, outputs)["overlay"]
    shown = overlay_fn(INFO, label_maps=("label_decoder_semantic",))(x, y, outputs)["overlay"]
    assert plain.shape == (2, 16, 60, 3) and shown.shape == (2, 16, 80, 3)
    np.testing.assert_array_equal(shown[:, :, :60], plain)
    colours = np.unique(shown[:, :, 60:].numpy().reshape(-1, 3), axis=0)
    assert len(colours) == 1 and not np.array_equal(colours[0], plain[0, 0, 40].numpy())


def test_composes_with_uncertainty_weighting_mixed_precision_and_a_strategy(
        autoencoder, data_dir, tmp_path):
    """The decoder path as one more task of the uncertainty weighting, under
    mixed_float16 and a MirroredStrategy (one CPU replica here; tests/
    test_mtl_distributed.py covers two): it trains, logs its own sigma, stays finite."""
    try:
        _, result = _train(tmp_path, data_dir, autoencoder["run"], 2, label_decoder_as_task=True,
                           loss_weighting="uncertainty", mixed_precision="mixed_float16",
                           distribution_strategy="mirrored")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    logs = result.logs
    assert {"label_decoder_loss", "semantic_loss", "tags_loss"} <= set(logs), sorted(logs)
    assert any(k.startswith("label_decoder") and "sigma" in k for k in logs), sorted(logs)
    assert all(np.isfinite(float(v)) for v in logs.values())
