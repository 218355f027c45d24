"""This zoo's ResNet-50 DeepLabv3+ vs keras-hub's ``DeepLabV3`` (ResNet-50 backbone) per
multiply-add: train step and inference, interleaved in one process (issue 19).

keras-hub's network is built from its config (no presets: they need the internet):
``ResNetBackbone`` with ResNet-50's stages (not atrous: its pyramid levels P2..P5 are
strides 4..32), ``DeepLabV3Backbone`` with ASPP on ``--keras_hub_level`` (P5 by default)
and the P2 low-level decoder, ``DeepLabV3ImageSegmenter``. Ours is
``deeplabv3plus_resnet50`` (ResNet-50-beta) at ``--output_stride`` (32 by default: the
same grid as P5, so the nearest equal work; 16 is the original's training setting).
Multiply-adds of both are counted by one counter (``tf_mtl.flops.count_macs``) at the
bench's input size. Each side trains with its own train step as a user gets it: ours the
project's ``MultiTaskModel`` (softmax CE with the ignore label, weight decay, momentum
SGD), keras-hub's ``compile(SGD(momentum), SparseCategoricalCrossentropy)`` +
``train_on_batch``; inference is each network's compiled forward pass. Ratio printed:
(our seconds / our multiply-adds) / (their seconds / their multiply-adds), per round,
median (goal <= 1.0).

keras-hub is a bench-only dependency, installed without its dependencies (its
``tensorflow-text`` would pull the full CUDA ``tensorflow``)::

    .venv/bin/pip install --no-deps -r bench/requirements-keras-hub.txt
    .venv/bin/python -m bench.bench_vs_keras_hub --size 256 --batch 2 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench.bench_weighting import (  # noqa: E402
    build_train_model,
    interleaved_times,
    median_ratio,
    step_fn,
    synthetic_batch,
)
from deeplab_ext.models import build_network  # noqa: E402
from tf_mtl.flops import count_macs, count_params  # noqa: E402

RESNET50 = dict(input_conv_filters=[64], input_conv_kernel_sizes=[7],
                stackwise_num_filters=[64, 128, 256, 512], stackwise_num_blocks=[3, 4, 6, 3],
                stackwise_num_strides=[1, 2, 2, 2], block_type="bottleneck_block")


def keras_hub_deeplab(num_classes: int, level: str, size: int
                      ) -> tuple[keras.Model, keras.Model]:
    """keras-hub's DeepLabV3 segmenter with a ResNet-50 backbone, from config, and that
    backbone up to ``level``."""
    import keras_hub

    encoder = keras_hub.models.ResNetBackbone(**RESNET50, image_shape=(size, size, 3))
    trunk = keras.Model(encoder.inputs, encoder.pyramid_outputs[level])
    stride = 2 ** int(level[-1])
    backbone = keras_hub.models.DeepLabV3Backbone(
        image_encoder=encoder, spatial_pyramid_pooling_key=level,
        upsampling_size=stride // 4, dilation_rates=[6, 12, 18], low_level_feature_key="P2",
        image_shape=(size, size, 3))
    return keras_hub.models.DeepLabV3ImageSegmenter(backbone=backbone, num_classes=num_classes,
                                                    preprocessor=None), trunk


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256,
                   help="a multiple of 32 (keras-hub upsamples P5 by fixed factors)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--output_stride", type=int, default=32)
    p.add_argument("--keras_hub_level", default="P5", choices=("P4", "P5"))
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]

    ours = build_network("deeplabv3plus_resnet50", output_stride=args.output_stride,
                         input_shape=(args.size, args.size, 3))
    cfg = ours.model_config
    theirs, their_trunk = keras_hub_deeplab(cfg.num_classes, args.keras_hub_level, args.size)
    our_trunk = keras.Model(ours.input, ours.get_layer("backbone_output").output)
    shape = (1, args.size, args.size, 3)
    macs = {"ours": count_macs(ours, shape), "keras_hub": count_macs(theirs, shape),
            "ours_backbone": count_macs(our_trunk, shape),
            "keras_hub_backbone": count_macs(their_trunk, shape)}

    x, y = synthetic_batch(args.batch, args.size, cfg.num_classes, 0, ignore_label=255)
    ours_train = build_train_model(ours, cfg, "fixed")
    theirs.compile(optimizer=keras.optimizers.SGD(1e-4, momentum=0.9),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   metrics=[])  # its default accuracy expects one-hot labels
    labels = tf.where(y["semantic"] == 255, 0, y["semantic"])  # theirs has no ignore label
    fwd_ours = tf.function(lambda v: ours(v, training=False)["semantic"])
    fwd_theirs = tf.function(lambda v: theirs(v, training=False))
    trunk_ours = tf.function(lambda v: our_trunk(v, training=False))
    trunk_theirs = tf.function(lambda v: their_trunk(v, training=False))
    fns = {
        "train_ours": step_fn(ours_train, x, y),
        "train_keras_hub": lambda: theirs.train_on_batch(x, labels, return_dict=True),
        "infer_ours": lambda: fwd_ours(x).numpy(),
        "infer_keras_hub": lambda: fwd_theirs(x).numpy(),
        # Where the gap is: the backbones alone (inference).
        "backbone_ours": lambda: trunk_ours(x).numpy(),
        "backbone_keras_hub": lambda: trunk_theirs(x).numpy(),
    }
    times = interleaved_times(fns, args.rounds, warmup=1)
    med = {k: statistics.median(v) for k, v in times.items()}
    per_mac = macs["keras_hub"] / macs["ours"]
    res = {
        "size": args.size, "batch": args.batch, "rounds": args.rounds,
        "ours": f"deeplabv3plus_resnet50 OS{args.output_stride}",
        "keras_hub": f"DeepLabV3 ResNet-50 ASPP on {args.keras_hub_level}",
        "gmacs_per_image": {k: round(v / 1e9, 2) for k, v in macs.items()},
        "params": {"ours": count_params(ours), "keras_hub": count_params(theirs)},
        "median_s": {k: round(v, 4) for k, v in med.items()},
        # (t_ours / mac_ours) / (t_theirs / mac_theirs), per round then the median
        "train_ratio_per_mac": round(median_ratio(times["train_ours"], times["train_keras_hub"])
                                     * per_mac, 3),
        "infer_ratio_per_mac": round(median_ratio(times["infer_ours"], times["infer_keras_hub"])
                                     * per_mac, 3),
        "backbone_infer_ratio_per_mac": round(
            median_ratio(times["backbone_ours"], times["backbone_keras_hub"])
            * macs["keras_hub_backbone"] / macs["ours_backbone"], 3),
        "goal": "<= 1.0", "cpu_cores": os.cpu_count(),
        "load_avg_1min_before_after": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "bench_wall_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
