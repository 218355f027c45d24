"""Kendall et al.'s scene network (issue 31): semantic + instance + depth on per-task
decoders, trained under uncertainty weighting on the built-in scene variant, resumed,
evaluated, exported and served in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO, run_tool, tool_env

VARIANT = "deeplabv3plus_mobilenetv2_tiny_scene"
TASKS = ("semantic", "instance", "depth")


@pytest.fixture(scope="module")
def scene_data(tmp_path_factory):
    from deeplab_ext.data import synthetic

    out = tmp_path_factory.mktemp("scene")
    synthetic.write_tfrecords(out, 8, 3, size=48, scene=True, num_shards=1)
    return out


def _options(logdir, data, **kw):
    from deeplab_ext.run.options import TrainOptions

    base = dict(train_logdir=str(logdir), dataset_dir=str(data), model_variant=VARIANT,
                dataset="shapes_scene",
                train_crop_size=(33, 33), train_batch_size=2, training_number_of_steps=3,
                save_interval_steps=3, save_summaries_steps=1, optimizer="adam",
                base_learning_rate=0.05, seed=0, loss_weighting="uncertainty",
                min_scale_factor=1.0, max_scale_factor=1.0)
    return TrainOptions(**{**base, **kw})


def _log_vars(path: str) -> dict[str, float]:
    return {n.split("/")[1]: float(tf.train.load_checkpoint(path).get_tensor(n))
            for n, _ in tf.train.list_variables(path) if n.startswith("weighting/log_var_")}


def test_three_tasks_train_resume_and_serve_in_a_fresh_process(scene_data, tmp_path):
    from deeplab_ext.run.evaluation import evaluate
    from deeplab_ext.run.options import EvalOptions
    from deeplab_ext.run.trainer import train

    run = tmp_path / "run"
    first = train(_options(run, scene_data), printer=lambda s: None)
    for task in TASKS:
        assert np.isfinite(float(first.logs[f"{task}_loss"])), task
    saved = _log_vars(first.checkpoint)
    assert sorted(saved) == sorted(f"log_var_{t}" for t in TASKS)
    assert all(abs(v) > 0.05 for v in saved.values()), saved  # moved from their init, 0
    # Resumed with a learning rate of 1e-12 (Adam moves each value by about that), the
    # next checkpoint holds the restored log-variances (a fresh start would hold ~0).
    resumed = train(_options(run, scene_data, training_number_of_steps=4,
                             base_learning_rate=1e-12), printer=lambda s: None)
    assert resumed.resumed_from == 3
    after = _log_vars(resumed.checkpoint)
    for name, value in saved.items():
        assert after[name] == pytest.approx(value, abs=1e-9), name

    # TensorBoard: input | target | prediction for each dense task.
    from tf_mtl.tbevents import read_images

    shown = read_images(run / "train")
    for task in ("instance", "depth"):
        tag = next(t for t in shown if t.endswith(task))
        png = shown[tag][-1][1][0]
        picture = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        assert picture.shape == (33, 3 * 33, 3), (tag, picture.shape)
        assert picture[:, 33:].any()  # the target and the prediction are drawn
    # tools.vis writes the drawn outputs beside the prediction.
    from deeplab_ext.run.options import VisOptions
    from deeplab_ext.run.vis import visualize

    vis = visualize(VisOptions(checkpoint_dir=str(run), dataset_dir=str(scene_data),
                               vis_logdir=str(tmp_path / "vis"), max_number_of_images=1),
                    printer=lambda s: None)
    assert {"instance", "depth"} <= set(vis["images"][0])
    assert cv2.imread(vis["images"][0]["depth"]).shape == (48, 48, 3)

    res = evaluate(EvalOptions(checkpoint_dir=str(run), dataset_dir=str(scene_data),
                               eval_split="val", bootstrap_samples=0, num_vis_examples=0),
                   printer=lambda s: None)
    assert res["instance"]["offset_error_px"] > 0 and 0 <= res["instance"]["pq"] <= 1
    assert {"mae", "abs_rel", "delta1"} <= set(res["depth"])

    export = tmp_path / "export"
    proc = run_tool("export_model", f"--checkpoint_dir={run}", f"--export_path={export}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    code = f"""
import json, numpy as np, tensorflow as tf
from deeplab_ext.run.rundir import restore_network
m = tf.saved_model.load({str(export)!r})
x = np.random.default_rng(0).uniform(0, 255, (1, 33, 33, 3)).astype("float32")
out = m.signatures["serving_default"](images=tf.constant(x))
net, _, _ = restore_network({str(run)!r})
ref = net(x, training=False)
probs = tf.nn.softmax(ref["semantic"]).numpy()
found = {{k: [list(out[k].shape), float(np.abs(out[k] - ref[k]).max())]
         for k in ("instance", "depth")}}
found["semantic"] = [list(out["semantic_probabilities"].shape),
                     float(np.abs(out["semantic_probabilities"] - probs).max())]
print(json.dumps(found))
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=tool_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    served = json.loads(proc.stdout.strip().splitlines()[-1])
    assert served["instance"][0] == [1, 33, 33, 2] and served["depth"][0] == [1, 33, 33, 1]
    assert served["semantic"][0] == [1, 33, 33, 5]
    # The same weights through another graph (the SavedModel): float tolerance.
    assert max(served[k][1] for k in ("semantic", "instance", "depth")) < 1e-4
