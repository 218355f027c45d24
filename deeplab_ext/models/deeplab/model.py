"""The DeepLab network (the network contract of ARCHITECTURE.md).

:class:`DeepLab` is a functional model: input ``images`` (raw RGB in [0, 255]), output dict
``{"semantic": logits at input size, "tags": tag logits}`` (tags only with ``num_tags >
0``), both float32. Its :class:`DeepLabConfig` is kept on the model (``model.model_config``)
and in its ``get_config``, so ``.keras`` files rebuild the same network. Build it through
the registry (``deeplab_ext.models.build_network("deeplabv3plus_xception65_mt")``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from deeplab_ext.models.deeplab.backbones import build_backbone, get_backbone
from deeplab_ext.models.deeplab.config import TASK_HEAD_CHANNELS, DeepLabConfig
from deeplab_ext.models.deeplab.layers import ASPP, Decoder, TaskDecoder
from deeplab_ext.models.layers import ConvBN, Preprocess, ResizeBilinear, TagHead
from deeplab_ext.models.tag_heads import SEGMENTATION, segmentation_tags
from tf_mtl.graph import BranchTap

__all__ = ["DeepLab", "FEATURE_NAMES", "GROUP_PREFIXES"]

FAMILY = "deeplab"
FEATURE_NAMES = ("low_level", "stride8", "stride16", "backbone_output", "encoder", "decoder_output")
GROUP_PREFIXES = {
    "backbone": "backbone_",
    "aspp": "aspp",
    "decoder": "decoder",
    "logits": "logits",
    "tag_head": "tag_head",
    "task_heads": "task_head_",  # the scene network's per-task decoders
}


def _tap(name: str, x: keras.KerasTensor) -> keras.KerasTensor:
    """Named identity layer inserted inline so heads can attach via ``get_layer(name)``."""
    return keras.layers.Identity(name=name)(x)


def _build_graph(cfg: DeepLabConfig, input_shape: Sequence[int | None]):
    """(images input, output dict): the layers are created and called in a fixed order,
    which fixes their names and their initial weights' random draws."""
    images = keras.Input(shape=tuple(input_shape), name="images", dtype="float32")
    x = Preprocess(get_backbone(cfg.backbone).preprocess, name="preprocess")(images)
    norm = cfg.norm()
    encoder, low_level = _encoder(cfg, x, norm)
    decoder_output = _decoder_output(cfg, encoder, low_level, norm)
    outputs = {"semantic": _semantic(cfg, decoder_output, images, norm)}
    for task in cfg.task_heads:
        out = TaskDecoder(cfg.task_head_filters, TASK_HEAD_CHANNELS[task],
                          name=f"task_head_{task}", norm=norm)(decoder_output)
        out = ResizeBilinear(name=f"upsample_{task}")([out, images])
        outputs[task] = keras.layers.Activation("linear", dtype="float32", name=task)(out)
    if cfg.num_tags > 0 and cfg.tag_head == SEGMENTATION:
        outputs["tags"] = segmentation_tags(cfg, outputs["semantic"])
    elif cfg.num_tags > 0:
        tags = TagHead(
            cfg.num_tags,
            cfg.tag_head_hidden,
            weight_decay=cfg.weight_decay,
            pooling=cfg.tag_head_pooling,
            name="tag_head",
        )(encoder)
        outputs["tags"] = keras.layers.Activation("linear", dtype="float32", name="tags")(tags)
    return images, outputs


def _encoder(cfg: DeepLabConfig, x: keras.KerasTensor, norm: Any
             ) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """(the ASPP's output, tapped as ``encoder``; the backbone's low-level feature)."""
    feats = build_backbone(
        cfg.backbone,
        x,
        cfg.output_stride,
        depth_multiplier=cfg.depth_multiplier,
        depth_divisible_by=cfg.depth_divisible_by,
        multi_grid=cfg.multi_grid,
        norm=norm,
        tap=_tap,
        **({"num_blocks": cfg.backbone_blocks} if cfg.backbone_blocks else {}),
    )
    final = feats["final"]
    low_level = feats["low_level"]
    if "stride16" not in feats:
        # At OS8 the network never reaches stride 16: alias the deepest (stride-8) feature.
        final = _tap("stride16", final)
    backbone_output = keras.layers.Identity(name="backbone_output")(final)
    enc = ASPP(
        cfg.aspp_filters,
        cfg.effective_atrous_rates(),
        image_pooling=cfg.aspp_with_image_pooling,
        separable=cfg.aspp_with_separable_conv,
        dropout=cfg.aspp_dropout,
        name="aspp",
        norm=norm,
    )(backbone_output)
    return keras.layers.Identity(name="encoder")(enc), low_level


def _decoder_output(cfg: DeepLabConfig, encoder: keras.KerasTensor,
                    low_level: keras.KerasTensor, norm: Any) -> keras.KerasTensor:
    """The DeepLabv3+ decoder's output (the encoder itself without a decoder), tapped as
    ``decoder_output``."""
    if cfg.decoder_output_stride is not None:
        dec = Decoder(
            cfg.decoder_filters,
            cfg.low_level_filters,
            separable=cfg.decoder_use_separable_conv,
            name="decoder",
            norm=norm,
        )([encoder, BranchTap(name="decoder_skip")(low_level)])
    else:
        dec = encoder
    return keras.layers.Identity(name="decoder_output")(dec)


def _semantic(cfg: DeepLabConfig, decoder_output: keras.KerasTensor,
              images: keras.KerasTensor, norm: Any) -> keras.KerasTensor:
    """The ``semantic`` output: class logits, at the input size with ``upsample_logits``."""
    semantic_in = decoder_output
    if cfg.task_heads:  # the semantic decoder's own 3x3 conv, as the other tasks'
        semantic_in = ConvBN(cfg.task_head_filters, 3, name="task_head_semantic",
                             norm=norm)(decoder_output)
    logits = keras.layers.Conv2D(
        cfg.num_classes,
        1,
        use_bias=True,
        kernel_regularizer=norm.regularizer(),
        kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.01),
        name="logits",
    )(semantic_in)
    if cfg.upsample_logits:
        logits = ResizeBilinear(name="upsample_logits")([logits, images])
    return keras.layers.Activation("linear", dtype="float32", name="semantic")(logits)


@keras.saving.register_keras_serializable(package="deeplab_ext")
class DeepLab(keras.Model):
    """Functional DeepLab whose ``get_config`` is its :class:`DeepLabConfig` (keras-hub style)."""

    def __init__(
        self,
        config: DeepLabConfig | dict,
        input_shape: Sequence[int | None] = (None, None, 3),
        **kwargs,
    ):
        if isinstance(config, dict):
            config = DeepLabConfig.from_dict(config)
        inputs, outputs = _build_graph(config, input_shape)
        kwargs.setdefault("name", config.name)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.model_family = FAMILY
        self.model_config = config
        self.image_input_shape = tuple(input_shape)

    def get_config(self) -> dict:
        return {
            "config": self.model_config.to_dict(),
            "input_shape": list(self.image_input_shape),
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config: dict, custom_objects=None) -> DeepLab:
        return cls(**config)
