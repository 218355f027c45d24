"""Gradient methods on a DeepLab network: the representation cut and the trainer flags.

The cut check: a method whose coefficients are all ones must give exactly the fixed
weighting's update, in parameter mode (which variables are shared is read correctly) and
in representation mode over DeepLab's ``decoder_skip`` + ``encoder`` (every task's
gradient to the shared weights passes through them; a missed path would change the
update), and over the nested ``low_level`` + ``encoder`` (the backbone feeds both).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import tiny_train_options
from tf_mtl.model import MultiTaskModel
from tf_mtl.weighting import GradientWeighting


class _Ones(GradientWeighting):
    """sum_i g_i: the equal-weight update, through the gradient-method step."""

    def coefficients(self, k, losses, step):
        return tf.ones([len(self.task_names)]), {}


def _step_delta(network, tasks, weighting, start, batch):
    network.set_weights(start)
    model = MultiTaskModel(network, tasks, weighting)
    model.compile(optimizer=keras.optimizers.SGD(0.1), run_eagerly=True)  # no trace: faster
    model.train_on_batch(*batch)
    return [a - b for a, b in zip(network.get_weights(), start, strict=True)]


def test_rep_grad_cut_of_deeplab_gives_the_equal_weight_update(tmp_path):
    from deeplab_ext.data.datasets import get_dataset_info
    from deeplab_ext.models import build_network
    from deeplab_ext.run.trainer import build_multitask_model, model_config_for

    # The tiny network, not the suite's micro one: its layer 4 (two blocks in the stride-4
    # stage) has the residual add that makes low_level alone no cut (checked below).
    options = tiny_train_options(tmp_path, tmp_path, loss_weighting="fixed",
                                 model_variant="deeplabv3plus_mobilenetv2_tiny_mt")
    info = get_dataset_info(options.dataset)
    family, cfg = model_config_for(options, info)
    keras.utils.set_random_seed(0)
    network = build_network(cfg, input_shape=(33, 33, 3))
    tasks = build_multitask_model(network, family, info, options).tasks
    assert family.shared_features == ("decoder_skip", "encoder")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (2, 33, 33, 3)).astype(np.float32)
    y = {"semantic": rng.integers(0, info.num_classes, (2, 33, 33)).astype(np.int32),
         "tags": (rng.random((2, info.num_tags)) < 0.5).astype(np.float32)}
    y = {t.target_key: y[t.target_key] for t in tasks}
    start = network.get_weights()
    from tf_mtl.weighting import FixedWeighting

    ref = _step_delta(network, tasks, FixedWeighting(tasks), start, (x, y))
    scale = max(float(np.abs(b).max()) for b in ref)
    for w in (_Ones(tasks), _Ones(tasks, rep_grad=True, rep_features=family.shared_features),
              _Ones(tasks, rep_grad=True, rep_features=("low_level", "encoder"))):
        got = _step_delta(network, tasks, w, start, (x, y))
        # float32 sums in another order: differences relative to the largest change
        worst = max(float(np.abs(a - b).max()) for a, b in zip(got, ref, strict=True))
        assert worst < 1e-5 * scale, (w.rep_grad, worst, scale)
    # not a cut (the residual add of MobileNetV2's layer 4 bypasses low_level): the
    # update changes, so the check can fail
    miss = _step_delta(network, tasks, _Ones(tasks, rep_grad=True, rep_features=("low_level",)),
                       start, (x, y))
    assert max(float(np.abs(a - b).max()) for a, b in zip(miss, ref, strict=True)) > 1e-3 * scale


def test_train_with_a_gradient_method_logs_weights_and_cosines(tmp_path, shapes_data):
    """tools.train's path (flags -> trainer -> the family's shared features), graph mode."""
    method = "mgda_ub"
    from deeplab_ext.run.trainer import train
    from tf_mtl import tbevents

    logdir = tmp_path / method
    lines: list[str] = []
    train(tiny_train_options(logdir, shapes_data, steps=2, loss_weighting=method,
                             save_summaries_steps=1), printer=lines.append)
    scalars = tbevents.read_scalars(logdir / "train")
    cos = dict(scalars["train/cos_semantic_tags"])
    assert sorted(cos) == [0, 1] and all(-1 <= c <= 1 for c in cos.values())
    weights = dict(scalars["train/semantic_weight"])
    assert all(np.isfinite(v) for v in weights.values())
    assert any(f"weighting={method}" in line for line in lines)


def test_a_bad_weighting_option_is_refused_before_anything_is_written(tmp_path, shapes_data):
    from deeplab_ext.run.trainer import train

    logdir = tmp_path / "run"
    with pytest.raises(ValueError, match="'alpha' is not an option of --loss_weighting=cagrad; "
                                         "its options: .*calpha=0.5"):
        train(tiny_train_options(logdir, shapes_data, loss_weighting="cagrad",
                                 weighting_options="alpha=1"), printer=lambda line: None)
    assert not logdir.exists()
