"""Train a (multi-task) DeepLab: `python -m tools.train --model_variant=... --dataset_dir=...`.

Flags follow the original deeplab train.py where the concept is the same. Re-running
the same command resumes from the last checkpoint in --train_logdir.
"""

from __future__ import annotations

from absl import app, flags

from tools import common_flags

FLAGS = flags.FLAGS
common_flags.define_dataset_flags()
flags.DEFINE_string("train_logdir", None, "Where checkpoints and TensorBoard logs are written.")
flags.DEFINE_string("train_split", "train", "Split to train on.")
flags.DEFINE_string("model_variant", "deeplabv3plus_mobilenetv2_mt", "Zoo variant.")
flags.DEFINE_list("train_crop_size", ["513", "513"], "Crop size h,w.")
flags.DEFINE_integer("train_batch_size", 8, "Global batch size.")
flags.DEFINE_float("base_learning_rate", 1e-4, "Base learning rate.")
flags.DEFINE_enum("learning_policy", "poly", ["poly", "step"], "Learning rate policy.")
flags.DEFINE_float("learning_power", 0.9, "Poly power.")
flags.DEFINE_integer("learning_rate_decay_step", 2000, "Step policy: decay every N steps.")
flags.DEFINE_float("learning_rate_decay_factor", 0.1, "Step policy: decay factor.")
flags.DEFINE_integer("slow_start_step", 0, "Steps at --slow_start_learning_rate first.")
flags.DEFINE_float("slow_start_learning_rate", 1e-4, "Learning rate during slow start.")
flags.DEFINE_integer("training_number_of_steps", 30000, "Total training steps.")
flags.DEFINE_enum("optimizer", "momentum", ["momentum", "adam"], "Optimizer.")
flags.DEFINE_float("momentum", 0.9, "Momentum.")
flags.DEFINE_float("weight_decay", None, "Weight decay (default: the backbone's).")
flags.DEFINE_bool("fine_tune_batch_norm", True, "Train BatchNorm (needs batch >= 12).")
flags.DEFINE_string("tf_initial_checkpoint", None, "Local checkpoint to initialise from.")
flags.DEFINE_bool("initialize_last_layer", True, "Also load the logits from the checkpoint.")
flags.DEFINE_multi_integer("atrous_rates", None, "ASPP rates at OS16 (repeat the flag).")
flags.DEFINE_integer("output_stride", None, "8, 16 or 32 (default: the variant's).")
flags.DEFINE_integer("decoder_output_stride", None, "Decoder stride (4), default the variant's.")
flags.DEFINE_integer("tag_head_hidden", None, "*_mt: hidden units of the tag head (0 = linear).")
flags.DEFINE_enum("tag_head_pooling", None, ["avg", "max", "lse"],
                  "*_mt: pool features then classify (avg), or classify every location "
                  "then pool (max / lse); default: the variant's.")
flags.DEFINE_float("min_scale_factor", 0.5, "Augmentation: min scale.")
flags.DEFINE_float("max_scale_factor", 2.0, "Augmentation: max scale.")
flags.DEFINE_float("scale_factor_step_size", 0.25, "Augmentation: scale step.")
flags.DEFINE_integer("min_resize_value", None, "Resize shorter side to at least this.")
flags.DEFINE_integer("max_resize_value", None, "Resize longer side to at most this.")
flags.DEFINE_float("top_k_percent_pixels", 1.0, "Hard-pixel mining: keep this fraction.")
flags.DEFINE_integer("hard_example_mining_step", 0, "Steps to ramp hard-pixel mining.")
flags.DEFINE_enum("loss_weighting", "uncertainty", ["fixed", "uncertainty", "dwa"],
                  "How task losses are combined.")
flags.DEFINE_float("initial_sigma", 1.0, "Uncertainty weighting: initial sigma.")
flags.DEFINE_float("tag_loss_weight", 1.0, "Weight of the tag loss (fixed weighting), or its prior "
                   "multiplier under uncertainty weighting.")
flags.DEFINE_enum("mixed_precision", "float32", ["float32", "mixed_float16", "mixed_bfloat16"],
                  "Precision policy (mixed_float16 on GPU).")
