"""The SegNet and MTAN networks (the network contract of ARCHITECTURE.md).

Input ``images`` (raw RGB in [0, 255]); output dict ``semantic`` (logits at input size)
and, per the config, ``tags`` (sigmoid tag logits), ``class`` (softmax logits over the
classes: the largest object's class) and ``box`` (``[ymin, xmin, ymax, xmax]`` in 0..1 of
that object), all float32.

MTAN, as the public MTAN code arranges it (a description, not a copy): per task and
encoder block, mask = AttentionMask([the block's first shared conv output, the task's
previous attended output]); the mask multiplies the block's last shared conv output; a
3x3 conv-BN-ReLU shared by the tasks (to the next block's width) and a 2x2 max-pool give
the task's attended output of that block. Each head reads its own task's attended
encoder output; the segmentation task's attended output goes through the shared decoder
(unpooled by the shared encoder's indices), or, with ``decoder_attention``, the shared
decoder runs on the shared encoder output and the segmentation task attends to each of
its blocks the same way (its previous output upsampled).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from deeplab_ext.models.layers import ConvBN, Preprocess, ResizeBilinear, TagHead
from deeplab_ext.models.segnet.config import MTANConfig, SegNetConfig
from deeplab_ext.models.segnet.layers import AttentionMask, MaxPoolWithArgmax, MaxUnpool
from deeplab_ext.models.tag_heads import SEGMENTATION, segmentation_tags

__all__ = ["GROUP_PREFIXES", "SegNet", "feature_names"]

GROUP_PREFIXES = {
    "encoder": "encoder_",
    "decoder": "decoder_",
    "attention": "attention_",
    "logits": "logits",
    "tag_head": "tag_head",
    "class_head": "class_head",
    "box_head": "box_head",
}
# Output key and head layer of each image-level task.
_HEADS = {"tags": "tag_head", "class": "class_head", "box": "box_head"}


def feature_names(cfg: SegNetConfig) -> tuple[str, ...]:
    """Named features: each block's pooled output (``stride2`` ...), the encoder output,
    the decoder output, and in MTAN each task's attended encoder output."""
    strides = tuple(f"stride{2 ** (i + 1)}" for i in range(len(cfg.encoder_channels)))
    tasks = tuple(f"encoder_{t}" for t in cfg.head_tasks()) if isinstance(cfg, MTANConfig) else ()
    return (*strides, "encoder", *tasks, "decoder_output")


def _identity(name: str, x):
    return keras.layers.Identity(name=name)(x)


class _Builder:
    """Builds one network; holds the config's BN / conv settings."""

    def __init__(self, cfg: SegNetConfig):
        self.cfg = cfg
        self.norm = cfg.norm()

    def conv(self, filters: int, name: str, kernel: int | None = None,
             activation: str | None = "relu") -> ConvBN:
        return ConvBN(filters, kernel or self.cfg.kernel_size, activation=activation,
                      name=name, norm=self.norm)

    def block(self, x, channels: Sequence[int], name: str, activation: str | None = "relu"):
        """Convs of one block -> (first conv output, last conv output)."""
        first = None
        for j, ch in enumerate(channels):
            x = self.conv(ch, f"{name}_conv{j + 1}", activation=activation)(x)
            first = x if first is None else first
        return first, x

    def decoder_channels(self, i: int) -> list[int]:
        """Decoder block ``i`` mirrors encoder block ``i``; its last conv narrows to the
        shallower block's width (SegNet's decoder)."""
        blocks = self.cfg.encoder_channels
        out = list(reversed(blocks[i]))
        out[-1] = blocks[i - 1][-1] if i > 0 else blocks[0][-1]
        return out

    def attention(self, task: str, where: str, i: int, first, last, prev):
        """One task's attended output of one block (before its shared conv and pool)."""
        inputs = first if prev is None else keras.layers.Concatenate(
            name=f"attention_{task}_{where}{i + 1}_concat")([first, prev])
        mask = AttentionMask(last.shape[-1], name=f"attention_{task}_{where}{i + 1}",
                             norm=self.norm)(inputs)
        return keras.layers.Multiply(name=f"attention_{task}_{where}{i + 1}_apply")([mask, last])


