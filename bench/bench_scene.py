"""Kendall, Gal and Cipolla's experiment (CVPR 2018, Table 1) at our scale (issue 31):
semantic + instance + depth on the built-in scene variant, from scratch.

The scene variant (``build_synthetic_data --scene``) has instance ids and disparity, with
objects standing on a ground plane at depths that set their row, size and fog: the three
tasks share structure, as in Cityscapes. Same network (``deeplabv3plus_mobilenetv2_tiny_scene``:
per-task decoders), schedule and budget in every arm, 3 seeds:

* single tasks (``stl_*``: the other tasks weighted 0, fixed weights);
* semantic + depth and semantic + instance + depth, each with equal fixed weights
  (``*_ew``) and with uncertainty weighting (``*_uw``; the disabled instance task of
  ``sd_uw`` has prior 0), and the normalised variant (``sid_uw_norm``);
* segmentation alone at 2x / 4x the learning rate (``stl_semantic_lr2x`` / ``_lr4x``).

Rows: val mIoU, instance offset error (pixels), depth MAE / abs rel / delta1, and the
learned sigmas with each task's final training loss (its residual)::

    .venv/bin/python -m bench.bench_scene --workdir=/tmp/scene
    .venv/bin/python -m bench.bench_scene --workdir=/tmp/scene --table
"""

from __future__ import annotations

import json
import math
import pathlib
import sys

from bench.common import finished_runs, mean_std, paired_interval, run_tool
from bench.sweep import Arm, SweepSettings, main_for

_OFF = "--task_weights="
# Every arm trains without random scaling: the disparity target is the original camera's.
FIXED_SCALE = ("--min_scale_factor=1", "--max_scale_factor=1")
ARMS = [
    Arm("stl_semantic", ("--loss_weighting=fixed", _OFF + "instance=0,depth=0")),
    Arm("stl_instance", ("--loss_weighting=fixed", _OFF + "semantic=0,depth=0")),
    Arm("stl_depth", ("--loss_weighting=fixed", _OFF + "semantic=0,instance=0")),
    Arm("sd_ew", ("--loss_weighting=fixed", _OFF + "instance=0")),
    Arm("sd_uw", ("--loss_weighting=uncertainty", _OFF + "instance=0")),
    Arm("sid_ew", ("--loss_weighting=fixed",)),
    Arm("sid_uw", ("--loss_weighting=uncertainty",)),
    Arm("sid_uw_norm", ("--loss_weighting=uncertainty", "--weighting_options=normalize=true")),
    # Controls: segmentation alone at 2x and 4x the learning rate (part of UW's gain may be
    # the larger effective rate its weight 1/sigma^2 gives the semantic head).
    Arm("stl_semantic_lr2x", ("--loss_weighting=fixed", _OFF + "instance=0,depth=0",
                              "--base_learning_rate=0.01")),
    Arm("stl_semantic_lr4x", ("--loss_weighting=fixed", _OFF + "instance=0,depth=0",
                              "--base_learning_rate=0.02")),
]
ARMS = [Arm(a.name, (*a.train_flags, *FIXED_SCALE)) for a in ARMS]
SETTINGS = SweepSettings(variant="deeplabv3plus_mobilenetv2_tiny_scene", dataset="shapes_scene",
                         train_steps=1500, base_learning_rate=5e-3, crop="65,65",
                         max_resize_value=0, batch_size=8)
# The metrics of the tasks an arm trains (the others are untrained heads: left blank).
_DEPTH = ("depth_mae", "abs_rel", "delta1")
TRAINED = {"stl_semantic": ("miou",), "stl_instance": ("offset_px",), "stl_depth": _DEPTH,
           "sd_ew": ("miou", *_DEPTH), "sd_uw": ("miou", *_DEPTH),
           "stl_semantic_lr2x": ("miou",), "stl_semantic_lr4x": ("miou",)}
# Lower is better for the errors, higher for the rest (the table's arrows).
METRICS = {"miou": "mIoU (%)", "offset_px": "offset error (px)", "depth_mae": "depth MAE (px)",
           "abs_rel": "abs rel", "delta1": "delta<1.25"}


