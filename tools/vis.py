"""Visualise a checkpoint's predictions on a split (the original's vis.py).

`python -m tools.vis --checkpoint_dir=RUN --dataset_dir=DATA --vis_logdir=OUT
 [--vis_split=val] [--colormap_type=pascal] [--also_save_raw_predictions]`
Writes OUT/segmentation_results/%06d_image.png and %06d_prediction.png, and with
--also_save_raw_predictions OUT/raw_segmentation_results/<image>.png (class ids;
Cityscapes: labelIds). The dataset comes from the checkpoint's model_config.json.
"""

from __future__ import annotations

from deeplab_ext.run.options import VisOptions

from . import common_flags

common_flags.define_flags(VisOptions)


def main() -> None:
    from deeplab_ext.run.vis import visualize

    visualize(common_flags.options_from_flags(VisOptions), printer=common_flags.printer)


def cli() -> None:
    """The console script (pyproject.toml's [project.scripts])."""
    common_flags.run(main)


if __name__ == "__main__":
    cli()
