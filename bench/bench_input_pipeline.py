"""Input-pipeline throughput: 513x513 augmented training crops per second.

python -m bench.bench_input_pipeline [--dataset_dir=DIR_WITH_TFRECORDS]
Without --dataset_dir the shipped coco128-voc photos (deeplab_ext/assets) is converted into a temp dir.
`measure_pipeline_rate` is the function a training benchmark can call to compare the
input rate with the train-step rate.

With --train_rounds N (default 3) the bench also measures how fast a compiled
MultiTaskModel train step (--train_variant, default deeplabv3plus_mobilenetv2_mt with
uncertainty weighting, crop --crop, batch --train_batch_size, synthetic in-memory
batch) consumes images, interleaved with the pipeline measurement round by round
(pipeline, train, train, pipeline, ...; each pipeline measurement is a fresh iterator
with its own warm-up, so no prefetched batches carry over), and prints
pipeline_rate / train_consumption_rate (> 1: the input pipeline keeps up).

    .venv/bin/python -m bench.bench_input_pipeline --num_batches 20 --train_rounds 3
    .venv/bin/python -m bench.bench_input_pipeline --train_rounds 0   # pipeline only
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from deeplab_ext.assets import COCO128_VOC  # noqa: E402
from deeplab_ext.data import build_data  # noqa: E402
from deeplab_ext.data.input_pipeline import make_dataset  # noqa: E402

SHARED = COCO128_VOC


def measure_pipeline_rate(
    dataset_dir: str | os.PathLike,
    dataset: str = "coco128_voc",
    split: str = "train",
    *,
    crop_size: tuple[int, int] = (513, 513),
    batch_size: int = 8,
    num_batches: int = 30,
    warmup_batches: int = 3,
    seed: int | None = None,
    **make_dataset_kwargs,
) -> float:
    """Images per second delivered by `make_dataset` (training mode), after a warm-up."""
    ds = make_dataset(
        dataset, dataset_dir, split, crop_size=crop_size, batch_size=batch_size,
        is_training=True, seed=seed, **make_dataset_kwargs,
    )  # fmt: skip
    it = iter(ds)
    for _ in range(warmup_batches):
        next(it)
    start = time.perf_counter()
    n = 0
    for _ in range(num_batches):
        images, _ = next(it)
        n += int(images.shape[0])
    return n / (time.perf_counter() - start)


def build_sample_records(output_dir: str | os.PathLike) -> str:
    """Convert the shipped coco128-voc photos to TFRecords in `output_dir`."""
    build_data.build_voc_dataset(
        SHARED / "JPEGImages", SHARED / "SegmentationClass", SHARED / "ImageSets/Segmentation",
        output_dir, dataset="coco128_voc", splits=["train"],
    )  # fmt: skip
    return str(output_dir)


def make_train_consumer(variant: str, crop: int, batch_size: int, dataset: str):
    """A no-arg fn running one compiled train step on a synthetic batch (images/step)."""
    from bench.bench_weighting import (
        build_train_model,
        step_fn,
        synthetic_batch,
        trainer_network,
    )

    network, cfg = trainer_network(variant, dataset)
    model = build_train_model(network, cfg, "uncertainty", dataset)
    x, y = synthetic_batch(batch_size, crop, cfg.num_classes, cfg.num_tags)
    return step_fn(model, x, y)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset_dir", default=None)
    parser.add_argument("--dataset", default="coco128_voc")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--num_batches", type=int, default=30)
    parser.add_argument("--crop", type=int, default=513)
    parser.add_argument("--train_rounds", type=int, default=3,
                        help="interleaved rounds of pipeline + train step; 0 = pipeline only")
    parser.add_argument("--train_variant", default="deeplabv3plus_mobilenetv2_mt")
    parser.add_argument("--train_batch_size", type=int, default=8)
    args = parser.parse_args(argv)
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        ddir = args.dataset_dir or build_sample_records(tmp)

        def pipeline_once() -> float:
            return measure_pipeline_rate(
                ddir, args.dataset, crop_size=(args.crop, args.crop),
                batch_size=args.batch_size, num_batches=args.num_batches,
            )  # fmt: skip

        if args.train_rounds <= 0:
            cpu0 = resource.getrusage(resource.RUSAGE_SELF)
            rate = pipeline_once()
            cpu1 = resource.getrusage(resource.RUSAGE_SELF)
            rates, train_times = [rate], []
        else:
            train = make_train_consumer(args.train_variant, args.crop, args.train_batch_size,
                                        args.dataset)
            train()  # trace + first step (untimed)
            rates, train_times = [], []
            cpu0 = cpu1 = None
            for r in range(args.train_rounds):
                order = ("pipeline", "train") if r % 2 == 0 else ("train", "pipeline")
                for what in order:
                    if what == "train":
                        t0 = time.perf_counter()
                        train()
                        train_times.append(time.perf_counter() - t0)
                    else:
                        c0 = resource.getrusage(resource.RUSAGE_SELF)
                        rates.append(pipeline_once())
                        c1 = resource.getrusage(resource.RUSAGE_SELF)
                        if cpu0 is None:  # CPU-ms per image from the first pipeline run
                            cpu0, cpu1 = c0, c1
            rate = statistics.median(rates)
    images = args.batch_size * (args.num_batches + 3)
    cpu_ms = 1000 * (cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime) / images
    print(
        f"input pipeline: {rate:.1f} images/s of {args.crop}x{args.crop} augmented crops "
        f"(batch {args.batch_size}, {os.cpu_count()} CPU cores, load avg "
        f"{os.getloadavg()[0]:.1f}; target >= 50); {cpu_ms:.1f} CPU-ms per image, i.e. "
        f"~{1000 * (os.cpu_count() or 1) / cpu_ms:.0f} images/s on idle cores"
    )
    if train_times:
        step = statistics.median(train_times)
        consume = args.train_batch_size / step
        print(
            f"pipeline rates per round: {[round(x, 1) for x in rates]} images/s; "
            f"train steps: {[round(t, 2) for t in train_times]} s"
        )
        print(
            f"train step ({args.train_variant}, {args.crop}x{args.crop}, batch "
            f"{args.train_batch_size}): median {step:.2f} s = {consume:.2f} images/s consumed; "
            f"pipeline_rate / train_consumption_rate = {rate / consume:.1f} "
            f"(load avg {load0:.1f} -> {os.getloadavg()[0]:.1f})"
        )


if __name__ == "__main__":
    main()
