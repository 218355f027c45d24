"""DeepLab model configuration: one dataclass and a registry of named variants.

The fields mirror the flags of the original ``research/deeplab`` (``model_variant``,
``output_stride``, ``atrous_rates``, ``decoder_output_stride``, ...), so a variant name
plus a few overrides reproduces any of the original's configurations.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from deeplab_ext.models.deeplab.backbones import BACKBONES
from deeplab_ext.models.layers import BN_EPSILON, BN_MOMENTUM
from deeplab_ext.models.registry import ModelConfig
from deeplab_ext.models.tag_heads import DEFAULT_POOLING, DEFAULT_TEMPERATURE, validate_tag_head

# Outputs of the scene network's task decoders: instance centroid offsets (dy, dx) in
# pixels, and disparity (inverse depth) in pixels (deeplab_ext.data.scene_targets).
TASK_HEAD_CHANNELS = {"instance": 2, "depth": 1}

TAG_POOLINGS = ("avg", "max", "lse")
VALID_OUTPUT_STRIDES = (8, 16, 32)


@dataclass
class DeepLabConfig(ModelConfig):
    """Everything needed to build a DeepLab network (see ``deeplab_ext.models.deeplab.model``).

    ``atrous_rates`` are given at output stride 16 and scaled with the output stride
    (OS8 doubles them, as the original's ``12,24,36`` flags do); read them through
    :meth:`effective_atrous_rates`.
    """

    backbone: str = "mobilenet_v2"
    depth_multiplier: float = 1.0
    # MobileNetV2 channel rounding: None = the original's rule (multiples of 8 at depth
    # multiplier 1, plain rounding otherwise, as its feature_extractor calls slim).
    depth_divisible_by: int | None = None
    # MobileNetV2 blocks per stage: None = the original's (1, 2, 3, 4, 3, 3, 1).
    backbone_blocks: tuple[int, ...] | None = None
    output_stride: int = 16
    atrous_rates: tuple[int, ...] | None = None
    aspp_with_image_pooling: bool = True
    aspp_with_separable_conv: bool = True
    aspp_filters: int = 256
    aspp_dropout: float = 0.1
    decoder_output_stride: int | None = None
    decoder_use_separable_conv: bool = True
    decoder_filters: int = 256
    low_level_filters: int = 48
    num_classes: int = 21
    multi_grid: tuple[int, ...] | None = None
    num_tags: int = 0
    tag_head_hidden: int = 0
    # "avg": pool, then classify (one vector per image). "max" / "lse": classify every
    # encoder location, then pool the scores (max, or log-mean-exp): small objects are not
    # averaged away and the tag gradient lands where the class is seen.
    tag_head_pooling: str = "avg"
    # "encoder": the trained head above. "segmentation": tags pooled from the segmentation
    # (deeplab_ext.models.tag_heads), no parameters: a released model gets tags untrained.
    tag_head: str = "encoder"
    seg_tag_pooling: str = DEFAULT_POOLING
    seg_tag_temperature: float = DEFAULT_TEMPERATURE
    tag_class_ids: tuple[int, ...] | None = None  # None: the last num_tags classes
    weight_decay: float = 4e-5
    bn_momentum: float = BN_MOMENTUM
    bn_epsilon: float = BN_EPSILON
    sync_batch_norm: bool = False
    upsample_logits: bool = True
    # Kendall et al.'s scene network: per-task decoders on the shared encoder, each a 3x3
    # conv of task_head_filters (+BN+ReLU) then a 1x1 conv (TASK_HEAD_CHANNELS outputs);
    # with task heads the semantic logits get the same 3x3 conv first.
    task_heads: tuple[str, ...] = ()
    task_head_filters: int = 256
    name: str = "deeplab"

    def __post_init__(self) -> None:
        # Normalise list-valued fields (JSON / flags give lists) to tuples.
        if self.atrous_rates is not None:
            self.atrous_rates = tuple(int(r) for r in self.atrous_rates)
        if self.multi_grid is not None:
            self.multi_grid = tuple(int(r) for r in self.multi_grid)
        if self.backbone_blocks is not None:
            self.backbone_blocks = tuple(int(n) for n in self.backbone_blocks)
        self.task_heads = tuple(self.task_heads)
        self.validate()

    def validate(self) -> None:
        """Raise a ValueError naming the bad field/flag and the fix."""
        if self.backbone not in BACKBONES:
            raise ValueError(
                f"DeepLabConfig.backbone={self.backbone!r} is unknown; use one of "
                f"{sorted(BACKBONES)}."
            )
        if self.backbone_blocks is not None and self.backbone != "mobilenet_v2":
            raise ValueError(f"DeepLabConfig.backbone_blocks is for mobilenet_v2, not "
                             f"{self.backbone!r}; leave it unset.")
        if self.output_stride not in VALID_OUTPUT_STRIDES:
            raise ValueError(
                f"--output_stride={self.output_stride} is not supported; use one of "
                f"{VALID_OUTPUT_STRIDES}."
            )
        if self.decoder_output_stride not in (None, 4):
            raise ValueError(
                f"--decoder_output_stride={self.decoder_output_stride} is not supported; "
                "use 4 or leave it unset (no decoder)."
            )
        if self.num_classes < 1:
            raise ValueError(f"--num_classes={self.num_classes} must be >= 1.")
        if self.tag_head_pooling not in TAG_POOLINGS:
            raise ValueError(
                f"DeepLabConfig.tag_head_pooling={self.tag_head_pooling!r} is unknown; use one "
                f"of {TAG_POOLINGS}."
            )
        if self.num_tags < 0:
            raise ValueError(f"num_tags={self.num_tags} must be >= 0 (0 = no tag head).")
        if self.depth_multiplier <= 0:
            raise ValueError(f"depth_multiplier={self.depth_multiplier} must be > 0.")
        if not 0.0 <= self.aspp_dropout < 1.0:
            raise ValueError(f"aspp_dropout={self.aspp_dropout} must be in [0, 1).")
        validate_tag_head(self)
        unknown = sorted(set(self.task_heads) - set(TASK_HEAD_CHANNELS))
        if unknown:
            raise ValueError(f"DeepLabConfig.task_heads: unknown {unknown}; known: "
                             f"{sorted(TASK_HEAD_CHANNELS)}")
        if self.task_heads and self.task_head_filters < 1:
            raise ValueError(f"task_head_filters={self.task_head_filters} must be >= 1.")

    @classmethod
    def from_dict(cls, d: dict) -> DeepLabConfig:
        # Configs written before depth_divisible_by existed always rounded to multiples of 8.
        return cls(**{"depth_divisible_by": 8, **d})

    def effective_atrous_rates(self) -> tuple[int, ...]:
        """ASPP rates at this config's output stride (given at OS16; x2 at OS8, /2 at OS32)."""
        if not self.atrous_rates:
            return ()
        scale = 16 / self.output_stride
        return tuple(max(1, int(round(r * scale))) for r in self.atrous_rates)


def _xception65(**kw) -> DeepLabConfig:
    return DeepLabConfig(
        backbone="xception_65",
        atrous_rates=(6, 12, 18),
        decoder_output_stride=4,
        weight_decay=4e-5,
        **kw,
    )


def _mobilenetv2_plus(**kw) -> DeepLabConfig:
    return DeepLabConfig(
        backbone="mobilenet_v2",
        atrous_rates=(6, 12, 18),
        decoder_output_stride=4,
        weight_decay=4e-5,
        **kw,
    )


def _mobilenetv2_v3(**kw) -> DeepLabConfig:
    # The original's MobileNetV2 checkpoint config: image pooling + 1x1 ASPP branch only.
    return DeepLabConfig(
        backbone="mobilenet_v2",
        atrous_rates=None,
        decoder_output_stride=None,
        weight_decay=4e-5,
        **kw,
    )


def _resnet(depth: int, **kw) -> DeepLabConfig:
    return DeepLabConfig(
        backbone=f"resnet_v1_{depth}_beta",
        atrous_rates=(6, 12, 18),
        decoder_output_stride=4,
        multi_grid=(1, 2, 4),
        weight_decay=1e-4,
        **kw,
    )


# Tiny variants (tests, the demo): short trainings need faster BN statistics and no dropout.
_TINY = dict(depth_multiplier=0.25, depth_divisible_by=8, aspp_filters=32, decoder_filters=32,
             low_level_filters=16, bn_momentum=0.99, aspp_dropout=0.0)

_BASE_VARIANTS: dict[str, DeepLabConfig] = {
    "deeplabv3plus_xception65": _xception65(name="deeplabv3plus_xception65"),
    "deeplabv3plus_mobilenetv2": _mobilenetv2_plus(name="deeplabv3plus_mobilenetv2"),
    "deeplabv3_mobilenetv2": _mobilenetv2_v3(name="deeplabv3_mobilenetv2"),
    "deeplabv3plus_resnet50": _resnet(50, name="deeplabv3plus_resnet50"),
    "deeplabv3plus_resnet101": _resnet(101, name="deeplabv3plus_resnet101"),
    "deeplabv3plus_mobilenetv2_tiny": _mobilenetv2_plus(
        name="deeplabv3plus_mobilenetv2_tiny", **_TINY
    ),
    "deeplabv3_mobilenetv2_tiny": _mobilenetv2_v3(name="deeplabv3_mobilenetv2_tiny", **_TINY),
    # The test suite's network: the tiny one with one block per stage (7 instead of 17),
    # every part still there (atrous stage, ASPP, decoder); its graphs trace in ~60% of
    # the tiny's time (BENCHMARKS.md 21, bench/bench_test_network.py).
    "deeplabv3plus_mobilenetv2_micro": _mobilenetv2_plus(
        name="deeplabv3plus_mobilenetv2_micro", backbone_blocks=(1,) * 7, **_TINY),
    # The original zoo's mobilenetv2_dm05_coco_voc_trainaug (70.19% VOC val, OS16).
    "deeplabv3_mobilenetv2_dm05": _mobilenetv2_v3(name="deeplabv3_mobilenetv2_dm05",
                                                  depth_multiplier=0.5),
    # Kendall, Gal & Cipolla (CVPR 2018): DeepLabv3 (ResNet-101 + ASPP), one decoder per
    # task (semantic, instance, depth); and its CPU twin, with the v3+ decoder to stride 4
    # (instance offsets need finer features than stride 16 on small images).
    "deeplabv3_resnet101_scene": dataclasses.replace(
        _resnet(101), decoder_output_stride=None, task_heads=("instance", "depth"),
        name="deeplabv3_resnet101_scene"),
    "deeplabv3plus_mobilenetv2_tiny_scene": _mobilenetv2_plus(
        name="deeplabv3plus_mobilenetv2_tiny_scene", task_heads=("instance", "depth"),
        task_head_filters=32, **_TINY),
}


def _with_tags(cfg: DeepLabConfig, name: str) -> DeepLabConfig:
    return dataclasses.replace(cfg, num_tags=cfg.num_classes - 1, name=name)


MODEL_VARIANTS: dict[str, DeepLabConfig] = dict(_BASE_VARIANTS)
for _name, _cfg in _BASE_VARIANTS.items():
    MODEL_VARIANTS[_name + "_mt"] = _with_tags(_cfg, _name + "_mt")

__all__ = ["DeepLabConfig", "MODEL_VARIANTS", "TASK_HEAD_CHANNELS"]
