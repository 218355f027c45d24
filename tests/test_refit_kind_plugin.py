"""A refit kind from outside the tree: registered as a user's module registers one, then
run by the tools (evaluation, tuning, cross-fitting, ``tools.eval --extra_modules``) with
no file of the project naming it.

The kind, "few": at most two refit steps and no L2 term (``steps`` capped by the kind's
own config), so the tools' step counts tell whether its config was applied.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import pytest

from deeplab_ext.run.refit_kinds import RefitKind
from tests.conftest import copy_run, run_tool, tool_env

FEW = RefitKind(
    "few", "bp_few", "DL-BP-FEW", "steps", ("steps",), (("steps", (1, 2)),),
    lambda ev: dict(steps=min(ev.steps, 2), alpha=0.0))
REGISTER_ENV = "TEST_REGISTER_FEW_REFIT_KIND"

if os.environ.get(REGISTER_ENV):  # imported by a tool as --extra_modules
    from deeplab_ext.run.refit_kinds import register_refit_kind

    register_refit_kind(FEW)


@pytest.fixture
def few():
    """The kind registered for one test, removed after it (other tests see the built-ins)."""
    from deeplab_ext.run.refit_kinds import REFIT_KINDS, register_refit_kind

    register_refit_kind(FEW)
    yield FEW
    REFIT_KINDS.unregister(FEW.name)


def test_a_registered_kind_has_its_rows_and_config_and_taken_names_are_refused(few):
    from deeplab_ext.run.modes import check_modes
    from deeplab_ext.run.options import EvidenceOptions
    from deeplab_ext.run.refit_kinds import (
        DEFAULT_KIND,
        EVIDENCE_MODES,
        REFIT_KINDS,
        default_kinds,
        evidence_config,
        kind_names,
        register_refit_kind,
    )

    assert kind_names() == ("l2", "es", "latent", "few") and default_kinds() == ("l2", "es")
    assert [(m, EVIDENCE_MODES[m].row, EVIDENCE_MODES[m].prune, EVIDENCE_MODES[m].soft)
            for m in list(EVIDENCE_MODES)[-3:]] == [
        ("bp_few", "DL-BP-FEW", False, False), ("bp_few_prune", "DL-BP-FEW-Pr", True, False),
        ("bp_few_soft_prune", "DL-BP-FEW-SPr", True, True)]
    cfg = evidence_config(EvidenceOptions(steps=10, alpha=0.1), "few", prune=False)
    assert (cfg.steps, cfg.alpha, cfg.mode, cfg.early_stopping) == (2, 0.0, "weights", False)
    assert FEW.steps(EvidenceOptions(steps=10)) == 2 and FEW.steps(EvidenceOptions(steps=0)) == 0

    other = dataclasses.replace(FEW, row="DL-OTHER")
    with pytest.raises(ValueError, match="refit kind named 'few' is already registered"):
        register_refit_kind(other)
    with pytest.raises(ValueError, match="refit kind named 'l2' is already registered"):
        register_refit_kind(dataclasses.replace(REFIT_KINDS[DEFAULT_KIND], row="DL-MINE"))
    with pytest.raises(ValueError, match="evidence mode 'bp_l2' is refit kind 'l2'"):
        register_refit_kind(dataclasses.replace(FEW, name="few2", mode="bp_l2"))
    register_refit_kind(other, override=True)
    assert EVIDENCE_MODES["bp_few"].row == "DL-OTHER"
    register_refit_kind(FEW, override=True)
    REFIT_KINDS.unregister("few")
    with pytest.raises(ValueError, match="unknown mode"):
        check_modes(["none", "bp_few"])
    register_refit_kind(FEW)
    assert check_modes(["none", "bp_few"]) == ["none", "bp_few"]


def test_evaluation_scores_the_new_kinds_rows(few, tiny_run, shapes_data, tmp_path):
    """tools.eval's evaluate: the kind's rows, labelled by it, with its step cap applied
    (--evidence_steps=5, the kind refits 2)."""
    from deeplab_ext.run.evaluation import evaluate
    from deeplab_ext.run.options import EvalOptions, EvidenceOptions

    results = evaluate(EvalOptions(
        checkpoint_dir=str(tiny_run), dataset_dir=str(shapes_data), eval_split="val",
        evidence_modes=("none", "bp_few", "bp_few_prune"), bootstrap_samples=0,
        max_examples=2, eval_logdir=str(tmp_path / "eval"), num_vis_examples=0,
        evidence=EvidenceOptions(steps=5, safeguard=False)), printer=lambda line: None)
    rows = results["modes"]
    assert list(rows) == ["none", "bp_few", "bp_few_prune"]
    assert [rows[m]["name"] for m in rows] == ["DL-MT", "DL-BP-FEW", "DL-BP-FEW-Pr"]
    for mode in ("bp_few", "bp_few_prune"):
        assert math.isfinite(rows[mode]["miou"]) and 0.0 <= rows[mode]["miou"] <= 1.0
        assert rows[mode]["refit_steps"]["max"] == 2, rows[mode]["refit_steps"]
        assert rows[mode]["refit_steps"]["mean"] == 2.0


def test_tuning_and_cross_fitting_tune_the_new_kind(few, tiny_run, shapes_data, tmp_path):
    """tools.tune_evidence --kinds=few: its search (its own grid), its entry and its rows
    in the cross-fitted table; an unknown kind is refused with the known ones listed."""
    from deeplab_ext.run.options import EvidenceOptions, TuneOptions
    from deeplab_ext.run.tuning import tune_evidence

    run = copy_run(tiny_run, tmp_path / "run")
    base = dict(checkpoint_dir=str(run), dataset_dir=str(shapes_data), tune_split="test",
                clip_norms=(0.0,), learning_rates=(0.01,), kinds=("few",),
                evidence=EvidenceOptions(steps=1), bootstrap_samples=20, min_confidence=0.0)
    with pytest.raises(ValueError, match=r"--kinds: unknown refit kind\(s\) \['nope'\]; "
                                         r"valid: l2, es, latent, few"):
        tune_evidence(TuneOptions(**{**base, "kinds": ("nope",)}), printer=lambda line: None)
    lines: list[str] = []
    tuned = tune_evidence(TuneOptions(**base, max_candidates=3), printer=lines.append)
    assert set(tuned["kinds"]) == {"few"} and tuned["serving_kind"] == "few"
    tried = [r for r in tuned["table"] if r["kind"] == "few"]
    assert len(tried) == 2 and all(math.isfinite(r["miou"]) for r in tried)
    assert [r["candidate"] for r in tried] == ["start point", "steps=2"]  # its own grid
    entry = tuned["kinds"]["few"]
    if not entry["refit"]:  # no refit: its steps field zeroed
        assert entry["evidence"]["steps"] == 0
    crossfit = tune_evidence(TuneOptions(**base, max_candidates=2, folds=2),
                             printer=lines.append)
    (table,) = crossfit["tables"]
    assert list(table["modes"]) == ["none", "prune", "bp_few", "bp_few_prune"]
    assert table["modes"]["bp_few"]["name"] == "DL-BP-FEW"
    assert all(math.isfinite(row["miou"]) for row in table["modes"].values())


def test_tools_eval_runs_a_kind_from_extra_modules(tiny_run, shapes_data, tmp_path):
    """The command line: --extra_modules imports the user's module, which registers the
    kind before the flags are read; without it the mode is refused."""
    import subprocess

    def run_eval(*extra: str) -> subprocess.CompletedProcess:
        return run_tool("eval", *args, *extra, env={**tool_env(), REGISTER_ENV: "1"})

    out = tmp_path / "eval"
    args = (f"--checkpoint_dir={tiny_run}", f"--dataset_dir={shapes_data}",
            f"--eval_logdir={out}", "--evidence_modes=none,bp_few",
            "--max_number_of_examples=1", "--bootstrap_samples=0", "--num_vis_examples=0")
    proc = run_eval("--extra_modules=tests.test_refit_kind_plugin")
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads((out / "eval_results.json").read_text())["modes"]["bp_few"]
    assert row["name"] == "DL-BP-FEW" and math.isfinite(row["miou"])
    assert "DL-BP-FEW" in proc.stdout
    proc = run_eval()  # the module not imported: nothing registers the kind
    assert proc.returncode == 2 and "unknown mode(s) ['bp_few']" in proc.stderr, proc.stderr
