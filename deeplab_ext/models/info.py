"""Facts about a variant: parameters, multiply-adds, feature shapes (``tools.model_info``)."""

from __future__ import annotations

import dataclasses

from deeplab_ext.models.registry import build_network, variant_field

__all__ = ["ModelInfoOptions", "model_info"]


def _field(default, help: str, **meta):  # noqa: A002
    return dataclasses.field(default=default, metadata={"help": help, **meta})


@dataclasses.dataclass
class ModelInfoOptions:
    """What ``tools.model_info`` describes (its flags)."""

    model_variant: str = variant_field()
    crop_size: tuple[int, int] = _field((513, 513), "H[,W] of the input used to count "
                                        "multiply-adds.", positive=True)
    output_stride: int | None = _field(None, "Output stride (8, 16, 32); default: the "
                                       "variant's.")
    num_classes: int | None = _field(None, "Number of classes; default: the variant's.")
    num_tags: int | None = _field(None, "Number of tags (0 = no tag head); default: the "
                                  "variant's.")


def model_info(options: ModelInfoOptions) -> dict:
    """The facts printed by the CLI, as a dict."""
    from deeplab_ext.models.registry import family_of
    from tf_mtl.flops import count_macs, count_params

    h, w = options.crop_size
    model = build_network(options.model_variant, num_classes=options.num_classes,
                          output_stride=options.output_stride, num_tags=options.num_tags,
                          input_shape=(h, w, 3))
    family = family_of(model)
    cfg = model.model_config
    macs = count_macs(model, (1, h, w, 3))
    layers = {layer.name for layer in model.layers}
    return {
        "variant": options.model_variant,
        "family": family.name,
        **(family.describe(cfg) if family.describe else {}),
        "crop_size": [h, w],
        "num_classes": cfg.num_classes,
        "num_tags": cfg.num_tags,
        "params": count_params(model),
        "trainable_params": count_params(model, trainable_only=True),
        "macs": macs,
        "gmacs": round(macs / 1e9, 3),
        **{f"{name}_shape": list(model.get_layer(name).output.shape[1:])
           for name in family.feature_names if name in layers},
    }
