"""The evidence refitter of a restored network, as every run tool builds it.

The network's family says which variables are refitted by default, which outputs are
the segmentation and the tags, and which feature the ``latent`` mode offsets; the
dataset says which class is never pruned (background).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import keras

from deeplab_ext.data.datasets import DatasetInfo
from deeplab_ext.models.registry import family_of, group_variables
from deeplab_ext.run.options import EvidenceOptions
from tf_mtl.evidence import EvidenceRefitter

__all__ = ["keep_classes", "make_refitter"]


def keep_classes(info: DatasetInfo) -> tuple[int, ...]:
    """Classes pruning never removes: the background, when the dataset has one."""
    return () if info.background_class is None else (int(info.background_class),)


def make_refitter(network: keras.Model, info: DatasetInfo, evidence: EvidenceOptions,
                  kind: str = "l2", prune: bool = False, scales: Sequence[float] = (1.0,),
                  flip: bool = False) -> EvidenceRefitter:
    """The refitter of one refit kind (``l2`` | ``es`` | ``latent``) for ``network``."""
    family = family_of(network)
    cfg = evidence.config(kind, prune, tuple(scales), flip, keep_classes(info))
    if kind == "latent":
        cfg = dataclasses.replace(cfg, latent_layer=family.latent_feature)
    variables = None if kind == "latent" else group_variables(network, evidence.refit)
    return EvidenceRefitter(network, cfg, variables=variables,
                            tag_class_ids=list(info.tag_class_ids),
                            semantic_key=family.semantic_output, tags_key=family.tags_output)
