"""The main job (`make demo`): train, evaluate with evidence, export, serve, report.

`python -m tools.demo` uses the built-in dataset; `--data=../shared/data/coco128-voc`
(any VOC- or CamVid-layout folder) converts and uses that instead. The refit defaults
are the demo's own (`DemoOptions.evidence`: --evidence_learning_rate=0.1
--evidence_clip_norm=0.5), not the library's.
"""

from __future__ import annotations

from absl import app, flags

from tools import common_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "demo_out", "Where data, checkpoints, export and report go.")
flags.DEFINE_string("data", None, "A VOC- or CamVid-layout folder (default: built-in dataset).")
flags.DEFINE_string("model_variant", "deeplabv3plus_mobilenetv2_tiny_mt", "Zoo variant (*_mt).")
flags.DEFINE_integer("train_steps", 10000, "Training steps.")
flags.DEFINE_integer("train_batch_size", 8, "Batch size.")
flags.DEFINE_integer("crop_size", 65, "Training crop (built-in dataset: 65).")
flags.DEFINE_float("base_learning_rate", 5e-3, "Adam learning rate (poly decay).")
flags.DEFINE_integer("num_train", 2000, "Built-in dataset: training images.")
flags.DEFINE_integer("num_val", 100, "Built-in dataset: validation images.")
flags.DEFINE_integer("max_eval_images", None, "Evaluate only the first N val images.")
flags.DEFINE_list("evidence_modes", ["none", "prune", "bp_l2", "bp_es", "bp_l2_prune",
                                     "bp_es_prune"], "Rows of the evidence table.")
common_flags.define_evidence_flags()


def main(argv):
    del argv
    from deeplab_ext.demo import DemoOptions, run_demo

    # The demo's own refit defaults (tuned on the generated test split); flags given on
    # the command line still win.
    tuned = DemoOptions().evidence
    FLAGS.set_default("evidence_learning_rate", tuned.learning_rate)
    FLAGS.set_default("evidence_clip_norm", tuned.clip_norm)
    options = DemoOptions(
        workdir=FLAGS.workdir, data=FLAGS.data, model_variant=FLAGS.model_variant,
        train_steps=FLAGS.train_steps, batch_size=FLAGS.train_batch_size,
        crop_size=FLAGS.crop_size, base_learning_rate=FLAGS.base_learning_rate,
        num_train=FLAGS.num_train, num_val=FLAGS.num_val,
        max_eval_images=FLAGS.max_eval_images, evidence_modes=tuple(FLAGS.evidence_modes),
        evidence=common_flags.evidence_options(),
    )
    return common_flags.run_reporting_errors(
        run_demo, options, printer=lambda s: print(s, flush=True))


if __name__ == "__main__":
    app.run(main)
