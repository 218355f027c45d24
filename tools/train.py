"""Train a (multi-task) network: `python -m tools.train --model_variant=... --dataset_dir=...`.

Flags follow the original deeplab train.py where the concept is the same (every flag is
a field of `deeplab_ext.run.options.TrainOptions`). Re-running the same command resumes
from the last checkpoint in --train_logdir.
"""

from __future__ import annotations

from deeplab_ext.run.options import TrainOptions

from . import common_flags

common_flags.define_flags(TrainOptions)


def main() -> None:
    from deeplab_ext.run.trainer import train

    train(common_flags.options_from_flags(TrainOptions), printer=common_flags.printer)


def cli() -> None:
    """The console script (pyproject.toml's [project.scripts])."""
    common_flags.run(main)


if __name__ == "__main__":
    cli()
