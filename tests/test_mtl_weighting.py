"""Loss weightings: fixed, Kendall uncertainty, DWA; registry errors."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_mtl.precision import policy_scope
from tf_mtl.tasks import Task
from tf_mtl.weighting import (
    DynamicWeightAverage,
    FixedWeighting,
    UncertaintyWeighting,
    get_weighting,
)


def mse(a, b):
    return tf.reduce_mean(tf.square(a - b))


TASKS = [
    Task("seg", mse, kind="classification", weight=2.0),
    Task("depth", mse, kind="regression", weight=0.5),
]
LOSSES = {"seg": tf.constant(3.0), "depth": tf.constant(4.0)}


def test_fixed_weighting_uses_task_weights_and_overrides():
    total, logs = FixedWeighting(TASKS).combine(LOSSES, TASKS)
    assert float(total) == pytest.approx(2.0 * 3.0 + 0.5 * 4.0)
    assert float(logs["seg_weight"]) == 2.0 and float(logs["depth_weight"]) == 0.5
    total, _ = FixedWeighting(TASKS, weights={"depth": 3.0}).combine(LOSSES)
    assert float(total) == pytest.approx(2.0 * 3.0 + 3.0 * 4.0)
    with pytest.raises(ValueError, match="no loss for task"):
        FixedWeighting(TASKS).combine({"seg": tf.constant(1.0)})


def test_uncertainty_terms_match_kendall_formulas():
    # Prior weights 1 (the paper's formulation); TASKS' own weights are tested below.
    w = UncertaintyWeighting(TASKS, initial_sigma={"seg": 2.0, "depth": 0.5},
                             weights={"seg": 1.0, "depth": 1.0})
    total, logs = w.combine(LOSSES, TASKS)
    s_seg, s_depth = math.log(4.0), math.log(0.25)
    expect = (
        math.exp(-s_seg) * 3.0
        + 0.5 * s_seg  # classification: L/sigma^2
        + 0.5 * math.exp(-s_depth) * 4.0
        + 0.5 * s_depth
    )  # regression: L/(2 sigma^2)
    assert float(total) == pytest.approx(expect, rel=1e-6)
    # Same thing in sigma form: L/sigma^2 + log sigma, L/(2 sigma^2) + log sigma.
    assert float(total) == pytest.approx(3.0 / 4 + math.log(2) + 4.0 / (2 * 0.25) + math.log(0.5))
    assert float(logs["seg_sigma"]) == pytest.approx(2.0)
    assert float(logs["depth_sigma"]) == pytest.approx(0.5)
    assert float(logs["seg_weight"]) == pytest.approx(0.25)
    assert float(logs["depth_weight"]) == pytest.approx(2.0)
    # d total / d s = -w L + 0.5 for each task.
    with tf.GradientTape() as tape:
        total, _ = w.combine(LOSSES)
    grads = tape.gradient(total, [w.log_vars["seg"], w.log_vars["depth"]])
    assert float(grads[0]) == pytest.approx(-0.25 * 3.0 + 0.5, rel=1e-5)
    assert float(grads[1]) == pytest.approx(-2.0 * 4.0 + 0.5, rel=1e-5)
    assert len(w.trainable_weights) == 2


def test_normalized_uncertainty_bounds_the_network_weights_and_keeps_the_sigma_gradient():
    """normalize=true: the losses' weights sum to the task count (0.25 and 2.0 become
    2 * 0.25 / 2.25 and 2 * 2 / 2.25), while d total / d s is the paper's, as above."""
    w = UncertaintyWeighting(TASKS, initial_sigma={"seg": 2.0, "depth": 0.5},
                             weights={"seg": 1.0, "depth": 1.0}, normalize=True)
    losses = {k: tf.Variable(float(v)) for k, v in LOSSES.items()}
    with tf.GradientTape(persistent=True) as tape:
        total, logs = w.combine(losses, TASKS)
    assert float(logs["seg_weight"]) == pytest.approx(0.5 / 2.25, rel=1e-6)
    assert float(logs["depth_weight"]) == pytest.approx(4.0 / 2.25, rel=1e-6)
    # The network's gradient: through the normalised weights only.
    g_seg, g_depth = tape.gradient(total, [losses["seg"], losses["depth"]])
    assert float(g_seg) == pytest.approx(0.5 / 2.25, rel=1e-6)
    assert float(g_depth) == pytest.approx(4.0 / 2.25, rel=1e-6)
    grads = tape.gradient(total, [w.log_vars["seg"], w.log_vars["depth"]])
    assert float(grads[0]) == pytest.approx(-0.25 * 3.0 + 0.5, rel=1e-5)
    assert float(grads[1]) == pytest.approx(-2.0 * 4.0 + 0.5, rel=1e-5)
    assert get_weighting("uncertainty", TASKS, "normalize=true").normalize


