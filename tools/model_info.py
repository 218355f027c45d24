"""Print one JSON line describing a variant: params, multiply-adds, feature shapes.

    python -m tools.model_info --model_variant=deeplabv3plus_xception65 \\
        --crop_size=513 --output_stride=16 [--num_classes=21]
    python -m tools.model_info --list_variants
    python -m tools.model_info --list_weights   # the original zoo's names, and what is here
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from deeplab_ext.models.info import ModelInfoOptions  # noqa: E402

from . import common_flags  # noqa: E402

common_flags.define_flags(ModelInfoOptions)
flags.DEFINE_bool("list_variants", False, "Print the registered variants and exit.")
flags.DEFINE_bool("list_weights", False, "Print the released models by name (what "
                  "--tf_initial_checkpoint, --source, --checkpoint_dir and --weights take): "
                  "their variant, classes, the original's mIoU and where each file is "
                  "(shipped, cached, or the URL it downloads from); then exit.")


def main() -> None:
    from deeplab_ext.models import variant_names
    from deeplab_ext.models.info import model_info

    if flags.FLAGS.list_variants:
        common_flags.printer("\n".join(variant_names()))
        return
    if flags.FLAGS.list_weights:
        from deeplab_ext.weights import ENV_HOME, cache_home, list_weights

        rows = list_weights()
        header = ["name", "variant", "dataset", "original mIoU (%)", "tuned refit", "files"]
        common_flags.printer(f"cache: {cache_home()} (${ENV_HOME} moves it)\n")
        common_flags.printer("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
        for row in rows:
            common_flags.printer("| " + " | ".join(str(v) for v in row.values()) + " |")
        return
    common_flags.printer(json.dumps(model_info(common_flags.options_from_flags(ModelInfoOptions))))


def cli() -> None:
    """The console script (pyproject.toml's [project.scripts])."""
    common_flags.run(main)


if __name__ == "__main__":
    cli()
