"""Evidence refit step vs training step for `deeplabv3plus_mobilenetv2_mt` (target <= 1.3).

Measured side by side in one process, interleaved round by round, on
one network shared by all sides (random order each round):
  train_s      one compiled MultiTaskModel train step at batch 1 (uncertainty weighting,
               the trainer's tasks and momentum SGD; synthetic image/labels/tags)
  predict_s    `EvidenceRefitter.refit_fn(image, tags, steps=0)` at batch 1, weights mode
  refit_K_s    the same with steps=K
  step_s       (refit_K_s - predict_s) / K  -- one refit step for one image
  ratio        step_s / train_s (per-round ratios, median)            target <= 1.3
Weights mode refits `variable_groups(net)` backbone + aspp + tag_head (the method's
default) with SGD. Second part: latent vs weights mode time per image at equal steps
(--compare_steps, default 10) on a batch of --compare_batch images (default 4), again
interleaved.

    .venv/bin/python -m bench.bench_refit_speed                      # 513x513
    .venv/bin/python -m bench.bench_refit_speed --size 257 --rounds 6
    .venv/bin/python -m bench.bench_refit_speed --compare_rounds 0   # skip the latent part
    python -m bench.bench_refit_speed --precision mixed_float16 [--jit_compile]   # GPU

--precision sets Keras' global policy before anything is built (both sides: the train
step gets a loss-scaled optimizer, the refit loop its float32 master copies);
--jit_compile XLA-compiles the refit loop only (the train step never is: summaries,
dynamic top-k).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench.bench_weighting import (  # noqa: E402
    build_train_model,
    interleaved_times,
    step_fn,
    synthetic_batch,
    trainer_network,
)
from deeplab_ext.models import variable_groups  # noqa: E402
from tf_mtl.evidence import EvidenceConfig, EvidenceRefitter  # noqa: E402
from tf_mtl.precision import POLICIES, set_policy  # noqa: E402

TARGET_RATIO = 1.3


def refit_call(refitter: EvidenceRefitter, images: tf.Tensor, tags: tf.Tensor, steps: int):
    """A no-arg fn running the compiled refit and fetching the result (so it finished)."""
    k = tf.constant(steps, tf.int32)
    return lambda: refitter.refit_fn(images, tags, k)["probabilities"].numpy()


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="deeplabv3plus_mobilenetv2_mt")
    p.add_argument("--size", type=int, default=513, help="square input size")
    p.add_argument("--steps", type=int, default=5, help="K of the per-step measurement")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--learning_rate", type=float, default=1e-3)
    p.add_argument("--compare_batch", type=int, default=4)
    p.add_argument("--compare_steps", type=int, default=10)
    p.add_argument("--compare_rounds", type=int, default=2, help="0 skips latent vs weights")
    p.add_argument("--precision", default="float32", choices=POLICIES)
    p.add_argument("--jit_compile", action="store_true", help="XLA-compile the refit loop")
    args = p.parse_args(argv)
    if args.steps < 1 or args.rounds < 1 or args.compare_steps < 1 or args.compare_batch < 1:
        p.error("--steps, --rounds, --compare_steps and --compare_batch must be >= 1")

    load0 = os.getloadavg()[0]
    t_start = time.perf_counter()
    set_policy(args.precision)
    net, cfg = trainer_network(args.variant)
    if cfg.num_tags <= 0:
        p.error(f"--variant={args.variant} has no tag head; use a *_mt variant")
    groups = variable_groups(net)
    chosen = groups["backbone"] + groups["aspp"] + groups["tag_head"]
    weights = EvidenceRefitter(
        net, EvidenceConfig(steps=args.steps, learning_rate=args.learning_rate, mode="weights",
                            jit_compile=args.jit_compile, alpha=0.0, safeguard=False),
        variables=chosen,
    )  # fmt: skip
    train = build_train_model(net, cfg, "uncertainty")
    x1, y1 = synthetic_batch(1, args.size, cfg.num_classes, cfg.num_tags)
    tags1 = y1["tags"]

    fns = {
        "train": step_fn(train, x1, y1),
        "predict": refit_call(weights, x1, tags1, 0),
        "refit_K": refit_call(weights, x1, tags1, args.steps),
    }
    times = interleaved_times(fns, args.rounds, warmup=1)
    k = args.steps
    step_per_round = [(a - b) / k for a, b in zip(times["refit_K"], times["predict"], strict=True)]
    ratio_per_round = [s / t for s, t in zip(step_per_round, times["train"], strict=True)]
    med = {n: statistics.median(t) for n, t in times.items()}
    step_med = (med["refit_K"] - med["predict"]) / k
    res: dict = {
        "variant": args.variant,
        "size": args.size,
        "precision": args.precision,
        "jit_compile_refit": args.jit_compile,
        "device": (tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
                   if (gpus := tf.config.list_physical_devices("GPU")) else "CPU"),
        "K": k,
        "rounds": args.rounds,
        "refit_variables": len(weights.refit_variables),
        "train_step_b1_s": round(med["train"], 3),
        "predict_b1_s": round(med["predict"], 3),
        "refit_K_b1_s": round(med["refit_K"], 3),
        "refit_step_per_image_s": round(step_med, 3),
        "ratio_refit_step_to_train_step": round(step_med / med["train"], 3),
        "median_per_round_ratio": round(statistics.median(ratio_per_round), 3),
        "target": f"<= {TARGET_RATIO}",
        "meets_target": bool(statistics.median(ratio_per_round) <= TARGET_RATIO),
    }

    if args.compare_rounds > 0:
        latent = EvidenceRefitter(
            net, EvidenceConfig(steps=args.compare_steps, learning_rate=args.learning_rate,
                                mode="latent", jit_compile=args.jit_compile, alpha=0.0,
                                safeguard=False),
        )  # fmt: skip
        rng = np.random.default_rng(1)
        xb = tf.constant(rng.uniform(0, 255, (args.compare_batch, args.size, args.size, 3)),
                         tf.float32)
        tb = tf.constant(rng.uniform(size=(args.compare_batch, cfg.num_tags)) < 0.2, tf.float32)
        cmp_fns = {
            "weights": refit_call(weights, xb, tb, args.compare_steps),
            "latent": refit_call(latent, xb, tb, args.compare_steps),
        }
        ct = interleaved_times(cmp_fns, args.compare_rounds, warmup=1)
        n = args.compare_batch
        w_img = statistics.median(ct["weights"]) / n
        l_img = statistics.median(ct["latent"]) / n
        res.update({
            "compare_batch": n,
            "compare_steps": args.compare_steps,
            "compare_rounds": args.compare_rounds,
            "weights_per_image_s": round(w_img, 3),
            "latent_per_image_s": round(l_img, 3),
            "ratio_latent_to_weights": round(l_img / w_img, 3),
            "median_per_round_ratio_latent_to_weights": round(statistics.median(
                a / b for a, b in zip(ct["latent"], ct["weights"], strict=True)), 3),
        })  # fmt: skip
    res.update({
        "cpu_cores": os.cpu_count(),
        "load_avg_1min_before_after": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "bench_wall_s": round(time.perf_counter() - t_start, 1),
    })  # fmt: skip
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
