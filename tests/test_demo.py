"""The main job (`make demo` = tools.demo) end to end on a tiny budget."""

from __future__ import annotations

import html.parser
import json
import os
import subprocess
import sys

import cv2

from tests.conftest import REPO


class _Imgs(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])


def test_demo_tiny_budget(tmp_path):
    work = tmp_path / "demo"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "-m", "tools.demo", f"--workdir={work}", "--train_steps=30",
         "--num_train=48", "--num_val=6", "--evidence_steps=2", "--evidence_es_steps=3",
         "--evidence_modes=none,prune,bp_l2,bp_es_prune"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    # Progress throughout, and where everything is.
    for stage in range(1, 8):
        assert f"[{stage}/7]" in out
    assert f"tensorboard --logdir {work / 'train'}" in out
    report = work / "report.html"
    page = report.read_text()
    parser = _Imgs()
    parser.feed(page)
    assert len(parser.srcs) >= 4, parser.srcs  # plots + comparison + sample + prediction
    for src in parser.srcs:
        img = cv2.imread(str(report.parent / src))
        assert img is not None and img.size > 0, src
    for row in ("DL-MT", "DL-MT-Pr", "DL-BP-L2", "DL-BP-ES-Pr"):
        assert row in page
    results = json.loads((work / "eval" / "eval_results.json").read_text())
    assert set(results["modes"]) == {"none", "prune", "bp_l2", "bp_es_prune"}
    # The report's evidence table carries each row's bootstrap interval against DL-MT-Pr.
    assert "vs DL-MT-Pr (95% CI over images)" in page
    st = results["modes"]["bp_l2"]["vs"]["prune"]
    assert f"{100 * st['diff']:+.2f} [{100 * st['low']:+.2f}, {100 * st['high']:+.2f}]" in page
    # the demo's own refit defaults reach the evaluation; flags given still win
    ev = results["evidence"]
    assert (ev["learning_rate"], ev["clip_norm"], ev["steps"]) == (0.1, 0.5, 2), ev
    assert (work / "export" / "saved_model.pb").is_file()
    assert (work / "sample_prediction.png").is_file()
    assert list((work / "train").glob("ckpt-30.index"))


def test_demo_dataset_override_voc_folder(tmp_path, shared_data):
    """`make demo DEMO_ARGS=--data=<VOC folder>`: converts, trains, evaluates full-size images."""
    work = tmp_path / "demo_voc"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "-m", "tools.demo", f"--workdir={work}",
         f"--data={shared_data / 'coco128-voc'}", "--train_steps=4", "--train_batch_size=2",
         "--max_eval_images=3", "--evidence_steps=1", "--evidence_modes=none,prune,bp_l2_prune"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((work / "eval" / "eval_results.json").read_text())
    assert results["dataset"] == "pascal_voc_seg" and results["num_images"] == 3
    # Full-size photos of different sizes still make one comparison figure.
    assert cv2.imread(str(work / "eval" / "comparison.png")) is not None
    assert (work / "report.html").is_file()
