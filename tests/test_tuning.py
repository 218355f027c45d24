"""Refit settings tuned per trained model: tools.tune_evidence, and the tools that use
what it writes into the run directory (tools.eval, tools.export_model, tools.predict)."""

from __future__ import annotations

import json
import pathlib

import cv2
import numpy as np
import pytest

from deeplab_ext.run.evaluation import evaluate
from deeplab_ext.run.options import EvalOptions, EvidenceOptions, TuneOptions
from deeplab_ext.run.tuning import tune_evidence
from tests.conftest import copy_run, run_tool


# ------------------------------------------------------------ tuned refit settings
def test_choose_never_picks_a_refit_that_does_not_beat_no_refit():
    from deeplab_ext.run.tuning import choose

    assert choose(0.5, []) is None
    assert choose(0.5, [(0.4, 1.0, "a")]) is None
    assert choose(0.5, [(0.5, 1.0, "a")]) is None  # a tie keeps plain inference
    assert choose(0.5, [(0.6, 1.0, "a"), (0.55, 1.0, "b")]) == "a"
    # A lead that too few resamples of the tuning images confirm does not count.
    assert choose(0.5, [(0.6, 0.7, "a"), (0.55, 0.95, "b")], min_confidence=0.9) == "b"
    assert choose(0.5, [(0.6, 0.7, "a")], min_confidence=0.9) is None


def test_the_soft_prior_is_chosen_when_it_beats_the_seeds_pruning_confidently():
    """The soft objective's search without a refit: each candidate prior against its start
    point (the seed's pruning), on per-image counts; one pass per tag confidence scores
    every prune strength. (Fake runs: the mIoU of each prior is set, not measured.)"""
    import dataclasses

    from deeplab_ext.run.modes import ModeRun
    from deeplab_ext.run.tuning import _key, _KindSearch, prior_dimensions

    options = TuneOptions(checkpoint_dir="run", dataset_dir="data", objective="soft",
                          prune_strengths=(1.0, 0.5, 0.0), tag_confidences=(1.0, 0.8))
    quality = {(1.0, 1.0): 0.3, (0.5, 1.0): 0.6, (0.0, 1.0): 0.5, (1.0, 0.8): 0.3,
               (0.5, 0.8): 0.55, (0.0, 0.8): 0.5}
    rng = np.random.default_rng(0)
    noise = rng.uniform(-0.05, 0.05, 40)
    extra = {}  # per-image differences of a prior from the start (a lead by chance)
    passes = []

    def run(mode, evidence):
        assert mode == "soft_prune"
        passes.append(evidence.tag_confidence)
        twins = [dataclasses.replace(evidence, prune_strength=v) for v in options.prune_strengths]
        out = {}
        for t in twins:
            q = quality[(t.prune_strength, t.tag_confidence)]
            # [correct, ground-truth, predicted] pixels of one class: IoU = q' / (2 - q')
            d = extra.get((t.prune_strength, t.tag_confidence), np.zeros_like(noise))
            counts = [np.array([[100 * (q + e)], [100.0], [100.0]]) for e in noise + d]
            out[_key(t)] = (t, ModeRun(counts, [], None, None, None, 1.0))
        return out

    search = _KindSearch(None, "soft_prune", run, None, options, lambda line: None)
    search.coordinate_descent(prior_dimensions(options), budget=False)
    entry = search.choice()
    assert passes == [1.0, 0.8]  # the strengths of one confidence came with its pass
    assert [r["candidate"] for r in search.rows[:2]] == [  # the prior in every label
        "no refit (DL-MT-SPr), prune_strength=1.0, tag_confidence=1.0",
        "no refit (DL-MT-SPr), prune_strength=0.5, tag_confidence=1.0"]
    assert entry["refit"] and entry["passes"] == 2 and entry["candidates"] == 5
    assert entry["evidence"]["prune_strength"] == 0.5 and entry["evidence"]["tag_confidence"] == 1
    assert entry["miou"] == pytest.approx(0.6 / 1.4, abs=0.01) and entry["vs_no_refit"]["low"] > 0
    # A lead the resamples do not confirm keeps the start (the seed's pruning).
    quality.update({(0.5, 1.0): 0.3, (0.0, 1.0): 0.2, (0.5, 0.8): 0.2, (0.0, 0.8): 0.2})
    d = rng.uniform(-0.05, 0.05, 40)
    extra[(0.5, 1.0)] = d - d.mean() + 0.001  # ahead by 0.001 on average, noisy per image
    search = _KindSearch(None, "soft_prune", run, None, options, lambda line: None)
    search.coordinate_descent(prior_dimensions(options), budget=False)
    entry = search.choice()
    assert not entry["refit"] and entry["evidence"]["prune_strength"] == 1.0
    assert entry["best"]["prune_strength"] == 0.5  # the best by mIoU, not confirmed


@pytest.fixture(scope="module")
def data_dir(shapes_data) -> pathlib.Path:
    return shapes_data


@pytest.fixture(scope="module")
def tuned_run(tiny_run, data_dir, tmp_path_factory) -> dict:
    """The suite's short training run (a copy), tuned by tools.tune_evidence on the
    generated test split."""
    run = copy_run(tiny_run, tmp_path_factory.mktemp("tuned") / "run")
    out = _tune(run, data_dir, max_candidates=3, learning_rates=(0.01, 0.3),
                evidence=EvidenceOptions(steps=1, es_steps=2), bootstrap_samples=100)
    return {"run": run, "out": out, "tuned": json.loads((run / "evidence_tuned.json").read_text())}


