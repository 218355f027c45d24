"""Evidence when the tags are wrong (issue 43): tools.eval and tools.tune_evidence with
noisy or user-given tags, and the soft rows (tags as probabilities, pruning as a prior),
on the suite's tiny run."""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np
import pytest

from deeplab_ext.run.evaluation import evaluate
from deeplab_ext.run.options import EvalOptions, EvidenceOptions, TuneOptions
from deeplab_ext.run.tuning import tune_evidence
from tests.conftest import assert_user_error, copy_run, run_tool


def _eval(run, data, logdir, lines=None, **fields) -> dict:
    options = EvalOptions(checkpoint_dir=str(run), dataset_dir=str(data), eval_logdir=str(logdir),
                          bootstrap_samples=0, num_vis_examples=0, **fields)
    return evaluate(options, printer=(lines.append if lines is not None else lambda line: None))


def test_noisy_tags_reach_every_row_and_are_recorded(tiny_run, shapes_data, tmp_path):
    """With every tag dropped, the seed's pruned rows keep background only; the soft rows at
    strength 1 and confidence 1 are the seed's rows (one pass, the same numbers); plain
    inference does not read the tags; each image's noise is in eval_results.json."""
    modes = ("none", "prune", "soft_prune", "bp_l2_prune", "bp_l2_soft_prune")
    lines: list[str] = []
    noisy = _eval(tiny_run, shapes_data, tmp_path / "noisy", lines, evidence_modes=modes,
                  tag_noise="drop:9,seed:0", evidence=EvidenceOptions(steps=1))
    truth = _eval(tiny_run, shapes_data, tmp_path / "truth", evidence_modes=("none",))
    assert noisy["tags_given"]["tag_noise"] == "drop:9,add:0,seed:0"
    written = json.loads((tmp_path / "noisy" / "eval_results.json").read_text())
    for image in written["per_image"]:
        assert image["tags"]["given"] == {} and image["tags"]["added"] == []
    assert sum(len(i["tags"]["dropped"]) for i in written["per_image"]) > 0
    rows = noisy["modes"]
    assert rows["none"]["miou"] == truth["modes"]["none"]["miou"]  # same graph, same images
    for mode in ("prune", "bp_l2_prune"):
        assert all(v in (None, 0.0) for c, v in rows[mode]["per_class_iou"].items()
                   if c != "background"), rows[mode]["per_class_iou"]
    assert rows["soft_prune"]["miou"] == rows["prune"]["miou"]
    assert rows["bp_l2_soft_prune"]["miou"] == rows["bp_l2_prune"]["miou"]
    assert any("predicted DL-BP-L2-Pr, DL-BP-L2-SPr" in line for line in lines), lines

    # Soft: strength 0 is no pruning (the plain class map, up to a near-tie that rescaling
    # a distribution may flip); a tag confidence below 1 is a refit pass of its own.
    lines.clear()
    soft = _eval(tiny_run, shapes_data, tmp_path / "soft", lines, evidence_modes=modes,
                 tag_noise="drop:9,seed:0",
                 evidence=EvidenceOptions(steps=1, prune_strength=0.0, tag_confidence=0.8))
    assert soft["modes"]["soft_prune"]["miou"] == pytest.approx(rows["none"]["miou"], abs=1e-3)
    assert soft["modes"]["prune"]["miou"] == rows["prune"]["miou"]  # the seed's row, unmoved
    assert any(line.strip().startswith("predicted DL-BP-L2-SPr (") for line in lines), lines
    assert soft["evidence"]["prune_strength"] == 0.0


def test_tags_from_a_file(tiny_run, shapes_data, tmp_path):
    from deeplab_ext.data import input_pipeline

    names = input_pipeline.split_filenames(shapes_data, "val")
    tags = tmp_path / "tags.json"
    tags.write_text(json.dumps({name: ["disk_h:0.7"] for name in names}))
    out = _eval(tiny_run, shapes_data, tmp_path / "file", evidence_modes=("none", "prune"),
                tags_from=str(tags))
    assert out["tags_given"] == {"source": "file", "tags_from": str(tags)}
    assert [i["tags"]["given"] for i in out["per_image"]] == [{"disk_h": 0.7}] * len(names)
    tags.write_text(json.dumps({names[0]: ["disk_h"]}))
    with pytest.raises(ValueError, match=f"no tags for {len(names) - 1} of the {len(names)}"):
        _eval(tiny_run, shapes_data, tmp_path / "file2", evidence_modes=("none", "prune"),
              tags_from=str(tags))


@pytest.fixture(scope="module")
def soft_tuned(tiny_run, shapes_data, tmp_path_factory) -> dict:
    run = copy_run(tiny_run, tmp_path_factory.mktemp("soft") / "run")
    lines: list[str] = []
    tune_evidence(TuneOptions(checkpoint_dir=str(run), dataset_dir=str(shapes_data),
                              tune_split="test", kinds=("l2",), objective="soft",
                              tag_noise="drop:1,seed:0", prune_strengths=(1.0, 0.5, 0.0),
                              tag_confidences=(1.0, 0.8), max_candidates=3, clip_norms=(0.0,),
                              learning_rates=(0.01,), evidence=EvidenceOptions(steps=1),
                              bootstrap_samples=100), printer=lines.append)
    return {"run": run, "out": "\n".join(lines),
            "tuned": json.loads((run / "evidence_tuned.json").read_text())}


