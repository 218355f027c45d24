"""Which pooling makes the best tags from a segmentation (``--tag_head=segmentation``)?

The released model's softmax is computed once per photo (coco128-voc, full size padded
onto the model's grid, as tools.eval does), then pooled every way in NumPy: log-mean-exp
at several temperatures, max, mean. Each pooling's tags (threshold 0.5) against the
ground-truth tags: precision, recall, F1, and the threshold-free mAP, per split. The
choice is made on train; val is reported beside it.

Tag quality is not the whole story: what the tags are for is the refit. ``--refit``
therefore also builds each pooling's twin of the model (``tools.import_weights
--source=RUN --tag_head=segmentation``) and scores one fixed refit (``--refit_*``: the
issue-27 starting point, ASPP only, SGD 10 steps, lr 3e-3, no L2) with and without
pruning, against plain and pruned inference, on the same photos.

    .venv/bin/python -m bench.bench_seg_tags --checkpoint_dir=/tmp/dm05_seg \\
        --dataset_dir=/tmp/coco_voc
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tempfile  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from deeplab_ext.models import family_of  # noqa: E402
from deeplab_ext.run.importing import import_weights  # noqa: E402
from deeplab_ext.run.modes import load_split, run_modes  # noqa: E402
from deeplab_ext.run.options import EvidenceOptions, ImportOptions  # noqa: E402
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
    p.add_argument("--refit", action="store_true", help="also score a fixed refit per pooling")
    p.add_argument("--refit_groups", default="aspp")
    p.add_argument("--refit_learning_rate", type=float, default=3e-3)
    p.add_argument("--refit_steps", type=int, default=10)
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
    if args.refit:
        out["refit"] = refit_rows(args)
    return out


def refit_rows(args) -> dict:
    """Per pooling and split: mIoU of DL-MT, DL-MT-Pr, and the fixed refit (DL-BP-L2, -Pr)."""
    evidence = EvidenceOptions(steps=args.refit_steps, learning_rate=args.refit_learning_rate,
                               alpha=0.0, refit=args.refit_groups)
    modes = ["none", "prune", "bp_l2", "bp_l2_prune"]
    rows: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for pooling, r in POOLINGS:
            name = pooling if r is None else f"{pooling}_r{r:g}"
            twin = os.path.join(tmp, name)
            import_weights(ImportOptions(source=args.checkpoint_dir, output_dir=twin,
                                         tag_head="segmentation", seg_tag_pooling=pooling,
                                         seg_tag_temperature=r or 10.0),
                           printer=lambda line: None)
            network, info, meta = restore_network(twin)
            for split in args.splits.split(","):
                batches, alignment = load_split(network, info, meta, args.dataset_dir, split,
                                                printer=lambda line: None)
                runs = run_modes(network, info, batches, modes, evidence,
                                 alignment=alignment, errors=False)
                row = {m: round(100 * runs[m].miou, 2) for m in modes}
                rows.setdefault(split, {})[name] = row
                print(f"refit {split} {name}: " + ", ".join(
                    f"{runs[m].miou * 100:.2f}" for m in modes) + "  (DL-MT, DL-MT-Pr, "
                    "DL-BP-L2, DL-BP-L2-Pr)", flush=True)
    return rows


if __name__ == "__main__":
    main()
