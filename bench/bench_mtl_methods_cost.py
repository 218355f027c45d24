"""Train-step time of every weighting method against fixed weighting (issue 30).

One DeepLab MobileNetV2 network with three tasks (semantic, tags and the self-supervised
edges task), wrapped by one `MultiTaskModel` per method (each with its own optimizer and
edge head), all on the same in-memory batch. Steps are timed interleaved (every round
runs each model once, in a fresh random order: `bench_weighting.interleaved_times`), so
a loaded machine's slow phases hit all alike; an A/A control (a second fixed-weighting
model) shows the noise floor. Reported: each method's median of per-round ratios to
fixed. Goals: loss-balancing methods <= 1.05x; gradient methods with rep_grad <= 1.5x
(parameter-gradient methods, T backward passes through the trunk, are listed for
reference).

    .venv/bin/python -m bench.bench_mtl_methods_cost --crop 257 --batch 2 --rounds 6
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench.bench_weighting import interleaved_times, median_ratio, train_options  # noqa: E402
from deeplab_ext.data.datasets import get_dataset_info  # noqa: E402
from deeplab_ext.models import build_network  # noqa: E402
from deeplab_ext.run.trainer import build_multitask_model, model_config_for  # noqa: E402
from deeplab_ext.tasks import TaskContext, build_branches  # noqa: E402

LOSS_BALANCING = ("uncertainty", "dwa", "rlw", "gls", "famo")
REP_GRAD = ("mgda_ub", "pcgrad", "cagrad", "imtl", "aligned_mtl", "nash_mtl", "gradnorm",
            "gradvac", "graddrop")
PARAM_GRAD = ("pcgrad", "nash_mtl", "db_mtl")
GOALS = {"loss_balancing": 1.05, "rep_grad": 1.5}


def arms(selected: set[str] | None) -> list[tuple[str, str, str]]:
    """(label, method, --weighting_options, kind) of every arm (fixed always)."""
    out = [("fixed", "fixed", "", "baseline"), ("fixed_control", "fixed", "", "control")]
    out += [(m, m, "", "loss_balancing") for m in LOSS_BALANCING]
    out += [(f"{m}+rep", m, "rep_grad=true", "rep_grad") for m in REP_GRAD]
    out += [(f"{m}+param", m, "rep_grad=false", "param_grad") for m in PARAM_GRAD]
    return [a for a in out if selected is None or a[0] in selected or a[3] == "baseline"]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="deeplabv3plus_mobilenetv2_mt")
    p.add_argument("--crop", type=int, default=257)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--arms", default="", help="comma-separated labels (default: all)")
    p.add_argument("--json", default="")
    a = p.parse_args(argv)
    selected = set(a.arms.split(",")) if a.arms else None
    dataset = "pascal_voc_seg"
    info = get_dataset_info(dataset)
    base = train_options(a.variant, a.crop, a.batch, dataset=dataset, aux_tasks=("edges",))
    family, cfg = model_config_for(base, info)
    network = build_network(cfg, input_shape=(a.crop, a.crop, 3))
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(0, 255, (a.batch, a.crop, a.crop, 3)).astype("float32"))
    labels = rng.integers(0, info.num_classes, (a.batch, a.crop, a.crop)).astype("int32")
    y_all = {"semantic": tf.constant(labels),
             "tags": tf.constant((rng.random((a.batch, info.num_tags)) < 0.2).astype("float32")),
             "edges": tf.constant((rng.random(labels.shape) < 0.1).astype("int32"))}
    fns, kinds = {}, {}
    for label, method, options, kind in arms(selected):
        opts = train_options(a.variant, a.crop, a.batch, dataset=dataset, aux_tasks=("edges",),
                             loss_weighting=method, weighting_options=options,
                             dwa_window_steps=2)
        branch = build_branches(TaskContext(network, family, info, opts), opts.training_branches)
        model = build_multitask_model(network, family, info, opts, branch=branch)
        y = {t.target_key: y_all[t.target_key] for t in model.tasks}
        assert len(model.tasks) == 3, [t.name for t in model.tasks]
        fns[label] = (lambda m, yy: lambda: m.train_on_batch(x, yy, return_dict=True))(model, y)
        kinds[label] = kind
        print(f"built {label}", flush=True)
    times = interleaved_times(fns, a.rounds, warmup=2)
    rows = []
    for label, ts in times.items():
        ratio = median_ratio(ts, times["fixed"])
        goal = GOALS.get(kinds[label])
        row = {"arm": label, "kind": kinds[label], "median_s": round(statistics.median(ts), 4),
               "ratio": round(ratio, 3), "goal": goal,
               "met": None if goal is None else bool(ratio <= goal)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {"variant": a.variant, "crop": a.crop, "batch": a.batch, "rounds": a.rounds,
              "tasks": [t.name for t in model.tasks], "rows": rows}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
