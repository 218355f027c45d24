"""Print one JSON line describing a DeepLab variant: params, multiply-adds, feature shapes.

    python -m tools.model_info --model_variant=deeplabv3plus_xception65 \\
        --crop_size=513 --output_stride=16 [--num_classes=21]
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model_variant", "deeplabv3plus_mobilenetv2", "Registered variant name.")
flags.DEFINE_list("crop_size", ["513"], "H[,W] of the input used to count multiply-adds.")
flags.DEFINE_integer("output_stride", None, "Output stride (8, 16, 32); default: the variant's.")
flags.DEFINE_integer("num_classes", None, "Number of classes; default: the variant's.")
flags.DEFINE_integer("num_tags", None, "Number of tags (0 = no tag head); default: the variant's.")


def model_info(
    model_variant: str,
    crop_size: tuple[int, int] = (513, 513),
    output_stride: int | None = None,
    num_classes: int | None = None,
    num_tags: int | None = None,
) -> dict:
    """The facts printed by the CLI, as a dict."""
    from deeplab_ext.flops import count_macs, count_params
    from deeplab_ext.model import build_model

    h, w = crop_size
    model = build_model(
        model_variant,
        num_classes=num_classes,
        output_stride=output_stride,
        num_tags=num_tags,
        input_shape=(h, w, 3),
    )
    cfg = model.deeplab_config
    macs = count_macs(model, (1, h, w, 3))

    def shape(name: str) -> list:
        return list(model.get_layer(name).output.shape[1:])

    return {
        "variant": model_variant,
        "backbone": cfg.backbone,
        "crop_size": [h, w],
        "output_stride": cfg.output_stride,
        "num_classes": cfg.num_classes,
        "num_tags": cfg.num_tags,
        "atrous_rates": list(cfg.effective_atrous_rates()),
        "decoder_output_stride": cfg.decoder_output_stride,
        "params": count_params(model),
        "trainable_params": count_params(model, trainable_only=True),
        "macs": macs,
        "gmacs": round(macs / 1e9, 3),
        "encoder_shape": shape("encoder"),
        "low_level_shape": shape("low_level"),
        "backbone_output_shape": shape("backbone_output"),
    }


def _crop(values: list[str]) -> tuple[int, int]:
    try:
        dims = [int(v) for v in values]
    except ValueError as e:
        raise app.UsageError(f"--crop_size={','.join(values)}: expected H or H,W integers") from e
    if len(dims) == 1:
        dims = dims * 2
    if len(dims) != 2 or min(dims) < 1:
        raise app.UsageError(f"--crop_size={','.join(values)}: expected H or H,W (positive)")
    return dims[0], dims[1]


def main(argv: list[str]) -> int:
    del argv
    try:
        info = model_info(
            FLAGS.model_variant,
            _crop(FLAGS.crop_size),
            FLAGS.output_stride,
            FLAGS.num_classes,
            FLAGS.num_tags,
        )
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    sys.stdout.write(json.dumps(info) + "\n")
    return 0


if __name__ == "__main__":
    app.run(main)
