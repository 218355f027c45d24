"""What the long benches share: run a tool in a subprocess with its output in a log, and
one JSON line per finished run (so a sweep can be watched, and resumed where it stopped)."""

from __future__ import annotations

import json
import math
import pathlib
import subprocess
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]

# Two-sided 95% Student t quantiles by degrees of freedom (paired intervals over seeds).
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228}


def run_tool(module: str, args: list[str], env: dict, log: pathlib.Path) -> str:
    """``python -m tools.MODULE ARGS`` from the repo root; its output is appended to ``log``
    and returned. A failure raises, naming the log."""
    with open(log, "a") as f:
        f.write(f"$ python -m tools.{module} {' '.join(args)}\n")
        f.flush()
        start = f.tell()
        proc = subprocess.run([sys.executable, "-m", f"tools.{module}", *args], cwd=REPO,
                              env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"tools.{module} failed (rc {proc.returncode}); see {log}")
    with open(log) as f:
        f.seek(start)
        return f.read()


def finished_runs(out: pathlib.Path) -> dict[str, dict]:
    """The runs already in a JSON-lines results file, by their ``run`` name."""
    if not out.exists():
        return {}
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return {r["run"]: r for r in rows}


def append_run(out: pathlib.Path, result: dict) -> None:
    with open(out, "a") as f:
        f.write(json.dumps(result) + "\n")


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def paired_interval(diffs: list[float]) -> tuple[float, float, float]:
    """Mean of paired differences and its 95% t interval (nan bounds for one pair)."""
    mean, std = mean_std(diffs)
    if len(diffs) < 2:
        return mean, math.nan, math.nan
    half = _T95.get(len(diffs) - 1, 1.96) * std / math.sqrt(len(diffs))
    return mean, mean - half, mean + half
