"""Generate the built-in `shapes_evidence` dataset as TFRecords (no download).

python -m tools.build_synthetic_data --output_dir=data/shapes_evidence --num_train=2000
    [--scene]   (dataset shapes_scene: instance ids and disparity, objects placed by depth)
"""

from __future__ import annotations

from absl import app, flags

from deeplab_ext.data import synthetic

from . import common_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "./data/shapes_evidence", "Where to write the shards.")
flags.DEFINE_integer("num_train", None, "Training examples (default: the registry's size).")
flags.DEFINE_integer("num_val", None, "Validation examples (default: the registry's size).")
flags.DEFINE_integer("num_test", 0, "Examples of a 'test' split of its own, to tune "
                     "prediction-time settings on without touching val (0 = none).")
flags.DEFINE_integer("size", 64, "Image side in pixels.")
flags.DEFINE_integer("seed", 0, "Generator seed: the same seed gives the same dataset.")
flags.DEFINE_integer("num_shards", 4, "Shards per split.")
flags.DEFINE_integer("max_objects", 3, "At most this many objects per image (1..4).")
flags.DEFINE_float("p_small", synthetic.P_SMALL,
                   "Probability that an object is small (radius 3-5 px).")
flags.DEFINE_float("p_faint", synthetic.P_FAINT,
                   "Probability that an object is faint (blended into the background): raises "
                   "the share of objects that are hard to find at all.")
flags.DEFINE_bool("scene", False,
                  "The scene variant, dataset shapes_scene: one class per shape, objects "
                  "standing on a ground plane at "
                  "depths that set their size and fog, with instance ids and disparity maps "
                  "(the instance and depth tasks). Default images are unchanged.")
flags.DEFINE_list("faint_alpha", [str(a) for a in synthetic.FAINT_ALPHA],
                  "Blend range low,high of faint objects.")


def _faint_alpha(values: list[str]) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in values)
    except ValueError as e:
        raise app.UsageError(f"--faint_alpha wants two numbers low,high; got {values}") from e
    return lo, hi


def main() -> None:
    counts = synthetic.write_tfrecords(
        FLAGS.output_dir,
        FLAGS.num_train,
        FLAGS.num_val,
        FLAGS.size,
        FLAGS.seed,
        num_shards=FLAGS.num_shards,
        max_objects=FLAGS.max_objects,
        p_small=FLAGS.p_small,
        p_faint=FLAGS.p_faint,
        faint_alpha=_faint_alpha(FLAGS.faint_alpha),
        splits=("train", "val", "test") if FLAGS.num_test else ("train", "val"),
        num_test=FLAGS.num_test or None,
        scene=FLAGS.scene,
    )
    print(f"wrote {counts} to {FLAGS.output_dir}")


def cli() -> None:
    """The console script (pyproject.toml's [project.scripts])."""
    common_flags.run(main)


if __name__ == "__main__":
    cli()
