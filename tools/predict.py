"""Segment one image, optionally with image-level evidence (tags).

`python -m tools.predict --saved_model=EXPORT --image=img.png --tags=person,dog
 --output=seg.png [--evidence_steps=10]`  (or --checkpoint_dir=RUN instead of
--saved_model). Prints the tag probabilities before and after refitting.
"""

from __future__ import annotations

import json
import pathlib
import sys

import cv2
import numpy as np
from absl import app, flags

from tools import common_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("image", None, "Input image (jpg/png).")
flags.DEFINE_string("saved_model", None, "A SavedModel from tools.export_model.")
flags.DEFINE_string("checkpoint_dir", None, "Or: a --train_logdir of tools.train.")
flags.DEFINE_list("tags", None, "Class names present in the image (the evidence).")
flags.DEFINE_bool("prune", False, "Zero the probability of classes absent from --tags.")
flags.DEFINE_string("output", "prediction.png", "Colour segmentation PNG to write.")
flags.DEFINE_string("raw_output", None, "Optional raw class-index PNG.")
common_flags.define_evidence_flags()
flags.mark_flag_as_required("image")


def _read_image(path: str) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"--image={path}: not found or not a readable image file")
    return img[..., ::-1].astype(np.float32)


def main(argv):
    del argv
    from deeplab_ext import colormap as cmap
    from deeplab_ext.input_pipeline import tags_from_names

    if bool(FLAGS.saved_model) == bool(FLAGS.checkpoint_dir):
        print("error: give exactly one of --saved_model or --checkpoint_dir", file=sys.stderr)
        return 1
    try:
        image = _read_image(FLAGS.image)
        steps = FLAGS.evidence_steps
        if steps < 0:
            raise ValueError(f"--evidence_steps must be >= 0, got {steps}")
        if FLAGS.saved_model:
            from deeplab_ext.export import LoadedSegmenter

            seg = LoadedSegmenter(FLAGS.saved_model)
            info = seg.info
            tags = tags_from_names(FLAGS.tags, info) if FLAGS.tags else None
            plain = seg.predict(image)
            out = seg.predict_with_evidence(image, tags, steps) if tags is not None else plain
        else:
            from deeplab_ext.evaluation import refit_variables
            from deeplab_ext.trainer import restore_network
            from tf_mtl.evidence import EvidenceRefitter
            from tf_mtl.inference import predict_segmentation

            network, info, _ = restore_network(FLAGS.checkpoint_dir)
            tags = tags_from_names(FLAGS.tags, info) if FLAGS.tags else None
            x = image[None]
            p = predict_segmentation(network, x)
            plain = {"semantic_predictions": p["predictions"].numpy(),
                     "semantic_probabilities": p["probabilities"].numpy()}
            if "tags" in network.output:
                import tensorflow as tf

                plain["tag_probabilities"] = tf.sigmoid(network(x)["tags"]).numpy()
            out = plain
            if tags is not None:
                ev = common_flags.evidence_options()
                r = EvidenceRefitter(network, ev.config("l2", False, (1.0,), False),
                                     variables=refit_variables(network, ev.refit),
                                     tag_class_ids=list(info.tag_class_ids))(x, tags, steps)
                out = {"semantic_predictions": r["predictions"].numpy(),
                       "semantic_probabilities": r["probabilities"].numpy(),
                       "tag_probabilities": r["tag_probabilities_after"].numpy()}
        probs = out["semantic_probabilities"]
        if FLAGS.prune:
            if tags is None:
                raise ValueError("--prune needs --tags")
            from tf_mtl.evidence import prune_probabilities

            keep = () if info.background_class is None else (info.background_class,)
            probs = prune_probabilities(probs, tags[None], list(info.tag_class_ids), keep).numpy()
        pred = probs[0].argmax(-1).astype(np.uint8)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    colour = cmap.label_to_color_image(pred, info.colormap)
    out_path = pathlib.Path(FLAGS.output)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_path), colour[..., ::-1])
    if FLAGS.raw_output:
        cv2.imwrite(FLAGS.raw_output, pred)
    report = {"output": str(out_path),
              "classes_predicted": [info.class_names[c] for c in np.unique(pred)]}
    if "tag_probabilities" in plain:
        names = list(info.tag_names)
        report["tag_probabilities_before"] = dict(
            zip(names, np.round(plain["tag_probabilities"][0], 4).tolist(), strict=True))
        report["tag_probabilities_after"] = dict(
            zip(names, np.round(out["tag_probabilities"][0], 4).tolist(), strict=True))
    print(json.dumps(report, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    app.run(main)
