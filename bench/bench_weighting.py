"""Train-step cost of uncertainty weighting vs fixed weighting (target ratio <= 1.03).

Two `MultiTaskModel`s wrap the *same* `deeplabv3plus_mobilenetv2_mt` network (tasks as
in `deeplab_ext.run.trainer.build_tasks`: semantic softmax CE with ignore label + tag BCE),
one with `get_weighting("uncertainty")`, one with `get_weighting("fixed")`, each with
its own momentum-SGD optimizer. Both train on the same synthetic in-memory batch
(random images in [0, 255], random labels with some ignore pixels, random multi-hot
tags) through the compiled train function (`train_on_batch` after a warm-up, which
traces it). Steps are timed interleaved -- every round runs each model once, in a
fresh random order -- so slow phases of a shared, loaded machine hit all sides
alike; reported are the median step times, their ratio, and the median of the per-round ratios. An A/A control (a second, identical
fixed-weighting model, `--control`, on by default) is timed in the same rounds: its
ratio to `fixed` shows how far from 1.0 a zero-cost difference lands on this machine.
Because that noise floor is several percent on a loaded 2-core machine, the bench also
times the weighting's own work in isolation (`weighting_delta`: a compiled function
doing combine + gradient + SGD update of the weighting's variables on two scalar task
losses, uncertainty minus fixed, 300 interleaved calls each) and reports it as a
fraction of the fixed train step: a resolution-independent bound on the overhead.

    .venv/bin/python -m bench.bench_weighting                        # crop 257, batch 2
    .venv/bin/python -m bench.bench_weighting --crop 513 --batch 4 --rounds 8  # original size
    .venv/bin/python -m bench.bench_weighting --rounds 20 --variant deeplabv3plus_mobilenetv2_tiny_mt

The helpers `interleaved_times`, `build_train_model` and `synthetic_batch` are reused by
the other benches (bench_refit_speed, bench_input_pipeline).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable, Mapping

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from deeplab_ext.data.datasets import get_dataset_info  # noqa: E402
from deeplab_ext.models import build_network  # noqa: E402
from deeplab_ext.run.options import TrainOptions  # noqa: E402
from deeplab_ext.run.trainer import build_multitask_model, model_config_for  # noqa: E402
from tf_mtl.model import MultiTaskModel  # noqa: E402
from tf_mtl.weighting import get_weighting  # noqa: E402

TARGET_RATIO = 1.03


def interleaved_times(fns: Mapping[str, Callable[[], object]], rounds: int,
                      warmup: int = 1, seed: int = 0) -> dict[str, list[float]]:
    """Wall times of each fn over `rounds` rounds, in a fresh random order every round.

    Every fn runs `warmup` times first (untimed: tracing, allocator warm-up). Each round
    runs every fn once, in a seeded random permutation, so drifts in machine load hit
    all alike and no fn systematically runs first or right after a particular other one
    (a fixed rotation would always put B after A when there are three fns).
    """
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    rng = np.random.default_rng(seed)
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(rounds):
        for i in rng.permutation(len(names)):
            t0 = time.perf_counter()
            fns[names[i]]()
            times[names[i]].append(time.perf_counter() - t0)
    return times


def median_ratio(num: list[float], den: list[float]) -> float:
    """Median of the per-round ratios num[r] / den[r] (robust to load spikes)."""
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


def train_options(variant: str, crop: int, batch: int, **kw) -> TrainOptions:
    """TrainOptions for the benches (no logdir/data needed: nothing is written or read)."""
    return TrainOptions(train_logdir="", dataset_dir="", model_variant=variant,
                        train_crop_size=(crop, crop), train_batch_size=batch, **kw)


def trainer_network(variant: str, dataset: str = "pascal_voc_seg") -> tuple[keras.Model, object]:
    """(network, config) as `deeplab_ext.run.trainer` builds it for `dataset`."""
    info = get_dataset_info(dataset)
    _, cfg = model_config_for(train_options(variant, 513, 1, dataset=dataset), info)
    return build_network(cfg), cfg


def build_train_model(network: keras.Model, cfg, weighting: str,
                      dataset: str = "pascal_voc_seg") -> MultiTaskModel:
    """The trainer's compiled MultiTaskModel over `network` (tasks, weighting, optimizer;
    loss-scaled under a mixed_float16 global policy)."""
    from deeplab_ext.models import family_of

    options = train_options(cfg.name, 513, 1, dataset=dataset, loss_weighting=weighting)
    return build_multitask_model(network, family_of(network), get_dataset_info(dataset),
                                 options)


def synthetic_batch(batch: int, crop: int, num_classes: int, num_tags: int,
                    ignore_label: int = 255, seed: int = 0) -> tuple[tf.Tensor, dict]:
    """Random images [0,255], labels (5% ignore) and multi-hot tags, as tensors."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (batch, crop, crop, 3)).astype("float32")
    labels = rng.integers(0, num_classes, (batch, crop, crop)).astype("int32")
    labels[rng.uniform(size=labels.shape) < 0.05] = ignore_label
    y = {"semantic": tf.constant(labels)}
    if num_tags:
        y["tags"] = tf.constant((rng.uniform(size=(batch, num_tags)) < 0.2).astype("float32"))
    return tf.constant(images), y


