"""A refit kind from outside the tree: registered as a user's module registers one, then
run by the tools (evaluation, tuning, cross-fitting, ``tools.eval --extra_modules``) with
no file of the project naming it.

The kind, "few": at most two refit steps, no L2 term and no anchor (``steps`` capped by
the kind's own config), so the tools' step counts tell whether its config was applied.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib

import pytest

from deeplab_ext.run.refit_kinds import RefitKind
from tests.conftest import copy_run, run_tool, tool_env

FEW = RefitKind(
    "few", "bp_few", "DL-BP-FEW", "steps", ("steps",), (("steps", (1, 2)),),
    lambda ev: dict(steps=min(ev.steps, 2), alpha=0.0, anchor=0.0))
REGISTER_ENV = "TEST_REGISTER_FEW_REFIT_KIND"

if os.environ.get(REGISTER_ENV):  # imported by a tool as --extra_modules
    from deeplab_ext.run.refit_kinds import register_refit_kind

    register_refit_kind(FEW)

PROBE_ENV = "TEST_FLAG_PATH_PROBE"  # FILE: record where the flags' values are read


def _probe_flag_reads(out: pathlib.Path, fields: tuple[str, ...]) -> None:
    """In a tool's process: every read of ``fields`` on the evidence options or the
    refitter's config records the project files whose code on the call stack holds the
    value (the options, a dataclass or collection of them, the config or the refitter)
    into ``out`` (JSON, field -> files); tools/ and tests/ aside. A wrapper that only calls
    a function it was handed (the input padding around a predictor) holds nothing."""
    import sys

    from deeplab_ext.run.options import EvidenceOptions
    from tf_mtl.evidence import EvidenceConfig, EvidenceRefitter

    root = pathlib.Path(__file__).resolve().parents[1]
    carriers = (EvidenceOptions, EvidenceConfig, EvidenceRefitter)
    seen: dict[str, set[str]] = {f: set() for f in fields}

    def holds(value, depth: int = 2) -> bool:
        if isinstance(value, carriers):
            return True
        if depth and dataclasses.is_dataclass(value) and not isinstance(value, type):
            return any(holds(getattr(value, f.name), depth - 1)
                       for f in dataclasses.fields(value))
        if depth and isinstance(value, (list, tuple, dict)):
            items = value.values() if isinstance(value, dict) else value
            return any(holds(v, depth - 1) for v in list(items)[:8])
        return False

    def holders() -> set[str]:
        found, frame = set(), sys._getframe(2)
        while frame is not None:
            path = pathlib.Path(frame.f_code.co_filename)
            if (path.is_relative_to(root) and path.parts[len(root.parts)] in
                    ("deeplab_ext", "tf_mtl")
                    and any(holds(v) for v in frame.f_locals.values())):
                found.add(str(path.relative_to(root)))
            frame = frame.f_back
        return found

    for cls in (EvidenceOptions, EvidenceConfig):
        def getattribute(self, name, _base=cls.__getattribute__):
            if name in seen:
                files = holders()
                if not files <= seen[name]:
                    seen[name] |= files
                    out.write_text(json.dumps({f: sorted(v) for f, v in seen.items()}))
            return _base(self, name)

        cls.__getattribute__ = getattribute


if os.environ.get(PROBE_ENV):
    _probe_flag_reads(pathlib.Path(os.environ[PROBE_ENV]), ("anchor", "learning_rate"))


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
        kind_names,
        register_refit_kind,
    )

    assert kind_names() == ("l2", "es", "latent", "few") and default_kinds() == ("l2", "es")
    assert [(m, EVIDENCE_MODES[m].row, EVIDENCE_MODES[m].prune, EVIDENCE_MODES[m].soft)
            for m in list(EVIDENCE_MODES)[-3:]] == [
        ("bp_few", "DL-BP-FEW", False, False), ("bp_few_prune", "DL-BP-FEW-Pr", True, False),
        ("bp_few_soft_prune", "DL-BP-FEW-SPr", True, True)]
    ev = EvidenceOptions(steps=10, alpha=0.1, anchor=0.5)
    cfg = ev.config("few", prune=False)
    assert (cfg.steps, cfg.alpha, cfg.mode, cfg.early_stopping) == (2, 0.0, "weights", False)
    # The anchor is shared by the weights kinds; a kind's own value wins (few: none).
    assert [ev.config(k, prune=False).anchor for k in ("l2", "es", "latent", "few")] == [
        0.5, 0.5, 0.0, 0.0]
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


FLAG_PATHS = {  # the tool -> the files between it and the refit loop (ARCHITECTURE.md)
    "eval": ["deeplab_ext/run/evaluation.py", "deeplab_ext/run/modes.py",
             "deeplab_ext/run/options.py", "tf_mtl/evidence/config.py",
             "tf_mtl/evidence/refitter.py"],
    "predict": ["deeplab_ext/run/export.py", "deeplab_ext/run/options.py",
                "deeplab_ext/run/serving.py", "tf_mtl/evidence/config.py",
                "tf_mtl/evidence/refitter.py"],
}


@pytest.mark.parametrize("tool", sorted(FLAG_PATHS))
def test_a_refit_flag_crosses_at_most_five_files_from_its_tool(tool, tiny_run, shapes_data,
                                                                tmp_path):
    """Issue 42: ``--evidence_anchor`` and ``--evidence_learning_rate`` followed from
    ``tools.eval`` and ``tools.predict`` to the refit loop that uses them: every project
    file whose code holds the value on the call stack where it is read (the options, the
    refitter's config, the loop), the tool's own files aside, is one of five."""
    import cv2
    import numpy as np

    probe, image = tmp_path / "reads.json", tmp_path / "image.png"
    cv2.imwrite(str(image), np.full((32, 32, 3), 90, np.uint8))
    where = {"eval": (f"--dataset_dir={shapes_data}", f"--eval_logdir={tmp_path / 'eval'}",
                      "--evidence_modes=bp_l2", "--max_number_of_examples=1",
                      "--bootstrap_samples=0"),
             "predict": (f"--image={image}", "--tags=disk_h",
                         f"--output={tmp_path / 'pred.png'}")}[tool]
    proc = run_tool(tool, f"--checkpoint_dir={tiny_run}", *where, "--evidence_anchor=0.5",
                    "--evidence_learning_rate=0.02", "--evidence_steps=1",
                    "--extra_modules=tests.test_refit_kind_plugin",
                    env={**tool_env(), PROBE_ENV: str(probe)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(probe.read_text()) == {"anchor": FLAG_PATHS[tool],
                                             "learning_rate": FLAG_PATHS[tool]}
