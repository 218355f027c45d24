"""Runs every shell snippet of README.md and the docs/ pages (```sh blocks) on tiny
budgets; fails if one breaks.

`/tmp/...` paths are redirected into a temporary folder; the shipped photos and weights
are used where they are (paths relative to the repository root). `make ...` lines are the
README's two commands themselves (CI runs `make test`; `make demo` is the main job,
exercised on a tiny budget in test_demo_voc.py).
"""

from __future__ import annotations

import pathlib
import re
import shlex
import subprocess
import sys

from tests.conftest import REPO, run_tool, tool_env

README = REPO / "README.md"
# The pages in the order their snippets run: data before the imports that score it, the
# training run before its evaluation, export and serving.
PAGES = [README] + [REPO / "docs" / f"{name}.md" for name in (
    "models", "data", "weights", "training", "multitask", "evidence", "deploy")]


def readme_commands() -> list[str]:
    text = "\n".join(page.read_text() for page in PAGES)
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    cmds = []
    for block in blocks:
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                cmds.append(line)
    return cmds


def test_readme_has_the_two_commands():
    cmds = readme_commands()
    assert "make demo" in cmds and "make test" in cmds
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci.splitlines()[-1]


def _localise(cmd: str, tmp: pathlib.Path) -> list[str]:
    args = shlex.split(cmd.replace("/tmp/", f"{tmp}/"))
    if args[0] == "python":
        args[0] = sys.executable
    elif args[0] == "saved_model_cli":
        args[0] = str(pathlib.Path(sys.executable).parent / "saved_model_cli")
    return args


# The snippets form two independent chains: the training run (/tmp/run, its shards) and
# the rest (data converters, imports, the label-structure example). The second chain runs
# in tests/test_readme_data.py, so the two share the suite's workers.
_RUN_CHAIN = re.compile(r"/tmp/run(?![_\w])|shapes_tfrecord|saved_model_cli")


def chain(name: str) -> list[str]:
    """The README's commands of one chain, in README order ("run" or "data")."""
    cmds = [c for c in readme_commands() if not c.startswith("make ")]
    return [c for c in cmds if bool(_RUN_CHAIN.search(c)) == (name == "run")]


def run_chain(name: str, tmp: pathlib.Path) -> list[tuple[str, str]]:
    """Run one chain's commands in order; (command, stdout) of each."""
    env = tool_env()
    ran = []
    for cmd in chain(name):
        args = _localise(cmd, tmp)
        if args[1:2] == ["-m"] and args[2].startswith("tools."):
            proc = run_tool(args[2].removeprefix("tools."), *args[3:], env=env)
        else:
            proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True,
                                  timeout=600)
        assert proc.returncode == 0, f"README command failed: {cmd}\n{proc.stderr[-3000:]}"
        ran.append((cmd, proc.stdout))
    return ran


def tools_of(ran: list[tuple[str, str]]) -> set[str]:
    return {re.search(r"-m (tools\.\w+)", c).group(1) for c, _ in ran if "-m tools." in c}


def test_readme_chains_cover_every_snippet():
    cmds = [c for c in readme_commands() if not c.startswith("make ")]
    assert sorted(chain("run") + chain("data")) == sorted(cmds)
    assert chain("run") and chain("data")


def test_readme_cli_snippets_run(tmp_path, real_data):
    ran = run_chain("run", tmp_path)
    assert {"tools.train", "tools.eval", "tools.export_model", "tools.predict", "tools.vis",
            "tools.build_synthetic_data", "tools.tune_evidence"} <= tools_of(ran)
    # The outputs the README promises.
    run = tmp_path / "run"
    assert (run / "eval" / "eval_results.json").is_file()
    assert (run / "evidence_tuned.json").is_file()
    assert (run / "export" / "saved_model.pb").is_file()
    assert (run / "pred.png").is_file()
    assert (run / "vis" / "segmentation_results" / "000000_prediction.png").is_file()
    cli = [out for c, out in ran if c.startswith("saved_model_cli")][0]
    assert "segment_with_evidence" in cli and "serving_default" in cli


def test_every_page_is_linked_and_every_link_resolves():
    """The README's first screen reaches every docs/ page, and no page links a file that
    is not there."""
    readme = README.read_text()
    pages = sorted((REPO / "docs").glob("*.md"))
    assert {p for p in PAGES[1:]} == set(pages)
    for page in pages:
        assert f"(docs/{page.name})" in readme, page.name
    for page in [README, *pages]:
        for target in re.findall(r"\]\(([\w./-]+\.md)\)", page.read_text()):
            assert (page.parent / target).exists(), (page.name, target)
    assert not re.search(r"\| DEMO_\w+ \|", readme)  # the demo's numbers come from a run
