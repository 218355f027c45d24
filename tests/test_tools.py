"""Integration tests of the command-line tools: tools.train (TensorBoard, resume after a
kill), tools.eval (JSON, evidence table, comparison figure) and their failure messages.

Every tool runs as a subprocess, as a user would run it. Subprocess launches cost
~5-10 s each (TF import + tracing), so the module shares one training run.
"""

from __future__ import annotations

import json
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from deeplab_ext.data import synthetic
from deeplab_ext.data.datasets import get_dataset_info
from tests.conftest import REPO, TEST_VARIANT, assert_user_error, run_tool, tool_env
from tf_mtl import tbevents

VARIANT = TEST_VARIANT
CROP = 33
TOTAL_STEPS = 40
SAVE_EVERY = 10
SUMMARY_EVERY = 5
BASE_LR = 1e-4
INFO = get_dataset_info("shapes_evidence")




def train_args(logdir: pathlib.Path, data: pathlib.Path) -> list[str]:
    return [
        f"--train_logdir={logdir}", f"--dataset_dir={data}", "--dataset=shapes_evidence",
        f"--model_variant={VARIANT}", f"--train_crop_size={CROP},{CROP}",
        "--train_batch_size=2", f"--training_number_of_steps={TOTAL_STEPS}",
        f"--save_interval_steps={SAVE_EVERY}", f"--save_summaries_steps={SUMMARY_EVERY}",
        "--log_every_n_steps=5", f"--base_learning_rate={BASE_LR}", "--seed=0",
        "--deterministic",
    ]


def checkpoint_state_step(logdir: pathlib.Path) -> int | None:
    """Step of the checkpoint the `checkpoint` state file points at (what a resume reads)."""
    state = logdir / "checkpoint"
    if not state.is_file():
        return None
    m = re.search(r'^model_checkpoint_path: "ckpt-(\d+)"', state.read_text(), re.M)
    return int(m.group(1)) if m else None


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("shapes")
    synthetic.write_tfrecords(out, 8, 3, size=48, seed=0)
    return out


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory, data_dir) -> dict:
    """Start tools.train, SIGKILL it after its first checkpoint, re-run the same command."""
    logdir = tmp_path_factory.mktemp("run") / "train_logdir"
    args = [sys.executable, "-m", "tools.train", *train_args(logdir, data_dir)]
    log_path = logdir.parent / "first_run.log"
    t0 = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(args, cwd=REPO, env=tool_env(), stdout=log,
                                stderr=subprocess.STDOUT)
        killed_at, finished_early, second_writer = None, False, None
        try:
            deadline = time.time() + 180
            while time.time() < deadline:
                step = checkpoint_state_step(logdir)
                if step is not None and step >= SAVE_EVERY:
                    # A second writer on the same directory, while the first trains.
                    second_writer = _second_writer(logdir, data_dir)
                    finished_early = proc.poll() is not None
                    proc.send_signal(signal.SIGKILL)
                    killed_at = step
                    break
                if proc.poll() is not None:
                    break
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    first_output = log_path.read_text()
    assert killed_at is not None, f"no checkpoint appeared; first run said:\n{first_output[-3000:]}"
    assert not finished_early, "training finished before it could be killed"
    assert proc.returncode == -signal.SIGKILL
    assert killed_at < TOTAL_STEPS
    t_first = time.time() - t0
    second = subprocess.run(args, cwd=REPO, env=tool_env(), capture_output=True, text=True,
                            timeout=600)
    t_second = time.time() - t0 - t_first
    whole = logdir.parent / "uninterrupted"
    uninterrupted = run_tool("train", *train_args(whole, data_dir))
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    return {"logdir": logdir, "killed_at": killed_at, "first_output": first_output,
            "second": second, "seconds": (t_first, t_second), "whole": whole,
            "second_writer": second_writer, "first_pid": proc.pid}


def _second_writer(logdir: pathlib.Path, data: pathlib.Path) -> str:
    """What a second trainer on a directory in use is told (in-process: the lock is
    checked before anything is built)."""
    from deeplab_ext.run.locking import DirectoryInUse
    from deeplab_ext.run.options import TrainOptions
    from deeplab_ext.run.trainer import train

    try:
        train(TrainOptions(train_logdir=str(logdir), dataset_dir=str(data),
                           model_variant=VARIANT, train_crop_size=(CROP, CROP)),
              printer=lambda line: None)
    except DirectoryInUse as e:
        return str(e)
    return "not refused"


