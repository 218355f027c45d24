"""Achieved multiply-adds per second of the train step and inference, as a fraction of
this machine's measured peak (issue 19).

Peak: a large float32 matmul and a large 3x3 convolution timed in the same run (the
better of the two is the peak). Each variant (MobileNetV2 and Xception-65 DeepLabv3+ by
default): multiply-adds of one forward pass counted from the traced graph
(``tf_mtl.flops``), its compiled inference and the project's train step
(``MultiTaskModel``) timed interleaved with the peak kernels; a train step is counted
as 3x the forward multiply-adds (the backward pass computes two products per forward
one: gradients to inputs and to weights). ``--profile_dir`` also writes a TF profiler
trace of a few train steps of the first variant (TensorBoard's Profile tab: the op
table, where the time goes)::

    .venv/bin/python -m bench.bench_flops --size 257 --batch 2 --rounds 5 \\
        --profile_dir /tmp/flops_profile
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench.bench_weighting import (  # noqa: E402
    build_train_model,
    interleaved_times,
    median_ratio,
    step_fn,
    synthetic_batch,
    trainer_network,
)
from tf_mtl.flops import count_macs  # noqa: E402

VARIANTS = ("deeplabv3plus_mobilenetv2_mt", "deeplabv3plus_xception65_mt")


def peak_kernels(n: int = 2048, conv: tuple[int, int, int] = (8, 64, 256)
                 ) -> dict[str, tuple[object, int]]:
    """name -> (fn, multiply-adds) of the peak measurements."""
    a = tf.random.normal((n, n))
    b_, hw, c = conv
    x = tf.random.normal((b_, hw, hw, c))
    w = tf.random.normal((3, 3, c, c))
    matmul = tf.function(lambda: tf.matmul(a, a))
    conv2d = tf.function(lambda: tf.nn.conv2d(x, w, 1, "SAME"))
    return {"peak_matmul": (lambda: matmul().numpy(), n ** 3),
            "peak_conv3x3": (lambda: conv2d().numpy(), b_ * hw * hw * 9 * c * c)}


def op_table(profile_dir: str, top: int = 15) -> list[tuple[str, float, float]]:
    """(op type, ms, % of op time) from the profiler trace's TF compute threads, largest
    first (executor "Process" events contain the ops: left out, not counted twice)."""
    import collections
    import glob

    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    path = sorted(glob.glob(f"{profile_dir}/plugins/profile/*/*.xplane.pb"))[-1]
    space = xplane_pb2.XSpace()
    space.ParseFromString(pathlib.Path(path).read_bytes())
    total: collections.Counter = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for ev in line.events:
                op = plane.event_metadata[ev.metadata_id].name.split(":")[-1]
                if op != "Process":
                    total[op] += ev.duration_ps
    all_ps = sum(total.values())
    return [(op, round(ps / 1e9, 1), round(100 * ps / all_ps, 1))
            for op, ps in total.most_common(top)]


@contextlib.contextmanager
def keras_batch_norm():
    """Networks built inside use Keras' own (unfused) BatchNormalization: the "before" of
    the fused-BN fix, measured beside it."""
    from deeplab_ext.models.layers import NormConfig

    fused = NormConfig.batch_norm
    NormConfig.batch_norm = lambda norm, name: keras.layers.BatchNormalization(
        momentum=norm.momentum, epsilon=norm.epsilon, synchronized=norm.sync, name=name)
    try:
        yield
    finally:
        NormConfig.batch_norm = fused


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--size", type=int, default=257)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--profile_dir", default=None)
    p.add_argument("--bn_compare", action="store_true",
                   help="also each variant's train step with Keras' unfused BatchNorm")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    kernels = peak_kernels()
    fns = {k: f for k, (f, _) in kernels.items()}
    macs = {k: m for k, (_, m) in kernels.items()}
    models = {}
    for v in args.variants.split(","):
        net, cfg = trainer_network(v)
        x, y = synthetic_batch(args.batch, args.size, cfg.num_classes, cfg.num_tags)
        forward = count_macs(net, (1, args.size, args.size, 3)) * args.batch
        model = build_train_model(net, cfg, "uncertainty")
        infer = tf.function(lambda v_, n=net: n(v_, training=False)["semantic"])
        fns[f"{v}:train"] = step_fn(model, x, y)
        fns[f"{v}:infer"] = lambda f=infer, x_=x: f(x_).numpy()
        macs[f"{v}:train"], macs[f"{v}:infer"] = 3 * forward, forward
        models[v] = (fns[f"{v}:train"], forward)
        if args.bn_compare:
            with keras_batch_norm():
                net_k, cfg_k = trainer_network(v)
            fns[f"{v}:train_keras_bn"] = step_fn(build_train_model(net_k, cfg_k, "uncertainty"),
                                                 x, y)
            macs[f"{v}:train_keras_bn"] = 3 * forward
    times = interleaved_times(fns, args.rounds, warmup=1)
    rate = {k: macs[k] / statistics.median(t) for k, t in times.items()}
    peak = max(rate["peak_matmul"], rate["peak_conv3x3"])
    res = {"size": args.size, "batch": args.batch, "rounds": args.rounds,
           "peak_gmacs_per_s": {k: round(rate[k] / 1e9, 1) for k in kernels},
           "variants": {}}
    for v, (_, forward) in models.items():
        res["variants"][v] = {
            "gmacs_forward_batch": round(forward / 1e9, 2),
            **{f"{k}_s": round(statistics.median(times[f"{v}:{k}"]), 4) for k in
               ("train", "infer")},
            **{f"{k}_gmacs_per_s": round(rate[f"{v}:{k}"] / 1e9, 1) for k in ("train", "infer")},
            **{f"{k}_fraction_of_peak": round(rate[f"{v}:{k}"] / peak, 3)
               for k in ("train", "infer")}}
        if args.bn_compare:
            res["variants"][v]["train_keras_bn_s"] = round(
                statistics.median(times[f"{v}:train_keras_bn"]), 4)
            res["variants"][v]["train_speedup_fused_bn"] = round(
                median_ratio(times[f"{v}:train_keras_bn"], times[f"{v}:train"]), 3)
    if args.profile_dir:
        train, _ = next(iter(models.values()))
        tf.profiler.experimental.start(args.profile_dir)
        for _ in range(3):
            train()
        tf.profiler.experimental.stop()
        res["profile_dir"] = args.profile_dir
        res["op_table_3_train_steps"] = op_table(args.profile_dir)
    res.update(cpu_cores=os.cpu_count(), bench_wall_s=round(time.perf_counter() - t0, 1),
               load_avg_1min_before_after=[round(load0, 2), round(os.getloadavg()[0], 2)])
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
