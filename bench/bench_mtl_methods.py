"""Multi-task optimisation methods on CamVid from scratch (issue 30).

DeepLab with semantic + tags + Canny edges (``--aux_tasks=edges``), the same network, schedule and
budget per arm, 3 seeds, rows appended as they land (a stopped sweep resumes).

Arms: equal weights (``ew``), uncertainty (``uw``), DWA, PCGrad, CAGrad, Nash-MTL, FAMO
and MGDA-UB (representation gradients; ``mgda_ub_lossplus`` with the authors' loss+
normaliser), plus the single-task baselines of Delta_m:
segmentation alone (``stl_semantic``: no tag head, no edges), tags alone (``stl_tags``:
the segmentation loss weighted 0, no edges) and edges alone (``stl_edges``: segmentation
and tags weighted 0). Delta_m is over the three val metrics (mIoU, tag F1, edge ODS F1 of the
training-only edge head, which ``tools.eval`` scores), against the seed-matched
single-task runs. ``--rescore`` re-evaluates finished runs that predate the edge metric::

    .venv/bin/python -m bench.bench_mtl_methods --workdir=/tmp/mtl_methods
    .venv/bin/python -m bench.bench_mtl_methods --workdir=/tmp/mtl_methods --rescore
    .venv/bin/python -m bench.bench_mtl_methods --workdir=/tmp/mtl_methods --delta_m
"""

from __future__ import annotations

import json
import pathlib
import sys

from bench.common import delta_m, finished_runs, mean_std, paired_interval
from bench.sweep import Arm, main_for, rescore

_MT = ("--aux_tasks=edges",)
ARMS = [
    Arm("ew", ("--loss_weighting=fixed", *_MT)),
    Arm("uw", ("--loss_weighting=uncertainty", *_MT)),
    Arm("dwa", ("--loss_weighting=dwa", *_MT)),
    Arm("pcgrad", ("--loss_weighting=pcgrad", *_MT)),
    Arm("cagrad", ("--loss_weighting=cagrad", *_MT)),
    Arm("nash_mtl", ("--loss_weighting=nash_mtl", *_MT)),
    Arm("famo", ("--loss_weighting=famo", *_MT)),
    Arm("mgda_ub", ("--loss_weighting=mgda_ub", *_MT)),
    # The authors' sample normaliser (issue 41: it now only chooses the weights).
    Arm("mgda_ub_lossplus", ("--loss_weighting=mgda_ub", "--weighting_options=mgda_gn=loss+",
                             *_MT)),
    Arm("stl_semantic", ("--loss_weighting=fixed",), variant="deeplabv3plus_mobilenetv2_tiny"),
    Arm("stl_tags", ("--loss_weighting=fixed", "--task_weights=semantic=0")),
    Arm("stl_edges", ("--loss_weighting=fixed", "--task_weights=semantic=0,tags=0", *_MT)),
]
METRICS = {"miou": True, "tag_f1": True, "edge_f1": True}
# Each metric's single-task baseline arm.
BASELINES = {"miou": "stl_semantic", "tag_f1": "stl_tags", "edge_f1": "stl_edges"}


def edge_metrics(results: dict) -> dict:
    """The edge head's val scores (absent when the run has no edge head): the ODS F1 (best
    threshold over the split; the F1 at 0.5 is near 0 after 900 steps), AP, F1 at 0.5."""
    if "edges" not in results:
        return {}
    e = results["edges"]
    return {"edge_f1": e["ods_f1"], "edge_ap": e["ap"], "edge_f1_at_half": e["f1"]}


def _needs_edges(row: dict) -> bool:
    return "edge_ap" not in row and "--aux_tasks=edges" in row["train_command"]


def delta_m_table(rows: dict[str, dict]) -> str:
    """Delta_m per arm (mean +- std over seeds, and its 95% t interval) against the
    seed-matched single-task runs."""
    by = {(r["arm"], r["seed"]): r for r in rows.values()}
    lines = ["| arm | seeds | Delta_m (%) mean +- std | 95% t interval |", "|---|---|---|---|"]
    for arm in dict.fromkeys(r["arm"] for r in rows.values()):
        if arm.startswith("stl_"):
            continue
        values = []
        for (a, seed), r in by.items():
            base = {m: by.get((b, seed), {}).get(m) for m, b in BASELINES.items()}
            if a == arm and None not in base.values() and None not in map(r.get, METRICS):
                values.append(delta_m(r, base, METRICS))
        if values:
            mean, std = mean_std(values)
            _, lo, hi = paired_interval(values) if len(values) > 1 else (0, float("nan"),
                                                                         float("nan"))
            lines.append(f"| {arm} | {len(values)} | {mean:+.2f} +- {std:.2f} | "
                         f"[{lo:+.2f}, {hi:+.2f}] |")
    return "\n".join(lines)


if __name__ == "__main__":
    if "--delta_m" in sys.argv or "--rescore" in sys.argv:
        workdir = pathlib.Path(next(a.split("=", 1)[1] for a in sys.argv
                                    if a.startswith("--workdir=")))
        if "--rescore" in sys.argv:
            rescore(workdir, edge_metrics, _needs_edges)
        rows = finished_runs(workdir / "results.jsonl")
        print(delta_m_table(rows))
        print(json.dumps({"runs": len(rows)}))
    else:
        main_for(__doc__.splitlines()[0], ARMS, extract=edge_metrics)
