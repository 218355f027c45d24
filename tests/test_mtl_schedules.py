"""Learning-rate policies, precision policy helpers, strategy registry, Task validation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_mtl.distribute import batch_norm, get_strategy
from tf_mtl.precision import policy_scope, set_policy, wrap_optimizer
from tf_mtl.schedules import PolyLearningRate, StepLearningRate, get_learning_rate_schedule
from tf_mtl.tasks import Task, check_tasks


def test_poly_with_slow_start_matches_original_formula():
    lr = PolyLearningRate(
        0.007,
        training_number_of_steps=1100,
        learning_power=0.9,
        slow_start_step=100,
        slow_start_learning_rate=1e-4,
    )
    steps = np.array([0, 50, 99, 100, 350, 600, 1100, 5000])
    got = np.array([float(lr(s)) for s in steps])
    adjusted = np.clip(steps - 100, 0, 1000)
    poly = 0.007 * (1 - adjusted / 1000) ** 0.9
    expect = np.where(steps < 100, 1e-4, poly)
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-12)
    assert got[-1] == 0.0  # clamped at the end like tf.train.polynomial_decay
    assert float(PolyLearningRate(0.1, 100, end_learning_rate=0.01)(100)) == pytest.approx(0.01)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(lr))
    assert clone.get_config() == lr.get_config()


def test_step_policy_and_registry():
    lr = get_learning_rate_schedule(
        "step",
        0.1,
        learning_rate_decay_step=10,
        learning_rate_decay_factor=0.5,
        slow_start_step=5,
        slow_start_learning_rate=0.001,
    )
    assert isinstance(lr, StepLearningRate)
    got = [float(lr(s)) for s in [0, 4, 5, 14, 15, 25, 35]]
    np.testing.assert_allclose(got, [0.001, 0.001, 0.1, 0.1, 0.05, 0.025, 0.0125], rtol=1e-6)
    opt = keras.optimizers.SGD(lr)
    assert float(opt.learning_rate) == pytest.approx(0.001)
    with pytest.raises(ValueError, match="--learning_policy.*poly"):
        get_learning_rate_schedule("cosine", 0.1)
    with pytest.raises(ValueError, match="--slow_start_step"):
        PolyLearningRate(0.1, training_number_of_steps=10, slow_start_step=10)


def test_precision_helpers():
    with policy_scope("mixed_bfloat16"):
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
        assert keras.layers.Dense(2).compute_dtype == "bfloat16"
    assert keras.mixed_precision.global_policy().name == "float32"
    sgd = keras.optimizers.SGD(0.1)
    wrapped = wrap_optimizer(sgd, "mixed_float16")
    assert isinstance(wrapped, keras.optimizers.LossScaleOptimizer)
    assert wrap_optimizer(wrapped, "mixed_float16") is wrapped
    assert float(wrapped.scale_loss(tf.constant(1.0))) == 2.0**15
    assert wrap_optimizer(sgd, "mixed_bfloat16") is sgd
    with pytest.raises(ValueError, match="--precision.*mixed_float16"):
        set_policy("float16")


def test_strategy_registry_and_sync_bn():
    assert get_strategy("default") is tf.distribute.get_strategy()
    assert get_strategy("one_device").num_replicas_in_sync == 1
    with pytest.raises(ValueError, match="--distribution_strategy.*mirrored"):
        get_strategy("tpu")
    with pytest.raises(ValueError, match="--num_gpus"):
        get_strategy("mirrored", num_gpus=64)
    bn = batch_norm(sync=True, momentum=0.9)
    assert bn.synchronized and bn.get_config()["synchronized"]


def test_task_validation():
    t = Task("semantic", lambda a, b: 0.0)
    assert t.output_key == "semantic" and t.kind == "classification" and t.weight == 1.0
    assert Task("s", lambda a, b: 0.0, output="logits").output_key == "logits"
    with pytest.raises(ValueError, match="kind='depth'"):
        Task("d", lambda a, b: 0.0, kind="depth")
    with pytest.raises(TypeError, match="must be callable"):
        Task("d", "mse")
    with pytest.raises(ValueError, match="duplicated"):
        check_tasks([t, Task("semantic", lambda a, b: 0.0)])
