"""Does predicting through a frozen label decoder help? CamVid from scratch, five arms,
the same network, schedule and budget in each (Mostajabi et al., CVPR 2018; issue 16).

Arms (``--arms``): ``baseline`` (no branch); ``decoder`` (the frozen decoder path, CE,
weight 0.5); ``encoder`` (the paper's alternative: regress the frozen encoder's conv1 and
conv3 activations); ``unfrozen`` and ``random`` (the paper's ablations: the decoder
trained too, or never trained). Every arm trains
``deeplabv3plus_mobilenetv2_tiny_mt`` on CamVid train frames shrunk to 241 px
(``--max_resize_value=241``, crops 177x241, batch 8) for ``--train_steps`` Adam steps
with the same seed per column, then ``tools.eval`` on the 101 val frames at the same
scale (the decoder arms also report the decoder path's own mIoU). Phase 1 (the label
autoencoder, variant 128) runs once first, and its reconstruction mIoU on the val label
maps is recorded. One JSON line per run lands in ``WORKDIR/results.jsonl`` as soon as
it is done; re-running skips finished runs, then prints mean +- std per arm and the
seed-paired differences to the baseline with 95% t intervals::

    .venv/bin/python -m bench.bench_label_structure --workdir=/tmp/ls --seeds=0,1,2

About 1.1 training steps/s on 2 cores: 900 steps + evaluation is about 15 minutes a run.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import time

from bench.common import (
    REPO,
    append_run,
    finished_runs,
    mean_std,
    paired_interval,
    run_tool,
)

ARMS = {
    "baseline": [],
    "decoder": ["--label_decoder={ae}", "--label_decoder_weight=0.5"],
    "encoder": ["--label_encoder={ae}", "--label_decoder_weight=0.5"],
    "unfrozen": ["--label_decoder={ae}", "--label_decoder_weight=0.5",
                 "--label_decoder_trainable"],
    "random": ["--label_decoder={ae}", "--label_decoder_weight=0.5",
               "--label_decoder_init=random"],
}
MIOU_LINE = re.compile(r"Reconstruction mIoU on \S+: ([0-9.]+)%")


def prepare(args: argparse.Namespace, workdir: pathlib.Path, env: dict) -> tuple[str, dict]:
    """CamVid shards and the label autoencoder (both once); returns (shards, phase-1 facts)."""
    shards = workdir / "tfrecord"
    log = workdir / "prepare.log"
    if not (shards / "done").exists():
        run_tool("build_camvid_data", [f"--camvid_dir={args.camvid_dir}",
                                       f"--output_dir={shards}"], env, log)
        (shards / "done").write_text("ok")
    ae = workdir / "ae128"
    flags = [f"--train_logdir={ae}", "--dataset=camvid", f"--dataset_dir={shards}",
             "--variant=128", f"--train_crop_size={args.ae_crop},{args.ae_crop}",
             f"--training_number_of_steps={args.ae_steps}", "--log_every_n_steps=250"]
    t0 = time.time()
    out = run_tool("train_label_autoencoder", flags, env, log)  # resumes; reports the mIoU
    found = MIOU_LINE.findall(out)
    if not found:
        raise RuntimeError(f"no reconstruction mIoU in the phase-1 output; see {log}")
    return str(shards), {"ae_dir": str(ae), "ae_steps": args.ae_steps,
                         "reconstruction_miou_val": float(found[-1]) / 100,
                         "command": "python -m tools.train_label_autoencoder " + " ".join(flags),
                         "seconds": round(time.time() - t0, 1)}


def run_one(arm: str, seed: int, args: argparse.Namespace, workdir: pathlib.Path,
            shards: str, ae: str, env: dict) -> dict:
    run = workdir / f"{arm}_seed{seed}"
    run.mkdir(parents=True, exist_ok=True)
    log = run / "log.txt"
    train = [f"--train_logdir={run / 'train'}", "--dataset=camvid", f"--dataset_dir={shards}",
             "--model_variant=deeplabv3plus_mobilenetv2_tiny_mt",
             f"--train_crop_size={args.crop}", f"--max_resize_value={args.max_resize_value}",
             "--train_batch_size=8", f"--training_number_of_steps={args.train_steps}",
             "--optimizer=adam", f"--base_learning_rate={args.base_learning_rate}",
             f"--save_interval_steps={args.train_steps}", "--save_summaries_images=false",
             f"--seed={seed}", *[f.format(ae=ae) for f in ARMS[arm]]]
    t0 = time.time()
    run_tool("train", train, env, log)
    train_s = time.time() - t0
    evaluate = [f"--checkpoint_dir={run / 'train'}", f"--dataset_dir={shards}",
                "--eval_split=val", f"--eval_logdir={run / 'eval'}", "--bootstrap_samples=0",
                "--num_vis_examples=0"]
    if arm in ("decoder", "unfrozen", "random"):
        evaluate.append("--label_decoder_path_miou")
    run_tool("eval", evaluate, env, log)
    res = json.loads((run / "eval" / "eval_results.json").read_text())
    return {"run": f"{arm}_seed{seed}", "arm": arm, "seed": seed,
            "miou": res["modes"]["none"]["miou"],
            "decoder_path_miou": res.get("label_decoder_path", {}).get("miou"),
            "tag_f1": res.get("tags", {}).get("f1"),
            "train_command": "python -m tools.train " + " ".join(train),
            "eval_command": "python -m tools.eval " + " ".join(evaluate),
            "train_seconds": round(train_s, 1), "seconds": round(time.time() - t0, 1)}


def summary(rows: dict[str, dict], arms: list[str]) -> str:
    """Mean +- std per arm and the seed-paired difference to the baseline (mIoU points)."""
    by_arm = {a: {r["seed"]: r["miou"] for r in rows.values() if r.get("arm") == a}
              for a in arms}
    lines = ["| arm | runs | val mIoU (%) mean +- std | vs baseline, seed-paired (95% t) |",
             "|---|---|---|---|"]
    base = by_arm.get("baseline", {})
    for arm in arms:
        values = by_arm[arm]
        if not values:
            continue
        mean, std = mean_std([100 * v for v in values.values()])
        cell = ""
        common = sorted(set(values) & set(base))
        if arm != "baseline" and common:
            d, lo, hi = paired_interval([100 * (values[s] - base[s]) for s in common])
            cell = f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}] ({len(common)} seeds)"
        lines.append(f"| {arm} | {len(values)} | {mean:.2f} +- {std:.2f} | {cell} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--camvid_dir", default=str(REPO.parent / "shared" / "data" / "camvid"))
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--train_steps", type=int, default=900)
    p.add_argument("--base_learning_rate", type=float, default=3e-3)
    p.add_argument("--crop", default="177,241")
    p.add_argument("--max_resize_value", type=int, default=241)
    p.add_argument("--ae_steps", type=int, default=3000)
    p.add_argument("--ae_crop", type=int, default=128)
    args = p.parse_args(argv)
    arms = args.arms.split(",")
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        p.error(f"--arms: unknown {unknown}; known: {sorted(ARMS)}")
    workdir = pathlib.Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "results.jsonl"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    shards, phase1 = prepare(args, workdir, env)
    print(json.dumps({"phase1": phase1}), flush=True)
    done = finished_runs(out)
    for seed in (int(s) for s in args.seeds.split(",")):
        for arm in arms:  # arms inside seeds: a stopped sweep leaves complete pairs
            name = f"{arm}_seed{seed}"
            if name in done:
                continue
            done[name] = result = run_one(arm, seed, args, workdir, shards, phase1["ae_dir"], env)
            append_run(out, result)
            print(json.dumps({k: result[k] for k in ("run", "miou", "decoder_path_miou",
                                                     "seconds")}), flush=True)
    print(summary(done, arms))


if __name__ == "__main__":
    main()
