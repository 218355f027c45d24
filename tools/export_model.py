"""Export a trained checkpoint as a SavedModel (serving_default + segment_with_evidence).

`python -m tools.export_model --checkpoint_dir=RUN --export_path=OUT/saved_model`
"""

from __future__ import annotations

import sys

from absl import app, flags

from tools import common_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint_dir", None, "A --train_logdir of tools.train.")
flags.DEFINE_string("checkpoint_path", None, "A specific checkpoint (default: the latest).")
flags.DEFINE_string("export_path", None, "Directory of the SavedModel (replaced atomically).")
flags.DEFINE_list("inference_scales", ["1.0"], "Scales for multi-scale inference.")
flags.DEFINE_bool("add_flipped_images", False, "Average left-right flipped predictions.")
common_flags.define_evidence_flags()
flags.mark_flags_as_required(["checkpoint_dir", "export_path"])


def main(argv):
    del argv
    from deeplab_ext.evaluation import refit_variables
    from deeplab_ext.export import export_saved_model
    from deeplab_ext.trainer import restore_network

    try:
        network, info, meta = restore_network(FLAGS.checkpoint_dir, FLAGS.checkpoint_path)
        ev = common_flags.evidence_options()
        has_tags = "tags" in network.output
        path = export_saved_model(
            network, info, FLAGS.export_path,
            evidence=ev.config("l2", prune=False, scales=(1.0,), flip=False) if has_tags else None,
            refit_variables=refit_variables(network, ev.refit) if has_tags else None,
            inference_scales=tuple(float(s) for s in FLAGS.inference_scales),
            add_flipped_images=FLAGS.add_flipped_images, model_config=meta["model"],
        )
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"Exported SavedModel to {path}", flush=True)
    return 0


if __name__ == "__main__":
    app.run(main)
