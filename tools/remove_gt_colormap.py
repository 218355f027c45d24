"""Remove the colormap of palette ground-truth PNGs (as the original tool).

python -m tools.remove_gt_colormap --original_gt_folder=VOC2012/SegmentationClass \
  --output_dir=VOC2012/SegmentationClassRaw
"""

from __future__ import annotations

from absl import flags

from deeplab_ext.data import build_data

from . import common_flags

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "original_gt_folder", "./VOCdevkit/VOC2012/SegmentationClass", "Original ground truth."
)
flags.DEFINE_string("segmentation_format", "png", "Segmentation file extension.")
flags.DEFINE_string(
    "output_dir", "./VOCdevkit/VOC2012/SegmentationClassRaw", "Folder for the index PNGs."
)


def main() -> int:
    n = build_data.remove_gt_colormap(
        FLAGS.original_gt_folder, FLAGS.output_dir, FLAGS.segmentation_format
    )
    print(f"wrote {n} index PNGs to {FLAGS.output_dir}")
    return 0


def cli() -> None:
    """The console script (pyproject.toml's [project.scripts])."""
    common_flags.run(main)


if __name__ == "__main__":
    cli()
