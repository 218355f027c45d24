"""Which tag head a network has, in one place for every family.

``tag_head="encoder"``: a trained head on the encoder features (``layers.TagHead``), the
multi-task model of the seed. ``tag_head="segmentation"``: tags pooled from the network's
own segmentation (``tf_mtl.segmentation_tags.SegmentationTags``), no parameters, so a
released segmenter gets tags with no training. A family's config carries the fields of
:data:`TAG_HEAD_FIELDS`; its builder calls :func:`segmentation_tags` when the config
asks for the segmentation head.
"""

from __future__ import annotations

from typing import Any

import keras

from tf_mtl.segmentation_tags import SEGMENTATION_TAG_POOLINGS, SegmentationTags

__all__ = [
    "DEFAULT_POOLING",
    "DEFAULT_TEMPERATURE",
    "SEGMENTATION",
    "TAG_HEADS",
    "segmentation_tags",
    "tag_class_ids",
    "validate_tag_head",
]

ENCODER, SEGMENTATION = "encoder", "segmentation"
TAG_HEADS = (ENCODER, SEGMENTATION)
# Fields every family config has for its tag head, and the segmentation head's defaults
# (the choice measured in BENCHMARKS 19).
TAG_HEAD_FIELDS = ("tag_head", "seg_tag_pooling", "seg_tag_temperature", "tag_class_ids")
DEFAULT_POOLING, DEFAULT_TEMPERATURE = "lse", 10.0


def tag_class_ids(cfg: Any) -> tuple[int, ...]:
    """The class of each tag: the config's record, else the last ``num_tags`` classes (the
    rule of every built-in dataset: background 0 untagged, or no background at all)."""
    if cfg.tag_class_ids is not None:
        return tuple(cfg.tag_class_ids)
    return tuple(range(cfg.num_classes - cfg.num_tags, cfg.num_classes))


def validate_tag_head(cfg: Any) -> None:
    """Normalise and check the tag-head fields; a ValueError names the flag."""
    if cfg.tag_class_ids is not None:
        cfg.tag_class_ids = tuple(int(c) for c in cfg.tag_class_ids)
    if cfg.tag_head not in TAG_HEADS:
        raise ValueError(f"--tag_head={cfg.tag_head!r} is unknown; use one of {TAG_HEADS}.")
    if cfg.seg_tag_pooling not in SEGMENTATION_TAG_POOLINGS:
        raise ValueError(f"--seg_tag_pooling={cfg.seg_tag_pooling!r} is unknown; use one of "
                         f"{SEGMENTATION_TAG_POOLINGS}.")
    if not cfg.seg_tag_temperature > 0:
        raise ValueError(f"--seg_tag_temperature={cfg.seg_tag_temperature} must be > 0.")
    if cfg.tag_head == SEGMENTATION and cfg.num_tags < 1:
        raise ValueError("--tag_head=segmentation needs tags (num_tags >= 1): use a *_mt "
                         "variant or give the dataset's tags.")
    if cfg.num_tags > 0:
        ids = tag_class_ids(cfg)
        if len(ids) != cfg.num_tags or min(ids) < 0 or max(ids) >= cfg.num_classes:
            raise ValueError(f"tag_class_ids={list(ids)} must name num_tags={cfg.num_tags} "
                             f"classes of 0..{cfg.num_classes - 1}.")


def segmentation_tags(cfg: Any, semantic: Any) -> Any:
    """The ``tags`` output of ``cfg``'s zero-parameter head on the ``semantic`` logits
    (layer ``tag_head``, so the family's ``tag_head`` group names it, with no variables)."""
    tags = SegmentationTags(tag_class_ids(cfg), pooling=cfg.seg_tag_pooling,
                            temperature=cfg.seg_tag_temperature, name="tag_head")(semantic)
    return keras.layers.Activation("linear", dtype="float32", name="tags")(tags)
