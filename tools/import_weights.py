"""Import the original DeepLab's released weights into a run directory.

`python -m tools.import_weights --source=deeplabv3_mnv2_dm05_pascal_257.tflite
 --model_variant=deeplabv3_mobilenetv2_dm05 --output_dir=RUN`
then `tools.eval/vis/export_model/predict --checkpoint_dir=RUN`, or
`tools.train --tf_initial_checkpoint=RUN` (flags: `deeplab_ext.run.options.ImportOptions`).
"""

from __future__ import annotations

from deeplab_ext.run.options import ImportOptions

from . import common_flags

common_flags.define_flags(ImportOptions)


def main() -> None:
    from deeplab_ext.run.importing import import_weights

    import_weights(common_flags.options_from_flags(ImportOptions), printer=common_flags.printer)


def cli() -> None:
    """The console script (pyproject.toml's [project.scripts])."""
    common_flags.run(main)


if __name__ == "__main__":
    cli()
