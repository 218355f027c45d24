"""`make demo DEMO_ARGS=--data=<VOC folder>` end to end on a tiny budget (its own file:
pytest-xdist runs files on different workers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2

from tests.conftest import REPO


def test_demo_dataset_override_voc_folder(tmp_path, shared_data):
    """`make demo DEMO_ARGS=--data=<VOC folder> --tf_initial_checkpoint=<released file>`:
    converts, starts from the original's released model (its new tag head trained alone),
    evaluates full-size real photos."""
    work = tmp_path / "demo_voc"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    released = shared_data.parent / "models" / "deeplabv3_mnv2_dm05_pascal_257.tflite"
    proc = subprocess.run(
        [sys.executable, "-m", "tools.demo", f"--workdir={work}",
         f"--data={shared_data / 'coco128-voc'}", "--train_steps=4", "--train_batch_size=2",
         "--model_variant=deeplabv3_mobilenetv2_dm05_mt", f"--tf_initial_checkpoint={released}",
         "--train_groups=tag_head", "--num_tune=0",
         "--max_eval_images=3", "--evidence_steps=1", "--evidence_modes=none,prune"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((work / "eval" / "eval_results.json").read_text())
    assert results["dataset"] == "pascal_voc_seg" and results["num_images"] == 3
    assert "loaded 272 variables" in proc.stdout and "froze" in proc.stdout
    # The released model sees these photos (from scratch the demo learns background only).
    assert results["modes"]["none"]["miou"] > 0.2, results["modes"]["none"]["miou"]
    # Full-size photos of different sizes still make one comparison figure.
    assert cv2.imread(str(work / "eval" / "comparison.png")) is not None
    assert (work / "report.html").is_file()


def test_demo_from_released_weights_trains_nothing(tmp_path, shared_data):
    """`make demo DEMO_ARGS="--data=<VOC folder> --tf_initial_checkpoint=<released file>
    --tag_head=segmentation"`: imports (no training), tunes for pruned rows on train,
    evaluates val, exports, and serves what it exported (pruned after the refit)."""
    work = tmp_path / "demo_pooled"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    released = shared_data.parent / "models" / "deeplabv3_mnv2_dm05_pascal_257.tflite"
    proc = subprocess.run(
        [sys.executable, "-m", "tools.demo", f"--workdir={work}",
         f"--data={shared_data / 'coco128-voc'}", f"--tf_initial_checkpoint={released}",
         "--tag_head=segmentation", "--num_tune=3", "--tune_candidates=2",
         "--max_eval_images=3"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "nothing to train" in out and "Training " not in out
    assert "is the layout of --model_variant=deeplabv3_mobilenetv2_dm05" in out
    results = json.loads((work / "eval" / "eval_results.json").read_text())
    assert list(results["modes"]) == ["none", "prune", "bp_l2", "bp_l2_prune"]
    assert results["tags"]["f1"] > 0.3  # tags pooled from the released segmentation
    tuned = json.loads((work / "train" / "evidence_tuned.json").read_text())
    assert tuned["objective"] == "pruned" and list(tuned["kinds"]) == ["l2"]
    meta = json.loads((work / "export" / "assets" / "deeplab_export.json").read_text())
    assert meta["evidence_prune"] is True and meta["model"]["tag_head"] == "segmentation"
    assert '"pruned": true' in out  # tools.predict served the export's choice
    assert (work / "report.html").is_file()
    assert max(len(line) for line in (out + proc.stderr).splitlines()) <= 500