def test_the_soft_objective_tunes_the_prior_with_and_without_a_refit(soft_tuned):
    tuned, out = soft_tuned["tuned"], soft_tuned["out"]
    assert tuned["objective"] == "soft" and tuned["tags_given"]["tag_noise"] == "drop:1,add:0,seed:0"
    assert "Tuning with the true tags with noise drop:1,add:0,seed:0" in out
    prior, rows = tuned["no_refit"], tuned["table"]
    # No refit: every strength and confidence scored, the strengths of one confidence in one
    # pass (pruning acts after the prediction), so 2 passes for 4 candidates.
    tried = [r for r in rows if r["kind"] == "-"]
    assert len(tried) == 4 and prior["passes"] == 2 and prior["candidates"] == 5
    assert prior["miou"] >= tried[0]["miou"]  # never worse than its start (the seed's pruning)
    l2 = tuned["kinds"]["l2"]
    # The refit: --max_candidates=3 allows 2 passes, yet the first scores all 3 strengths.
    refits = [r for r in rows if r["kind"] == "l2"]
    assert l2["passes"] <= 2 and len(refits) >= 3
    assert l2["miou"] >= l2["no_refit_miou"] == prior["miou"]
    if not l2["refit"]:
        assert l2["evidence"]["steps"] == 0
        for key in ("prune_strength", "tag_confidence"):
            assert l2["evidence"][key] == prior["evidence"][key]
    assert "no refit (soft prior): prune_strength=" in out


def test_eval_reads_the_soft_prior_the_tuning_chose(soft_tuned, shapes_data, tmp_path):
    run, tuned = soft_tuned["run"], soft_tuned["tuned"]
    out = _eval(run, shapes_data, tmp_path / "eval", evidence_modes=("prune", "soft_prune"))
    assert out["evidence_by_kind"]["none"] == tuned["no_refit"]["evidence"]
    assert out["evidence_by_kind"]["l2"] == tuned["kinds"]["l2"]["evidence"]
    # served (export, tools.predict --checkpoint_dir): pruned, with the tuned prior
    from deeplab_ext.run.export import serving_evidence

    kind, served, prune = serving_evidence(run, EvidenceOptions(), printer=lambda line: None)
    assert prune and kind == "l2"
    assert dataclasses.asdict(served) == tuned["kinds"]["l2"]["evidence"]
    # ... and the export carries the prior to its client (a strength given wins)
    from deeplab_ext.run.export import LoadedSegmenter, export_checkpoint
    from deeplab_ext.run.options import ExportOptions

    export = export_checkpoint(
        ExportOptions(checkpoint_dir=str(run), export_path=str(tmp_path / "export"),
                      evidence=EvidenceOptions(prune_strength=0.4),
                      given=frozenset({"evidence_prune_strength"})),
        printer=lambda line: None)
    client = LoadedSegmenter(export)
    assert client.prune and client.prune_strength == 0.4
    assert client.tag_confidence == served.tag_confidence


def test_the_soft_flags_are_refused_where_nothing_reads_them(tiny_run, shapes_data, tmp_path):
    proc = run_tool("eval", f"--checkpoint_dir={tiny_run}", f"--dataset_dir={shapes_data}",
                    "--evidence_modes=none,prune", "--evidence_prune_strength=0.5")
    assert_user_error(proc, "--evidence_prune_strength", "soft rows only")
    proc = run_tool("eval", f"--checkpoint_dir={tiny_run}", f"--dataset_dir={shapes_data}",
                    "--evidence_modes=soft_prune", "--evidence_prune_strength=1.5")
    assert_user_error(proc, "--evidence_prune_strength=1.5: must be in [0, 1]")
    proc = run_tool("eval", f"--checkpoint_dir={tiny_run}", f"--dataset_dir={shapes_data}",
                    "--evidence_modes=soft_prune", "--evidence_tag_confidence=0.4")
    assert_user_error(proc, "--evidence_tag_confidence=0.4: must be in (0.5, 1]")
    proc = run_tool("eval", f"--checkpoint_dir={tiny_run}", f"--dataset_dir={shapes_data}",
                    "--tag_noise=flip:1")
    assert_user_error(proc, "--tag_noise=flip:1", "drop:K, add:K, seed:N")
    proc = run_tool("tune_evidence", f"--checkpoint_dir={tiny_run}",
                    f"--dataset_dir={shapes_data}", "--prune_strengths=1,0.5")
    assert_user_error(proc, "--prune_strengths", "--objective=soft only")


def test_noisy_eval_through_the_cli(tiny_run, shapes_data, tmp_path: pathlib.Path):
    out = tmp_path / "eval"
    proc = run_tool("eval", f"--checkpoint_dir={tiny_run}", f"--dataset_dir={shapes_data}",
                    f"--eval_logdir={out}", "--evidence_modes=none,prune,soft_prune",
                    "--tag_noise=add:1,seed:2", "--evidence_prune_strength=0.5",
                    "--bootstrap_samples=50")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "the true tags with noise drop:0,add:1,seed:2" in proc.stdout
    results = json.loads((out / "eval_results.json").read_text())
    assert list(results["modes"]) == ["none", "prune", "soft_prune"]
    assert results["modes"]["soft_prune"]["name"] == "DL-MT-SPr"
    assert all(len(i["tags"]["added"]) == 1 for i in results["per_image"])
    assert "| DL-MT-SPr |" in results["table"]
    assert np.isfinite(results["modes"]["soft_prune"]["vs"]["prune"]["diff"])
