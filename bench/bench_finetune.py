"""Fine-tuning a released model on other classes vs the same network from scratch (issue 44).

The original's everyday use: start from its released `mobilenetv2_coco_voc_trainaug`
(ImageNet, MS-COCO, VOC train_aug; 21 VOC classes) and fine-tune it on CamVid's 11 classes:
a new classifier (the logits' shape differs, so they start afresh), everything else loaded,
BatchNorm frozen (the release's BatchNorm is folded into its convolutions: its statistics
are no data's, and batches of 8 could not estimate new ones). Against it, the same network
(`deeplabv3_mobilenetv2`, width 1.0) from scratch with BatchNorm training, the same
schedule and budget; val mIoU every quarter of the budget (the curve), 3 seeds::

    .venv/bin/python -m bench.bench_finetune --workdir=/work/exp44/finetune \\
        --camvid_dir=../shared/data/camvid [--train_steps=1200] [--seeds=0,1,2]

Needs the full CamVid split (367 train, 101 val; the repository ships 6 frames):
`python -m tools.download_data --dataset=camvid --download_dir=DIR`. Then
`python -m bench.bench_finetune --plot=WORKDIR/results.jsonl --out=PNG` draws the curves.
"""

from __future__ import annotations

import argparse
import sys

from bench.sweep import Arm, SweepSettings, main_for

RELEASE = "mobilenetv2_coco_voc_trainaug"
ARMS = [
    Arm("scratch", ("--loss_weighting=fixed",)),
    Arm("release", ("--loss_weighting=fixed", f"--tf_initial_checkpoint={RELEASE}",
                    "--fine_tune_batch_norm=false", "--base_learning_rate=1e-3")),
]
SETTINGS = SweepSettings(variant="deeplabv3_mobilenetv2", train_steps=1200, curve_points=4)


def plot(results: str, out: str) -> None:
    """Val mIoU against steps: each seed thin, each arm's mean thick."""
    import pathlib

    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from bench.common import finished_runs

    rows = finished_runs(pathlib.Path(results))
    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for arm, colour in (("scratch", "#c44e52"), ("release", "#4c72b0")):
        curves = [np.asarray(r["curve"]) for r in rows.values() if r.get("arm") == arm]
        for c in curves:
            ax.plot(c[:, 0], 100 * c[:, 1], color=colour, alpha=0.3, lw=1)
        if curves:
            mean = np.mean([c[:, 1] for c in curves], axis=0)
            ax.plot(curves[0][:, 0], 100 * mean, color=colour, lw=2.5, marker="o",
                    label=f"{arm} (mean of {len(curves)} seeds)")
    ax.set_xlabel("training step")
    ax.set_ylabel("CamVid val mIoU (%)")
    ax.set_title(f"deeplabv3_mobilenetv2 on CamVid: from {RELEASE} vs from scratch")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.savefig(out, bbox_inches="tight")


if __name__ == "__main__":
    if "--plot" in " ".join(sys.argv):
        p = argparse.ArgumentParser()
        p.add_argument("--plot", required=True)
        p.add_argument("--out", required=True)
        a = p.parse_args()
        plot(a.plot, a.out)
    else:
        main_for(__doc__.splitlines()[0], ARMS, settings=SETTINGS)
