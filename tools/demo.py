"""The main job (`make demo`): the evidence table on real photos, export, serve, report.

`python -m tools.demo` imports the shipped release (mobilenetv2_dm05_coco_voc_trainaug)
with tags pooled from its segmentation and the refit settings the released-weights table
records for it (tuned on the shipped coco128-voc train photos), scores the val photos,
exports, serves a photo and writes demo_out/report.html. `--weights=NAME|FILE` takes
another release, `--data=FOLDER` (VOC or CamVid layout) other photos, `--builtin` is the
training demo on the built-in dataset; --evidence_* flags given win over tuned settings.
"""

from __future__ import annotations

from deeplab_ext.run.options import DemoOptions

from . import common_flags

common_flags.define_flags(DemoOptions)


def main() -> None:
    from deeplab_ext.run.demo import run_demo

    run_demo(common_flags.options_from_flags(DemoOptions), printer=common_flags.printer)


def cli() -> None:
    """The console script (pyproject.toml's [project.scripts])."""
    common_flags.run(main)


if __name__ == "__main__":
    cli()
