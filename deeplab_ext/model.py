"""DeepLab network builder (the network contract of ARCHITECTURE.md).

``build_model`` returns a :class:`DeepLab` functional model: input ``images`` (raw RGB in
[0, 255]), output dict ``{"semantic": logits at input size, "tags": tag logits}`` (tags
only with ``num_tags > 0``), both float32. The :class:`DeepLabConfig` is kept on the
model (``model.deeplab_config``) and in its ``get_config`` so ``.keras`` files rebuild
the same network.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import keras

from deeplab_ext.backbones import build_backbone, preprocess_mode
from deeplab_ext.config import DeepLabConfig, get_config
from deeplab_ext.layers import ASPP, Decoder, Preprocess, ResizeBilinear, TagHead, l2_regularizer

__all__ = [
    "DeepLab",
    "FEATURE_NAMES",
    "build_model",
    "feature_model",
    "resolve_config",
    "variable_groups",
]

FEATURE_NAMES = ("low_level", "stride8", "stride16", "backbone_output", "encoder", "decoder_output")
GROUP_PREFIXES = {
    "backbone": "backbone_",
    "aspp": "aspp",
    "decoder": "decoder",
    "logits": "logits",
    "tag_head": "tag_head",
}
# Backbone BN epsilon of the original slim arg scopes (heads use config.bn_epsilon).
_BACKBONE_BN_EPSILON = {
    "xception_65": 1e-3,
    "mobilenet_v2": 1e-3,
    "resnet_v1_50_beta": 1e-5,
    "resnet_v1_101_beta": 1e-5,
}


def resolve_config(
    config: DeepLabConfig | str,
    *,
    num_classes: int | None = None,
    output_stride: int | None = None,
    num_tags: int | None = None,
    **overrides,
) -> DeepLabConfig:
    """A config from a variant name or config plus overrides (None = keep)."""
    extra = {k: v for k, v in overrides.items() if v is not None}
    if num_classes is not None:
        extra["num_classes"] = num_classes
    if output_stride is not None:
        extra["output_stride"] = output_stride
    if num_tags is not None:
        extra["num_tags"] = num_tags
    if isinstance(config, str):
        return get_config(config, **extra)
    if isinstance(config, dict):
        config = DeepLabConfig.from_dict(config)
    if not isinstance(config, DeepLabConfig):
        raise TypeError(
            f"build_model: expected a DeepLabConfig or a --model_variant name, got {type(config)}"
        )
    if config.num_tags > 0 and "num_classes" in extra and "num_tags" not in extra:
        extra["num_tags"] = max(int(extra["num_classes"]) - 1, 1)
    return config.replace(**extra) if extra else config


def _tap(name: str, x: keras.KerasTensor) -> keras.KerasTensor:
    """Named identity layer inserted inline so heads can attach via ``get_layer(name)``."""
    return keras.layers.Identity(name=name)(x)


def _build_graph(cfg: DeepLabConfig, input_shape: Sequence[int | None]):
    images = keras.Input(shape=tuple(input_shape), name="images", dtype="float32")
    x = Preprocess(preprocess_mode(cfg.backbone), name="preprocess")(images)
    feats = build_backbone(
        cfg.backbone,
        x,
        cfg.output_stride,
        depth_multiplier=cfg.depth_multiplier,
        multi_grid=cfg.multi_grid,
        weight_decay=cfg.weight_decay,
        bn_momentum=cfg.bn_momentum,
        bn_epsilon=_BACKBONE_BN_EPSILON[cfg.backbone],
        sync_batch_norm=cfg.sync_batch_norm,
        tap=_tap,
    )
    final = feats["final"]
    low_level = feats["low_level"]
    if "stride16" not in feats:
        # At OS8 the network never reaches stride 16: alias the deepest (stride-8) feature.
        final = _tap("stride16", final)
    backbone_output = keras.layers.Identity(name="backbone_output")(final)
    bn = dict(
        weight_decay=cfg.weight_decay,
        bn_momentum=cfg.bn_momentum,
        bn_epsilon=cfg.bn_epsilon,
        sync_batch_norm=cfg.sync_batch_norm,
    )
    enc = ASPP(
        cfg.aspp_filters,
        cfg.effective_atrous_rates(),
        image_pooling=cfg.aspp_with_image_pooling,
        separable=cfg.aspp_with_separable_conv,
        dropout=cfg.aspp_dropout,
        name="aspp",
        **bn,
    )(backbone_output)
    encoder = keras.layers.Identity(name="encoder")(enc)
    if cfg.decoder_output_stride is not None:
        dec = Decoder(
            cfg.decoder_filters,
            cfg.low_level_filters,
            separable=cfg.decoder_use_separable_conv,
            name="decoder",
            **bn,
        )([encoder, low_level])
    else:
        dec = encoder
    decoder_output = keras.layers.Identity(name="decoder_output")(dec)
    logits = keras.layers.Conv2D(
        cfg.num_classes,
        1,
        use_bias=True,
        kernel_regularizer=l2_regularizer(cfg.weight_decay),
        kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.01),
        name="logits",
    )(decoder_output)
    if cfg.upsample_logits:
        logits = ResizeBilinear(name="upsample_logits")([logits, images])
    outputs = {
        "semantic": keras.layers.Activation("linear", dtype="float32", name="semantic")(logits)
    }
    if cfg.num_tags > 0:
        tags = TagHead(
            cfg.num_tags,
            cfg.tag_head_hidden,
            weight_decay=cfg.weight_decay,
            pooling=cfg.tag_head_pooling,
            name="tag_head",
        )(encoder)
        outputs["tags"] = keras.layers.Activation("linear", dtype="float32", name="tags")(tags)
    return images, outputs


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
        self.deeplab_config = config
        self.image_input_shape = tuple(input_shape)

    def get_config(self) -> dict:
        return {
            "config": self.deeplab_config.to_dict(),
            "input_shape": list(self.image_input_shape),
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config: dict, custom_objects=None) -> DeepLab:
        return cls(**config)


def build_model(
    config: DeepLabConfig | str,
    *,
    num_classes: int | None = None,
    output_stride: int | None = None,
    num_tags: int | None = None,
    input_shape: Sequence[int | None] = (None, None, 3),
    **overrides,
) -> DeepLab:
    """Build a DeepLab network from a config or a ``--model_variant`` name.

    ``num_classes``/``output_stride``/``num_tags`` and any other DeepLabConfig field
    given in ``overrides`` replace the config's values (atrous rates are scaled with
    the output stride automatically).
    """
    if len(tuple(input_shape)) != 3 or tuple(input_shape)[-1] != 3:
        raise ValueError(
            f"build_model: input_shape={input_shape} must be (H, W, 3) with H, W or None"
        )
    cfg = resolve_config(
        config, num_classes=num_classes, output_stride=output_stride, num_tags=num_tags, **overrides
    )
    return DeepLab(cfg, input_shape=input_shape)


def _group_of(layer_name: str) -> str | None:
    for group, prefix in GROUP_PREFIXES.items():
        if layer_name.startswith(prefix):
            return group
    return None


def variable_groups(model: keras.Model, trainable_only: bool = True) -> dict[str, list]:
    """Model variables by part: backbone, aspp, decoder, logits, tag_head.

    ``trainable_only=False`` also returns BN moving statistics (for checkpoint tooling).
    """
    groups: dict[str, list] = {k: [] for k in GROUP_PREFIXES}
    for layer in model.layers:
        group = _group_of(layer.name)
        if group is None:
            continue
        groups[group].extend(layer.trainable_weights if trainable_only else layer.weights)
    return groups


def feature_model(model: keras.Model, names: Iterable[str]) -> keras.Model:
    """A model from ``images`` to a dict of the named intermediate features."""
    names = list(names)
    available = {layer.name for layer in model.layers}
    missing = [n for n in names if n not in available]
    if missing:
        raise ValueError(
            f"feature_model: no layer(s) {missing} in model {model.name!r}; named features: "
            f"{[n for n in FEATURE_NAMES if n in available]}"
        )
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, {n: model.get_layer(n).output for n in names})
