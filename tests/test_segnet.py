"""SegNet and MTAN (issue 18): unpooling by the recorded argmax, MTAN's attention, the
class and box targets, and both families through train -> export -> a fresh process."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import textwrap

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_ext.data import input_pipeline, synthetic
from deeplab_ext.data.datasets import get_dataset_info
from deeplab_ext.data.object_targets import largest_object
from deeplab_ext.models import build_network, variable_groups
from deeplab_ext.models.info import ModelInfoOptions, model_info
from deeplab_ext.models.segnet.layers import MaxPoolWithArgmax, MaxUnpool
from deeplab_ext.run.evaluation import evaluate
from deeplab_ext.run.export import export_checkpoint
from deeplab_ext.run.options import EvalOptions, ExportOptions
from deeplab_ext.run.rundir import restore_network
from deeplab_ext.run.trainer import train
from deeplab_ext.tasks import TaskContext, build_tasks
from tests.conftest import predict_from_export_and_run, run_tool, tiny_train_options, tool_env
from tf_mtl.losses import box_mse, image_class_ce
from tf_mtl.metrics import box_iou

INFO = get_dataset_info("shapes_evidence")
ATOL = 1e-5


# ------------------------------------------------------------ pooling / unpooling
def _numpy_pool_unpool(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2x2 / 2 SAME max pool (first maximum in row-major window order wins) and the
    unpooled map with each maximum back at its position, zeros elsewhere."""
    b, h, w, c = x.shape
    ph, pw = (h + 1) // 2, (w + 1) // 2
    pooled = np.zeros((b, ph, pw, c), x.dtype)
    unpooled = np.zeros_like(x)
    for n in range(b):
        for i in range(ph):
            for j in range(pw):
                for k in range(c):
                    window = [(y, z) for y in (2 * i, 2 * i + 1) for z in (2 * j, 2 * j + 1)
                              if y < h and z < w]
                    y, z = max(window, key=lambda p: (x[n, p[0], p[1], k], -window.index(p)))
                    pooled[n, i, j, k] = x[n, y, z, k]
                    unpooled[n, y, z, k] = x[n, y, z, k]
    return pooled, unpooled


@pytest.mark.parametrize("shape", [(2, 5, 7, 3), (1, 4, 6, 2), (3, 1, 3, 1)])
def test_unpooling_puts_each_value_back_at_its_argmax(shape):
    rng = np.random.default_rng(0)
    # Few distinct values: many windows hold ties; +1 keeps every maximum non-zero.
    x = rng.integers(0, 3, size=shape).astype(np.float32) + 1.0
    pooled, argmax = MaxPoolWithArgmax()(x)
    unpooled = MaxUnpool()([pooled, argmax, x])
    ref_pooled, ref_unpooled = _numpy_pool_unpool(x)
    np.testing.assert_array_equal(pooled.numpy(), ref_pooled)  # values are copied, not computed
    np.testing.assert_array_equal(unpooled.numpy(), ref_unpooled)
    assert unpooled.shape == x.shape
    # The gradient of the unpooled map reaches the pooled values one to one.
    with tf.GradientTape() as tape:
        p = tf.constant(pooled)
        tape.watch(p)
        out = MaxUnpool()([p, argmax, x])
        s = tf.reduce_sum(out * tf.constant(ref_unpooled))
    np.testing.assert_array_equal(tape.gradient(s, p).numpy(), ref_pooled)


# --------------------------------------------------------------------------- MTAN
@pytest.fixture(scope="module")
def mtan():
    return build_network("mtan_tiny_decoder_attention", num_classes=INFO.num_classes,
                         num_tags=INFO.num_tags)


def test_mtan_masks_in_open_unit_interval_one_set_per_task(mtan):
    tasks = mtan.model_config.head_tasks()
    assert tasks == ("semantic", "tags", "class", "box")
    blocks = len(mtan.model_config.encoder_channels)
    names = [layer.name for layer in mtan.layers if type(layer).__name__ == "AttentionMask"]
    expected = [f"attention_{t}_encoder{i + 1}" for t in tasks for i in range(blocks)]
    expected += [f"attention_semantic_decoder{i + 1}" for i in range(blocks)]
    assert sorted(names) == sorted(expected)
    masks = keras.Model(mtan.input, {n: mtan.get_layer(n).output for n in names})
    images = np.random.default_rng(1).uniform(0, 255, (2, 33, 33, 3)).astype(np.float32)
    for training in (False, True):
        for name, m in masks(images, training=training).items():
            m = m.numpy()
            assert m.min() > 0.0 and m.max() < 1.0, name
            assert m.shape[-1] == mtan.get_layer(name).channels


