"""SegNet and MTAN configuration: one dataclass per family and their named variants.

SegNet (Badrinarayanan, Kendall & Cipolla, TPAMI 2017): an encoder of conv-BN-ReLU
blocks, each ending in a 2x2 max-pool that records its argmax, and a mirrored decoder
that unpools by those indices. ``encoder_channels`` lists each block's convs: VGG-16's
13 convs for ``segnet``, four single 7x7 convs of 64 for ``segnet_basic`` (its decoder
has no ReLU, as in the paper). MTAN (Liu, Johns & Davison, CVPR 2019) is a shared SegNet
plus, per task, a soft-attention mask on every encoder block (and, with
``decoder_attention``, on every decoder block as in the original MTAN).

Heads at the end of the encoder: ``num_tags`` (sigmoid tags, as DeepLab's ``*_mt``),
``class_head`` (softmax over the dataset's classes: the class of the largest object) and
``box_head`` (its box, normalised, sigmoid outputs, MSE).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from deeplab_ext.models.registry import ModelConfig
from deeplab_ext.models.tag_heads import (
    DEFAULT_POOLING,
    DEFAULT_TEMPERATURE,
    SEGMENTATION,
    validate_tag_head,
)

__all__ = ["MODEL_VARIANTS", "MTANConfig", "SegNetConfig"]

VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
BASIC_BLOCKS = ((64,), (64,), (64,), (64,))


@dataclass
class SegNetConfig(ModelConfig):
    """Everything needed to build a SegNet (``deeplab_ext.models.segnet.model``)."""

    encoder_channels: tuple[tuple[int, ...], ...] = VGG16_BLOCKS
    kernel_size: int = 3
    decoder_relu: bool = True
    num_classes: int = 21
    num_tags: int = 0
    class_head: bool = False
    box_head: bool = False
    tag_head_hidden: int = 0
    tag_head_pooling: str = "avg"
    tag_head: str = "encoder"  # or "segmentation" (deeplab_ext.models.tag_heads)
    seg_tag_pooling: str = DEFAULT_POOLING
    seg_tag_temperature: float = DEFAULT_TEMPERATURE
    tag_class_ids: tuple[int, ...] | None = None
    weight_decay: float = 5e-4
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3
    sync_batch_norm: bool = False
    name: str = "segnet"

    def __post_init__(self) -> None:
        self.encoder_channels = tuple(tuple(int(c) for c in block)
                                      for block in self.encoder_channels)
        if not self.encoder_channels or any(not block for block in self.encoder_channels):
            raise ValueError(f"{type(self).__name__}.encoder_channels={self.encoder_channels}: "
                             "need at least one block, each with at least one conv")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"{type(self).__name__}.kernel_size={self.kernel_size}: use an "
                             "odd size (3, 7)")
        validate_tag_head(self)

    @property
    def stride(self) -> int:
        """The encoder's total stride (one 2x2 pool per block)."""
        return 2 ** len(self.encoder_channels)

    def head_tasks(self) -> tuple[str, ...]:
        """The tasks of this network, each with its own attention in MTAN."""
        trained_tags = self.num_tags > 0 and self.tag_head != SEGMENTATION
        return ("semantic", *(("tags",) if trained_tags else ()),
                *(("class",) if self.class_head else ()), *(("box",) if self.box_head else ()))



@dataclass
class MTANConfig(SegNetConfig):
    """A SegNet shared by every task, with a soft-attention module per task and block."""

    decoder_attention: bool = False
    name: str = "mtan"


def _three_task(cfg: SegNetConfig, name: str, **kw) -> SegNetConfig:
    return dataclasses.replace(cfg, name=name, class_head=True, box_head=True, **kw)


_SEGNET = SegNetConfig()
_BASIC = SegNetConfig(encoder_channels=BASIC_BLOCKS, kernel_size=7, decoder_relu=False,
                      name="segnet_basic")
# CPU scale for experiments on 2 cores: SegNet-Basic's layout with 32 3x3 filters.
_TINY = SegNetConfig(encoder_channels=((32,),) * 4, kernel_size=3, decoder_relu=False,
                     name="segnet_tiny")

MODEL_VARIANTS: dict[str, SegNetConfig] = {
    "segnet": _SEGNET,
    "segnet_3task": _three_task(_SEGNET, "segnet_3task"),
    "segnet_basic": _BASIC,
    "segnet_basic_3task": _three_task(_BASIC, "segnet_basic_3task"),
    "segnet_tiny": _TINY,
    "segnet_tiny_3task": _three_task(_TINY, "segnet_tiny_3task"),
}
MTAN_VARIANTS: dict[str, MTANConfig] = {
    f"mtan{suffix}": MTANConfig(**{**dataclasses.asdict(cfg), "name": f"mtan{suffix}",
                                   "class_head": True, "box_head": True,
                                   "decoder_attention": dec})
    for base, cfg in (("", _SEGNET), ("_basic", _BASIC), ("_tiny", _TINY))
    for suffix, dec in ((base, False), (f"{base}_decoder_attention", True))
}
