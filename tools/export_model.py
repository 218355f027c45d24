"""Export a trained checkpoint as a SavedModel (serving_default + segment_with_evidence),
and as LiteRT / ONNX files for deployment.

`python -m tools.export_model --checkpoint_dir=RUN --export_path=OUT/saved_model
 [--format=saved_model,litert,onnx] [--export_input_size=H,W]`
"""

from __future__ import annotations

from deeplab_ext.run.options import ExportOptions

from . import common_flags

common_flags.define_flags(ExportOptions)


def main() -> None:
    from deeplab_ext.run.export import export_checkpoint

    options = common_flags.options_from_flags(ExportOptions)
    path = export_checkpoint(options, printer=common_flags.printer)
    what = ", ".join("SavedModel" if f == "saved_model" else f for f in options.format)
    common_flags.printer(f"Exported {what} to {path}")


def cli() -> None:
    """The console script (pyproject.toml's [project.scripts])."""
    common_flags.run(main)


if __name__ == "__main__":
    cli()
