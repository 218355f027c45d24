"""Auxiliary modules and deep supervision (issue 17), on the toy family of
tests/test_house.py: the modules' exact gradient contribution, deep supervision's 0.1 x
stage losses, resume and export."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import tensorflow as tf

import tests.test_house  # noqa: F401  (registers the toy family)
from deeplab_ext.data import input_pipeline, synthetic
from deeplab_ext.data.datasets import get_dataset_info

INFO = get_dataset_info("shapes_evidence")
TAPS = ("low_level", "encoder")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("shapes")
    synthetic.write_tfrecords(out, 8, 3, size=48, seed=0)
    return out


def _setup(data_dir, **kw):
    """A toy network, the plain model and the model with the branch, one fixed batch."""
    from deeplab_ext.models import build_network
    from deeplab_ext.models.registry import family_of
    from deeplab_ext.run.options import TrainOptions
    from deeplab_ext.run.trainer import build_multitask_model
    from deeplab_ext.tasks import Branch, TaskContext, build_branches

    tf.keras.utils.set_random_seed(0)
    network = build_network("toy_segmenter_mt", num_classes=INFO.num_classes,
                            num_tags=INFO.num_tags)
    family = family_of(network)
    options = TrainOptions(train_logdir="unused", dataset_dir=str(data_dir),
                           model_variant="toy_segmenter_mt", loss_weighting="fixed",
                           aux_module_taps=TAPS, **kw)
    branch = build_branches(TaskContext(network, family, INFO, options), ())
    plain = build_multitask_model(network, family, INFO, options, branch=Branch())
    full = build_multitask_model(network, family, INFO, options, branch=branch)
    ds = input_pipeline.make_dataset(INFO, str(data_dir), "train", crop_size=(33, 33),
                                     batch_size=2, is_training=True, seed=0)
    x, y = next(iter(ds))
    return network, branch, plain, full, x, y


def _total(model, x, y):
    total, _, _ = model.compute_total_loss(x, y, model.forward(x, training=True), True)
    return total


@pytest.mark.parametrize("aggregator", ["sum", "concat"])
def test_modules_add_exactly_their_own_gradient_to_the_shared_layers(data_dir, aggregator):
    from tf_mtl.graph import feature_model
    from tf_mtl.losses import label_map_loss

    network, branch, plain, full, x, y = _setup(
        data_dir, aux_modules=("semantic",), aux_module_aggregator=aggregator,
        aux_module_adaptor="sep3x3_d3", aux_module_weight=0.7)
    (module,) = branch.heads
    shared = network.trainable_variables

    def grads(fn):
        with tf.GradientTape() as tape:
            loss = fn()
        return [tf.zeros_like(v) if g is None else g
                for g, v in zip(tape.gradient(loss, shared), shared, strict=True)]

    g_full = grads(lambda: _total(full, x, y))
    g_plain = grads(lambda: _total(plain, x, y))
    taps = feature_model(network, TAPS)  # by hand: the module on the taps, its loss

    def by_hand():
        pred = module(taps(x, training=True), training=True)["aux_module_semantic"]
        return 0.7 * label_map_loss(INFO.num_classes, INFO.ignore_label)(y["semantic"], pred)

    g_module = grads(by_hand)
    assert any(float(tf.reduce_max(tf.abs(g))) > 0 for g in g_module)
    # Within float32 rounding of the totals: 1e-5 of the largest gradient element (a conv
    # bias before BatchNorm has a true gradient of 0, i.e. rounding noise only).
    atol = 1e-5 * max(float(tf.reduce_max(tf.abs(g))) for g in g_full)
    for a, b, c, v in zip(g_full, g_plain, g_module, shared, strict=True):
        np.testing.assert_allclose((a - b).numpy(), c.numpy(), rtol=1e-3, atol=atol,
                                   err_msg=v.path)
    # ... and the check can fail: half the modules' weight is visibly not the difference.
    assert any(not np.allclose((a - b).numpy(), 0.5 * c.numpy(), rtol=1e-3, atol=atol)
               for a, b, c in zip(g_full, g_plain, g_module, strict=True))


def test_deep_supervision_adds_a_tenth_of_each_stage_loss(data_dir):
    from tf_mtl.losses import label_map_loss

    network, branch, plain, full, x, y = _setup(data_dir, deep_supervision=("semantic",))
    (heads,) = branch.heads
    outputs = full.forward(x, training=False)
    stage = [label_map_loss(INFO.num_classes, INFO.ignore_label)(y["semantic"], outputs[heads.output_name(f)]) for f in TAPS]
    with_ds, _, _ = full.compute_total_loss(x, y, outputs, False)
    without, _, _ = plain.compute_total_loss(x, y, plain.forward(x, training=False), False)
    np.testing.assert_allclose(float(with_ds - without), 0.1 * float(sum(stage)), rtol=1e-5)
    assert all(float(s) > 0 for s in stage)


def test_modules_resume_and_the_export_is_the_plain_model(data_dir, tmp_path):
    from deeplab_ext.models import build_network
    from deeplab_ext.run.export import export_saved_model
    from deeplab_ext.run.options import TrainOptions
    from deeplab_ext.run.rundir import restore_network
    from deeplab_ext.run.trainer import train

    network, branch, _, full, x, y = _setup(
        data_dir, aux_modules=("semantic", "edges"), deep_supervision=("semantic",),
        aux_tasks=("edges",), aux_module_aggregator="concat", aux_feature="encoder")
    full.fit(input_pipeline.make_dataset(INFO, str(data_dir), "train", crop_size=(33, 33),
                                         batch_size=2, is_training=True, seed=0,
                                         targets=("semantic", "tags", "edges")),
             steps_per_epoch=2, epochs=1, verbose=0)
    path = full.make_checkpoint().write(str(tmp_path / "ckpt"))
    _, branch2, _, full2, _, _ = _setup(
        data_dir, aux_modules=("semantic", "edges"), deep_supervision=("semantic",),
        aux_tasks=("edges",), aux_module_aggregator="concat", aux_feature="encoder")
    full2.make_checkpoint().read(path).assert_existing_objects_matched()
    for h1, h2 in zip(branch.heads, branch2.heads, strict=True):
        assert h1.weights and len(h1.weights) == len(h2.weights)
        for a, b in zip(h1.weights, h2.weights, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)

    run = tmp_path / "run"
    train(TrainOptions(train_logdir=str(run), dataset_dir=str(data_dir),
                       model_variant="toy_segmenter_mt", train_crop_size=(33, 33),
                       train_batch_size=2, training_number_of_steps=2, save_interval_steps=2,
                       save_summaries_images=False, seed=0, aux_module_taps=TAPS,
                       aux_modules=("semantic", "edges"), deep_supervision=("semantic",),
                       aux_tasks=("edges", "denoise"), aux_feature="encoder"),
          printer=lambda s: None)
    restored, info, _ = restore_network(run)
    plain = build_network("toy_segmenter_mt", num_classes=info.num_classes,
                          num_tags=info.num_tags)
    assert [v.path for v in restored.variables] == [v.path for v in plain.variables]
    loaded = tf.saved_model.load(str(export_saved_model(restored, info, tmp_path / "export")))
    assert len(loaded.model_variables) == len(plain.variables)
    out = loaded.signatures["serving_default"](images=tf.zeros([1, 33, 33, 3]))
    want = restored(tf.zeros([1, 33, 33, 3]), training=False)
    np.testing.assert_allclose(out["tag_probabilities"].numpy(),
                               tf.sigmoid(want["tags"]).numpy(), atol=1e-6)


def test_a_head_whose_layers_a_checkpoint_cannot_reach_is_refused():
    """Layers in a list attribute train but are not checkpointed: make_checkpoint says so
    instead of letting a resume restart them silently."""
    import keras

    from tf_mtl.branches import TrainingHead
    from tf_mtl.model import MultiTaskModel
    from tf_mtl.tasks import Task
    from tf_mtl.testing import build_toy_network

    class ListHead(TrainingHead):
        def __init__(self, **kw):
            super().__init__(features=("encoder",), **kw)
            self.convs = [keras.layers.Conv2D(2, 1, name="hidden")]

        def call(self, features, training=None):
            return {"list_out": self.convs[0](features["encoder"])}

    network = build_toy_network(5, 4, 8)
    model = MultiTaskModel(network, [Task("semantic", lambda y, p: tf.reduce_mean(p))],
                           heads=[ListHead(name="list_head")])
    model.compile(optimizer="adam")
    with pytest.raises(ValueError, match="would not be checkpointed.*list_head/hidden"):
        model.make_checkpoint()


def test_the_step_logs_the_gradient_norm_reaching_the_network(data_dir):
    """network_grad_norm (TensorBoard: how hard the losses pull on the shared layers, with
    and without modules) is the global norm of the gradient a tape gives by hand."""
    network, _, plain, full, x, y = _setup(data_dir, aux_modules=("semantic",))
    norms = {}
    for name, model in (("plain", plain), ("modules", full)):
        with tf.GradientTape() as tape:
            total = _total(model, x, y)
        grads = [g for g in tape.gradient(total, network.trainable_variables) if g is not None]
        want = float(tf.linalg.global_norm(grads))
        logs = model.train_step((x, y))
        norms[name] = float(logs["network_grad_norm"])
        assert norms[name] == pytest.approx(want, rel=1e-4), name
    assert norms["modules"] != pytest.approx(norms["plain"], rel=1e-3)
