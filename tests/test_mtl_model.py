"""MultiTaskModel: Kendall's toy, summaries, hooks, checkpoints, mixed precision, loss scale."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from bench.bench_kendall import TRUE_SIGMAS, run_kendall
from tf_mtl import tbevents
from tf_mtl.losses import SoftmaxCrossEntropyWithIgnore, TagBCE
from tf_mtl.metrics import StreamingMeanIoU, TagF1
from tf_mtl.model import LossTerm, MultiTaskModel
from tf_mtl.precision import policy_scope, wrap_optimizer
from tf_mtl.schedules import PolyLearningRate
from tf_mtl.tasks import Task
from tf_mtl.weighting import FixedWeighting, UncertaintyWeighting

C, T, IGN, H, W = 4, 3, 255, 8, 8


def tiny_net(seed=0, l2=0.0):
    """Conv 'segmentation + tags' net with dict outputs (outputs in the compute dtype)."""
    keras.utils.set_random_seed(seed)
    reg = keras.regularizers.L2(l2) if l2 else None
    inp = keras.Input((H, W, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", kernel_regularizer=reg)(inp)
    seg = keras.layers.Conv2D(C, 1, name="logits")(h)
    tags = keras.layers.Dense(T, name="tag_head")(keras.layers.GlobalAveragePooling2D()(h))
    return keras.Model(inp, {"semantic": seg, "tags": tags})


def tiny_data(n=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, size=(n, H, W, 3)).astype(np.float32)
    seg = rng.integers(0, C, size=(n, H, W)).astype(np.int32)
    seg[:, :2, :2] = IGN
    tags = (rng.random((n, T)) < 0.5).astype(np.float32)
    return x, {"semantic": seg, "tags": tags}


def seg_tasks():
    return [
        Task("semantic", SoftmaxCrossEntropyWithIgnore(C, IGN), metrics=[StreamingMeanIoU(C, IGN)]),
        Task("tags", TagBCE(), metrics=[TagF1(T)]),
    ]


def ds_of(x, y, batch):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


# ------------------------------------------------------------------ Kendall's toy
@pytest.mark.parametrize("initial_sigma", [1.0, 5.0])
def test_kendall_toy_learns_noise_sigmas(initial_sigma):
    r = run_kendall(initial_sigma)  # 500 full-batch Adam steps, 1000 samples
    print(f"initial {initial_sigma}: {r}")
    assert r["sigma1"] == pytest.approx(TRUE_SIGMAS[0], rel=0.15)
    assert r["sigma2"] == pytest.approx(TRUE_SIGMAS[1], rel=0.15)


# ------------------------------------------------------------------ summaries
def test_in_step_summaries_are_written_every_n_steps(tmp_path):
    x, y = tiny_data(10)
    tasks = seg_tasks()
    weighting = UncertaintyWeighting(tasks, initial_sigma=2.0)

    def overlay(x, y, outputs):
        pred = tf.cast(tf.argmax(outputs["semantic"], -1), tf.float32) / (C - 1)
        return {"prediction": tf.stack([pred] * 3, -1)}

    model = MultiTaskModel(
        tiny_net(),
        tasks,
        weighting,
        summary_writer=str(tmp_path),
        summary_every_n_steps=2,
        image_summary_fn=overlay,
        image_summary_every_n_steps=4,
    )
    schedule = PolyLearningRate(0.1, training_number_of_steps=10, learning_power=0.9)
    model.compile(optimizer=keras.optimizers.SGD(schedule))
    hist = model.fit(ds_of(x, y, 2), epochs=1, verbose=0, shuffle=False)  # 5 steps: 0..4
    scalars = {k: dict(v) for k, v in tbevents.read_scalars(tmp_path).items()}
    for tag in [
        "loss",
        "semantic_loss",
        "tags_loss",
        "semantic_sigma",
        "tags_sigma",
        "semantic_weight",
        "tags_weight",
        "learning_rate",
        "semantic_mean_iou",
        "tags_tag_f1",
    ]:
        assert sorted(scalars[f"train/{tag}"]) == [0, 2, 4], tag
    # Values are those of the step they are logged at.
    assert scalars["train/semantic_sigma"][0] == pytest.approx(2.0, rel=1e-6)
    assert scalars["train/semantic_weight"][0] == pytest.approx(0.25, rel=1e-6)
    assert scalars["train/learning_rate"][2] == pytest.approx(float(schedule(2)), rel=1e-6)
    assert scalars["train/learning_rate"][4] == pytest.approx(0.1 * 0.6**0.9, rel=1e-5)
    assert scalars["train/semantic_sigma"][4] != scalars["train/semantic_sigma"][0]
    assert tbevents.list_images(tmp_path) == {"train/prediction": [0, 4]}
    # fit's logs carry the same quantities.
    assert hist.history["learning_rate"][-1] == pytest.approx(0.1 * 0.6**0.9, rel=1e-5)
    assert "semantic_sigma" in hist.history and "tags_weight" in hist.history


# ------------------------------------------------------------------ hooks and losses
class ConstantTerm(LossTerm):
    def compute(self, x, y, outputs, training):
        return tf.constant(1.5)


def test_extra_losses_and_weight_decay_enter_the_total():
    x, y = tiny_data(4)
    tasks = seg_tasks()
    base = MultiTaskModel(tiny_net(), tasks, FixedWeighting(tasks, weights={"tags": 0.5}))
    base.compile(optimizer="sgd")
    ref = base.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
    assert ref["loss"] == pytest.approx(ref["semantic_loss"] + 0.5 * ref["tags_loss"], rel=1e-5)

    net = tiny_net(l2=0.01)
    model = MultiTaskModel(
        net,
        seg_tasks(),
        FixedWeighting(tasks, weights={"tags": 0.5}),
        loss_terms=[
            ConstantTerm(weight=2.0, name="const"),
            lambda x, y, outputs, training: tf.constant(0.25),
        ],
    )
    model.compile(optimizer="sgd")
    got = model.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
    decay = 0.01 * float(tf.reduce_sum(tf.square(net.layers[1].kernel)))
    assert decay > 0
    assert got["const"] == pytest.approx(3.0)
    assert got["regularization_loss"] == pytest.approx(decay, rel=1e-5)
    assert got["loss"] == pytest.approx(ref["loss"] + 3.0 + 0.25 + decay, rel=1e-5)


def test_compile_binds_step_for_hard_pixel_mining_and_bad_targets_fail():
    x, y = tiny_data(4)
    loss = SoftmaxCrossEntropyWithIgnore(
        C, IGN, top_k_percent_pixels=0.25, hard_example_mining_step=10
    )
    model = MultiTaskModel(tiny_net(), [Task("semantic", loss)])
    model.compile(optimizer="sgd")
    assert loss._step is model.optimizer.iterations
    model.fit(x, y["semantic"], batch_size=4, epochs=2, verbose=0)  # single-task: plain y
    assert int(model.optimizer.iterations) == 2
    with pytest.raises(ValueError, match="do not pass loss="):
        model.compile(optimizer="sgd", loss="mse")
    bad = MultiTaskModel(tiny_net(), [Task("depth", loss)])
    bad.compile(optimizer="sgd")
    with pytest.raises(KeyError, match="reads network output 'depth'"):
        bad.evaluate(x, {"depth": y["semantic"]}, verbose=0)


# ------------------------------------------------------------------ checkpoint / config
def test_checkpoint_restores_network_weighting_optimizer_and_step(tmp_path):
    x, y = tiny_data(4)
    tasks = seg_tasks()
    model = MultiTaskModel(tiny_net(), tasks, UncertaintyWeighting(tasks))
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    path = model.make_checkpoint().save(str(tmp_path / "ckpt"))
    saved = [v.numpy().copy() for v in model.variables]
    saved_opt = [v.numpy().copy() for v in model.optimizer.variables]
    model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    assert int(model.optimizer.iterations) == 4

    tasks2 = seg_tasks()
    fresh = MultiTaskModel(tiny_net(seed=5), tasks2, UncertaintyWeighting(tasks2))
    fresh.compile(optimizer=keras.optimizers.Adam(0.05))
    fresh.optimizer.build(fresh.trainable_variables)
    fresh.make_checkpoint().restore(path).assert_existing_objects_matched()
    assert int(fresh.optimizer.iterations) == 2
    for a, b in zip(saved, [v.numpy() for v in fresh.variables], strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(saved_opt, [v.numpy() for v in fresh.optimizer.variables], strict=True):
        np.testing.assert_array_equal(a, b)
    assert float(fresh.weighting.sigma("semantic")) != 1.0

    clone = MultiTaskModel.from_config(model.get_config())
    assert [t.name for t in clone.tasks] == ["semantic", "tags"]
    assert isinstance(clone.weighting, UncertaintyWeighting)
    assert clone.tasks[0].loss.get_config() == tasks[0].loss.get_config()


# ------------------------------------------------------------------ mixed precision
def train_three_steps(policy, seed=0):
    x, y = tiny_data(4, seed=1)
    with policy_scope(policy):
        tasks = seg_tasks()
        weighting = UncertaintyWeighting(tasks)
        net = tiny_net(seed)
        model = MultiTaskModel(net, tasks, weighting)
        model.compile(optimizer=keras.optimizers.Adam(0.01))
        before = [v.numpy().astype(np.float64) for v in net.trainable_variables]
        hist = model.fit(x, y, batch_size=4, epochs=3, verbose=0)
        after = [v.numpy().astype(np.float64) for v in net.trainable_variables]
    return model, hist.history, before, after


@pytest.fixture(scope="module")
def float32_run():
    return train_three_steps("float32")


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_trains_like_float32(policy, float32_run):
    _, ref_hist, ref_before, _ = float32_run
    model, hist, before, after = train_three_steps(policy)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored
    assert model.network.layers[1].compute_dtype == policy.split("_")[1]
    for a, b in zip(ref_before, before, strict=True):  # same initial weights
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert all(np.isfinite(v) for v in hist["loss"])
    assert all(np.abs(a - b).max() > 0 for a, b in zip(before, after, strict=True))
    assert all(v.dtype == "float32" for v in model.weighting.trainable_weights)
    assert all(float(model.weighting.sigma(n)) != 1.0 for n in ["semantic", "tags"])
    is_lso = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert is_lso == (policy == "mixed_float16")
    assert hist["loss"][-1] == pytest.approx(ref_hist["loss"][-1], abs=1e-2)


def sgd_update(policy, drop_loss_scale=False):
    x, y = tiny_data(4, seed=2)
    with policy_scope(policy):
        tasks = seg_tasks()
        net = tiny_net(seed=3)
        model = MultiTaskModel(net, tasks, UncertaintyWeighting(tasks))
        model.compile(optimizer=wrap_optimizer(keras.optimizers.SGD(0.5), policy))
        if drop_loss_scale:  # simulate a train step that forgets scale_loss
            model.optimizer.scale_loss = lambda loss: loss
        before = [v.numpy().astype(np.float64) for v in model.trainable_variables]
        model.fit(x, y, batch_size=4, epochs=1, verbose=0)
        after = [v.numpy().astype(np.float64) for v in model.trainable_variables]
    return [b - a for a, b in zip(before, after, strict=True)]


def test_loss_scaled_update_matches_float32_update():
    ref = sgd_update("float32")
    got = sgd_update("mixed_float16")
    for r, g in zip(ref, got, strict=True):
        assert np.abs(r).max() > 1e-4
        np.testing.assert_allclose(g, r, rtol=2e-2, atol=2e-3 * np.abs(r).max())
    # Negative control: without scale_loss, updates are ~2^15 times too small.
    broken = sgd_update("mixed_float16", drop_loss_scale=True)
    net_ratio = np.abs(broken[0]).max() / np.abs(ref[0]).max()
    assert net_ratio < 1e-3


def test_dwa_inside_fit_changes_weights_after_two_windows():
    from tf_mtl.weighting import DynamicWeightAverage

    x, y = tiny_data(4)
    tasks = seg_tasks()
    dwa = DynamicWeightAverage(tasks, temperature=2.0, window_steps=1)
    model = MultiTaskModel(tiny_net(), tasks, dwa)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    hist = model.fit(x, y, batch_size=4, epochs=4, verbose=0)
    w = np.array([hist.history["semantic_weight"], hist.history["tags_weight"]])
    np.testing.assert_allclose(w[:, :2], 1.0)  # windows 1 and 2 not complete yet
    assert np.abs(w[:, 2:] - 1.0).max() > 1e-4
    np.testing.assert_allclose(w.sum(0), 2.0, rtol=1e-6)
    # One step per epoch, so history holds each step's loss. Step 2's weights come
    # from the losses of steps 1 and 0 (one-step windows): r_k = L_k(1) / L_k(0).
    losses = np.array([hist.history["semantic_loss"], hist.history["tags_loss"]])
    r = losses[:, 1] / losses[:, 0]
    expect = 2 * np.exp(r / 2.0) / np.exp(r / 2.0).sum()
    np.testing.assert_allclose(w[:, 2], expect, rtol=1e-5)
    r3 = losses[:, 2] / losses[:, 1]
    np.testing.assert_allclose(w[:, 3], 2 * np.exp(r3 / 2.0) / np.exp(r3 / 2.0).sum(), rtol=1e-5)


def test_summaries_log_each_steps_own_loss_not_the_running_mean(tmp_path):
    """Keras' loss trackers are running means that restart at every fit() epoch (each
    checkpoint chunk of tools.train); the curves must be each step's own value, or they
    jump where the mean restarts."""
    x, y = tiny_data(8, seed=3)
    tasks = seg_tasks()
    model = MultiTaskModel(tiny_net(), tasks, FixedWeighting(tasks),
                           summary_writer=str(tmp_path), summary_every_n_steps=1)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    running = []

    class Logs(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            running.append((batch, float(logs["semantic_loss"])))

    model.fit(ds_of(x, y, 2).repeat(), steps_per_epoch=2, epochs=2, verbose=0,
              callbacks=[Logs()])
    model.summaries.flush()
    logged = [v for _, v in tbevents.read_scalars(tmp_path)["train/semantic_loss"]]
    # Each step's own loss, recovered from the running means within each epoch.
    own = []
    for i, (batch, mean) in enumerate(running):
        own.append(mean if batch == 0 else (batch + 1) * mean - batch * running[i - 1][1])
    np.testing.assert_allclose(logged, own, rtol=1e-5)
    assert abs(logged[1] - running[1][1]) > 1e-4  # the running mean is not what is drawn


def test_eval_metrics_are_updated_by_evaluation_only():
    """A task's ``eval_metrics`` (costly ones) never run in a train step; evaluate and
    test_step update and report them; the config keeps them."""
    x, y = tiny_data(4)
    miou = StreamingMeanIoU(C, IGN, name="eval_miou")
    tasks = [Task("semantic", SoftmaxCrossEntropyWithIgnore(C, IGN),
                  eval_metrics=[miou]),
             Task("tags", TagBCE(), metrics=[TagF1(T)])]
    model = MultiTaskModel(tiny_net(), tasks, FixedWeighting(tasks))
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    history = model.fit(x, y, batch_size=2, epochs=1, verbose=0).history
    assert "semantic_eval_miou" not in history and "tags_tag_f1" in history
    assert float(tf.reduce_sum(miou.total_cm)) == 0.0  # never updated by the two steps
    got = model.evaluate(x, y, batch_size=2, verbose=0, return_dict=True)
    assert float(tf.reduce_sum(miou.total_cm)) == float(np.sum(y["semantic"] != IGN))
    assert got["semantic_eval_miou"] == pytest.approx(float(miou.result()))
    clone = MultiTaskModel.from_config(model.get_config())
    assert [type(m).__name__ for m in clone.tasks[0].eval_metrics] == ["StreamingMeanIoU"]
    assert clone.tasks[0].metrics == []


def test_gradient_multipliers_scale_exactly_their_variables_updates():
    """The original's --last_layer_gradient_multiplier: under SGD the logits' update is the
    factor times the plain step's; every other variable's update is the plain one."""
    x, y = tiny_data()
    updates = {}
    for factor in (1.0, 3.0):
        net = tiny_net(seed=3)
        before = [v.numpy().copy() for v in net.trainable_variables]
        logits = {v.path: factor for v in net.get_layer("logits").trainable_variables}
        model = MultiTaskModel(net, seg_tasks(), gradient_multipliers=logits)
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        model.fit(ds_of(x, y, 4), epochs=1, verbose=0)
        updates[factor] = [(v.path in logits, v.numpy() - b)
                           for v, b in zip(net.trainable_variables, before, strict=True)]
    for (is_logits, plain), (_, scaled) in zip(updates[1.0], updates[3.0], strict=True):
        np.testing.assert_allclose(scaled, 3.0 * plain if is_logits else plain, rtol=1e-5,
                                   atol=1e-7)
    assert any(np.abs(u).max() > 0 for is_logits, u in updates[1.0] if is_logits)
