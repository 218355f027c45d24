"""Generate the built-in `shapes_evidence` dataset as TFRecords (no download).

python -m tools.build_synthetic_data --output_dir=data/shapes_evidence --num_train=2000
"""

from __future__ import annotations

from absl import app, flags

from deeplab_ext import synthetic

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "./data/shapes_evidence", "Where to write the shards.")
flags.DEFINE_integer("num_train", None, "Training examples (default: the registry's size).")
flags.DEFINE_integer("num_val", None, "Validation examples (default: the registry's size).")
flags.DEFINE_integer("size", 64, "Image side in pixels.")
flags.DEFINE_integer("seed", 0, "Generator seed: the same seed gives the same dataset.")
flags.DEFINE_integer("num_shards", 4, "Shards per split.")
flags.DEFINE_integer("max_objects", 3, "At most this many objects per image (1..4).")


def main(argv: list[str]) -> int:
    del argv
    counts = synthetic.write_tfrecords(
        FLAGS.output_dir,
        FLAGS.num_train,
        FLAGS.num_val,
        FLAGS.size,
        FLAGS.seed,
        num_shards=FLAGS.num_shards,
        max_objects=FLAGS.max_objects,
    )
    print(f"wrote {counts} to {FLAGS.output_dir}")
    return 0


if __name__ == "__main__":
    app.run(main)
