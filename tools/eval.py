"""Evaluate a checkpoint: mIoU, per-class IoU, tag F1, and the evidence table.

`python -m tools.eval --checkpoint_dir=RUN --dataset_dir=DATA --eval_logdir=OUT
 --evidence_modes=none,prune,bp_l2,bp_es,bp_l2_prune,bp_es_prune`
"""

from __future__ import annotations

import sys

from absl import app, flags

from tools import common_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset_dir", None, "Folder with the TFRecord shards.")
flags.DEFINE_string("checkpoint_dir", None, "A --train_logdir of tools.train.")
flags.DEFINE_string("checkpoint_path", None, "A specific checkpoint (default: the latest).")
flags.DEFINE_string("eval_logdir", None, "Where eval_results.json and comparison.png go.")
flags.DEFINE_string("eval_split", "val", "Split to evaluate.")
flags.DEFINE_list("eval_crop_size", None, "Pad/crop to h,w (default: full images).")
flags.DEFINE_list("eval_scales", ["1.0"], "Scales for multi-scale inference, e.g. 0.5,...,1.75.")
flags.DEFINE_bool("add_flipped_images", False, "Also average left-right flipped predictions.")
flags.DEFINE_list("evidence_modes", ["none"],
                  "Rows: none,prune,bp_l2,bp_es,bp_l2_prune,bp_es_prune,latent,latent_prune.")
flags.DEFINE_integer("max_number_of_examples", None, "Evaluate only the first N images.")
flags.DEFINE_integer("num_vis_examples", 4, "Images in comparison.png.")
flags.DEFINE_integer("bootstrap_samples", 1000,
                     "Resamples of the images for the 95% interval of each row's difference "
                     "to DL-MT and DL-MT-Pr (0 = off).")
common_flags.define_evidence_flags()
flags.mark_flags_as_required(["checkpoint_dir", "dataset_dir"])


def main(argv):
    del argv
    from deeplab_ext.evaluation import EvalOptions, evaluate

    try:
        scales = tuple(float(s) for s in FLAGS.eval_scales)
    except ValueError:
        print(f"error: --eval_scales must be numbers, got {FLAGS.eval_scales}", file=sys.stderr)
        return 1
    options = EvalOptions(
        checkpoint_dir=FLAGS.checkpoint_dir, dataset_dir=FLAGS.dataset_dir,
        eval_logdir=FLAGS.eval_logdir, eval_split=FLAGS.eval_split,
        eval_crop_size=common_flags.int_pair(FLAGS.eval_crop_size, "eval_crop_size"),
        eval_scales=scales, add_flipped_images=FLAGS.add_flipped_images,
        evidence_modes=tuple(FLAGS.evidence_modes), evidence=common_flags.evidence_options(),
        max_examples=FLAGS.max_number_of_examples, num_vis_examples=FLAGS.num_vis_examples,
        checkpoint_path=FLAGS.checkpoint_path, bootstrap_samples=FLAGS.bootstrap_samples,
    )
    return common_flags.run_reporting_errors(
        evaluate, options, printer=lambda s: print(s, flush=True))


if __name__ == "__main__":
    app.run(main)