def _shards(args, workdir: pathlib.Path, env: dict) -> str:
    """The scene variant, 2000 train / 300 val images of 64 pixels (written once)."""
    out = workdir / "scene_tfrecord"
    if not (out / "done").exists():
        run_tool("build_synthetic_data", [f"--output_dir={out}", "--num_train=2000",
                                          "--num_val=300", "--scene"], env,
                 workdir / "prepare.log")
        (out / "done").write_text("ok")
    return str(out)


def _extract(res: dict) -> dict:
    """Scene metrics; the learned sigmas (from the scored checkpoint) and each task's
    training loss over the last logged steps (its residual: the objective's optimum is
    sigma^2 = L for the regression terms L / (2 sigma^2) + log sigma, and sigma^2 = 2 L
    for the classification term L / sigma^2 + log sigma)."""
    import tensorflow as tf

    from tf_mtl.tbevents import read_scalars

    row = {"offset_px": res["instance"]["offset_error_px"], "depth_mae": res["depth"]["mae"],
           "abs_rel": res["depth"]["abs_rel"], "delta1": res["depth"]["delta1"]}
    scalars = read_scalars(pathlib.Path(res["checkpoint"]).parent / "train")
    for task in ("semantic", "instance", "depth"):
        values = [v for _, v in scalars.get(f"train/{task}_loss", [])][-3:]
        if values:
            row[f"train_loss_{task}"] = sum(values) / len(values)
    reader = tf.train.load_checkpoint(res["checkpoint"])
    for name, _ in tf.train.list_variables(res["checkpoint"]):
        if name.startswith("weighting/log_var_"):
            task = name.split("/")[1][len("log_var_"):]
            row[f"sigma_{task}"] = math.exp(0.5 * float(reader.get_tensor(name)))
    return row


def table(rows: dict[str, dict]) -> str:
    """Mean +- std per arm of every metric, and the seed-paired difference of the
    multi-task arms to the matching single-task arm (95% t interval)."""
    stl = {"miou": "stl_semantic", "offset_px": "stl_instance", "depth_mae": "stl_depth",
           "abs_rel": "stl_depth", "delta1": "stl_depth"}
    by = {(r["arm"], r["seed"]): r for r in rows.values()}
    arms = list(dict.fromkeys(r["arm"] for r in rows.values()))
    lines = ["| arm | seeds | " + " | ".join(METRICS.values()) + " | sigmas |",
             "|---|---|" + "---|" * (len(METRICS) + 1)]
    for arm in arms:
        seeds = sorted(s for a, s in by if a == arm)
        cells = []
        for key in METRICS:
            if key not in TRAINED.get(arm, METRICS):
                cells.append("")
                continue
            scale = 100 if key == "miou" else 1
            values = [scale * by[(arm, s)][key] for s in seeds]
            m, sd = mean_std(values)
            cell = f"{m:.3f} +- {sd:.3f}"
            base = [s for s in seeds if (stl[key], s) in by]
            if not arm.startswith("stl_") and len(base) > 1:
                d, lo, hi = paired_interval([scale * (by[(arm, s)][key] - by[(stl[key], s)][key])
                                             for s in base])
                cell += f" ({d:+.3f} [{lo:+.3f}, {hi:+.3f}])"
            cells.append(cell)
        sig = sorted({k for s in seeds for k in by[(arm, s)] if k.startswith("sigma_")})
        parts = []
        for k in sig:  # sigma, and the sigma the task's final loss makes optimal
            task = k[len("sigma_"):]
            if task == "instance" and arm.startswith("sd_"):
                continue  # prior 0: its s only drifts
            sigma = mean_std([by[(arm, s)][k] for s in seeds])[0]
            loss = [by[(arm, s)].get(f"train_loss_{task}") for s in seeds]
            factor = 2.0 if task == "semantic" else 1.0
            best = (f" (optimum {math.sqrt(factor * mean_std(loss)[0]):.3f})"
                    if None not in loss else "")
            parts.append(f"{task} {sigma:.3f}{best}")
        sigmas = ", ".join(parts)
        lines.append(f"| {arm} | {len(seeds)} | " + " | ".join(cells) + f" | {sigmas} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if "--table" in sys.argv:
        workdir = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--workdir="))
        rows = finished_runs(pathlib.Path(workdir) / "results.jsonl")
        print(table(rows))
        print(json.dumps({"runs": len(rows)}))
    else:
        main_for(__doc__.splitlines()[0], ARMS, settings=SETTINGS, shards=_shards,
                 extract=_extract)
