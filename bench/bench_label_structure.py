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
import pathlib
import re
import time

from bench.common import run_tool
from bench.sweep import Arm, main_for

_DECODER = ("--label_decoder={workdir}/ae128", "--label_decoder_weight=0.5")
_PATH_MIOU = ("--label_decoder_path_miou",)
ARMS = [
    Arm("baseline"),
    Arm("decoder", _DECODER, eval_flags=_PATH_MIOU),
    Arm("encoder", ("--label_encoder={workdir}/ae128", "--label_decoder_weight=0.5")),
    Arm("unfrozen", (*_DECODER, "--label_decoder_trainable"), eval_flags=_PATH_MIOU),
    Arm("random", (*_DECODER, "--label_decoder_init=random"), eval_flags=_PATH_MIOU),
]
MIOU_LINE = re.compile(r"Reconstruction mIoU on \S+: ([0-9.]+)%")


def prepare(args: argparse.Namespace, workdir: pathlib.Path, env: dict) -> dict:
    """Phase 1, the label autoencoder (once; resumes): its reconstruction mIoU on val."""
    ae = workdir / "ae128"
    flags = [f"--train_logdir={ae}", "--dataset=camvid", f"--dataset_dir={workdir / 'tfrecord'}",
             "--variant=128", f"--train_crop_size={args.ae_crop},{args.ae_crop}",
             f"--training_number_of_steps={args.ae_steps}", "--log_every_n_steps=250"]
    t0 = time.time()
    out = run_tool("train_label_autoencoder", flags, env, workdir / "prepare.log")
    found = MIOU_LINE.findall(out)
    if not found:
        raise RuntimeError(f"no reconstruction mIoU in the phase-1 output; see "
                           f"{workdir / 'prepare.log'}")
    return {"phase1": {"ae_dir": str(ae), "ae_steps": args.ae_steps,
                       "reconstruction_miou_val": float(found[-1]) / 100,
                       "command": "python -m tools.train_label_autoencoder " + " ".join(flags),
                       "seconds": round(time.time() - t0, 1)}}


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ae_steps", type=int, default=3000)
    p.add_argument("--ae_crop", type=int, default=128)


def _decoder_path(res: dict) -> dict:
    return {"decoder_path_miou": res.get("label_decoder_path", {}).get("miou")}


def main(argv: list[str] | None = None) -> None:
    main_for(__doc__.splitlines()[0], ARMS, argv, prepare=prepare, add_arguments=_arguments,
             extract=_decoder_path)


if __name__ == "__main__":
    main()