def _tune(run: pathlib.Path, data_dir: pathlib.Path, **fields) -> str:
    """tools.tune_evidence in this process (the CLI adds flag parsing, which the eval and
    predict calls below cover); its printed output."""
    lines: list[str] = []
    tune_evidence(TuneOptions(checkpoint_dir=str(run), dataset_dir=str(data_dir),
                              tune_split="test", clip_norms=(0.0,), **fields),
                  printer=lines.append)
    return "\n".join(lines)


def test_tuning_includes_no_refit_and_never_returns_worse(tuned_run):
    tuned, out = tuned_run["tuned"], tuned_run["out"]
    assert "| kind | candidate | mIoU (%) | vs no refit |" in out
    rows = tuned["table"]
    assert rows[0]["candidate"] == "no refit (plain inference)"
    plain = rows[0]["miou"]
    assert set(tuned["kinds"]) == {"l2", "es"} and tuned["tune_split"] == "test"
    for kind, entry in tuned["kinds"].items():
        tried = [r for r in rows if r["kind"] == kind]
        assert 1 <= len(tried) <= 2  # --max_candidates=3, no refit included
        confident = [r["miou"] for r in tried if r["p_greater"] >= entry["min_confidence"]]
        assert entry["miou"] == max([plain, *confident]) >= plain
        if entry["refit"]:
            assert entry["miou"] > plain
        else:  # no refit: zero steps, the plain prediction
            assert entry["evidence"]["steps"] == entry["evidence"]["es_steps"] == 0
            assert entry["miou"] == plain
    assert tuned["serving_kind"] in tuned["kinds"]


def test_tuned_settings_reach_eval_export_and_a_fresh_predict(tuned_run, data_dir, tmp_path):
    run, tuned = tuned_run["run"], tuned_run["tuned"]
    out = tmp_path / "eval"
    proc = run_tool("eval", f"--checkpoint_dir={run}", f"--dataset_dir={data_dir}",
                    f"--eval_logdir={out}", "--evidence_modes=none,bp_l2,bp_es",
                    "--max_number_of_examples=1", "--bootstrap_samples=0",
                    "--evidence_threshold=0.6")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Refit settings tuned on" in proc.stdout and "flags given win: threshold" in proc.stdout
    used = json.loads((out / "eval_results.json").read_text())["evidence_by_kind"]
    for kind in ("l2", "es"):
        want = {**tuned["kinds"][kind]["evidence"], "threshold": 0.6}  # the flag given wins
        assert used[kind] == want, kind

    export = tmp_path / "export"
    proc = run_tool("export_model", f"--checkpoint_dir={run}", f"--export_path={export}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((export / "assets" / "deeplab_export.json").read_text())
    kind = tuned["serving_kind"]
    chosen = tuned["kinds"][kind]["evidence"]
    steps = chosen["es_steps"] if kind == "es" else chosen["steps"]
    assert meta["evidence_kind"] == kind and meta["evidence_steps"] == steps
    for key in ("learning_rate", "clip_norm", "safeguard"):
        assert meta["evidence"][key] == chosen[key], key
    assert meta["evidence"]["early_stopping"] == (kind == "es")

    image = tmp_path / "image.png"
    cv2.imwrite(str(image), np.full((48, 48, 3), 90, np.uint8))
    proc = run_tool("predict", f"--saved_model={export}", f"--image={image}", "--tags=disk_h",
                    f"--output={tmp_path / 'pred.png'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert report["refit_steps"] == steps  # the export's own, in a fresh process
    assert report["steps_taken"] <= steps


def test_cross_fitting_scores_every_image_held_out(tuned_run, data_dir):
    """--folds=2: each fold scored with the settings tuned on the other; the table covers
    every image of the split, and its rows that need no tuning are the plain ones over the
    whole split (the same images, scored once each)."""
    run = tuned_run["run"]
    out = _tune(run, data_dir, folds=2, max_candidates=2, kinds=("l2",), learning_rates=(0.01,),
                evidence=EvidenceOptions(steps=1), bootstrap_samples=50, objective="pruned")
    crossfit = json.loads((run / "evidence_crossfit.json").read_text())
    assert crossfit["num_images"] == 3 and crossfit["objective"] == "pruned"
    assert [f["images"] for f in crossfit["folds"]] == [2, 1]
    assert [f["tuned_on"] for f in crossfit["folds"]] == [1, 2]
    (table,) = crossfit["tables"]  # single scale only: no --eval_scales given
    assert list(table["modes"]) == ["none", "prune", "bp_l2", "bp_l2_prune"]
    assert "Held out over 3 images (2 folds)" in out
    evaluate(EvalOptions(checkpoint_dir=str(run), dataset_dir=str(data_dir), eval_split="test",
                         evidence_modes=("none", "prune"), bootstrap_samples=0,
                         eval_logdir=str(run / "eval_test")), printer=lambda line: None)
    plain = json.loads((run / "eval_test" / "eval_results.json").read_text())["modes"]
    for mode in ("none", "prune"):
        assert table["modes"][mode]["miou"] == pytest.approx(plain[mode]["miou"], abs=1e-12)
    # The tuned-settings file of the whole split is not touched by cross-fitting.
    assert json.loads((run / "evidence_tuned.json").read_text()) == tuned_run["tuned"]


def test_early_stopping_has_no_l2_term_whatever_alpha_says():
    """DL-BP-ES is the seed's early stopping: the cap and the stopping rule regularise it,
    not --evidence_alpha (which only bp_l2 and latent read)."""
    from deeplab_ext.run.options import EvidenceOptions

    ev = EvidenceOptions(alpha=0.1)
    assert ev.config("es", prune=False).alpha == 0.0
    assert ev.config("l2", prune=False).alpha == 0.1
