"""Evaluate a checkpoint: mIoU, per-class IoU, tag F1, and the evidence table.

`python -m tools.eval --checkpoint_dir=RUN --dataset_dir=DATA --eval_logdir=OUT
 --evidence_modes=none,prune,bp_l2,bp_es,bp_l2_prune,bp_es_prune`
(flags: the fields of `deeplab_ext.run.options.EvalOptions`).
"""

from __future__ import annotations

from deeplab_ext.run.options import EvalOptions

from . import common_flags

common_flags.define_flags(EvalOptions)


def main() -> None:
    from deeplab_ext.run.evaluation import evaluate

    evaluate(common_flags.options_from_flags(EvalOptions), printer=common_flags.printer)


def cli() -> None:
    """The console script (pyproject.toml's [project.scripts])."""
    common_flags.run(main)


if __name__ == "__main__":
    cli()
