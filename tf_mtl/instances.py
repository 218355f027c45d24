"""Instances from predicted centroid offsets (Kendall, Gal & Cipolla, CVPR 2018): the
clustering that turns a per-pixel offset field into instance ids, and a panoptic-style
score of the result.

The score (:class:`InstanceQuality`) separates the instance head from the segmentation:
it clusters the *true* instance pixels by their predicted offsets and compares the
clusters with the true instances (recovered from the target's exact centroids). It is
the class-agnostic panoptic quality of those instances (Kirillov et al.): PQ = SQ x RQ,
SQ the mean IoU of matched pairs (IoU > 0.5, a unique match), RQ = TP / (TP + FP/2 +
FN/2). Segmentation errors are what mIoU measures; they do not enter here.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

__all__ = ["InstanceQuality", "cluster_instances", "match_instances"]


def cluster_instances(offsets: np.ndarray, things: np.ndarray, bandwidth: float = 4.0,
                      min_pixels: int = 8) -> np.ndarray:
    """Instance ids ``[h, w]`` (1, 2, ...; 0 off ``things``) from predicted offsets
    ``[h, w, 2]``: each thing pixel votes for the centroid it points to; the votes are
    histogrammed on a grid of ``bandwidth`` pixels and smoothed (3x3 box), centres are the
    local maxima holding at least ``min_pixels`` votes (strongest first, non-maximum
    suppressed within two cells), and every thing pixel joins the centre nearest its vote.
    Kendall's paper clusters the votes with OPTICS; a grid of votes is its cheap
    deterministic counterpart, enough for the clean fields of a converged network."""
    h, w = things.shape
    ys, xs = np.nonzero(things)
    ids = np.zeros((h, w), np.int32)
    if ys.size == 0:
        return ids
    votes = np.stack([ys + offsets[ys, xs, 0], xs + offsets[ys, xs, 1]], -1)
    cells = np.floor(votes / bandwidth).astype(np.int64)
    gh, gw = int(np.ceil(h / bandwidth)) + 2, int(np.ceil(w / bandwidth)) + 2
    cells = np.clip(cells + 1, 0, [gh - 1, gw - 1])
    grid = np.zeros((gh, gw))
    np.add.at(grid, (cells[:, 0], cells[:, 1]), 1.0)
    padded = np.pad(grid, 1)
    smooth = sum(padded[1 + dy: 1 + dy + gh, 1 + dx: 1 + dx + gw]
                 for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    centres: list[np.ndarray] = []
    for flat in np.argsort(-smooth, axis=None, kind="stable"):
        cy, cx = divmod(int(flat), gw)
        if smooth[cy, cx] < min_pixels:
            break
        if all(max(abs(cy - c[0]), abs(cx - c[1])) > 2 for c in centres):
            centres.append(np.array([cy, cx]))
    if not centres:
        return ids
    # Each centre at the mean vote of its cells' neighbourhood, in pixels.
    points = []
    for c in centres:
        near = np.max(np.abs(cells - c), axis=1) <= 1
        points.append(votes[near].mean(axis=0))
    points = np.stack(points)
    nearest = np.argmin(((votes[:, None, :] - points[None]) ** 2).sum(-1), axis=1)
    ids[ys, xs] = nearest + 1
    return ids


def match_instances(truth: np.ndarray, pred: np.ndarray) -> tuple[int, int, int, float]:
    """(TP, FP, FN, sum of the TPs' IoU) between two instance-id maps (0 = none): pairs
    with IoU > 0.5, which are unique."""
    t_ids = [i for i in np.unique(truth) if i != 0]
    p_ids = [i for i in np.unique(pred) if i != 0]
    tp, iou_sum, matched = 0, 0.0, set()
    for t in t_ids:
        tm = truth == t
        for p in np.unique(pred[tm]):
            if p == 0 or p in matched:
                continue
            pm = pred == p
            iou = np.sum(tm & pm) / np.sum(tm | pm)
            if iou > 0.5:
                tp, iou_sum = tp + 1, iou_sum + iou
                matched.add(p)
                break
    return tp, len(p_ids) - tp, len(t_ids) - tp, float(iou_sum)


def _ids_from_centroids(target: np.ndarray) -> np.ndarray:
    """True instance ids from an offset target ``[h, w, 3]``: the pixels of one instance
    point at the same centroid."""
    mask = target[..., 2] > 0.5
    ys, xs = np.nonzero(mask)
    ids = np.zeros(mask.shape, np.int32)
    if ys.size:
        centres = np.round(np.stack([ys + target[ys, xs, 0], xs + target[ys, xs, 1]], -1), 2)
        _, inverse = np.unique(centres, axis=0, return_inverse=True)
        ids[ys, xs] = inverse.reshape(-1) + 1
    return ids


@keras.saving.register_keras_serializable(package="tf_mtl")
class InstanceQuality(keras.metrics.Metric):
    """Class-agnostic panoptic quality of the instances clustered from predicted offsets
    ``[B, H, W, 2]`` over the true instance pixels of the target ``[B, H, W, 3]`` (see the
    module docstring); ``result()`` is PQ, ``results()`` adds SQ and RQ."""

    def __init__(self, bandwidth: float = 4.0, min_pixels: int = 8, name: str = "pq",
                 **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.bandwidth, self.min_pixels = float(bandwidth), int(min_pixels)
        self.sums = self.add_variable(shape=(4,), initializer="zeros", dtype="float64",
                                      name="tp_fp_fn_iou")

    def _counts(self, target: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        total = np.zeros(4)
        for t, o in zip(target, offsets, strict=True):
            truth = _ids_from_centroids(t)
            pred = cluster_instances(o, truth > 0, self.bandwidth, self.min_pixels)
            total += match_instances(truth, pred)
        return total

    def update_state(self, y_true: tf.Tensor, y_pred: tf.Tensor,
                     sample_weight: tf.Tensor | None = None) -> None:
        counts = tf.numpy_function(self._counts, [tf.cast(y_true, tf.float32),
                                                  tf.cast(y_pred, tf.float32)], tf.float64)
        self.sums.assign_add(tf.reshape(counts, [4]))

    def results(self) -> dict[str, tf.Tensor]:
        tp, fp, fn, iou = (self.sums[i] for i in range(4))
        sq = tf.math.divide_no_nan(iou, tp)
        rq = tf.math.divide_no_nan(tp, tp + 0.5 * fp + 0.5 * fn)
        return {"pq": tf.cast(sq * rq, tf.float32), "sq": tf.cast(sq, tf.float32),
                "rq": tf.cast(rq, tf.float32)}

    def result(self) -> tf.Tensor:
        return self.results()["pq"]

    def get_config(self) -> dict:
        return {"name": self.name, "bandwidth": self.bandwidth, "min_pixels": self.min_pixels}
