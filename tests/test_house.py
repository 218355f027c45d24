"""The house's hooks, used from a test file alone: a model family, a training-only branch.

This module registers a toy model family (``toy``, variant ``toy_segmenter_mt``) and a
training-only branch (``toy_aux``: a head on the tapped ``encoder`` feature with its own
task) with nothing edited elsewhere. The tools find them with ``--extra_modules`` at
training time and through the run directory afterwards.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_ext.models import ModelConfig, ModelFamily, build_network, register_family
from deeplab_ext.tasks import Branch, BranchSpec, TaskContext, register_branch
from tests.conftest import predict_from_export_and_run, run_tool
from tf_mtl.branches import TrainingHead
from tf_mtl.losses import SoftmaxCrossEntropyWithIgnore
from tf_mtl.tasks import Task
from tf_mtl.testing import build_toy_network

MODULE = "tests.test_house"
VARIANT = "toy_segmenter_mt"


# ------------------------------------------------------------------ the toy family
@dataclasses.dataclass
class ToyConfig(ModelConfig):
    name: str = VARIANT
    num_classes: int = 5
    num_tags: int = 4
    width: int = 8


def build_toy(config: ToyConfig, input_shape: tuple) -> keras.Model:
    del input_shape  # the toy takes any size
    return build_toy_network(config.num_classes, config.num_tags, config.width)


register_family(ModelFamily(
    name="toy", config_class=ToyConfig, build=build_toy,
    variable_groups={"trunk": "backbone_", "context": "aspp", "decoder": "decoder",
                     "logits": "logits", "tag_head": "tag_head"},
    refit_groups=("trunk", "context", "tag_head"), feature_names=("low_level", "encoder"),
), variants={VARIANT: ToyConfig()})


# ------------------------------------------------------- the training-only branch
class AuxSegHead(TrainingHead):
    """1x1 conv on the tapped encoder feature, upsampled: an auxiliary segmentation."""

    def __init__(self, num_classes: int, **kwargs):
        super().__init__(features=("encoder",), **kwargs)
        self.conv = keras.layers.Conv2D(num_classes, 1, name="aux_logits")

    def call(self, features, training=None):
        x = self.conv(features["encoder"])
        return {"aux_semantic": x}


def _upsampled_ce(info):
    ce = SoftmaxCrossEntropyWithIgnore(info.num_classes, info.ignore_label)

    def loss(y_true, y_pred):
        size = tf.shape(y_true)[1:3]
        return ce(y_true, tf.image.resize(y_pred, size, method="bilinear"))

    return loss


def toy_aux(ctx: TaskContext) -> Branch:
    head = AuxSegHead(ctx.info.num_classes, name="aux_head")
    task = Task("aux", _upsampled_ce(ctx.info), output="aux_semantic", target="semantic",
                weight=0.5)
    return Branch(heads=[head], tasks=[task], targets=("semantic",))


register_branch(BranchSpec("toy_aux", toy_aux))


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> pathlib.Path:
    from deeplab_ext.data import synthetic

    out = tmp_path_factory.mktemp("shapes")
    synthetic.write_tfrecords(out, 4, 2, size=32, seed=0)  # 4 train images: 2 steps an epoch
    return out


def _train_args(logdir, data_dir, *extra) -> list[str]:
    return [f"--extra_modules={MODULE}", f"--train_logdir={logdir}", f"--dataset_dir={data_dir}",
            "--dataset=shapes_evidence", f"--model_variant={VARIANT}",
            "--train_crop_size=33,33", "--train_batch_size=2", "--save_summaries_images=false",
            "--seed=0", *extra]


# ------------------------------------------------------------------------ family
def test_toy_family_runs_through_every_tool(tmp_path, data_dir):
    logdir = tmp_path / "run"
    proc = run_tool("train", *_train_args(logdir, data_dir, "--training_number_of_steps=3",
                                          "--save_interval_steps=3"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((logdir / "model_config.json").read_text())
    assert (meta["family"], meta["family_module"], meta["model"]["name"]) == (
        "toy", MODULE, VARIANT)
    assert meta["model"]["num_tags"] == 8  # shapes_evidence's tags, not the variant's 4

    # Later tools get no --extra_modules: the run directory names the module.
    proc = run_tool("eval", f"--checkpoint_dir={logdir}", f"--dataset_dir={data_dir}",
                    f"--eval_logdir={tmp_path / 'eval'}", "--evidence_modes=none,prune,bp_l2",
                    "--evidence_steps=1", "--bootstrap_samples=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    assert results["model"] == VARIANT and set(results["modes"]) == {"none", "prune", "bp_l2"}
    assert all(0 <= r["miou"] <= 1 for r in results["modes"].values())

    export = tmp_path / "export"
    proc = run_tool("export_model", f"--checkpoint_dir={logdir}", f"--export_path={export}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((export / "assets" / "deeplab_export.json").read_text())["family"] == "toy"

    image = tmp_path / "image.png"
    cv2.imwrite(str(image), np.full((32, 32, 3), 90, np.uint8))
    # The export and the checkpoint are served by the same functions: the same answers.
    reports = predict_from_export_and_run(export, logdir, image, tmp_path, "--tags=disk_h",
                                          "--evidence_steps=2")
    assert reports[0]["tag_probabilities_after"]["disk_h"] > \
        reports[0]["tag_probabilities_before"]["disk_h"]


# --------------------------------------------------------- training-only branch
def test_training_head_taps_the_same_forward_pass():
    """BatchNorm moving statistics move once per step with a head on a tapped feature."""
    from tf_mtl.model import MultiTaskModel

    keras.utils.set_random_seed(0)
    net = build_network(VARIANT)
    head = AuxSegHead(5, name="aux_head")
    tasks = [Task("semantic", keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
             Task("aux", lambda y, p: tf.reduce_mean(tf.square(p)), output="aux_semantic",
                  target="semantic")]
    model = MultiTaskModel(net, tasks, heads=[head])
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    x = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    y = {"semantic": np.zeros((4, 16, 16), "int32")}
    bn = net.get_layer("backbone_bn")
    bn_input = keras.Model(net.input, bn.input)(x).numpy()  # before the step's update
    mean0 = bn.moving_mean.numpy().copy()
    model.train_on_batch(x, y)
    once = bn.momentum * mean0 + (1 - bn.momentum) * bn_input.mean(axis=(0, 1, 2))
    twice = bn.momentum * once + (1 - bn.momentum) * bn_input.mean(axis=(0, 1, 2))
    assert np.abs(once - twice).max() > 1e-4  # the check can tell one update from two
    np.testing.assert_allclose(bn.moving_mean.numpy(), once, rtol=1e-5, atol=1e-7)
    # The head is the model's, not the network's; its outputs joined the step's losses.
    head_vars = {id(v) for v in head.trainable_variables}
    assert head_vars and not head_vars & {id(v) for v in net.variables}
    assert head_vars <= {id(v) for v in model.trainable_variables}


def _built_head() -> AuxSegHead:
    head = AuxSegHead(9, name="aux_head")  # shapes_evidence's 9 classes
    head({"encoder": keras.Input((None, None, 16))})  # the toy encoder's 16 channels
    return head


def _head_values(path) -> list[np.ndarray]:
    """The head's variables as the checkpoint's ``heads`` entry holds them."""
    head = _built_head()
    tf.train.Checkpoint(heads=[head]).restore(str(path)).expect_partial() \
        .assert_existing_objects_matched()
    return [v.numpy() for v in head.weights]


def test_training_branch_checkpointed_resumed_and_not_exported(tmp_path, data_dir):
    from deeplab_ext.run.export import export_saved_model
    from deeplab_ext.run.options import TrainOptions
    from deeplab_ext.run.rundir import restore_network
    from deeplab_ext.run.trainer import train

    logdir = tmp_path / "run"
    base = dict(train_logdir=str(logdir), dataset_dir=str(data_dir), model_variant=VARIANT,
                train_crop_size=(33, 33), train_batch_size=2, save_interval_steps=3,
                save_summaries_images=False, training_branches=("toy_aux",), seed=0,
                optimizer="adam", base_learning_rate=0.01)
    lines: list[str] = []
    first = train(TrainOptions(training_number_of_steps=3, **base), printer=lines.append)
    assert first.final_step == 3 and "aux_loss" in first.logs
    saved = _head_values(logdir / "ckpt-3")
    fresh = [v.numpy() for v in _built_head().weights]
    assert not np.allclose(saved[0], fresh[0])  # trained, so the comparison below can fail
    # Resume: its first step runs at a zero learning rate (a slow start at 0) and is
    # checkpointed, so the head there holds exactly the restored values (a head
    # re-initialised on resume would hold fresh ones).
    second = train(TrainOptions(**{**base, "save_interval_steps": 1}, training_number_of_steps=5,
                                slow_start_step=4, slow_start_learning_rate=0.0),
                   printer=lines.append)
    assert second.resumed_from == 3 and second.final_step == 5
    assert any("Resuming from" in line for line in lines)
    for a, b in zip(saved, _head_values(logdir / "ckpt-4"), strict=True):
        np.testing.assert_array_equal(a, b)

    network, info, _ = restore_network(logdir)
    export = export_saved_model(network, info, tmp_path / "export")
    loaded = tf.saved_model.load(str(export))
    assert len(loaded.model_variables) == len(network.variables)
    exported = {v.name for v in loaded.model_variables}
    assert not any("aux" in name for name in exported), exported


# ----------------------------------------------------------------------------- DWA
def test_train_dwa_moves_the_task_weights_after_two_data_epochs(tmp_path, data_dir):
    from tf_mtl import tbevents

    logdir = tmp_path / "dwa"
    proc = run_tool("train", *_train_args(logdir, data_dir, "--loss_weighting=dwa",
                                          "--training_number_of_steps=8",
                                          "--save_interval_steps=8", "--save_summaries_steps=1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "window_steps=2 (steps of one pass" in proc.stdout  # 4 examples, batch 2
    scalars = tbevents.read_scalars(logdir / "train")
    weights = {t: dict(scalars[f"train/{t}_weight"]) for t in ("semantic", "tags")}
    for step in range(8):
        pair = (weights["semantic"][step], weights["tags"][step])
        if step < 4:  # two windows have not completed yet
            assert pair == (1.0, 1.0), (step, pair)
        else:
            assert pair != (1.0, 1.0), (step, pair)
            assert sum(pair) == pytest.approx(2.0, abs=1e-5)  # K * softmax
    assert weights["semantic"][4] != weights["semantic"][6]  # and they keep moving


# --------------------------------------------------------------------- determinism
def test_deterministic_training_repeats_bit_for_bit(tmp_path, data_dir):
    """Two runs of the same --deterministic command (no --seed: it sets one) give the
    same weights, bit for bit (the same graph on the same inputs, so exact equality is
    the claim)."""
    values = []
    for run in ("a", "b"):
        logdir = tmp_path / run
        args = [a for a in _train_args(logdir, data_dir) if a != "--seed=0"]
        proc = run_tool("train", *args, "--deterministic", "--training_number_of_steps=4",
                        "--save_interval_steps=4", "--optimizer=adam",
                        "--base_learning_rate=0.01")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "--deterministic: op determinism on, seed 0" in proc.stdout
        reader = tf.train.load_checkpoint(str(logdir / "ckpt-4"))
        values.append({k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
                       if k != "_CHECKPOINTABLE_OBJECT_GRAPH"})
    assert values[0].keys() == values[1].keys() and len(values[0]) > 10
    for key in values[0]:
        np.testing.assert_array_equal(values[0][key], values[1][key], err_msg=key)


def test_flag_choices_are_the_implementing_modules_lists():
    """Each enum flag offers exactly what its implementation accepts: the lists are
    imported from where the choice is made, not copied."""
    import dataclasses

    from deeplab_ext.models.tag_heads import TAG_HEADS
    from deeplab_ext.run import options as o
    from tf_mtl import (
        aux_modules,
        distribute,
        functional_optimizers,
        precision,
        schedules,
        weighting,
    )
    from tf_mtl.segmentation_tags import SEGMENTATION_TAG_POOLINGS

    def choices(cls, name):
        return next(f for f in dataclasses.fields(cls) if f.name == name).metadata["choices"]

    assert choices(o.TrainOptions, "loss_weighting") is weighting.base.WEIGHTINGS_REGISTRY
    assert choices(o.TrainOptions, "mixed_precision") is precision.POLICIES
    assert choices(o.TrainOptions, "distribution_strategy") is distribute.STRATEGIES
    assert choices(o.TrainOptions, "learning_policy") is schedules.LEARNING_POLICIES
    assert choices(o.TrainOptions, "aux_module_adaptor") is aux_modules.ADAPTORS
    assert choices(o.TrainOptions, "aux_module_aggregator") is aux_modules.AGGREGATORS
    assert choices(o.EvidenceOptions, "optimizer") is functional_optimizers.OPTIMIZERS
    assert choices(o.TrainOptions, "tag_head") is TAG_HEADS
    assert choices(o.ImportOptions, "seg_tag_pooling") is SEGMENTATION_TAG_POOLINGS
    # Every name offered is one the implementation builds.
    from tf_mtl.losses import TagBCE
    from tf_mtl.tasks import Task

    for name in weighting.WEIGHTINGS:
        assert weighting.get_weighting(name, [Task("tags", TagBCE())]) is not None
    args = {"poly": {"training_number_of_steps": 10}, "step": {}}
    for name in schedules.LEARNING_POLICIES:
        assert schedules.get_learning_rate_schedule(name, 0.1, **args[name])(0) > 0