def _attention_vars(network, task: str) -> list:
    return [v for layer in network.layers if layer.name.startswith(f"attention_{task}_")
            for v in layer.trainable_weights]


@pytest.mark.parametrize("task", ["class", "box", "tags", "semantic"])
def test_a_task_loss_reaches_only_its_own_attention(mtan, task):
    images = np.random.default_rng(2).uniform(0, 255, (2, 33, 33, 3)).astype(np.float32)
    others = [t for t in mtan.model_config.head_tasks() if t != task]
    own, foreign = _attention_vars(mtan, task), [v for t in others
                                                 for v in _attention_vars(mtan, t)]
    assert own and foreign
    with tf.GradientTape() as tape:
        out = mtan(images, training=True)
        loss = tf.reduce_sum(tf.square(out[task]))
    grads = tape.gradient(loss, own + foreign)
    assert all(g is None for g in grads[len(own):])
    assert sum(float(tf.reduce_sum(tf.abs(g))) for g in grads[:len(own)] if g is not None) > 0
    # The shared encoder serves every task.
    shared = variable_groups(mtan)["encoder"]
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(mtan(images, training=True)[task]))
    assert all(g is not None for g in tape.gradient(loss, shared))


def test_segnet_without_attention_and_its_groups():
    net = build_network("segnet_tiny_3task", num_classes=5, num_tags=3)
    groups = variable_groups(net)
    assert groups["attention"] == [] and groups["class_head"] and groups["box_head"]
    out = net(np.zeros((1, 37, 53, 3), np.float32))
    assert out["semantic"].shape == (1, 37, 53, 5) and out["class"].shape == (1, 5)
    box = out["box"].numpy()
    assert box.shape == (1, 4) and 0 < box.min() and box.max() < 1  # sigmoid: fractions
    # No single feature determines every output: the latent refit is refused, by name.
    from deeplab_ext.run.options import EvidenceOptions

    with pytest.raises(ValueError, match=r"the latent mode needs one feature .* model family "
                                         r"'segnet' has none; use bp_l2 / bp_es"):
        EvidenceOptions().refitter(net, get_dataset_info("shapes_evidence"), "latent")


# -------------------------------------------------------------- class / box targets
def test_largest_object_box_follows_flip_and_crop_exactly():
    label = np.zeros((20, 30), np.int32)
    label[2:6, 3:9] = 1      # 24 px of class 1
    label[10:19, 12:17] = 2  # 45 px of class 2: the largest
    label[10:19, 25:29] = 1  # 36 px, class 1, not 8-connected to the first
    cls, box = largest_object(label, [1, 2])
    assert cls == 2 and list(box) == [10, 12, 19, 17]
    cls, box = largest_object(label, [1])
    assert cls == 1 and list(box) == [10, 25, 19, 29]
    ymin, xmin, ymax, xmax = largest_object(label, [1, 2])[1]
    # Flip left-right: x edges mirror about the width.
    _, flipped = largest_object(label[:, ::-1], [1, 2])
    assert list(flipped) == [ymin, 30 - xmax, ymax, 30 - xmin]
    # Crop: edges shift by the offset, and clip at the crop's border.
    _, cropped = largest_object(label[5:17, 10:], [1, 2])
    assert list(cropped) == [ymin - 5, xmin - 10, 17 - 5, xmax - 10]
    assert largest_object(np.zeros((4, 4), np.int32), [1, 2])[0] == -1
    # Two equal regions: the lower class id wins.
    tie = np.zeros((6, 6), np.int32)
    tie[0:2, 0:2], tie[4:6, 4:6] = 3, 2
    assert largest_object(tie, [2, 3])[0] == 2


def test_pipeline_targets_are_those_of_the_augmented_crop(tmp_path):
    synthetic.write_tfrecords(tmp_path, 6, 2, size=48, seed=3)
    ds = input_pipeline.make_dataset(
        INFO, tmp_path, "train", crop_size=(33, 41), batch_size=6, is_training=True, seed=5,
        min_scale_factor=0.5, max_scale_factor=2.0,
        targets=("semantic", "object_class", "object_box"))
    _, y = next(iter(ds))
    present = 0
    for label, cls, box in zip(y["semantic"].numpy(), y["object_class"].numpy(),
                               y["object_box"].numpy(), strict=True):
        ref_cls, ref_box = largest_object(label, INFO.object_class_ids)
        assert cls == ref_cls
        if ref_cls < 0:
            np.testing.assert_array_equal(box, np.zeros(5, np.float32))
            continue
        present += 1
        norm = (ref_box / np.array([33, 41, 33, 41])).astype(np.float32)
        # Pixel edges over the crop size: float32 there, float64 then float32 here.
        np.testing.assert_allclose(box, np.concatenate([[1.0], norm]), rtol=1e-7)
    assert present >= 3


