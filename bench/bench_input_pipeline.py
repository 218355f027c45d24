"""Input-pipeline throughput: 513x513 augmented training crops per second.

python -m bench.bench_input_pipeline [--dataset_dir=DIR_WITH_TFRECORDS]
Without --dataset_dir the coco128-voc sample (../shared/data) is converted into a temp dir.
`measure_pipeline_rate` is the function a training benchmark can call to compare the
input rate with the train-step rate.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import resource
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from deeplab_ext import build_data  # noqa: E402
from deeplab_ext.input_pipeline import make_dataset  # noqa: E402

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "coco128-voc"


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
    """Convert the shared coco128-voc sample to TFRecords in `output_dir`."""
    build_data.build_voc_dataset(
        SHARED / "JPEGImages", SHARED / "SegmentationClass", SHARED / "ImageSets/Segmentation",
        output_dir, dataset="coco128_voc", splits=["train"],
    )  # fmt: skip
    return str(output_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset_dir", default=None)
    parser.add_argument("--dataset", default="coco128_voc")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--num_batches", type=int, default=30)
    parser.add_argument("--crop", type=int, default=513)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ddir = args.dataset_dir or build_sample_records(tmp)
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        rate = measure_pipeline_rate(
            ddir, args.dataset, crop_size=(args.crop, args.crop), batch_size=args.batch_size,
            num_batches=args.num_batches,
        )  # fmt: skip
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    images = args.batch_size * (args.num_batches + 3)
    cpu_ms = 1000 * (cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime) / images
    print(
        f"input pipeline: {rate:.1f} images/s of {args.crop}x{args.crop} augmented crops "
        f"(batch {args.batch_size}, {os.cpu_count()} CPU cores, load avg "
        f"{os.getloadavg()[0]:.1f}; target >= 50); {cpu_ms:.1f} CPU-ms per image, i.e. "
        f"~{1000 * (os.cpu_count() or 1) / cpu_ms:.0f} images/s on idle cores"
    )


if __name__ == "__main__":
    main()
