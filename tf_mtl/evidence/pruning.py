"""Pruning ("-Pr"): classes the tags rule out get no pixels, or, as a prior, fewer
(``strength`` < 1, tags that are probabilities); and the per-image rules that judge a
refit against the evidence (early stopping's agreement, the serving safeguard)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

__all__ = ["agrees_with_evidence", "evidence_bce", "prune_probabilities", "refit_hurt"]


def prune_probabilities(
    probs: Any,
    tags: Any,
    tag_class_ids: Sequence[int],
    keep_classes: Sequence[int] = (0,),
    renormalize: bool = True,
    strength: float = 1.0,
) -> tf.Tensor:
    """Pruning as a prior: scale each class's probability by ``1 - strength * (1 - t)``.

    ``t`` is the class's tag probability (the evidence; 0 for a class no tag names) and
    classes in ``keep_classes`` (background) are never scaled. With 0/1 tags and
    ``strength`` 1 this is the seed's pruning ("Pr") exactly: a class survives iff it is
    kept or tagged. Why a strength: a tag a person forgot would otherwise delete its
    class outright; at ``strength`` < 1 an untagged class keeps ``1 - strength`` of its
    probability and still wins where the network is sure of it (0 = no pruning).
    ``renormalize`` rescales the result to sum to 1 (argmax is unaffected). The class map
    is ``argmax`` of the result.

    Args:
      probs: ``[B, H, W, C]`` probabilities.
      tags: ``[B, T]`` evidence, each a probability in [0, 1] (hard tags: 0/1).
      tag_class_ids: tag ``i`` is class ``tag_class_ids[i]``.
      strength: in [0, 1].
    """
    probs = tf.convert_to_tensor(probs, tf.float32)
    tags = tf.convert_to_tensor(tags, tf.float32)
    num_classes = probs.shape[-1]
    ids = [int(c) for c in tag_class_ids]
    strength = float(strength)
    if not 0.0 <= strength <= 1.0:  # NaN fails too
        raise ValueError(f"prune strength {strength}: must be in [0, 1] (1 = remove the "
                         "classes the tags rule out, 0 = no pruning)")
    if num_classes is not None:
        bad = [c for c in list(ids) + list(keep_classes) if not 0 <= c < num_classes]
        if bad:
            raise ValueError(
                f"tag_class_ids/keep_classes {bad} out of range for {num_classes} classes"
            )
    if tags.shape[-1] is not None and tags.shape[-1] != len(ids):
        raise ValueError(
            f"tags has {tags.shape[-1]} entries but tag_class_ids has {len(ids)}"
        )
    depth = num_classes if num_classes is not None else tf.shape(probs)[-1]
    # [T, C] one-hot of each tag's class; tags @ onehot -> each class's tag probability [B, C].
    onehot = tf.one_hot(ids, depth, dtype=tf.float32)
    given = tf.minimum(tf.matmul(tf.reshape(tags, [-1, len(ids)]), onehot), 1.0)
    keep = tf.reduce_sum(tf.one_hot(list(keep_classes), depth, dtype=tf.float32), 0) > 0.5
    # 0/1 tags at strength 1: exactly 0 or 1 (1 - 1 * (1 - t) == t), the seed's mask.
    weight = tf.where(keep[None], 1.0, 1.0 - strength * (1.0 - given))  # [B, C]
    out = probs * weight[:, None, None, :]
    if renormalize:
        total = tf.reduce_sum(out, axis=-1, keepdims=True)
        out = tf.math.divide_no_nan(out, total)
    return out


def agrees_with_evidence(
    probs: tf.Tensor, tags: tf.Tensor, threshold: float, margin: float = 0.0
) -> tf.Tensor:
    """Per image: every tag probability on its evidence side of ``threshold`` by ``margin``
    (a tag given with probability >= 0.5 is present, one below absent).

    The early-stopping test. A margin > 0 keeps refitting an image whose tags agree only
    barely (an absent class at p = 0.45 may still own pixels of the segmentation).
    """
    present = tags >= 0.5
    ok = tf.where(present, probs >= threshold + margin, probs < threshold - margin)
    return tf.reduce_all(ok, axis=-1)


def refit_hurt(before: tf.Tensor, after: tf.Tensor, tags: tf.Tensor, taken: tf.Tensor,
               threshold: float = 0.5) -> tf.Tensor:
    """Per image ``[B]``: the refit took steps and did not help the evidence it was given.

    Either the tags' cross-entropy against the evidence did not go down, or a tag that
    agreed with the evidence before (on its side of ``threshold``) no longer does. Such
    an image is better served by the plain prediction (the serving safeguard).
    """
    eps = 1e-7

    def loss(p: tf.Tensor) -> tf.Tensor:
        p = tf.clip_by_value(p, eps, 1.0 - eps)
        return -tf.reduce_mean(tags * tf.math.log(p) + (1.0 - tags) * tf.math.log(1.0 - p), -1)

    present = tags >= 0.5
    agree_before = tf.equal(before >= threshold, present)
    agree_after = tf.equal(after >= threshold, present)
    flipped = tf.reduce_any(tf.logical_and(agree_before, tf.logical_not(agree_after)), -1)
    worse = loss(after) >= loss(before)
    return tf.logical_and(taken > 0, tf.logical_or(worse, flipped))


def evidence_bce(tags: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Per-image mean over tags of sigmoid cross-entropy: [B, T] -> [B]. A tag given as a
    probability is the target as it is (0.6: the refit stops pushing at 0.6)."""
    return tf.reduce_mean(
        tf.nn.sigmoid_cross_entropy_with_logits(labels=tags, logits=logits), axis=-1
    )
