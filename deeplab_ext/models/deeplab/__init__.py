"""The DeepLab family (v3 / v3+ with atrous Xception-65, MobileNetV2, ResNet-beta).

Importing this package registers the family and every ``--model_variant`` of
:data:`~deeplab_ext.models.deeplab.config.MODEL_VARIANTS`.
"""

from __future__ import annotations

from deeplab_ext.models.deeplab.config import MODEL_VARIANTS, DeepLabConfig
from deeplab_ext.models.deeplab.model import FAMILY, FEATURE_NAMES, GROUP_PREFIXES, DeepLab
from deeplab_ext.models.deeplab.original import (
    keras_applications_weights,
    original_variable_names,
)
from deeplab_ext.models.registry import ModelFamily, register_family

__all__ = ["DeepLab", "DeepLabConfig", "MODEL_VARIANTS"]


def _build(config: DeepLabConfig, input_shape: tuple) -> DeepLab:
    return DeepLab(config, input_shape=input_shape)


def _describe(cfg: DeepLabConfig) -> dict:
    return {"backbone": cfg.backbone, "output_stride": cfg.output_stride,
            "atrous_rates": list(cfg.effective_atrous_rates()),
            "decoder_output_stride": cfg.decoder_output_stride}


register_family(ModelFamily(
    name=FAMILY, config_class=DeepLabConfig, build=_build,
    variable_groups=GROUP_PREFIXES, backbone_groups=("backbone",),
    # The trunk and the tag branch; the decoder and logits stay as trained.
    refit_groups=("backbone", "aspp", "tag_head"),
    # Tuning's candidates per tag head, the default first. Tags pooled from the
    # segmentation depend on every layer: refitting the encoder's ASPP (and the logits)
    # moves the segmentation directly; the whole trunk, or only its BatchNorm affines
    # (Tent), are the wider choices (BENCHMARKS 19).
    refit_sets={
        "encoder": ("backbone,aspp,tag_head", "aspp,tag_head",
                    "backbone:bn,aspp:bn,tag_head"),
        "segmentation": ("aspp", "aspp,logits", "backbone,aspp", "backbone:bn,aspp:bn"),
    },
    feature_names=FEATURE_NAMES, describe=_describe,
    # Every head reads the encoder (ASPP) output or the decoder's low-level skip (a
    # branch of its own: its gradient is the decoder's share alone).
    shared_features=("decoder_skip", "encoder"),
    stage_features=lambda cfg: ("low_level", "stride8", "stride16"),
    # Beyond the output stride the backbone is atrous: no layer samples a coarser grid.
    input_stride=lambda cfg: cfg.output_stride,
    original_names=original_variable_names, original_pooled_scopes=("image_pooling",),
    released_variants=("deeplabv3_mobilenetv2_dm05", "deeplabv3_mobilenetv2",
                       "deeplabv3plus_mobilenetv2", "deeplabv3plus_resnet50",
                       "deeplabv3plus_xception65", "deeplabv3plus_resnet101"),
    pretrained_backbone=keras_applications_weights,
), variants=MODEL_VARIANTS)
