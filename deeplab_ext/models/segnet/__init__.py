"""The SegNet and MTAN families (the UCL multi-task study's networks).

Importing this package registers both families and their ``--model_variant`` names:
``segnet``, ``segnet_basic``, ``segnet_tiny`` (CPU scale), each also ``*_3task`` (class
and box heads), and ``mtan``, ``mtan_basic``, ``mtan_tiny`` (3-task), each also
``*_decoder_attention``.
"""

from __future__ import annotations

from deeplab_ext.models.registry import ModelFamily, register_family
from deeplab_ext.models.segnet.config import (
    MODEL_VARIANTS,
    MTAN_VARIANTS,
    MTANConfig,
    SegNetConfig,
)
from deeplab_ext.models.segnet.model import GROUP_PREFIXES, SegNet, feature_names

__all__ = ["MTANConfig", "SegNet", "SegNetConfig"]


def _build(config: SegNetConfig, input_shape: tuple) -> SegNet:
    return SegNet(config, input_shape=input_shape)


def _describe(cfg: SegNetConfig) -> dict:
    facts = {"encoder_channels": [list(b) for b in cfg.encoder_channels],
             "kernel_size": cfg.kernel_size, "stride": cfg.stride, "tasks": list(cfg.head_tasks())}
    if isinstance(cfg, MTANConfig):
        facts["decoder_attention"] = cfg.decoder_attention
    return facts


def _family(name: str, config_class: type, refit: tuple[str, ...]) -> ModelFamily:
    names = feature_names(config_class(num_tags=1, class_head=True, box_head=True))
    # Tags pooled from the segmentation: the decoder and logits move it directly.
    segmentation = ("decoder,logits", "encoder,decoder,logits", "encoder:bn,decoder:bn")
    return ModelFamily(
        name=name, config_class=config_class, build=_build, variable_groups=GROUP_PREFIXES,
        backbone_groups=("encoder",),
        refit_groups=refit, refit_sets={"segmentation": segmentation},
        feature_names=names, describe=_describe,
        # Every pooled block output but the last (MTAN's tasks read attended ones there).
        stage_features=lambda cfg: feature_names(cfg)[:len(cfg.encoder_channels) - 1],
        # Every block pools by 2 (SAME): inputs on a multiple of the total stride keep the
        # training crop's pooling windows.
        input_stride=lambda cfg: cfg.stride, latent_feature=None)


# Evidence refits the encoder and the tag branch (MTAN's tag branch includes its masks).
# No latent evidence mode: SegNet's decoder also reads the encoder's pooling indices, and
# MTAN's tasks each read their own attended encoder output, so no one feature determines
# every output.
register_family(_family("segnet", SegNetConfig, ("encoder", "tag_head")), MODEL_VARIANTS)
register_family(_family("mtan", MTANConfig, ("encoder", "attention", "tag_head")), MTAN_VARIANTS)
