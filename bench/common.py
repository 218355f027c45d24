"""What the long benches share: run a tool in a subprocess with its output in a log, and
one JSON line per finished run (so a sweep can be watched, and resumed where it stopped)."""

from __future__ import annotations

import json
import math
import pathlib
import subprocess
import sys
from collections.abc import Mapping

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


def delta_m(method: Mapping[str, float], single_task: Mapping[str, float],
            higher_is_better: Mapping[str, bool]) -> float:
    """Delta_m in percent (Maninis et al. 2019; the LibMTL / Nash-MTL tables): the mean
    over metrics k of (-1)^l_k (M_k - B_k) / B_k, B_k the single-task baseline's value and
    l_k = 1 where lower is better. Positive: better than single-task training."""
    if not higher_is_better:
        raise ValueError("delta_m: no metrics given")
    total = 0.0
    for k, higher in higher_is_better.items():
        if k not in method or k not in single_task:
            raise ValueError(f"delta_m: metric {k!r} missing (method has {sorted(method)}, "
                             f"single-task baselines have {sorted(single_task)})")
        sign = 1.0 if higher else -1.0
        total += sign * (method[k] - single_task[k]) / single_task[k]
    return 100.0 * total / len(higher_is_better)
