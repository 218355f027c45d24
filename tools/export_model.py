"""Export a trained checkpoint as a SavedModel (serving_default + segment_with_evidence).

`python -m tools.export_model --checkpoint_dir=RUN --export_path=OUT/saved_model`
"""

from __future__ import annotations

from deeplab_ext.run.options import ExportOptions
from tools import common_flags

common_flags.define_flags(ExportOptions)


def main() -> None:
    from deeplab_ext.run.export import export_checkpoint

    path = export_checkpoint(common_flags.options_from_flags(ExportOptions),
                             explicit=common_flags.explicit_evidence(),
                             printer=common_flags.printer)
    common_flags.printer(f"Exported SavedModel to {path}")


if __name__ == "__main__":
    common_flags.run(main)
