"""The house rules a reader relies on, checked on the source (no TensorFlow): no import
circles among the project's modules (function-level imports included), and no function
over 60 lines in ``tf_mtl/`` and ``deeplab_ext/`` unless its docstring says why it is long."""

from __future__ import annotations

import ast
import pathlib
import re

from tests.conftest import REPO

PACKAGES = ("tf_mtl", "deeplab_ext", "tools")
MAX_LINES = 60


def _modules() -> dict[str, pathlib.Path]:
    mods = {}
    for root in PACKAGES:
        for path in (REPO / root).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = path
    return mods


def import_graph() -> dict[str, set[str]]:
    """``module -> modules it imports`` (at any depth of the file), project modules only."""
    mods = _modules()

    def known(name: str) -> str:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name

    edges: dict[str, set[str]] = {m: set() for m in mods}
    for module, path in mods.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = (package.split(".")[: len(package.split(".")) - node.level + 1]
                        if node.level else [])
                source = ".".join(base + ([node.module] if node.module else []))
                targets = [f"{source}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                if target.split(".")[0] in PACKAGES and known(target) not in ("", module):
                    edges[module].add(known(target))
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    edges = import_graph()
    assert len(edges) > 100 and "deeplab_ext.tasks.base" in edges["deeplab_ext.tasks.scene_tasks"]
    assert cycles(edges) == []


def test_the_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def long_functions() -> list[str]:
    """Functions over MAX_LINES lines whose docstring does not say why they are long."""
    found = []
    for root in ("tf_mtl", "deeplab_ext"):
        for path in sorted((REPO / root).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                lines = node.end_lineno - node.lineno + 1
                why = re.search(r"\blong\b", ast.get_docstring(node) or "", re.IGNORECASE)
                if lines > MAX_LINES and not why:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} "
                                 f"({lines} lines)")
    return found


def test_no_function_over_60_lines_without_saying_why():
    assert long_functions() == []


def test_the_flags_given_are_part_of_the_resolved_options():
    """Which flags the user gave is resolved with the options (``given``), once, in
    ``common_flags.options_from_flags``; nothing threads it by hand (no ``explicit``
    parameter between the tools and the code that reads it)."""
    import subprocess
    import sys

    code = ("from tools import eval as tool, common_flags as c\n"
            "from deeplab_ext.run.options import EvalOptions, evidence_given\n"
            "c.FLAGS(['eval', '--checkpoint_dir=r', '--dataset_dir=d', "
            "'--evidence_learning_rate=0.5', '--evidence_prune_strength=0.3', "
            "'--evidence_modes=none,soft_prune'])\n"
            "o = c.options_from_flags(EvalOptions)\n"
            "print(sorted(o.given)); print(sorted(evidence_given(o)))\n"
            "print(o.evidence.learning_rate, 'given' in c.FLAGS)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    given, evidence, last = proc.stdout.strip().splitlines()[-3:]
    assert given == str(["checkpoint_dir", "dataset_dir", "evidence_learning_rate",
                         "evidence_modes", "evidence_prune_strength"])
    assert evidence == str(["learning_rate", "prune_strength"])
    assert last == "0.5 False"  # the value parsed; `given` itself is not a flag
    threaded = [f"{p.relative_to(REPO)}" for root in PACKAGES
                for p in (REPO / root).rglob("*.py") if "explicit_evidence" in p.read_text()]
    assert threaded == []
