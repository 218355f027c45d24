"""Phase 1 of the label-structure regulariser: an autoencoder on ground-truth label maps.

`python -m tools.train_label_autoencoder --train_logdir=AE --dataset=camvid
 --dataset_dir=CAMVID_SHARDS --variant=128`, then `tools.train --label_decoder=AE ...`
(flags: `deeplab_ext.run.options.LabelAutoencoderOptions`). Re-running resumes.
"""

from __future__ import annotations

from deeplab_ext.run.options import LabelAutoencoderOptions

from . import common_flags

common_flags.define_flags(LabelAutoencoderOptions)


def main() -> None:
    from deeplab_ext.run.label_autoencoder import train_label_autoencoder

    train_label_autoencoder(common_flags.options_from_flags(LabelAutoencoderOptions),
                            printer=common_flags.printer)


def cli() -> None:
    """The console script (pyproject.toml's [project.scripts])."""
    common_flags.run(main)


if __name__ == "__main__":
    cli()