# ------------------------------------------------------------------ tools.train
def test_train_resumes_after_kill_from_last_checkpoint(resumed_run):
    second = resumed_run["second"]
    assert second.returncode == 0, second.stderr[-3000:]
    out = second.stdout
    m = re.search(r"Resuming from (\S+) \(step (\d+)\)", out)
    assert m, f"no 'Resuming from' line in:\n{out[-2000:]}"
    resumed_step = int(m.group(2))
    assert resumed_step > 0
    assert resumed_step == resumed_run["killed_at"]
    assert m.group(1).endswith(f"ckpt-{resumed_step}")
    assert f"for {TOTAL_STEPS - resumed_step} steps" in out
    assert f"Done at step {TOTAL_STEPS};" in out
    assert f"step {TOTAL_STEPS}/{TOTAL_STEPS}" in out

    import tensorflow as tf

    logdir = resumed_run["logdir"]
    latest = tf.train.latest_checkpoint(str(logdir))
    assert latest.endswith(f"ckpt-{TOTAL_STEPS}")
    reader = tf.train.load_checkpoint(latest)
    iterations = int(reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"))
    assert iterations == TOTAL_STEPS  # continued, not TOTAL_STEPS + resumed_step
    steps = sorted(int(p.name.split("-")[1].split(".")[0]) for p in logdir.glob("ckpt-*.index"))
    assert max(steps) == TOTAL_STEPS
    assert json.loads((logdir / "model_config.json").read_text())["model"]["name"] == VARIANT


def test_deterministic_kill_and_resume_equals_an_uninterrupted_run(resumed_run):
    """SIGKILL after a checkpoint, resume: every stored value of the final checkpoint equals
    an uninterrupted run's, exactly (one machine, --deterministic, and the input stream
    continues where the checkpoint stopped instead of restarting from its seed)."""
    import tensorflow as tf

    assert "taking it over" in resumed_run["second"].stdout  # the killed run's lock
    a = tf.train.load_checkpoint(str(resumed_run["whole"] / f"ckpt-{TOTAL_STEPS}"))
    b = tf.train.load_checkpoint(str(resumed_run["logdir"] / f"ckpt-{TOTAL_STEPS}"))
    keys = [k for k in a.get_variable_to_shape_map() if not k.startswith("_CHECKPOINTABLE")]
    for key in keys:
        np.testing.assert_array_equal(a.get_tensor(key), b.get_tensor(key), err_msg=key)
    assert len(keys) > 179  # the network (179 weights), the optimizer's slots, the weighting, the step


def test_a_second_trainer_on_a_directory_in_use_is_refused(resumed_run):
    message = resumed_run["second_writer"]
    assert "in use by another process" in message, message
    assert f"pid {resumed_run['first_pid']}" in message and ".deeplab.lock" in message
    # The first trainer's run is its own: it resumed and finished (the test above).
    assert resumed_run["second"].returncode == 0


def test_train_tensorboard_scalars_and_images(resumed_run):
    logdir = resumed_run["logdir"] / "train"
    scalars = tbevents.read_scalars(logdir)
    expected = {
        "train/loss", "train/semantic_loss", "train/tags_loss",
        "train/semantic_sigma", "train/tags_sigma", "train/semantic_weight",
        "train/tags_weight", "train/learning_rate", "train/semantic_miou",
        "train/tags_tag_f1",
    }
    assert expected <= set(scalars), sorted(scalars)
    # Summaries every SUMMARY_EVERY steps over the whole run, before and after the kill.
    logged = [s for s, _ in scalars["train/learning_rate"]]
    assert logged == list(range(0, TOTAL_STEPS, SUMMARY_EVERY))
    # Poly schedule continued at the resumed step (it did not restart at step 0).
    for step, lr in scalars["train/learning_rate"]:
        want = BASE_LR * (1 - step / TOTAL_STEPS) ** 0.9
        assert lr == pytest.approx(want, rel=1e-4), step
    # Uncertainty weighting (classification): effective weight = 1 / sigma^2.
    for task in ("semantic", "tags"):
        sig = dict(scalars[f"train/{task}_sigma"])
        wts = dict(scalars[f"train/{task}_weight"])
        for step, s in sig.items():
            assert s > 0
            assert wts[step] == pytest.approx(1 / s**2, rel=1e-4)
    for tag in ("train/semantic_miou", "train/tags_tag_f1"):
        assert all(0.0 <= v <= 1.0 for _, v in scalars[tag])
    for tag in ("train/semantic_loss", "train/tags_loss"):
        assert all(np.isfinite(v) and v > 0 for _, v in scalars[tag])

    images = tbevents.list_images(logdir)
    assert "train/overlay" in images, images
    assert images["train/overlay"][0] == 0 and len(images["train/overlay"]) >= 2
    pngs = tbevents.read_images(logdir, ["train/overlay"])["train/overlay"][-1][1]
    overlay = cv2.imdecode(np.frombuffer(pngs[0], np.uint8), cv2.IMREAD_COLOR)
    assert overlay.shape == (CROP, 3 * CROP, 3)  # input | ground truth | prediction


# ------------------------------------------------------------------- tools.eval
EVAL_MODES = ("none", "prune", "bp_l2", "bp_es", "bp_l2_prune", "bp_es_prune")


@pytest.fixture(scope="module")
def eval_run(resumed_run, data_dir, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("eval")
    t0 = time.time()
    proc = run_tool(
        "eval", f"--checkpoint_dir={resumed_run['logdir']}", f"--dataset_dir={data_dir}",
        f"--eval_logdir={out}", f"--evidence_modes={','.join(EVAL_MODES)}",
        "--max_number_of_examples=2", "--evidence_steps=1", "--evidence_es_steps=2",
        "--num_vis_examples=2",
    )
    return {"proc": proc, "out": out, "seconds": time.time() - t0}


def test_eval_prints_and_writes_json_table_and_figure(eval_run):
    proc, out = eval_run["proc"], eval_run["out"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    stdout = proc.stdout
    assert "mIoU" in stdout and "per-class IoU" in stdout and "F1" in stdout
    for name in INFO.class_names:
        assert name in stdout
    results = json.loads((out / "eval_results.json").read_text())
    assert results["num_images"] == 2 and results["model"] == VARIANT
    assert list(results["modes"]) == list(EVAL_MODES)
    for mode in EVAL_MODES:
        row = results["modes"][mode]
        assert 0.0 <= row["miou"] <= 1.0
        assert set(row["per_class_iou"]) == set(INFO.class_names)
        present = [v for v in row["per_class_iou"].values() if v is not None]
        assert present and all(0.0 <= v <= 1.0 for v in present)
        # mIoU is the mean over the classes that occur (prediction or ground truth).
        assert row["miou"] == pytest.approx(np.mean(present), abs=1e-6)
    for key in ("precision", "recall", "f1", "mAP"):
        assert 0.0 <= results["tags"][key] <= 1.0
    assert f"F1 {results['tags']['f1']:.4f}" in stdout
    assert results["evidence"]["steps"] == 1 and results["evidence"]["es_steps"] == 2
    # refit rows say how many steps each image took: L2 runs exactly --evidence_steps,
    # early stopping at most --evidence_es_steps; plain rows have no such record.
    l2 = results["modes"]["bp_l2"]["refit_steps"]
    assert {k: l2[k] for k in ("mean", "max", "fraction_zero")} == {
        "mean": 1.0, "max": 1, "fraction_zero": 0.0}
    # The safeguard's count: how many images kept the plain prediction.
    assert 0 <= l2["fell_back"] <= 2 and f"for {l2['fell_back']} of 2 images" in stdout
    es = results["modes"]["bp_es"]["refit_steps"]
    assert 0 <= es["mean"] <= es["max"] <= 2 and 0.0 <= es["fraction_zero"] <= 1.0
    assert "refit_steps" not in results["modes"]["none"]
    # Error split: pruning leaves no pixel on an untagged class; the parts add up.
    for mode in EVAL_MODES:
        e = results["modes"][mode]["errors"]
        assert e["wrong_fraction"] == pytest.approx(e["untagged_fraction"] + e["tagged_fraction"])
        assert e["tagged_fraction"] == pytest.approx(
            e["missed_fraction"] + e["spurious_fraction"] + e["confused_fraction"])
        assert 0.0 <= e["untagged_fraction"] <= e["wrong_fraction"] <= 1.0
        if mode.endswith("prune"):
            assert e["untagged_fraction"] == 0.0, (mode, e)
    # The table: one row per mode, in stdout and in the JSON.
    for mode in EVAL_MODES:
        row = results["modes"][mode]
        line = f"| {row['name']} | {100 * row['miou']:.2f} | {mode} |"
        assert line in results["table"] and line in stdout
    # Paired bootstrap: each row against DL-MT (all but DL-MT) and DL-MT-Pr (the refit
    # rows); the point difference is the rows' mIoU difference and lies in its interval.
    assert results["bootstrap"] == {"num_samples": 1000, "level": 0.95, "num_images": 2}
    assert "vs" not in results["modes"]["none"]
    assert set(results["modes"]["prune"]["vs"]) == {"none"}
    for mode in EVAL_MODES[2:]:
        vs = results["modes"][mode]["vs"]
        assert set(vs) == {"none", "prune"}
        for base, st in vs.items():
            diff = results["modes"][mode]["miou"] - results["modes"][base]["miou"]
            assert st["diff"] == pytest.approx(diff, abs=1e-6)
            assert st["low"] <= st["high"] and 0.0 <= st["p_greater"] <= 1.0
    assert "vs DL-MT-Pr (95% CI, 2 images)" in results["table"].splitlines()[0]
    png = (out / "comparison.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    fig = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert fig is not None
    # 2 example rows of (input, ground truth, one column per mode) 48x48 tiles, padded by 2
    # and scaled by 256 // 48 = 5, under a header.
    scale = 256 // 48
    assert fig.shape[1] == (2 + len(EVAL_MODES)) * (48 + 4) * scale
    assert fig.shape[0] == 18 * scale + 2 * (48 + 4) * scale


def test_eval_pads_onto_the_training_grid(eval_run, resumed_run, data_dir, tmp_path):
    """Trained at 33 = 2 * 16 + 1, evaluated on 48x48 images: without size flags the
    images are padded to 49x49, as with the aligned --eval_crop_size=49,49 (the pipeline
    pads those with the ignore label, this crops the output back: the same mIoU); a
    misaligned --eval_crop_size gets a warning naming the aligned one."""
    plain = json.loads((eval_run["out"] / "eval_results.json").read_text())["modes"]["none"]
    for crop, warns in (("49,49", False), ("48,48", True)):
        out = tmp_path / crop
        proc = run_tool("eval", f"--checkpoint_dir={resumed_run['logdir']}",
                        f"--dataset_dir={data_dir}", f"--eval_logdir={out}",
                        "--max_number_of_examples=2", "--bootstrap_samples=0",
                        f"--eval_crop_size={crop}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        row = json.loads((out / "eval_results.json").read_text())["modes"]["none"]
        assert row["miou"] == pytest.approx(plain["miou"], abs=1e-3)  # within 0.1 points
        assert ("warning: --eval_crop_size=48,48 is off the grid" in proc.stdout) == warns
        assert ("use that as --eval_crop_size" in proc.stdout) == warns
        if warns:
            assert "padded further to 49,49" in proc.stdout


def test_eval_resizes_into_the_runs_training_range(data_dir):
    """A run trained with --max_resize_value=32 is evaluated on 48px images shrunk to 32
    (labels too, as the original's eval), unless the eval flag says otherwise."""
    from deeplab_ext.data.datasets import get_dataset_info
    from deeplab_ext.run.modes import load_split

    info, lines = get_dataset_info("shapes_evidence"), []
    for meta, given, side in (({}, None, 48), ({"max_resize_value": 32}, None, 32),
                              ({"max_resize_value": 32}, 24, 24)):
        batches, _ = load_split(None, info, meta, str(data_dir), "val", align=False,
                                max_resize_value=given, printer=lines.append)
        images, targets = batches[0]
        assert images.shape[1:3] == (side, side) and targets["semantic"].shape[1:3] == (side,
                                                                                       side)
    assert sum("Resizing val into the range" in line for line in lines) == 2


def test_error_breakdown_counts_by_hand():
    from deeplab_ext.run.modes import ErrorBreakdown

    info = get_dataset_info("shapes_evidence")  # background 0, tags = classes 1..8, ignore 255
    label = np.array([[[0, 1, 1, 255], [2, 2, 0, 0]]])
    pred = np.array([[[0, 2, 1, 5], [2, 0, 3, 0]]])
    tags = np.zeros((1, info.num_tags), np.float32)
    tags[0, [0, 1]] = 1  # classes 1 and 2 are in the image
    eb = ErrorBreakdown(info)
    eb.update(label, pred, tags)
    # 7 valid pixels; wrong: (0,1) 2 for 1 [tagged], (1,1) 0 for 2 [background is kept],
    # (1,2) 3 for 0 [untagged]; the ignored pixel predicted 5 does not count.
    # Of the two tagged errors, (1,1) is a missed object, (0,1) a confusion.
    assert eb.result() == pytest.approx(
        {"wrong_fraction": 3 / 7, "untagged_fraction": 1 / 7, "tagged_fraction": 2 / 7,
         "missed_fraction": 1 / 7, "spurious_fraction": 0.0, "confused_fraction": 1 / 7})
    # A tagged class painted on background is spurious (not missed, not confused).
    eb2 = ErrorBreakdown(info)
    eb2.update(np.array([[[0, 0, 1]]]), np.array([[[1, 0, 1]]]), tags)
    r = eb2.result()
    assert (r["spurious_fraction"], r["missed_fraction"], r["confused_fraction"]) == (
        pytest.approx(1 / 3), 0.0, 0.0)


# ------------------------------------------------------------- failure messages
def test_train_missing_dataset_dir_names_it(tmp_path):
    empty = tmp_path / "no_shards_here"
    empty.mkdir()
    proc = run_tool("train", *train_args(tmp_path / "log", empty))
    assert_user_error(proc, str(empty), "no TFRecord shards", "build_synthetic_data")


def test_train_wrong_model_variant_lists_valid_ones(tmp_path, data_dir):
    args = [a for a in train_args(tmp_path / "log", data_dir) if not a.startswith("--model_variant")]
    proc = run_tool("train", *args, "--model_variant=deeplabv3plus_mobilenetv7")
    assert_user_error(proc, "deeplabv3plus_mobilenetv7", VARIANT, "deeplabv3plus_xception65")


def test_bad_flag_values_are_one_error_line(tmp_path, data_dir):
    args = [a for a in train_args(tmp_path / "log", data_dir) if "crop_size" not in a]
    proc = run_tool("train", *args, "--train_crop_size=33,abc")
    assert_user_error(proc, "--train_crop_size=33,abc")
    assert not (tmp_path / "log").exists()


def test_eval_checkpoint_of_another_model_is_refused(resumed_run, data_dir, tmp_path):
    from deeplab_ext.models import get_variant
    from deeplab_ext.run.rundir import save_run_config

    other = tmp_path / "other_model"
    other.mkdir()
    src = resumed_run["logdir"]
    for p in src.iterdir():
        if p.is_file() and (p.name == "checkpoint" or p.name.startswith(f"ckpt-{TOTAL_STEPS}.")):
            shutil.copy(p, other / p.name)
    # The config of a different variant (full-width MobileNetV2) next to the tiny weights.
    save_run_config(other, *get_variant("deeplabv3plus_mobilenetv2_mt", num_classes=9), INFO)
    proc = run_tool("eval", f"--checkpoint_dir={other}", f"--dataset_dir={data_dir}",
                    "--max_number_of_examples=1")
    assert_user_error(proc, "does not match model deeplabv3plus_mobilenetv2_mt", str(other))


def test_eval_on_another_datasets_shards_is_refused(resumed_run, real_data, tmp_path):
    """A shapes_evidence checkpoint on CamVid shards: refused before any metric."""
    from deeplab_ext.data import build_data

    camvid = real_data / "camvid-sample"
    pairs = (camvid / "val.txt").read_text().splitlines()[:2]
    (tmp_path / "val.txt").write_text("\n".join(pairs) + "\n")
    shards = tmp_path / "camvid_shards"
    build_data.build_camvid_dataset(camvid, shards, num_shards=1,
                                    list_files={"val": str(tmp_path / "val.txt")})
    proc = run_tool("eval", f"--checkpoint_dir={resumed_run['logdir']}",
                    f"--dataset_dir={shards}", f"--eval_logdir={tmp_path / 'eval'}")
    line = assert_user_error(proc, str(shards), "'shapes_evidence'", "9 classes",
                             "another dataset")
    assert "11" in line  # CamVid's unlabelled value, beyond shapes_evidence's classes
    assert "tags:" not in proc.stdout and not (tmp_path / "eval").exists()


def test_eval_negative_bootstrap_samples_is_refused(tmp_path, data_dir):
    proc = run_tool("eval", f"--checkpoint_dir={tmp_path}", f"--dataset_dir={data_dir}",
                    "--bootstrap_samples=-1")
    assert_user_error(proc, "--bootstrap_samples must be >= 0")