flags.DEFINE_enum("distribution_strategy", "default",
                  ["default", "one_device", "mirrored", "multi_worker_mirrored"],
                  "tf.distribute strategy (multi_worker_mirrored reads TF_CONFIG).")
flags.DEFINE_integer("num_gpus", None, "GPUs for mirrored (default: all).")
flags.DEFINE_bool("sync_batch_norm", False, "Synchronised BatchNorm across replicas.")
flags.DEFINE_integer("save_interval_steps", 500, "Checkpoint every N steps.")
flags.DEFINE_integer("save_summaries_steps", 50, "TensorBoard scalars every N steps.")
flags.DEFINE_bool("save_summaries_images", True, "Prediction overlays in TensorBoard.")
flags.DEFINE_integer("log_every_n_steps", 10, "Progress line every N steps.")
flags.DEFINE_integer("seed", None, "Random seed.")
flags.mark_flags_as_required(["train_logdir", "dataset_dir"])


def options_from_flags():
    from deeplab_ext.trainer import TrainOptions

    return TrainOptions(
        train_logdir=FLAGS.train_logdir, dataset_dir=FLAGS.dataset_dir,
        model_variant=FLAGS.model_variant, dataset=FLAGS.dataset, train_split=FLAGS.train_split,
        train_crop_size=common_flags.int_pair(FLAGS.train_crop_size, "train_crop_size"),
        train_batch_size=FLAGS.train_batch_size, base_learning_rate=FLAGS.base_learning_rate,
        learning_policy=FLAGS.learning_policy, learning_power=FLAGS.learning_power,
        learning_rate_decay_step=FLAGS.learning_rate_decay_step,
        learning_rate_decay_factor=FLAGS.learning_rate_decay_factor,
        slow_start_step=FLAGS.slow_start_step,
        slow_start_learning_rate=FLAGS.slow_start_learning_rate,
        training_number_of_steps=FLAGS.training_number_of_steps, optimizer=FLAGS.optimizer,
        momentum=FLAGS.momentum, weight_decay=FLAGS.weight_decay,
        fine_tune_batch_norm=FLAGS.fine_tune_batch_norm,
        tf_initial_checkpoint=FLAGS.tf_initial_checkpoint,
        initialize_last_layer=FLAGS.initialize_last_layer,
        output_stride=FLAGS.output_stride,
        atrous_rates=tuple(FLAGS.atrous_rates) if FLAGS.atrous_rates else None,
        tag_head_hidden=FLAGS.tag_head_hidden, tag_head_pooling=FLAGS.tag_head_pooling,
        decoder_output_stride=FLAGS.decoder_output_stride,
        min_scale_factor=FLAGS.min_scale_factor, max_scale_factor=FLAGS.max_scale_factor,
        scale_factor_step_size=FLAGS.scale_factor_step_size,
        min_resize_value=FLAGS.min_resize_value, max_resize_value=FLAGS.max_resize_value,
        top_k_percent_pixels=FLAGS.top_k_percent_pixels,
        hard_example_mining_step=FLAGS.hard_example_mining_step,
        loss_weighting=FLAGS.loss_weighting, initial_sigma=FLAGS.initial_sigma,
        tag_loss_weight=FLAGS.tag_loss_weight, mixed_precision=FLAGS.mixed_precision,
        distribution_strategy=FLAGS.distribution_strategy, num_gpus=FLAGS.num_gpus,
        sync_batch_norm=FLAGS.sync_batch_norm, save_interval_steps=FLAGS.save_interval_steps,
        save_summaries_steps=FLAGS.save_summaries_steps,
        save_summaries_images=FLAGS.save_summaries_images,
        log_every_n_steps=FLAGS.log_every_n_steps, seed=FLAGS.seed,
    )


def main(argv):
    del argv
    from deeplab_ext.trainer import train

    return common_flags.run_reporting_errors(
        lambda: train(options_from_flags(), printer=lambda s: print(s, flush=True)))


if __name__ == "__main__":
    app.run(main)
