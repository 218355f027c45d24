"""Convert a VOC2012-layout folder to the original DeepLab TFRecords (4 shards per split).

python -m tools.build_voc2012_data --image_folder=VOC2012/JPEGImages \
  --semantic_segmentation_folder=VOC2012/SegmentationClass \
  --list_folder=VOC2012/ImageSets/Segmentation --output_dir=tfrecord
Palette PNG labels are read as their class indices (no remove_gt_colormap step needed).
VOC's SegmentationObject/ beside the class labels, when present, is stored too (instance
ids for the scene network's instance task; --instance_folder=none leaves it out).
"""

from __future__ import annotations

from absl import flags

from deeplab_ext.data import build_data

from . import common_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("image_folder", "./VOCdevkit/VOC2012/JPEGImages", "Folder of images.")
flags.DEFINE_string(
    "semantic_segmentation_folder",
    "./VOCdevkit/VOC2012/SegmentationClassRaw",
    "Folder of semantic segmentation annotations (index or palette PNGs).",
)
flags.DEFINE_string(
    "list_folder", "./VOCdevkit/VOC2012/ImageSets/Segmentation", "Folder of <split>.txt lists."
)
flags.DEFINE_string("image_format", "jpg", "Image file extension.")
flags.DEFINE_string("label_format", "png", "Label file extension.")
flags.DEFINE_string("output_dir", "./tfrecord", "Where to write the TFRecord shards.")
flags.DEFINE_integer("num_shards", 4, "Shards per split.")
flags.DEFINE_string("dataset", "pascal_voc_seg", "Dataset descriptor used to validate labels.")
flags.DEFINE_list("splits", None, "Only these splits (default: every *.txt in --list_folder).")
flags.DEFINE_string("instance_folder", "auto",
                    "VOC's SegmentationObject folder (instance ids, Cityscapes-encoded as class "
                    "* 1000 + object); auto: the one beside the class labels if present; none: "
                    "leave instances out.")
flags.DEFINE_bool(
    "skip_bad_examples", False, "Skip unreadable/inconsistent examples and report them."
)


def main() -> int:
    reports = build_data.build_voc_dataset(
        FLAGS.image_folder,
        FLAGS.semantic_segmentation_folder,
        FLAGS.list_folder,
        FLAGS.output_dir,
        image_format=FLAGS.image_format,
        label_format=FLAGS.label_format,
        num_shards=FLAGS.num_shards,
        dataset=FLAGS.dataset,
        skip_bad_examples=FLAGS.skip_bad_examples,
        splits=FLAGS.splits,
        instance_folder=None if FLAGS.instance_folder == "none" else FLAGS.instance_folder,
    )
    for report in reports.values():
        print(report.summary())
    return 0


def cli() -> None:
    """The console script (pyproject.toml's [project.scripts])."""
    common_flags.run(main)


if __name__ == "__main__":
    cli()
