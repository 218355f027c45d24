"""A small search over auxiliary-module designs (Liu et al. 2019 used an RL controller;
at this scale a seeded random sample of the grid does the job): short runs, ranked on a
split held out from training, reported as a table; the winner's flags are printed to
reuse with ``tools.train``.

Every candidate is the same short ``tools.train`` run (the base flags after ``--``, the
same seed) with ``--aux_modules=TASKS`` and one (adaptor, aggregator, taps) choice, then
``tools.eval`` on ``--rank_split`` (not the split you report). Results land one JSON
line per candidate in ``WORKDIR/search.jsonl`` (a stopped search resumes)::

    .venv/bin/python -m bench.search_aux_modules --workdir=/tmp/search \\
        --dataset_dir=/tmp/camvid_tfrecord --rank_split=holdout --num_candidates=6 \\
        -- --dataset=camvid --model_variant=deeplabv3plus_mobilenetv2_tiny_mt \\
           --train_crop_size=177,241 --max_resize_value=241 --training_number_of_steps=300

Why random: the grid (6 adaptors x 2 aggregators x tap sets) is too big to train fully
on 2 cores, and a seeded sample is reproducible and unbiased; ``--num_candidates`` at or
above the grid size makes it exhaustive.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import pathlib
import random

from bench.common import REPO, append_run, finished_runs, run_tool
from tf_mtl.aux_modules import ADAPTORS, AGGREGATORS


def candidates(adaptors: list[str], aggregators: list[str], tap_sets: list[str],
               num: int, seed: int) -> list[dict]:
    """A seeded sample of the grid (all of it when ``num`` >= its size), grid order."""
    grid = [{"adaptor": a, "aggregator": g, "taps": t}
            for a, g, t in itertools.product(adaptors, aggregators, tap_sets)]
    if num >= len(grid):
        return grid
    keep = sorted(random.Random(seed).sample(range(len(grid)), num))
    return [grid[i] for i in keep]


def name_of(c: dict) -> str:
    return f"{c['adaptor']}_{c['aggregator']}_{c['taps'].replace(',', '+')}"


def flags_of(c: dict, tasks: str) -> list[str]:
    return [f"--aux_modules={tasks}", f"--aux_module_adaptor={c['adaptor']}",
            f"--aux_module_aggregator={c['aggregator']}", f"--aux_module_taps={c['taps']}"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--dataset_dir", required=True)
    p.add_argument("--rank_split", required=True, help="held out from training; not reported")
    p.add_argument("--tasks", default="semantic")
    p.add_argument("--adaptors", default=",".join(ADAPTORS))
    p.add_argument("--aggregators", default=",".join(AGGREGATORS))
    p.add_argument("--tap_sets", default="low_level,stride8,stride16;stride8,stride16",
                   help="';'-separated comma lists of features")
    p.add_argument("--num_candidates", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("train_flags", nargs="*", help="after --: the base tools.train flags")
    args = p.parse_args(argv)
    workdir = pathlib.Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "search.jsonl"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    done = finished_runs(out)
    chosen = candidates(args.adaptors.split(","), args.aggregators.split(","),
                        args.tap_sets.split(";"), args.num_candidates, args.seed)
    for c in [None, *chosen]:  # None: the module-free baseline, same budget
        name = "no_modules" if c is None else name_of(c)
        if name in done:
            continue
        run = workdir / name
        extra = [] if c is None else flags_of(c, args.tasks)
        train = [f"--train_logdir={run / 'train'}", f"--dataset_dir={args.dataset_dir}",
                 *args.train_flags, *extra]
        run_tool("train", train, env, run.with_suffix(".log"))
        run_tool("eval", [f"--checkpoint_dir={run / 'train'}",
                          f"--dataset_dir={args.dataset_dir}", f"--eval_split={args.rank_split}",
                          f"--eval_logdir={run / 'eval'}", "--bootstrap_samples=0",
                          "--num_vis_examples=0"], env, run.with_suffix(".log"))
        miou = json.loads((run / "eval" / "eval_results.json").read_text())["modes"]["none"]["miou"]
        done[name] = row = {"run": name, "candidate": c, "miou": miou, "flags": extra}
        append_run(out, row)
        print(json.dumps(row), flush=True)
    ranked = sorted(done.values(), key=lambda r: -r["miou"])
    print(f"\n| rank | candidate | {args.rank_split} mIoU (%) |\n|---|---|---|")
    for i, r in enumerate(ranked, 1):
        print(f"| {i} | {r['run']} | {100 * r['miou']:.2f} |")
    best = next((r for r in ranked if r["candidate"] is not None), None)
    if best is not None:
        (workdir / "best.json").write_text(json.dumps(best, indent=2))
        print(f"\nWinner: {best['run']}; train with: {' '.join(best['flags'])}")


if __name__ == "__main__":
    main()
