"""The main job (`make demo`): train, evaluate with evidence, export, serve, report.

`python -m tools.demo` uses the built-in dataset; `--data=../shared/data/coco128-voc`
(any VOC- or CamVid-layout folder) converts and uses that instead. The refit settings
are tuned for the trained model on a split of their own (the search starts at the
demo's `DemoOptions.evidence`: --evidence_learning_rate=0.1 --evidence_clip_norm=0.5);
--evidence_* flags given on the command line win over the tuned ones.
"""

from __future__ import annotations

from deeplab_ext.run.options import DemoOptions
from tools import common_flags

common_flags.define_flags(DemoOptions)


def main() -> None:
    from deeplab_ext.run.demo import run_demo

    run_demo(common_flags.options_from_flags(DemoOptions), printer=common_flags.printer,
             explicit=common_flags.explicit_evidence())


if __name__ == "__main__":
    common_flags.run(main)
