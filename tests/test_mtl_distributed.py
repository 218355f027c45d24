"""tf.distribute over 2 logical CPU devices (in a subprocess: devices must be split
before TensorFlow initialises, which other tests in this process already did).

Run as a script (`python tests/test_mtl_distributed.py --worker`) it prints JSON results.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
C, T, IGN, H, W = 4, 3, 255, 6, 6


def _worker() -> dict:
    from tf_mtl.distribute import split_cpu

    devices = split_cpu(2)
    import keras
    import numpy as np
    import tensorflow as tf

    from tf_mtl.distribute import batch_norm, get_strategy
    from tf_mtl.losses import SoftmaxCrossEntropyWithIgnore, TagBCE
    from tf_mtl.metrics import StreamingMeanIoU, TagF1, TagMAP
    from tf_mtl.model import MultiTaskModel
    from tf_mtl.tasks import Task
    from tf_mtl.weighting import UncertaintyWeighting, get_weighting

    out: dict = {"devices": devices}
    strategy = get_strategy("mirrored")
    out["replicas"] = strategy.num_replicas_in_sync
    rng = np.random.default_rng(0)

    # ---- streaming metrics accumulated on 2 replicas vs NumPy on everything
    labels = rng.integers(0, C, size=(2, 3, 5, 7)).astype(np.int32)  # [replica, B, H, W]
    labels[rng.random(labels.shape) < 0.2] = IGN
    preds = np.where(rng.random(labels.shape) < 0.5, labels, rng.integers(0, C, labels.shape))
    preds = np.where(preds == IGN, 1, preds).astype(np.int32)
    tags = (rng.random((2, 3, T)) < 0.5).astype(np.float32)
    tag_logits = rng.standard_normal((2, 3, T)).astype(np.float32)
    with strategy.scope():
        miou = StreamingMeanIoU(C, IGN)
        f1 = TagF1(T)
        tmap = TagMAP(T, num_bins=20)

    def per_replica(arr):
        return strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(arr[ctx.replica_id_in_sync_group])
        )

    @tf.function
    def update(lab, pr, tg, tl):
        def fn(lab, pr, tg, tl):
            miou.update_state(lab, pr)
            f1.update_state(tg, tl)
            tmap.update_state(tg, tl)

        strategy.run(fn, args=(lab, pr, tg, tl))

    update(per_replica(labels), per_replica(preds), per_replica(tags), per_replica(tag_logits))
    ref_miou, ref_f1, ref_map = StreamingMeanIoU(C, IGN), TagF1(T), TagMAP(T, num_bins=20)
    ref_miou.update_state(labels.reshape(6, 5, 7), preds.reshape(6, 5, 7))
    ref_f1.update_state(tags.reshape(6, T), tag_logits.reshape(6, T))
    ref_map.update_state(tags.reshape(6, T), tag_logits.reshape(6, T))
    lab, pr = labels.reshape(-1), preds.reshape(-1)
    keep = lab != IGN
    cm = np.zeros((C, C))
    np.add.at(cm, (lab[keep], pr[keep]), 1)
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)
    out["miou"] = {
        "distributed": float(miou.result()),
        "numpy": float(np.mean(np.diag(cm)[union > 0] / union[union > 0])),
        "cm_equal": bool(np.array_equal(miou.confusion_matrix().numpy(), cm)),
    }
    out["f1"] = [float(f1.result()), float(ref_f1.result())]
    out["map"] = [float(tmap.result()), float(ref_map.result())]

    # ---- one train step: MirroredStrategy (2 replicas) vs single device
    x = rng.uniform(0, 255, size=(4, H, W, 3)).astype(np.float32)
    seg = rng.integers(0, C, size=(4, H, W)).astype(np.int32)
    ign = rng.random((2, H, W)) < 0.3
    seg[np.concatenate([ign, ign])] = IGN  # same kept-pixel count on both replicas
    y = {
        "semantic": seg,
        "tags": (rng.random((4, T)) < 0.5).astype(np.float32),
        "depth": rng.standard_normal((4, 1)).astype(np.float32),
    }

    def build(sync_bn, method=None):
        keras.utils.set_random_seed(1)
        inp = keras.Input((H, W, 3))
        h = keras.layers.Rescaling(1 / 255.0)(inp)
        h = keras.layers.Conv2D(
            8, 3, padding="same", use_bias=False, kernel_regularizer=keras.regularizers.L2(1e-3)
        )(h)
        h = batch_norm(sync=sync_bn, momentum=0.5)(h)
        h = keras.layers.ReLU()(h)
        h = keras.layers.Identity(name="rep")(h)  # the shared representation (rep_grad)
        pooled = keras.layers.GlobalAveragePooling2D()(h)
        net = keras.Model(
            inp,
            {
                "semantic": keras.layers.Conv2D(C, 1)(h),
                "tags": keras.layers.Dense(T)(pooled),
                "depth": keras.layers.Dense(1)(pooled),
            },
        )
        tasks = [
            Task("semantic", SoftmaxCrossEntropyWithIgnore(C, IGN)),
            Task("tags", TagBCE()),
            Task("depth", keras.losses.MeanSquaredError(), kind="regression"),
        ]
        weighting = (UncertaintyWeighting(tasks, initial_sigma=0.7) if method is None
                     else get_weighting(method[0], tasks, method[1]))
        model = MultiTaskModel(net, tasks, weighting)
        model.compile(optimizer=keras.optimizers.SGD(0.5))
        return model

    def one_step(strat, sync_bn, method=None):
        with strat.scope():
            model = build(sync_bn, method)
        ds = tf.data.Dataset.from_tensors((x, y))
        model.fit(ds, epochs=1, verbose=0, shuffle=False)
        return model, [v.numpy() for v in model.variables]

    single, w_single = one_step(tf.distribute.get_strategy(), False)
    initial = build(False)
    w_init = [v.numpy() for v in initial.variables]
    # Synchronised BN: per-replica batches of 2 give the global batch statistics.
    mirrored, w_mirrored = one_step(strategy, True)
    diffs = [float(np.abs(a - b).max()) for a, b in zip(w_single, w_mirrored, strict=True)]
    moved = [float(np.abs(a - b).max()) for a, b in zip(w_init, w_single, strict=True)]
    names = [v.path for v in single.variables]
    out["train_step"] = {
        "names": names,
        "diffs": diffs,
        "moved": moved,
        "log_var_idx": [i for i, n in enumerate(names) if "log_var" in n],
        "iterations": int(mirrored.optimizer.iterations.numpy()),
    }

    # ---- gradient methods: per-task gradients reduced over replicas before the method
    out["methods"] = {}
    for method in [("pcgrad", ""), ("nash_mtl", ""), ("mgda_ub", "rep_features=rep"),
                   ("graddrop", "rep_features=rep")]:
        ref, w_ref = one_step(tf.distribute.get_strategy(), False, method)
        _, w_two = one_step(strategy, True, method)
        start = [v.numpy() for v in build(False, method).variables]
        out["methods"][method[0]] = {
            "diff": max(float(np.abs(a - b).max()) for a, b in zip(w_ref, w_two, strict=True)),
            "moved": max(float(np.abs(a - b).max()) for a, b in zip(start, w_ref, strict=True))}

    # ---- DWA (non-trainable replica state) + in-step summaries under the strategy
    import tempfile

    from tf_mtl.weighting import DynamicWeightAverage

    logdir = tempfile.mkdtemp()

    def dwa_run(strat, writer=None):
        with strat.scope():
            keras.utils.set_random_seed(2)
            inp = keras.Input((H, W, 3))
            h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
            net = keras.Model(inp, {"semantic": keras.layers.Conv2D(C, 1)(h),
                                    "tags": keras.layers.Dense(T)(
                                        keras.layers.GlobalAveragePooling2D()(h))})
            tasks = [Task("semantic", SoftmaxCrossEntropyWithIgnore(C, IGN)),
                     Task("tags", TagBCE())]
            dwa = DynamicWeightAverage(tasks, window_steps=1)
            model = MultiTaskModel(net, tasks, dwa, summary_writer=writer,
                                   summary_every_n_steps=1)
            model.compile(optimizer=keras.optimizers.SGD(0.5))
        ds = tf.data.Dataset.from_tensors((x, {"semantic": y["semantic"],
                                               "tags": y["tags"]})).repeat(4)
        model.fit(ds, epochs=1, verbose=0, shuffle=False)
        return [v.numpy() for v in model.variables], dwa.current_weights().numpy()

    w1, dwa1 = dwa_run(tf.distribute.get_strategy())
    w2, dwa2 = dwa_run(strategy, logdir)
    steps = []
    for path in pathlib.Path(logdir).rglob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            steps += [int(event.step) for v in event.summary.value if v.tag == "train/loss"]
    out["dwa"] = {"max_diff": max(float(np.abs(a - b).max()) for a, b in zip(w1, w2, strict=True)),
                  "weights": [dwa1.tolist(), dwa2.tolist()], "loss_steps": sorted(steps)}
    return out


def _run_worker() -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, __file__, "--worker"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        pytest.fail(f"distributed worker failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def results():
    return _run_worker()


def test_two_logical_cpu_replicas(results):
    assert results["replicas"] == 2 and len(results["devices"]) == 2


def test_streaming_miou_over_two_replicas_matches_numpy(results):
    m = results["miou"]
    assert m["cm_equal"]
    assert m["distributed"] == pytest.approx(m["numpy"], rel=1e-6)
    assert 0.1 < m["numpy"] < 0.9


def test_tag_metrics_over_two_replicas_match_single_device(results):
    assert results["f1"][0] == pytest.approx(results["f1"][1], rel=1e-6)
    assert results["map"][0] == pytest.approx(results["map"][1], rel=1e-6)


def test_mirrored_train_step_equals_single_device(results):
    r = results["train_step"]
    assert r["iterations"] == 1
    assert len(r["log_var_idx"]) == 3
    for i in r["log_var_idx"]:  # every s_i moved and matches
        assert r["moved"][i] > 1e-3, r["names"][i]
        assert r["diffs"][i] < 1e-4, r["names"][i]
    bad = [(n, d) for n, d in zip(r["names"], r["diffs"], strict=True) if d >= 1e-4]
    assert not bad, bad
    trainable_moved = [m for n, m in zip(r["names"], r["moved"], strict=True) if "kernel" in n]
    assert min(trainable_moved) > 1e-4


@pytest.mark.parametrize("method", ["pcgrad", "nash_mtl", "mgda_ub", "graddrop"])
def test_gradient_methods_on_two_replicas_equal_one_device(results, method):
    """The per-task gradients (or batch-summed representation gradients) are summed over
    replicas before the method, so 2 replicas of 2 images update as 1 device of 4."""
    r = results["methods"][method]
    assert r["moved"] > 1e-3
    assert r["diff"] < 1e-4, r


def test_dwa_and_summaries_under_mirrored_strategy(results):
    r = results["dwa"]
    assert r["max_diff"] < 1e-4
    np.testing.assert_allclose(r["weights"][0], r["weights"][1], rtol=1e-5)
    assert abs(r["weights"][0][0] - 1.0) > 1e-4  # DWA active after 2 windows
    assert r["loss_steps"] == [0, 1, 2, 3]  # written once per step (first replica only)


if __name__ == "__main__" and "--worker" in sys.argv:
    sys.path.insert(0, str(REPO))
    print(json.dumps(_worker()))