def _build_graph(cfg: SegNetConfig, input_shape: Sequence[int | None]):
    b = _Builder(cfg)
    mtan = isinstance(cfg, MTANConfig)
    tasks = cfg.head_tasks()
    images = keras.Input(shape=tuple(input_shape), name="images", dtype="float32")
    x = Preprocess("inception", name="preprocess")(images)
    pools, attended = [], {t: None for t in tasks}
    n = len(cfg.encoder_channels)
    for i, channels in enumerate(cfg.encoder_channels):
        first, last = b.block(x, channels, f"encoder_block{i + 1}")
        x, argmax = MaxPoolWithArgmax(name=f"encoder_pool{i + 1}")(last)
        pools.append((argmax, last))
        x = _identity(f"stride{2 ** (i + 1)}", x)
        if mtan:
            width = cfg.encoder_channels[i + 1][0] if i + 1 < n else channels[-1]
            shared = b.conv(width, f"attention_shared_encoder{i + 1}", kernel=3)
            pool = keras.layers.MaxPooling2D(2, padding="same", name=f"attention_pool{i + 1}")
            for t in tasks:
                att = b.attention(t, "encoder", i, first, last, attended[t])
                attended[t] = pool(shared(att))
    encoder = _identity("encoder", x)
    if mtan:
        attended = {t: _identity(f"encoder_{t}", a) for t, a in attended.items()}
    head_input = {t: attended[t] if mtan else encoder for t in tasks}

    # Decoder: unpool by the shared encoder's indices, then the mirrored convs.
    activation = "relu" if cfg.decoder_relu else None
    decoder_attention = mtan and cfg.decoder_attention
    x = encoder if decoder_attention or not mtan else head_input["semantic"]
    prev = head_input["semantic"]
    for i in reversed(range(n)):
        argmax, like = pools[i]
        x = MaxUnpool(name=f"decoder_unpool{i + 1}")([x, argmax, like])
        first, x = b.block(x, b.decoder_channels(i), f"decoder_block{i + 1}", activation)
        if decoder_attention:
            up = ResizeBilinear(name=f"attention_semantic_up{i + 1}")([prev, first])
            up = b.conv(first.shape[-1], f"attention_shared_decoder{i + 1}", kernel=3)(up)
            prev = b.attention("semantic", "decoder", i, first, x, up)
    decoder_output = _identity("decoder_output", prev if decoder_attention else x)
    logits = keras.layers.Conv2D(cfg.num_classes, 1, name="logits")(decoder_output)
    outputs = {"semantic": keras.layers.Activation("linear", dtype="float32",
                                                   name="semantic")(logits)}
    sizes = {"tags": cfg.num_tags, "class": cfg.num_classes, "box": 4}
    for t in tasks[1:]:
        head = TagHead(sizes[t], cfg.tag_head_hidden if t == "tags" else 0,
                       weight_decay=cfg.weight_decay,
                       pooling=cfg.tag_head_pooling if t == "tags" else "avg",
                       name=_HEADS[t])(head_input[t])
        # Boxes are fractions of the image: sigmoid outputs, MSE against the target.
        outputs[t] = keras.layers.Activation("sigmoid" if t == "box" else "linear",
                                             dtype="float32", name=t)(head)
    if cfg.num_tags > 0 and cfg.tag_head == SEGMENTATION:
        outputs["tags"] = segmentation_tags(cfg, outputs["semantic"])
    return images, outputs


@keras.saving.register_keras_serializable(package="deeplab_ext")
class SegNet(keras.Model):
    """Functional SegNet / MTAN whose ``get_config`` is its config (keras-hub style)."""

    def __init__(self, config: SegNetConfig | dict, input_shape: Sequence[int | None] =
                 (None, None, 3), **kwargs):
        if isinstance(config, dict):
            config = (MTANConfig if "decoder_attention" in config else SegNetConfig)(**config)
        inputs, outputs = _build_graph(config, input_shape)
        kwargs.setdefault("name", config.name)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.model_family = "mtan" if isinstance(config, MTANConfig) else "segnet"
        self.model_config = config
        self.image_input_shape = tuple(input_shape)

    def get_config(self) -> dict:
        return {"config": self.model_config.to_dict(), "input_shape": list(self.image_input_shape),
                "name": self.name, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config: dict, custom_objects=None) -> SegNet:
        return cls(**config)
