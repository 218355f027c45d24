"""Convert Cityscapes (fine annotations) to TFRecords, as the original's
build_cityscapes_data.py does, with the scene network's maps when asked.

python -m tools.build_cityscapes_data --cityscapes_root=./cityscapes --output_dir=tfrecord
    [--instances] [--disparity]

Reads `leftImg8bit/<split>/<city>/*_leftImg8bit.png` and the trainId labels
`gtFine/.../*_gtFine_labelTrainIds.png` (made by cityscapesScripts' createTrainIdLabelImgs),
writes `train_fine-*` / `val_fine-*` shards (10 per split). `--instances` adds
`*_gtFine_instanceIds.png`, `--disparity` adds `disparity/.../*_disparity.png`
(Cityscapes' encoding d = (p - 1) / 256, 0 = invalid), for the `instance` and `depth` tasks.
"""

from __future__ import annotations

from absl import flags

from deeplab_ext.data import build_data

from . import common_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("cityscapes_root", "./cityscapes",
                    "Folder holding leftImg8bit/, gtFine/ (and disparity/).")
flags.DEFINE_string("output_dir", "./tfrecord", "Where to write the TFRecord shards.")
flags.DEFINE_list("splits", ["train", "val"], "Cityscapes splits to convert.")
flags.DEFINE_integer("num_shards", 10, "Shards per split (the original: 10).")
flags.DEFINE_bool("instances", False, "Carry gtFine_instanceIds (the instance task).")
flags.DEFINE_bool("disparity", False, "Carry disparity/*_disparity.png (the depth task).")
flags.DEFINE_bool(
    "skip_bad_examples", False, "Skip unreadable/inconsistent examples and report them."
)


def main() -> int:
    maps = [m for m, on in (("instance", FLAGS.instances), ("disparity", FLAGS.disparity)) if on]
    reports = build_data.build_cityscapes_dataset(
        FLAGS.cityscapes_root, FLAGS.output_dir, splits=FLAGS.splits,
        num_shards=FLAGS.num_shards, maps=maps, skip_bad_examples=FLAGS.skip_bad_examples)
    for report in reports.values():
        print(report.summary())
    return 0


def cli() -> None:
    """The console script (pyproject.toml's [project.scripts])."""
    common_flags.run(main)


if __name__ == "__main__":
    cli()
