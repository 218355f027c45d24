"""Tune the refit settings of one trained model on a split you do not report.

`python -m tools.tune_evidence --checkpoint_dir=RUN --dataset_dir=DATA --tune_split=test`
prints the search table and writes RUN/evidence_tuned.json; tools.eval,
tools.export_model and tools.predict then refit with the chosen settings and say so
(flags given still win). Flags: the fields of `deeplab_ext.run.options.TuneOptions`.
"""

from __future__ import annotations

from deeplab_ext.run.options import TuneOptions

from . import common_flags

common_flags.define_flags(TuneOptions)


def main() -> None:
    from deeplab_ext.run.tuning import tune_evidence

    tune_evidence(common_flags.options_from_flags(TuneOptions), printer=common_flags.printer)


def cli() -> None:
    """The console script (pyproject.toml's [project.scripts])."""
    common_flags.run(main)


if __name__ == "__main__":
    cli()
