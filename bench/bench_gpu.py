"""What a lent GPU is measured for, in one run (issue 19; ``bench/gpu_checks.sh``):

* the Xception-65 DeepLabv3+ train step at 513x513 in float32, mixed_float16 and
  mixed_bfloat16, each at the largest batch that fits (doubling until the allocator
  refuses), images/s, timed interleaved;
* peak device memory of a batch-1 train step at output stride 8 vs 16;
* one evidence refit step per image (weights mode, the family's refit set), per precision;
* inference of the imported released model (the shipped MobileNetV2-dm0.5
  DeepLabv3, OS8) at 513x513.

``--tiny`` runs the same code on CPU in about a minute (a tiny variant at 65x65, batches
1-2, two rounds): the test suite runs it, so the script is known to work before a GPU is
lent. Prints one JSON object::

    .venv/bin/python -m bench.bench_gpu            # on the GPU machine
    .venv/bin/python -m bench.bench_gpu --tiny     # anywhere
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench.bench_refit_speed import refit_call  # noqa: E402
from bench.bench_weighting import (  # noqa: E402
    build_train_model,
    interleaved_times,
    step_fn,
    synthetic_batch,
    trainer_network,
)
from deeplab_ext.assets import WEIGHTS  # noqa: E402
from deeplab_ext.models import build_network, group_variables  # noqa: E402
from deeplab_ext.run.importing import import_original  # noqa: E402
from tf_mtl.evidence import EvidenceConfig, EvidenceRefitter  # noqa: E402
from tf_mtl.precision import set_policy  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
TFLITE = WEIGHTS / "deeplabv3_mnv2_dm05_pascal_257.tflite"
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
FULL = {"variant": "deeplabv3plus_xception65_mt", "size": 513, "batches": (2, 4, 8, 16, 32, 64),
        "rounds": 5, "refit_steps": 5}
# --tiny tries one batch (each tried batch is a train-step trace: the suite runs this).
# Batch 1, so the float32 step is also the memory section's output-stride-16 step.
TINY = {"variant": "deeplabv3plus_mobilenetv2_micro_mt", "size": 33, "batches": (1,),
        "rounds": 1, "refit_steps": 1}


def _gpu() -> str | None:
    gpus = tf.config.list_physical_devices("GPU")
    return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") \
        if gpus else None


def _peak_gib(fn) -> float | None:
    """Peak device memory of ``fn()`` in GiB (None on CPU: TF keeps no such counter)."""
    if not tf.config.list_physical_devices("GPU"):
        fn()
        return None
    tf.config.experimental.reset_memory_stats("GPU:0")
    fn()
    return round(tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**30, 3)


def _built(variant: str, precision: str, **overrides):
    """(network, config, train model) built under ``precision`` (then float32 again)."""
    set_policy(precision)
    try:
        net, cfg = trainer_network(variant)
        if overrides:
            cfg = cfg.replace(**overrides)
            net = build_network(cfg)
        return net, cfg, build_train_model(net, cfg, "uncertainty")
    finally:
        set_policy("float32")


def largest_batch(model, cfg, size: int, batches) -> tuple[int, object]:
    """The largest of ``batches`` whose train step runs (doubling until it does not)."""
    best = None
    for b in batches:
        x, y = synthetic_batch(b, size, cfg.num_classes, cfg.num_tags)
        try:
            fn = step_fn(model, x, y)
            fn()
        except (tf.errors.ResourceExhaustedError, tf.errors.InternalError):
            break
        best = (b, fn)
    if best is None:
        raise RuntimeError(f"not even batch {batches[0]} fits")
    return best


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="CPU-sized run of the same checks")
    p.add_argument("--precisions", default=",".join(PRECISIONS))
    args = p.parse_args(argv)
    if args.tiny:
        # The CPU smoke run (the suite runs it): every graph here is traced and run a few
        # times, so Grappler's rewrites cost more than they save; the GPU run keeps them.
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    s = TINY if args.tiny else FULL
    t0 = time.perf_counter()
    res: dict = {"device": _gpu() or "CPU", "tiny": args.tiny, "variant": s["variant"],
                 "size": s["size"], "train": {}, "refit_step_per_image_s": {}}

    # Train step per precision at its largest batch, interleaved.
    steps, refits = {}, {}
    built16 = None
    for prec in args.precisions.split(","):
        net, cfg, model = _built(s["variant"], prec)
        if prec == "float32":
            built16 = (net, cfg, model)
        batch, steps[prec] = largest_batch(model, cfg, s["size"], s["batches"])
        res["train"][prec] = {"batch": batch}
        x1, y1 = synthetic_batch(1, s["size"], cfg.num_classes, cfg.num_tags)
        refitter = EvidenceRefitter(net, EvidenceConfig(steps=s["refit_steps"], mode="weights",
                                                              alpha=0.0, safeguard=False),
                                    variables=group_variables(net))
        refits[prec] = (refit_call(refitter, x1, y1["tags"], 0),
                        refit_call(refitter, x1, y1["tags"], s["refit_steps"]))
        # What the timed calls do, checked once: every refit step applied (none skipped as
        # non-finite under a loss scale), and the refit moved the tags toward the evidence.
        out = refitter.refit_fn(x1, y1["tags"], tf.constant(s["refit_steps"]))
        bce = [float(tf.reduce_mean(keras.losses.binary_crossentropy(y1["tags"], out[k])))
               for k in ("tag_probabilities_before", "tag_probabilities_after")]
        res.setdefault("refit_check", {})[prec] = {
            "steps_taken": int(out["steps_taken"][0]), "tag_bce_before": round(bce[0], 5),
            "tag_bce_after": round(bce[1], 5)}
    times = interleaved_times(steps, s["rounds"], warmup=1)
    for prec, t in times.items():
        med = statistics.median(t)
        logs = steps[prec]()  # the train step's own losses, after the timed ones
        res["train"][prec].update(step_s=round(med, 4),
                                  images_per_s=round(res["train"][prec]["batch"] / med, 2),
                                  loss=round(float(logs["loss"]), 5))
    fns = {f"{prec}_{k}": fn for prec, pair in refits.items() for k, fn in zip("0K", pair,
                                                                              strict=True)}
    rt = {k: statistics.median(v) for k, v in interleaved_times(fns, s["rounds"], 1).items()}
    for prec in refits:
        res["refit_step_per_image_s"][prec] = round(
            (rt[f"{prec}_K"] - rt[f"{prec}_0"]) / s["refit_steps"], 4)

    # Peak memory of one batch-1 train step, output stride 8 vs the variant's 16 (float32).
    res["peak_memory_gib_b1"] = {}
    built16 = built16 or _built(s["variant"], "float32")
    for os_, (_, cfg, model) in ((16, built16), (8, _built(s["variant"], "float32",
                                                          output_stride=8))):
        if os_ == 16 and res["train"].get("float32", {}).get("batch") == 1:
            step = steps["float32"]  # that very step, traced and run already
        else:
            x, y = synthetic_batch(1, s["size"], cfg.num_classes, cfg.num_tags)
            step = step_fn(model, x, y)
            step()  # trace outside the measured step
        res["peak_memory_gib_b1"][f"os{os_}"] = _peak_gib(step)

    # The released model, imported, at the bench size.
    if TFLITE.exists():
        net = build_network("deeplabv3_mobilenetv2_dm05", output_stride=8,
                            input_shape=(s["size"], s["size"], 3))
        import_original(net, TFLITE)
        forward = tf.function(lambda x: net(x, training=False)["semantic"])
        x = tf.constant(np.random.default_rng(0).uniform(0, 255, (1, s["size"], s["size"], 3)),
                        tf.float32)
        t = interleaved_times({"infer": lambda: forward(x).numpy()}, s["rounds"], warmup=1)
        res["pretrained_inference_ms"] = round(1e3 * statistics.median(t["infer"]), 2)
    else:
        res["pretrained_inference_ms"] = f"skipped: {TFLITE} not found"
    res["bench_wall_s"] = round(time.perf_counter() - t0, 1)
    res["keras"] = keras.__version__
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
