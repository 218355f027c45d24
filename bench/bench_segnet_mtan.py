"""SegNet 1-task vs SegNet 3-task vs MTAN 3-task on CamVid from scratch (issue 18; the UCL
multi-task study's comparison, at CPU scale).

The 3-task systems add an image-classification head (the class of the crop's largest
object among car / pedestrian / bicyclist) and a box-regression head (its normalised
box), both targets computed from the augmented crop's mask. Each 3-task system runs with
the study's fixed weights (semantic 0.7, class 0.1, box 0.2) and with uncertainty
weighting. Network: ``segnet_tiny`` (SegNet-Basic's layout: four blocks, argmax pooling,
unpooling by index, decoder without ReLU; 32 3x3 filters instead of 64 7x7 to fit 2
cores) and ``mtan_tiny`` (the same SegNet with per-task encoder attention); frames shrunk
to 161 px, 121x161 crops, batch 8, 600 Adam steps (an MTAN run fits ~10 minutes on 2
cores), the same seed per column (BENCHMARKS 17)::

    .venv/bin/python -m bench.bench_segnet_mtan --workdir=/tmp/segnet --seeds=0,1,2

It first prints the heads' floor (``trivial_reference``): train's most frequent class and
train's mean box, scored on val.
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np

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


def _targets(shards: str, split: str, max_resize_value: int) -> tuple[np.ndarray, np.ndarray]:
    """Class ids and boxes of every frame of ``split`` as ``tools.eval`` sees them (whole
    frames at the sweep's scale, no crop)."""
    from deeplab_ext.data import input_pipeline
    from deeplab_ext.data.datasets import get_dataset_info

    ds = input_pipeline.make_dataset(get_dataset_info("camvid"), shards, split, crop_size=None,
                                     batch_size=1, is_training=False,
                                     max_resize_value=max_resize_value,
                                     targets=("semantic", "object_class", "object_box"))
    ys = [y for _, y in ds]
    return (np.array([int(y["object_class"][0]) for y in ys]),
            np.stack([y["object_box"][0].numpy() for y in ys]))


def trivial_reference(shards: str, max_resize_value: int) -> dict:
    """What the class and box heads score without looking at the image: train's most
    frequent class, and train's mean box, on val (the floor the heads must beat)."""
    from tf_mtl.metrics import box_iou

    train_cls, train_box = _targets(shards, "train", max_resize_value)
    val_cls, val_box = _targets(shards, "val", max_resize_value)
    present = train_cls >= 0
    majority = int(np.bincount(train_cls[present]).argmax())
    mean_box = train_box[train_box[:, 0] > 0, 1:].mean(axis=0)
    has = val_box[:, 0] > 0
    ious = box_iou(val_box[has, 1:], np.broadcast_to(mean_box, (int(has.sum()), 4))).numpy()
    return {"majority_class": majority,
            "class_accuracy": float(np.mean(val_cls[val_cls >= 0] == majority)),
            "mean_train_box": [round(float(v), 4) for v in mean_box],
            "box_iou": float(ious.mean()), "val_frames_with_object": int(has.sum())}


def _prepare(args: argparse.Namespace, workdir: pathlib.Path, env: dict) -> dict:
    return {"trivial_reference": trivial_reference(str(workdir / "tfrecord"),
                                                   args.max_resize_value)}


def main(argv: list[str] | None = None) -> None:
    main_for(__doc__.splitlines()[0], ARMS, argv, extract=_heads, prepare=_prepare,
             settings=SweepSettings(variant="segnet_tiny", train_steps=600, crop="121,161",
                                   max_resize_value=161))


if __name__ == "__main__":
    main()