def test_class_and_box_targets_share_one_components_pass():
    """Both targets of one example come from a single numpy_function call (the memo of
    ``compute_targets``), and asking for one alone still works."""
    from deeplab_ext.data.targets import DENSE, compute_targets

    label = tf.constant(np.pad(np.full((4, 5, 1), INFO.object_class_ids[0]), ((2, 3), (1, 2), (0, 0))),
                        tf.int32)
    image = tf.zeros([9, 8, 3])

    def py_funcs(names):
        fn = tf.function(lambda: compute_targets(names, DENSE, image, label, INFO, None, False))
        graph = fn.get_concrete_function().graph
        return fn(), sum(op.type in ("PyFunc", "PyFuncStateless") for op in graph.get_operations())

    both, calls = py_funcs(("object_class", "object_box"))
    assert calls == 1
    np.testing.assert_allclose(both["object_box"], [1, 2 / 9, 1 / 8, 6 / 9, 6 / 8], rtol=1e-7)
    alone, calls = py_funcs(("object_box",))
    assert calls == 1
    np.testing.assert_array_equal(alone["object_box"], both["object_box"])
    assert int(both["object_class"]) == INFO.object_class_ids[0]


def test_class_and_box_losses_skip_images_without_an_object():
    logits = tf.constant([[2.0, 0.0, -1.0], [0.0, 5.0, 0.0]])
    ce = float(image_class_ce(tf.constant([0, -1]), logits))
    assert ce == pytest.approx(float(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=[0], logits=logits[:1])[0]), rel=1e-6)
    targets = tf.constant([[1.0, 0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 0.0, 0.0, 0.0]])
    boxes = tf.constant([[0.2, 0.2, 0.5, 0.4], [0.9, 0.9, 0.9, 0.9]])
    assert float(box_mse(targets, boxes)) == pytest.approx((0.01 + 0 + 0 + 0.04) / 4, rel=1e-5)
    assert float(box_iou(tf.constant([0.0, 0, 1, 1]), tf.constant([0.0, 0, 1, 0.5]))) == 0.5


def test_task_weights_flag_sets_the_study_weights_and_names_bad_tasks():
    import types

    from deeplab_ext.models.registry import family_of

    net = build_network("segnet_tiny_3task", num_classes=INFO.num_classes, num_tags=0)
    opts = types.SimpleNamespace(top_k_percent_pixels=1.0, hard_example_mining_step=0,
                                 tag_loss_weight=1.0, task_weights="semantic=0.7,class=0.1,box=0.2")
    tasks = build_tasks(TaskContext(net, family_of(net), INFO, opts))
    assert {t.name: t.weight for t in tasks} == {"semantic": 0.7, "class": 0.1, "box": 0.2}
    assert {t.name: t.target for t in tasks} == {"semantic": "semantic", "class": "object_class",
                                                 "box": "object_box"}
    with pytest.raises(ValueError, match="--task_weights.*depth"):
        build_tasks(TaskContext(net, family_of(net), INFO, types.SimpleNamespace(
            **{**vars(opts), "task_weights": "depth=1"})))
    with pytest.raises(ValueError, match="task=weight"):
        build_tasks(TaskContext(net, family_of(net), INFO, types.SimpleNamespace(
            **{**vars(opts), "task_weights": "semantic:0.7"})))


def test_model_info_counts_both_families():
    facts = {v: model_info(ModelInfoOptions(model_variant=v, crop_size=(64, 96)))
             for v in ("segnet_tiny_3task", "mtan_tiny")}
    for v, f in facts.items():
        assert f["params"] > 0 and f["macs"] > 0, v
    # MTAN adds attention convs on top of the same SegNet: more of both.
    assert facts["mtan_tiny"]["params"] > facts["segnet_tiny_3task"]["params"]
    assert facts["mtan_tiny"]["macs"] > facts["segnet_tiny_3task"]["macs"]
    assert facts["mtan_tiny"]["family"] == "mtan"


# -------------------------------------------------- train -> export -> fresh process
FRESH_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    images = np.load(sys.argv[1])
    serve = tf.saved_model.load(sys.argv[2]).signatures["serving_default"]
    out = {k: v.numpy() for k, v in serve(images=tf.constant(images)).items()}
    out["project_modules"] = np.array(
        [m for m in sys.modules if m.split(".")[0] in ("deeplab_ext", "tf_mtl", "tools")], str)
    np.savez(sys.argv[3], **out)
