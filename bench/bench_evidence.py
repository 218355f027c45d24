"""Cost of prediction-time evidence: one refit step vs one forward/backward pass.

Usage (from the repo root):
  .venv/bin/python -m bench.bench_evidence                       # toy network
  .venv/bin/python -m bench.bench_evidence --variant mobilenet_v2_mt --size 257
  .venv/bin/python -m bench.bench_evidence --mode latent --optimizer adam

With ``--variant`` the network comes from ``deeplab_ext.models.build_network(variant)``
and the refitted variables from ``deeplab_ext.models.group_variables`` (the family's
default refit set: backbone + aspp + tag_head for DeepLab); without it a tiny
contract-following toy network is used.

Reported per image (batch 1 unless --batch):
  fwd_bwd_ms   one forward + backward of the tag loss w.r.t. the refitted variables
               (a compiled tf.function, the floor for one refit step)
  predict_ms   the refitter with steps=0 (plain prediction through the same graph)
  step_ms      (time(steps=K) - time(steps=0)) / K
  ratio        step_ms / fwd_bwd_ms (overhead of the functional loop; ~1 is ideal)
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tf_mtl.evidence import (  # noqa: E402
    EvidenceConfig,
    EvidenceRefitter,
)
from tf_mtl.testing import build_toy_network  # noqa: E402


def build(variant: str | None, num_classes: int, num_tags: int, width: int):
    """Return (network, variables-to-refit or None, description)."""
    if variant:
        from deeplab_ext.models import build_network, group_variables

        net = build_network(variant)
        return net, group_variables(net), f"{net.model_family} {variant}"
    return build_toy_network(num_classes, num_tags, width=width), None, f"toy width={width}"


def best_of(fn, repeats: int) -> float:
    """Minimum wall time of ``fn`` over ``repeats`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default=None, help="deeplab_ext model variant (default: toy)")
    p.add_argument("--size", type=int, default=65, help="square input size")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--mode", default="weights", choices=["weights", "latent"])
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    p.add_argument("--alpha", type=float, default=0.0)
    p.add_argument("--jit_compile", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--width", type=int, default=16, help="toy network width")
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error("--steps must be >= 1 to time a refit step")

    net, chosen, desc = build(args.variant, 21, 20, args.width)
    cfg = EvidenceConfig(steps=args.steps, learning_rate=1e-3, optimizer=args.optimizer,
                         alpha=args.alpha, mode=args.mode, jit_compile=args.jit_compile,
                         safeguard=False)
    refitter = EvidenceRefitter(net, cfg, variables=chosen)
    num_tags = refitter.num_tags
    rng = np.random.RandomState(0)
    images = tf.constant(rng.uniform(0, 255, (args.batch, args.size, args.size, 3)), tf.float32)
    tags = tf.constant((rng.uniform(size=(args.batch, num_tags)) < 0.2), tf.float32)

    if args.mode == "weights":
        wrt = refitter.refit_variables
    else:
        wrt = [v for v in net.trainable_variables]  # same graph depth; a fair floor

    @tf.function(jit_compile=args.jit_compile)
    def fwd_bwd(x: tf.Tensor, y: tf.Tensor) -> list[tf.Tensor]:
        with tf.GradientTape() as tape:
            logits = refitter.tags_model(x, training=False)
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(y, logits))
        return tape.gradient(loss, wrt)

    fb = best_of(lambda: [g.numpy() for g in fwd_bwd(images, tags) if g is not None], args.repeats)
    k = tf.constant(args.steps)
    zero = tf.constant(0)
    # Interleaved, so both see the same load (timed one after the other, a busy machine
    # made the difference negative).
    t0s, tks = [], []
    for _ in range(args.repeats):
        t0s.append(best_of(lambda: refitter.refit_fn(images, tags, zero)["probabilities"]
                           .numpy(), 1))
        tks.append(best_of(lambda: refitter.refit_fn(images, tags, k)["probabilities"]
                           .numpy(), 1))
    t0, tk = min(t0s), min(tks)
    step = (tk - t0) / args.steps
    res = {
        "network": desc,
        "mode": args.mode,
        "optimizer": args.optimizer,
        "jit_compile": args.jit_compile,
        "batch": args.batch,
        "size": args.size,
        "refit_variables": len(refitter.refit_variables) if args.mode == "weights" else "latent",
        "fwd_bwd_ms": round(1e3 * fb, 3),
        "predict_ms": round(1e3 * t0, 3),
        "refit_total_ms": round(1e3 * tk, 3),
        "step_ms": round(1e3 * step, 3),
        "ratio_step_to_fwd_bwd": round(step / fb, 3),
    }
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
