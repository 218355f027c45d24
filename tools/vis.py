"""Visualise a checkpoint's predictions on a split (the original's vis.py).

`python -m tools.vis --checkpoint_dir=RUN --dataset_dir=DATA --vis_logdir=OUT
 [--vis_split=val] [--colormap_type=pascal] [--also_save_raw_predictions]`
Writes OUT/segmentation_results/%06d_image.png and %06d_prediction.png, and with
--also_save_raw_predictions OUT/raw_segmentation_results/<image>.png (class ids;
Cityscapes: labelIds). The dataset comes from the checkpoint's model_config.json.
"""

from __future__ import annotations

import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint_dir", None, "A --train_logdir of tools.train.")
flags.DEFINE_string("checkpoint_path", None, "A specific checkpoint (default: the latest).")
flags.DEFINE_string("dataset_dir", None, "Folder with the TFRecord shards.")
flags.DEFINE_string("vis_logdir", None, "Where the images are written.")
flags.DEFINE_string("vis_split", "val", "Split to visualise.")
flags.DEFINE_enum("colormap_type", None, ["pascal", "cityscapes", "ade20k", "camvid"],
                  "Colormap of the prediction PNGs (default: the dataset's).")
flags.DEFINE_bool("also_save_raw_predictions", False, "Also write raw class-id PNGs.")
flags.DEFINE_integer("max_number_of_images", None, "Visualise only the first N images.")
flags.DEFINE_list("eval_scales", ["1.0"], "Scales for multi-scale inference.")
flags.DEFINE_bool("add_flipped_images", False, "Also average left-right flipped predictions.")
flags.mark_flags_as_required(["checkpoint_dir", "dataset_dir", "vis_logdir"])


def main(argv):
    del argv
    from deeplab_ext.vis import VisOptions, visualize

    try:
        options = VisOptions(
            checkpoint_dir=FLAGS.checkpoint_dir, dataset_dir=FLAGS.dataset_dir,
            vis_logdir=FLAGS.vis_logdir, vis_split=FLAGS.vis_split,
            colormap_type=FLAGS.colormap_type,
            also_save_raw_predictions=FLAGS.also_save_raw_predictions,
            max_number_of_images=FLAGS.max_number_of_images,
            eval_scales=tuple(FLAGS.eval_scales), add_flipped_images=FLAGS.add_flipped_images,
            checkpoint_path=FLAGS.checkpoint_path,
        )
        visualize(options, printer=lambda s: print(s, flush=True))
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    app.run(main)
