"""Print one JSON line describing a variant: params, multiply-adds, feature shapes.

    python -m tools.model_info --model_variant=deeplabv3plus_xception65 \\
        --crop_size=513 --output_stride=16 [--num_classes=21]
    python -m tools.model_info --list_variants
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from deeplab_ext.models.info import ModelInfoOptions  # noqa: E402
from tools import common_flags  # noqa: E402

common_flags.define_flags(ModelInfoOptions)
flags.DEFINE_bool("list_variants", False, "Print the registered variants and exit.")


def main() -> None:
    from deeplab_ext.models import variant_names
    from deeplab_ext.models.info import model_info

    if flags.FLAGS.list_variants:
        common_flags.printer("\n".join(variant_names()))
        return
    common_flags.printer(json.dumps(model_info(common_flags.options_from_flags(ModelInfoOptions))))


if __name__ == "__main__":
    common_flags.run(main)
