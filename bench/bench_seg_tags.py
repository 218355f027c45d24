"""Which pooling makes the best tags from a segmentation (``--tag_head=segmentation``)?

The released model's softmax is computed once per photo (coco128-voc, full size padded
onto the model's grid, as tools.eval does), then pooled every way in NumPy: log-mean-exp
at several temperatures, max, mean. Each pooling's tags (threshold 0.5) against the
ground-truth tags: precision, recall, F1, and the threshold-free mAP, per split. The
choice is made on train; val is reported beside it.

    .venv/bin/python -m bench.bench_seg_tags --checkpoint_dir=/tmp/dm05_seg \\
        --dataset_dir=/tmp/coco_voc
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from deeplab_ext.models import family_of  # noqa: E402
from deeplab_ext.run.evaluation import load_split  # noqa: E402
from deeplab_ext.run.rundir import restore_network  # noqa: E402
from tf_mtl.metrics import TagMAP, TagPrecisionRecallF1  # noqa: E402

POOLINGS = [("lse", 2.0), ("lse", 5.0), ("lse", 10.0), ("lse", 20.0), ("lse", 40.0),
            ("max", None), ("mean", None)]


def pool(probs: np.ndarray, pooling: str, r: float | None) -> np.ndarray:
    """probs [N, T] of one image -> presence [T] (the rules of tf_mtl.segmentation_tags)."""
    if pooling == "max":
        return probs.max(0)
    if pooling == "mean":
        return probs.mean(0)
    m = (r * probs).max(0)
    return (m + np.log(np.mean(np.exp(r * probs - m), 0))) / r


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint_dir", required=True, help="an import with any tag head")
    p.add_argument("--dataset_dir", required=True)
    p.add_argument("--splits", default="train,val")
    args = p.parse_args(argv)
    network, info, meta = restore_network(args.checkpoint_dir)
    key = family_of(network).semantic_output
    ids = list(info.tag_class_ids)
    forward = tf.function(lambda x: tf.nn.softmax(network(x, training=False)[key], -1),
                          reduce_retracing=True)
    out = {}
    for split in args.splits.split(","):
        batches, alignment = load_split(network, info, meta, args.dataset_dir, split,
                                        printer=lambda line: None)
        predict = alignment.wrap(lambda x: {"p": forward(x)})
        probs, truth = [], []
        for images, targets in batches:
            pr = predict(images)["p"].numpy()[0]
            probs.append(pr[..., ids].reshape(-1, len(ids)))
            truth.append(targets["tags"].numpy()[0])
        rows = {}
        for pooling, r in POOLINGS:
            s = np.clip(np.stack([pool(pr, pooling, r) for pr in probs]), 1e-6, 1 - 1e-6)
            f1, tmap = TagPrecisionRecallF1(len(ids)), TagMAP(len(ids))
            logits = np.log(s) - np.log1p(-s)
            f1.update_state(np.stack(truth), logits)
            tmap.update_state(np.stack(truth), logits)
            name = pooling if r is None else f"{pooling}_r{r:g}"
            rows[name] = {k: round(float(v), 4) for k, v in f1.results().items()}
            rows[name]["mAP"] = round(float(tmap.result()), 4)
            print(f"{split} ({len(batches)} images) {name}: {json.dumps(rows[name])}",
                  flush=True)
        out[split] = rows
    return out


if __name__ == "__main__":
    main()