def test_uncertainty_multiplies_by_task_prior_weights():
    # --tag_loss_weight must not be silently ignored under --loss_weighting=uncertainty.
    w = UncertaintyWeighting(TASKS, initial_sigma={"seg": 2.0, "depth": 0.5})
    total, logs = w.combine(LOSSES, TASKS)
    s_seg, s_depth = math.log(4.0), math.log(0.25)
    expect = 2.0 * 0.25 * 3.0 + 0.5 * s_seg + 0.5 * 2.0 * 4.0 + 0.5 * s_depth
    assert float(total) == pytest.approx(expect, rel=1e-6)
    assert float(logs["seg_weight"]) == pytest.approx(0.5)
    assert float(logs["depth_weight"]) == pytest.approx(1.0)
    clone = UncertaintyWeighting.from_config(w.get_config())
    assert clone.weights_by_task == {"seg": 2.0, "depth": 0.5}


def test_uncertainty_variables_stay_float32_under_mixed_policy():
    with policy_scope("mixed_float16"):
        w = UncertaintyWeighting(TASKS)
        total, _ = w.combine(
            {"seg": tf.constant(1.0, tf.float16), "depth": tf.constant(2.0, tf.float16)}
        )
    assert all(v.dtype == "float32" for v in w.trainable_weights)
    assert total.dtype == tf.float32
    assert keras.mixed_precision.global_policy().name == "float32"


def test_dwa_weights_from_ratio_of_last_two_windows():
    T = 2.0
    w = DynamicWeightAverage(TASKS, temperature=T, window_steps=2)
    seen = []
    # Window 1 mean losses (seg 4, depth 2); window 2 (seg 2, depth 2).
    for seg, depth in [(3.0, 1.0), (5.0, 3.0), (1.0, 2.0), (3.0, 2.0), (10.0, 10.0)]:
        total, logs = w.combine({"seg": tf.constant(seg), "depth": tf.constant(depth)})
        seen.append((float(total), float(logs["seg_weight"]), float(logs["depth_weight"])))
    # Before two windows are complete the weights are 1.
    for i in range(4):
        assert seen[i][1] == 1.0 and seen[i][2] == 1.0
    r = np.array([2.0 / 4.0, 2.0 / 2.0])
    expect = 2 * np.exp(r / T) / np.exp(r / T).sum()
    assert seen[4][1] == pytest.approx(expect[0], rel=1e-6)
    assert seen[4][2] == pytest.approx(expect[1], rel=1e-6)
    assert seen[4][0] == pytest.approx(10.0 * expect.sum(), rel=1e-6)
    assert sum(seen[4][1:]) == pytest.approx(2.0)  # K * softmax sums to K
    assert not w.trainable_weights


def test_dwa_epoch_windows_via_end_window():
    w = DynamicWeightAverage(TASKS, temperature=1.0)
    for seg, depth in [(1.0, 1.0), (3.0, 3.0)]:  # epoch 1 mean 2, 2
        w.combine({"seg": tf.constant(seg), "depth": tf.constant(depth)})
    w.end_window()
    w.combine({"seg": tf.constant(1.0), "depth": tf.constant(4.0)})  # epoch 2: 1, 4
    w.end_window()
    _, logs = w.combine({"seg": tf.constant(1.0), "depth": tf.constant(1.0)})
    r = np.array([0.5, 2.0])
    expect = 2 * np.exp(r) / np.exp(r).sum()
    assert float(logs["seg_weight"]) == pytest.approx(expect[0], rel=1e-6)
    assert float(logs["depth_weight"]) == pytest.approx(expect[1], rel=1e-6)


def test_registry_and_config_roundtrip():
    assert isinstance(get_weighting("fixed", TASKS), FixedWeighting)
    u = get_weighting("uncertainty", TASKS, initial_sigma=5.0)
    assert float(u.sigma("seg")) == pytest.approx(5.0)
    d = get_weighting("dwa", TASKS, temperature=3.0)
    assert d.temperature == 3.0
    with pytest.raises(ValueError, match="--loss_weighting=gradnrom: unknown loss weighting.*known: .*dwa"):
        get_weighting("gradnrom", TASKS)
    clone = UncertaintyWeighting.from_config(u.get_config())
    assert clone.kinds == {"seg": "classification", "depth": "regression"}
    assert float(clone.sigma("depth")) == pytest.approx(5.0)
    fclone = FixedWeighting.from_config(FixedWeighting(TASKS).get_config())
    assert fclone.weights_by_task == {"seg": 2.0, "depth": 0.5}
    dclone = DynamicWeightAverage.from_config(d.get_config())
    assert dclone.temperature == 3.0 and dclone.task_names == ["seg", "depth"]
