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
         "--num_train=48", "--num_val=6", "--num_tune=4", "--tune_candidates=2",
         "--evidence_steps=2", "--evidence_es_steps=3",
         "--evidence_modes=none,prune,bp_l2,bp_es_prune"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    # Progress throughout, and where everything is.
    for stage in range(1, 9):
        assert f"[{stage}/8]" in out
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
    # The demo tuned its refit settings on its own generated split (never val), from its
    # own start point; the evaluation used them, except where flags were given.
    tuned = json.loads((work / "train" / "evidence_tuned.json").read_text())
    assert tuned["tune_split"] == "test" and tuned["num_images"] == 4
    assert "Refit settings chosen for this model on" in page
    assert "The tuning search" in page and "no refit (plain inference)" in page
    ev = results["evidence"]  # the start point: the demo's own defaults, and the flags
    assert (ev["learning_rate"], ev["clip_norm"], ev["steps"]) == (0.1, 0.5, 2), ev
    for kind in ("l2", "es"):
        used, chosen = results["evidence_by_kind"][kind], tuned["kinds"][kind]["evidence"]
        assert used == {**chosen, "steps": 2, "es_steps": 3}, kind  # flags given win
    assert (work / "export" / "saved_model.pb").is_file()
    assert (work / "sample_prediction.png").is_file()
    assert list((work / "train").glob("ckpt-30.index"))