def step_fn(model: MultiTaskModel, x: tf.Tensor, y: dict) -> Callable[[], object]:
    """One compiled train step; returns after the logs are fetched (so it is finished)."""
    return lambda: model.train_on_batch(x, y, return_dict=True)


def _weighting_step(name: str, tasks) -> Callable[[], object]:
    """A compiled combine + gradient + SGD update of one weighting on scalar task losses."""
    w = get_weighting(name, tasks)
    opt = keras.optimizers.SGD(1e-4, momentum=0.9)
    variables = list(w.trainable_weights)
    if variables:
        opt.build(variables)
    losses = [tf.constant(0.7 + i, tf.float32) for i in range(len(tasks))]

    @tf.function
    def run():
        with tf.GradientTape() as tape:
            tape.watch(losses)
            total, _ = w.combine({t.name: v for t, v in zip(tasks, losses, strict=True)}, tasks)
        grads = tape.gradient(total, variables + losses)
        if variables:
            opt.apply(grads[: len(variables)], variables)
        return total, grads[len(variables):]

    return lambda: tf.nest.map_structure(lambda v: v.numpy(), run())


def weighting_delta_s(tasks, reps: int = 300) -> dict[str, float]:
    """Median time of combine + grad + update for each weighting on scalar losses."""
    fns = {name: _weighting_step(name, tasks) for name in ("uncertainty", "fixed")}
    times = interleaved_times(fns, reps, warmup=3)
    return {n: statistics.median(t) for n, t in times.items()}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="deeplabv3plus_mobilenetv2_mt")
    p.add_argument("--crop", type=int, default=257, help="square crop size (513 = original)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--rounds", type=int, default=30, help="timed steps per weighting")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per weighting")
    p.add_argument("--control", action=argparse.BooleanOptionalAction, default=True,
                   help="also time a second fixed-weighting model (A/A noise floor)")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.batch < 1 or args.crop < 33:
        p.error("--rounds and --batch must be >= 1 and --crop >= 33")

    load0 = os.getloadavg()[0]
    network, cfg = trainer_network(args.variant)
    models = {w: build_train_model(network, cfg, w) for w in ("uncertainty", "fixed")}
    if args.control:
        models["fixed_control"] = build_train_model(network, cfg, "fixed")
    x, y = synthetic_batch(args.batch, args.crop, cfg.num_classes, cfg.num_tags)
    fns = {w: step_fn(m, x, y) for w, m in models.items()}
    t0 = time.perf_counter()
    times = interleaved_times(fns, args.rounds, warmup=args.warmup)
    wall = time.perf_counter() - t0
    delta = weighting_delta_s(models["fixed"].tasks)
    med = {w: statistics.median(t) for w, t in times.items()}
    ratio = med["uncertainty"] / med["fixed"]
    per_round = median_ratio(times["uncertainty"], times["fixed"])
    res = {
        "variant": args.variant,
        "crop": args.crop,
        "batch": args.batch,
        "rounds": args.rounds,
        "median_step_s_uncertainty": round(med["uncertainty"], 4),
        "median_step_s_fixed": round(med["fixed"], 4),
        "min_step_s_uncertainty": round(min(times["uncertainty"]), 4),
        "min_step_s_fixed": round(min(times["fixed"]), 4),
        "ratio_uncertainty_to_fixed": round(ratio, 4),
        "median_per_round_ratio": round(per_round, 4),
        "target": f"<= {TARGET_RATIO}",
        **({"control_ratio_fixed2_to_fixed": round(med["fixed_control"] / med["fixed"], 4),
            "control_median_per_round_ratio": round(
                median_ratio(times["fixed_control"], times["fixed"]), 4)}
           if args.control else {}),
        "weighting_only_ms_uncertainty": round(1e3 * delta["uncertainty"], 4),
        "weighting_only_ms_fixed": round(1e3 * delta["fixed"], 4),
        "weighting_delta_over_fixed_step": round(
            (delta["uncertainty"] - delta["fixed"]) / med["fixed"], 6),
        "meets_target": bool(ratio <= TARGET_RATIO),
        "cpu_cores": os.cpu_count(),
        "load_avg_1min_before_after": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "bench_wall_s": round(wall, 1),
    }
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
