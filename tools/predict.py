"""Segment one image, optionally with image-level evidence (tags).

`python -m tools.predict --saved_model=EXPORT --image=img.png --tags=person,dog
 --output=seg.png [--evidence_steps=10]`  (or --checkpoint_dir=RUN instead of
--saved_model: served in-process through the same functions as the export). Prints
the tag probabilities before and after refitting.
"""

from __future__ import annotations

import json

from deeplab_ext.run.options import PredictOptions

from . import common_flags

common_flags.define_flags(PredictOptions)


def main() -> None:
    from deeplab_ext.run.export import predict_image

    report = predict_image(common_flags.options_from_flags(PredictOptions),
                           printer=common_flags.printer)
    common_flags.printer(json.dumps(report, indent=1))


def cli() -> None:
    """The console script (pyproject.toml's [project.scripts])."""
    common_flags.run(main)


if __name__ == "__main__":
    cli()
