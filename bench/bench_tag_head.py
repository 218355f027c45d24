"""Evidence table on the built-in dataset for one tag-head / tag-loss setting.

Trains the main job's model (`make demo` defaults: deeplabv3plus_mobilenetv2_tiny_mt,
10000 Adam steps, lr 5e-3, batch 8, crop 65, uncertainty weighting) with the tag head
changed, then prints the evidence rows on the first --num_val val images. Why: the
prediction-time refit can only move the segmentation as far as the tag head "sees"
the classes, so this is the experiment to run when a tag-head design is in question.

Tune refit settings with `--eval_split=test` (a held-out generated split), not on val.

Usage (from the repo root; ~15 min to train at 10000 steps on 2 CPU cores, then ~1 min
per evaluation):
  .venv/bin/python -m bench.bench_tag_head --workdir=/tmp/th_avg
  .venv/bin/python -m bench.bench_tag_head --workdir=/tmp/th_max --tag_head_pooling=max
  .venv/bin/python -m bench.bench_tag_head --workdir=/tmp/th_h64 --tag_head_hidden=64
  .venv/bin/python -m bench.bench_tag_head --workdir=/tmp/th_h64 --tag_head_hidden=64 \
      --evidence_learning_rate=0.05          # reuses the trained checkpoint
"""

from __future__ import annotations

import argparse
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from deeplab_ext.data import synthetic  # noqa: E402
from deeplab_ext.run.evaluation import evaluate  # noqa: E402
from deeplab_ext.run.options import DemoOptions, EvalOptions, EvidenceOptions, TrainOptions  # noqa: E402
from deeplab_ext.run.trainer import train  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--tag_head_pooling", choices=["avg", "max", "lse"], default=None)
    p.add_argument("--tag_head_hidden", type=int, default=None)
    p.add_argument("--tag_loss_weight", type=float, default=1.0)
    p.add_argument("--output_stride", type=int, default=None)
    p.add_argument("--loss_weighting", default="uncertainty", help="tools.train --loss_weighting")
    p.add_argument("--train_steps", type=int, default=DemoOptions.train_steps)
    p.add_argument("--num_val", type=int, default=50)
    p.add_argument("--eval_split", choices=["val", "test", "holdout"], default="val",
                   help="test: a held-out split (written on first use) to tune refit settings "
                        "on; holdout: another one, --num_val images, for tighter intervals")
    p.add_argument("--modes", default="none,prune,bp_l2,bp_es")
    p.add_argument("--evidence_learning_rate", type=float, default=EvidenceOptions.learning_rate)
    p.add_argument("--evidence_optimizer", default=EvidenceOptions.optimizer)
    p.add_argument("--evidence_steps", type=int, default=EvidenceOptions.steps)
    p.add_argument("--evidence_refit", default=EvidenceOptions.refit)
    p.add_argument("--evidence_clip_norm", type=float, default=EvidenceOptions.clip_norm)
    p.add_argument("--evidence_threshold", type=float, default=EvidenceOptions.threshold)
    p.add_argument("--evidence_alpha", type=float, default=EvidenceOptions.alpha)
    p.add_argument("--evidence_es_steps", type=int, default=EvidenceOptions.es_steps)
    p.add_argument("--evidence_es_margin", type=float, default=EvidenceOptions.es_margin)
    p.add_argument("--p_faint", type=float, default=synthetic.P_FAINT,
                   help="dataset variant: probability an object is faint (default = built-in)")
    p.add_argument("--faint_alpha", default=",".join(map(str, synthetic.FAINT_ALPHA)),
                   help="dataset variant: blend range 'low,high' of faint objects")
    p.add_argument("--p_small", type=float, default=synthetic.P_SMALL,
                   help="dataset variant: small objects")
    a = p.parse_args()
    gen = dict(p_small=a.p_small, p_faint=a.p_faint,
               faint_alpha=tuple(float(x) for x in a.faint_alpha.split(",")))
    d = DemoOptions()
    work = pathlib.Path(a.workdir)
    data = work / "data"
    if not (data / "done").exists():
        synthetic.write_tfrecords(data, d.num_train, d.num_val, size=d.image_size, seed=d.seed,
                                  **gen)
        (data / "done").write_text("ok")
    if a.eval_split != "val" and not (data / f"done_{a.eval_split}").exists():
        synthetic.write_tfrecords(data, size=d.image_size, seed=d.seed, splits=(a.eval_split,),
                                  split_sizes={a.eval_split: a.num_val}, **gen)
        (data / f"done_{a.eval_split}").write_text("ok")
    logdir = work / "train"
    crop = (d.crop_size, d.crop_size)
    if not (logdir / "checkpoint").exists():
        train(TrainOptions(
            train_logdir=str(logdir), dataset_dir=str(data), dataset="shapes_evidence",
            model_variant=d.model_variant, train_crop_size=crop, train_batch_size=d.train_batch_size,
            optimizer="adam", base_learning_rate=d.base_learning_rate,
            training_number_of_steps=a.train_steps, save_interval_steps=a.train_steps,
            log_every_n_steps=max(1, a.train_steps // 4), min_scale_factor=0.75,
            max_scale_factor=1.25, loss_weighting=a.loss_weighting, seed=d.seed,
            tag_head_hidden=a.tag_head_hidden, tag_head_pooling=a.tag_head_pooling,
            tag_loss_weight=a.tag_loss_weight, output_stride=a.output_stride,
        ))
    evaluate(EvalOptions(
        checkpoint_dir=str(logdir), dataset_dir=str(data), eval_logdir=str(work / "eval"),
        eval_split=a.eval_split, eval_crop_size=crop, evidence_modes=tuple(a.modes.split(",")),
        evidence=EvidenceOptions(learning_rate=a.evidence_learning_rate,
                                 optimizer=a.evidence_optimizer, steps=a.evidence_steps,
                                 refit=a.evidence_refit, clip_norm=a.evidence_clip_norm,
                                 threshold=a.evidence_threshold,
                                 es_margin=a.evidence_es_margin, alpha=a.evidence_alpha,
                                 es_steps=a.evidence_es_steps),
        max_examples=a.num_val, num_vis_examples=0, use_tuned_evidence=False,
    ))


if __name__ == "__main__":
    main()
