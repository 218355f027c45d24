"""The suite's network against the demo's: what one first trace costs (issue 42).

Each round runs, in a fresh process per variant and alternately, what most tests do
once per file: a 4-step ``train`` of the suite's tiny run (``tests/conftest.py``: batch 2,
33x33 crops, the built-in dataset) and a two-row ``evaluate`` (``none``, ``bp_l2``) of it,
Grappler off as in the test processes. Prints seconds per variant and the ratio::

    .venv/bin/python -m bench.bench_test_network --rounds=2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

from bench.common import REPO

VARIANTS = ("deeplabv3plus_mobilenetv2_tiny_mt", "deeplabv3plus_mobilenetv2_micro_mt")


def _one(variant: str) -> dict[str, float]:
    """Train and evaluate ``variant`` in this process (a fresh one: nothing traced yet)."""
    import pathlib

    import tensorflow as tf

    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    from deeplab_ext.data import synthetic
    from deeplab_ext.run.evaluation import evaluate
    from deeplab_ext.run.options import EvalOptions
    from deeplab_ext.run.trainer import train
    from tests.conftest import tiny_train_options

    work = pathlib.Path(tempfile.mkdtemp(prefix="bench_test_network_"))
    synthetic.write_tfrecords(work / "data", 6, 2, size=48, seed=0, splits=("train", "val"))
    t0 = time.perf_counter()
    train(tiny_train_options(work / "run", work / "data", model_variant=variant),
          printer=lambda line: None)
    t1 = time.perf_counter()
    evaluate(EvalOptions(checkpoint_dir=str(work / "run"), dataset_dir=str(work / "data"),
                         dataset="shapes_evidence", eval_logdir=str(work / "eval"),
                         evidence_modes=("none", "bp_l2")), printer=lambda line: None)
    return {"train_s": t1 - t0, "eval_s": time.perf_counter() - t1}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(_one(args.child)))
        return
    times: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for _ in range(args.rounds):
        for variant in VARIANTS:
            out = subprocess.run([sys.executable, "-m", "bench.bench_test_network",
                                  f"--child={variant}"], cwd=REPO, check=True,
                                 capture_output=True, text=True).stdout
            times[variant].append(json.loads(out.strip().splitlines()[-1]))
    for key in ("train_s", "eval_s"):
        mean = {v: sum(r[key] for r in rs) / len(rs) for v, rs in times.items()}
        tiny, micro = (mean[v] for v in VARIANTS)
        print(f"{key}: tiny {tiny:.1f}  micro {micro:.1f}  micro/tiny {micro / tiny:.2f}")


if __name__ == "__main__":
    main()
