"""Does evidence help on any machine? The main job, trained several ways, each with tuned
refit settings, on val and on a 1000-image generated hold-out.

Every run is ``make demo``'s job (``tools.demo``: train, tune the refit settings on the
generated ``test`` split, evaluate val, export, serve) on the same built-in dataset, with
another training seed or another float path (``TF_ENABLE_ONEDNN_OPTS=0``): another
model, as another CPU would train. Then ``tools.eval`` on a 1000-image hold-out (its own
generator stream, never tuned on) with the run's tuned settings. One JSON line per run
lands in ``--out`` as soon as the run is done, so a long sweep can be watched and
resumed (finished runs are skipped)::

    .venv/bin/python -m bench.bench_main_job_robustness --workdir=/tmp/robust \\
        --runs=seed0,seed1,seed2,seed0_noonednn
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

from bench.common import REPO, append_run, finished_runs, run_tool

MODES = ("none", "prune", "bp_l2", "bp_es")


def _rows(results: dict) -> dict:
    return {m: {"miou": r["miou"], "vs": r.get("vs", {}),
                "fell_back": r.get("refit_steps", {}).get("fell_back")}
            for m, r in results["modes"].items()}


def run_one(name: str, workdir: pathlib.Path, holdout: pathlib.Path, train_steps: int) -> dict:
    seed = int(name.split("_")[0].removeprefix("seed"))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    if name.endswith("noonednn"):
        env["TF_ENABLE_ONEDNN_OPTS"] = "0"
    run_dir = workdir / name
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "log.txt"
    t0 = time.time()
    run_tool("demo", [f"--workdir={run_dir}", f"--train_seed={seed}",
                   f"--train_steps={train_steps}"], env, log)
    demo_s = time.time() - t0
    val = json.loads((run_dir / "eval" / "eval_results.json").read_text())
    tuned = json.loads((run_dir / "train" / "evidence_tuned.json").read_text())
    run_tool("eval", [f"--checkpoint_dir={run_dir / 'train'}", f"--dataset_dir={holdout}",
                   "--eval_split=holdout", "--eval_crop_size=65,65",
                   f"--evidence_modes={','.join(MODES)}",
                   f"--eval_logdir={run_dir / 'eval_holdout'}"], env, log)
    hold = json.loads((run_dir / "eval_holdout" / "eval_results.json").read_text())
    return {"run": name, "train_seed": seed,
            "onednn": env.get("TF_ENABLE_ONEDNN_OPTS", "1") != "0",
            "tag_f1_val": val["tags"]["f1"],
            "tuned": {k: {"refit": v["refit"], "evidence": v["evidence"]}
                      for k, v in tuned["kinds"].items()},
            "serving_kind": tuned["serving_kind"],
            "val": _rows(val), "holdout": _rows(hold),
            "demo_seconds": round(demo_s, 1), "seconds": round(time.time() - t0, 1)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--runs", default="seed0,seed1,seed2,seed0_noonednn",
                   help="seedN (training seed N) or seedN_noonednn (TF_ENABLE_ONEDNN_OPTS=0)")
    p.add_argument("--train_steps", type=int, default=10000)
    p.add_argument("--num_holdout", type=int, default=1000)
    p.add_argument("--out", default=None, help="JSON lines (default WORKDIR/results.jsonl)")
    args = p.parse_args(argv)
    workdir = pathlib.Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    out = pathlib.Path(args.out or workdir / "results.jsonl")
    done = finished_runs(out)
    holdout = workdir / "holdout"
    if not (holdout / "done").exists():
        sys.path.insert(0, str(REPO))
        from deeplab_ext.data import synthetic

        synthetic.write_tfrecords(holdout, splits=("holdout",),
                                  split_sizes={"holdout": args.num_holdout}, seed=0)
        (holdout / "done").write_text("ok")
    for name in args.runs.split(","):
        if name in done:
            print(f"{name}: already in {out}", flush=True)
            continue
        result = run_one(name, workdir, holdout, args.train_steps)
        append_run(out, result)
        print(json.dumps({k: result[k] for k in ("run", "tag_f1_val", "seconds")}), flush=True)


if __name__ == "__main__":
    main()
