"""Self-supervised auxiliary tasks and auxiliary modules on CamVid from scratch (issue 17).

Two experiments, each the same network, schedule and budget per arm, 3 seeds:

1. segmentation alone (``seg``) vs + Canny edges (``edges``) vs + denoising (``denoise``)
   vs + colourisation (``colorize``), fixed weights (each auxiliary task weight 1), as
   the UCL SegNet / MTAN study compares them::

       .venv/bin/python -m bench.bench_self_supervised --workdir=/tmp/ssl \\
           --arms=seg,edges,denoise,colorize

2. segmentation + edges as a two-task system: Joint (``edges``, fixed weights) vs Joint
   with uncertainty weighting (``edges_uw``) vs deep supervision (``deep_supervision``:
   both tasks' losses at every downsampling stage, scale 0.1) vs auxiliary modules with
   the basic design (``aux_modules``: 1x1 conv-BN-ReLU adaptors, summation) vs the small
   search's winner (``aux_searched``; the search runs first, ``bench.search_aux_modules``
   on a split of CamVid train held out from its runs, and its winner's flags are used)::

       .venv/bin/python -m bench.bench_self_supervised --workdir=/tmp/ssl \\
           --arms=edges,edges_uw,deep_supervision,aux_modules,aux_searched

Network ``deeplabv3plus_mobilenetv2_tiny`` (no tag head: segmentation is the main task),
CamVid frames shrunk to 241 px, 177x241 crops, batch 8, Adam; val mIoU of the
segmentation. The first arm named is the baseline of the paired differences.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys

from bench.common import REPO
from bench.sweep import Arm, SweepSettings, main_for

_FIXED = ("--loss_weighting=fixed",)
ARMS = [
    Arm("seg", _FIXED),
    Arm("edges", (*_FIXED, "--aux_tasks=edges")),
    Arm("denoise", (*_FIXED, "--aux_tasks=denoise")),
    Arm("colorize", (*_FIXED, "--aux_tasks=colorize")),
    Arm("edges_uw", ("--loss_weighting=uncertainty", "--aux_tasks=edges")),
    Arm("deep_supervision", (*_FIXED, "--aux_tasks=edges", "--deep_supervision=semantic,edges")),
    Arm("aux_modules", (*_FIXED, "--aux_tasks=edges", "--aux_modules=semantic,edges",
                        "--aux_module_adaptor=basic", "--aux_module_aggregator=sum")),
]
# The search trains on 300 train frames and ranks on the other 67 (never on val).
SEARCH_SPLITS = ("search_train", "search_holdout")


def _search(args: argparse.Namespace, workdir: pathlib.Path) -> list[Arm]:
    """Run (or resume) the module search and return its winner as an arm."""
    camvid = pathlib.Path(args.camvid_dir)
    names = (camvid / "train.txt").read_text().splitlines()
    lists = workdir / "search_lists"
    lists.mkdir(exist_ok=True)
    (lists / "search_train.txt").write_text("\n".join(names[:300]) + "\n")
    (lists / "search_holdout.txt").write_text("\n".join(names[300:]) + "\n")
    shards = workdir / "search_tfrecord"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    if not (shards / "done").exists():
        subprocess.run([sys.executable, "-m", "tools.build_camvid_data", f"--camvid_dir={camvid}",
                        f"--output_dir={shards}",
                        *[f"--list_files={s}={lists / s}.txt" for s in SEARCH_SPLITS]],
                       cwd=REPO, env=env, check=True)
        (shards / "done").write_text("ok")
    subprocess.run([sys.executable, "-m", "bench.search_aux_modules",
                    f"--workdir={workdir / 'search'}", f"--dataset_dir={shards}",
                    "--rank_split=search_holdout", "--tasks=semantic,edges",
                    f"--num_candidates={args.search_candidates}", "--",
                    "--dataset=camvid", "--model_variant=deeplabv3plus_mobilenetv2_tiny",
                    "--train_split=search_train", f"--train_crop_size={args.crop}",
                    f"--max_resize_value={args.max_resize_value}", "--train_batch_size=8",
                    f"--training_number_of_steps={args.search_steps}", "--optimizer=adam",
                    f"--base_learning_rate={args.base_learning_rate}",
                    "--save_summaries_images=false", "--seed=0", *_FIXED, "--aux_tasks=edges"],
                   cwd=REPO, env=env, check=True)
    best = json.loads((workdir / "search" / "best.json").read_text())
    return [Arm("aux_searched", (*_FIXED, "--aux_tasks=edges", *best["flags"]))]


_search.names = ("aux_searched",)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--search_candidates", type=int, default=6)
    p.add_argument("--search_steps", type=int, default=300)


def main(argv: list[str] | None = None) -> None:
    main_for(__doc__.splitlines()[0], ARMS, argv, add_arguments=_arguments, late_arms=_search,
             settings=SweepSettings(variant="deeplabv3plus_mobilenetv2_tiny"))


if __name__ == "__main__":
    main()
