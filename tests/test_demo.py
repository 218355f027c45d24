"""The training demo (`make demo DEMO_ARGS=--builtin`) end to end on a tiny budget; the
real-photo job (`make demo`) is tests/test_demo_voc.py."""

from __future__ import annotations

import html.parser
import json
import os
import subprocess
import sys

import cv2

from tests.conftest import REPO, TEST_VARIANT


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
    # The suite's network (the demo's tiny one with 7 blocks): the same flow, traced faster.
    proc = subprocess.run(
        [sys.executable, "-m", "tools.demo", "--builtin", f"--workdir={work}", "--train_steps=30",
         f"--model_variant={TEST_VARIANT}",
         "--num_train=48", "--num_val=6", "--num_tune=4", "--tune_candidates=2",
         "--evidence_steps=2", "--evidence_es_steps=3",
         "--evidence_modes=none,prune,bp_l2,bp_es_prune"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    # Progress throughout, and where everything is.
    for stage in range(1, 9):
        assert f"[{stage}/8]" in out
    assert f"tensorboard --logdir {work}" in out and "training curves" in out
    report = work / "report.html"
    page = report.read_text()
    parser = _Imgs()
    parser.feed(page)
    assert len(parser.srcs) >= 4, parser.srcs  # photos + plots + prediction
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
    assert "Refit settings of this model, tuned for the plain row on" in page
    assert "The tuning search" in page and "no refit (plain inference)" in page
    ev = results["evidence"]  # the start point: the demo's own defaults, and the flags
    assert (ev["learning_rate"], ev["clip_norm"], ev["steps"]) == (0.1, 0.5, 2), ev
    for kind in ("l2", "es"):
        used, chosen = results["evidence_by_kind"][kind], tuned["kinds"][kind]["evidence"]
        assert used == {**chosen, "steps": 2, "es_steps": 3}, kind  # flags given win
    assert list((work / "train").glob("ckpt-30.index"))
    # The report's table is eval_results.json's, row by row.
    for row in results["modes"].values():
        assert f"<td>{row['name']}</td><td>{100 * row['miou']:.2f}</td>" in page, row["name"]
    # What the demo served is what the export serves: the sample's class map, predicted
    # here through the exported SavedModel with the export's own steps and pruning, is the
    # demo's sample_prediction.png pixel for pixel.
    import numpy as np

    from deeplab_ext.data.colormap import label_to_color_image
    from deeplab_ext.data.input_pipeline import tags_from_names
    from deeplab_ext.run.export import LoadedSegmenter, read_image
    from tf_mtl.evidence import prune_probabilities

    command = next(line for line in out.splitlines()
                   if line.startswith("$ python -m tools.predict"))
    given = [a.split("=", 1)[1] for a in command.split() if a.startswith("--tags=")]
    seg = LoadedSegmenter(str(work / "export"))
    image = read_image(str(work / "sample.png"))
    if given:
        tags = tags_from_names(given[0].split(","), seg.info)
        probs = seg.predict_with_evidence(image, tags)["semantic_probabilities"]
        if seg.prune:
            probs = prune_probabilities(probs, tags[None], list(seg.info.tag_class_ids),
                                        seg.info.keep_classes).numpy()
    else:
        probs = seg.predict(image)["semantic_probabilities"]
    want = label_to_color_image(probs[0].argmax(-1).astype(np.uint8), seg.info.colormap)
    served = cv2.imread(str(work / "sample_prediction.png"))[..., ::-1]
    np.testing.assert_array_equal(served, want)
    # No line of the demo's output buries the rest (issue 28: serialisation INFO noise).
    assert max(len(line) for line in (out + proc.stderr).splitlines()) <= 500
