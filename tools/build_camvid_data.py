"""Convert CamVid (SegNet layout: train.txt/val.txt of "image label" pairs) to TFRecords.

python -m tools.build_camvid_data --camvid_dir=../shared/data/camvid --output_dir=tfrecord
PNG frames are stored byte-identical (image/format png); labels are single-channel indices
0..10 with 11 (Unlabelled) as the ignore label.
"""

from __future__ import annotations

from absl import app, flags

from deeplab_ext.data import build_data

from . import common_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("camvid_dir", "./CamVid", "Folder holding train.txt, val.txt (test.txt).")
flags.DEFINE_string("output_dir", "./tfrecord", "Where to write the TFRecord shards.")
flags.DEFINE_integer("num_shards", 4, "Shards per split.")
flags.DEFINE_string("dataset", "camvid", "Dataset descriptor used to validate labels.")
# multi_string, not list: absl keeps only the last of repeated DEFINE_list flags, which
# silently dropped every split but the last (--list_files=a=x --list_files=b=y).
flags.DEFINE_multi_string(
    "list_files", None,
    "Optional split=path pairs instead of <camvid_dir>/<split>.txt; repeat the flag or "
    "separate pairs with commas.",
)
flags.DEFINE_bool(
    "skip_bad_examples", False, "Skip unreadable/inconsistent examples and report them."
)


def main() -> int:
    list_files = None
    if FLAGS.list_files:
        list_files = {}
        for item in (i for value in FLAGS.list_files for i in value.split(",") if i):
            if "=" not in item:
                raise app.UsageError(f"--list_files entries must be split=path, got {item!r}")
            split, path = item.split("=", 1)
            list_files[split] = path
    reports = build_data.build_camvid_dataset(
        FLAGS.camvid_dir,
        FLAGS.output_dir,
        num_shards=FLAGS.num_shards,
        dataset=FLAGS.dataset,
        skip_bad_examples=FLAGS.skip_bad_examples,
        list_files=list_files,
    )
    for report in reports.values():
        print(report.summary())
    return 0


def cli() -> None:
    """The console script (pyproject.toml's [project.scripts])."""
    common_flags.run(main)


if __name__ == "__main__":
    cli()