""")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("shapes")
    synthetic.write_tfrecords(out, 4, 2, size=32, seed=0)
    return out


@pytest.mark.parametrize("variant", ["segnet_tiny_3task", "mtan_tiny_decoder_attention"])
def test_train_export_round_trip_in_fresh_process(variant, tmp_path, data_dir):
    logdir, export = tmp_path / "run", tmp_path / "export"
    # Train, export and eval in this process (the tools' flag parsing is covered by the
    # DeepLab round trips); what is served is loaded in a fresh one.
    lines: list[str] = []
    train(tiny_train_options(logdir, data_dir, steps=2, model_variant=variant, num_tags=8,
                             optimizer="momentum", base_learning_rate=1e-4,
                             loss_weighting="fixed",
                             task_weights="semantic=0.7,class=0.1,box=0.2"),
          printer=lines.append)
    out = "\n".join(lines)
    assert "class_loss=" in out and "box_loss=" in out
    meta = json.loads((logdir / "model_config.json").read_text())
    assert meta["family"] == variant.split("_")[0]
    export_checkpoint(ExportOptions(checkpoint_dir=str(logdir), export_path=str(export)),
                      printer=lambda line: None)

    # 33x33: on the training grid, so the export serves the network's own answers.
    images = np.random.default_rng(4).uniform(0, 255, (2, 33, 33, 3)).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    env = tool_env()
    env.pop("PYTHONPATH")
    proc = subprocess.run([sys.executable, "-c", FRESH_SCRIPT, str(tmp_path / "images.npy"),
                           str(export), str(tmp_path / "out.npz")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = dict(np.load(tmp_path / "out.npz"))
    assert got["project_modules"].size == 0
    network, _, _ = restore_network(logdir)
    ref = network(images, training=False)
    assert {"class", "box", "tag_probabilities", "semantic_probabilities"} <= set(got)
    np.testing.assert_allclose(got["class"], ref["class"].numpy(), atol=ATOL)
    np.testing.assert_allclose(got["box"], ref["box"].numpy(), atol=ATOL)
    np.testing.assert_allclose(got["semantic_probabilities"],
                               tf.nn.softmax(ref["semantic"]).numpy(), atol=ATOL)

    # tools.eval reports the class and box heads on whole val images: recomputed here.
    evaluate(EvalOptions(checkpoint_dir=str(logdir), dataset_dir=str(data_dir),
                         eval_logdir=str(tmp_path / "eval"), bootstrap_samples=0),
             printer=lambda line: None)
    results = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    hits, ious = [], []
    for x, y in input_pipeline.make_dataset(INFO, data_dir, "val", crop_size=None, batch_size=1,
                                            is_training=False):
        out = network(x, training=False)
        cls, box = largest_object(y["semantic"][0].numpy(), INFO.object_class_ids)
        if cls >= 0:
            h, w = y["semantic"].shape[1:3]
            hits.append(int(np.argmax(out["class"][0])) == cls)
            ious.append(float(box_iou(tf.constant(box / np.array([h, w, h, w])), out["box"][0])))
    assert hits, "the val split should hold objects"
    assert results["class"]["accuracy"] == pytest.approx(np.mean(hits), abs=1e-6)
    assert results["box"]["box_iou"] == pytest.approx(np.mean(ious), abs=1e-5)

    # tools.predict from the export and from the run directory (inputs padded onto the
    # training grid in both; a 40x50 image is off it): the same answers.
    image = tmp_path / "image.png"
    cv2.imwrite(str(image), (images[0, :, :, ::-1]).astype(np.uint8).repeat(2, 0)[:40, :33])
    predict_from_export_and_run(export, logdir, image, tmp_path, "--tags=disk_h",
                                "--evidence_steps=2")


def test_seed_systems_compose_with_mtan(tmp_path, data_dir):
    """MTAN takes the other seed systems unchanged: self-supervised tasks (a head and a
    second pass), auxiliary modules and deep supervision on its stages, DWA."""
    proc = run_tool("train", f"--train_logdir={tmp_path / 'run'}", f"--dataset_dir={data_dir}",
                    "--dataset=shapes_evidence", "--model_variant=mtan_tiny",
                    "--train_crop_size=33,33", "--train_batch_size=2", "--seed=0",
                    "--training_number_of_steps=1", "--save_summaries_images=false",
                    "--aux_tasks=edges,denoise", "--aux_modules=semantic",
                    "--deep_supervision=semantic", "--loss_weighting=dwa")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for log in ("edges_loss=", "denoise_loss=", "aux_module_semantic_loss=",
                "deep_semantic_stride2_loss=", "deep_semantic_stride8_loss=", "class_loss=",
                "box_loss="):
        assert log in proc.stdout, log
    # The family's stages (every pooled block output but MTAN's last) are the taps.
    assert "deep_semantic_stride16_loss" not in proc.stdout
