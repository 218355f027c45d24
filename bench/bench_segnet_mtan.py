"""SegNet 1-task vs SegNet 3-task vs MTAN 3-task on CamVid from scratch (issue 18; the UCL
multi-task study's comparison, at CPU scale).

The 3-task systems add an image-classification head (the class of the crop's largest
object among car / pedestrian / bicyclist) and a box-regression head (its normalised
box), both targets computed from the augmented crop's mask. Each 3-task system runs with
the study's fixed weights (semantic 0.7, class 0.1, box 0.2) and with uncertainty
weighting. Network: ``segnet_tiny`` (SegNet-Basic's layout: four blocks, argmax pooling,
unpooling by index, decoder without ReLU; 32 3x3 filters instead of 64 7x7 to fit 2
cores) and ``mtan_tiny`` (the same SegNet with per-task encoder attention); frames shrunk
to 241 px, 177x241 crops, batch 8, Adam, the same steps and seed per column::

    .venv/bin/python -m bench.bench_segnet_mtan --workdir=/tmp/segnet --seeds=0,1,2
"""

from __future__ import annotations

from bench.sweep import Arm, SweepSettings, main_for

_STUDY = ("--loss_weighting=fixed", "--task_weights=semantic=0.7,class=0.1,box=0.2")
_UW = ("--loss_weighting=uncertainty",)
ARMS = [
    Arm("segnet_1task", ("--loss_weighting=fixed",), variant="segnet_tiny"),
    Arm("segnet_3task_fixed", _STUDY, variant="segnet_tiny_3task"),
    Arm("segnet_3task_uw", _UW, variant="segnet_tiny_3task"),
    Arm("mtan_3task_fixed", _STUDY, variant="mtan_tiny"),
    Arm("mtan_3task_uw", _UW, variant="mtan_tiny"),
]


def _heads(res: dict) -> dict:
    return {"class_accuracy": res.get("class", {}).get("accuracy"),
            "box_iou": res.get("box", {}).get("box_iou")}


def main(argv: list[str] | None = None) -> None:
    main_for(__doc__.splitlines()[0], ARMS, argv, extract=_heads,
             settings=SweepSettings(variant="segnet_tiny", train_steps=900))


if __name__ == "__main__":
    main()
