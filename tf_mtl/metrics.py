"""Streaming metrics: confusion-matrix mIoU and multi-label tag metrics.

All state lives in Keras metric variables (aggregation SUM, synchronised on read), so
accumulating under `tf.distribute` and reading `result()` in cross-replica context
gives the totals over all replicas. Counts are float64 (exact up to 2^53 pixels).
Also NumPy helpers for a paired bootstrap over images (`paired_bootstrap_miou`): how
sure a difference between two prediction modes is on a small evaluation split.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf


def _as_labels(y_true: tf.Tensor) -> tf.Tensor:
    y_true = tf.convert_to_tensor(y_true)
    if y_true.shape.rank == 4 and y_true.shape[-1] == 1:
        y_true = tf.squeeze(y_true, -1)
    return tf.cast(y_true, tf.int32)


@keras.saving.register_keras_serializable(package="tf_mtl")
class StreamingMeanIoU(keras.metrics.Metric):
    """Mean IoU from a streaming confusion matrix (as the original's tf.metrics.mean_iou).

    `y_pred` is either class ids with the shape of `y_true` or scores/logits with an
    extra class axis (argmax is taken). Pixels labelled `ignore_label` are excluded.
    `result()` averages IoU over classes with a non-zero denominator (present in
    ground truth or prediction); `per_class_iou()` gives NaN for absent classes.
    """

    def __init__(
        self, num_classes: int, ignore_label: int = 255, name: str = "mean_iou", **kwargs: Any
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        self.total_cm = self.add_variable(
            shape=(self.num_classes, self.num_classes),
            initializer="zeros",
            dtype="float64",
            name="total_confusion_matrix",
        )

    def update_state(
        self, y_true: tf.Tensor, y_pred: tf.Tensor, sample_weight: tf.Tensor | None = None
    ) -> None:
        labels = _as_labels(y_true)
        y_pred = tf.convert_to_tensor(y_pred)
        if y_pred.shape.rank == labels.shape.rank + 1:
            y_pred = tf.argmax(y_pred, axis=-1, output_type=tf.int32)
        preds = tf.reshape(tf.cast(y_pred, tf.int32), [-1])
        weights = tf.ones(tf.shape(labels), tf.float64)
        if sample_weight is not None:  # per image [B] or per pixel [B, H, W]
            sw = tf.cast(tf.convert_to_tensor(sample_weight), tf.float64)
            if sw.shape.rank == 1:
                sw = tf.reshape(sw, [-1] + [1] * (labels.shape.rank - 1))
            weights = weights * sw
        labels = tf.reshape(labels, [-1])
        keep = tf.not_equal(labels, self.ignore_label)
        weights = tf.reshape(weights, [-1]) * tf.cast(keep, tf.float64)
        safe_labels = tf.where(keep, labels, 0)
        n = self.num_classes
        cm = tf.math.bincount(
            safe_labels * n + tf.clip_by_value(preds, 0, n - 1),
            weights=weights,
            minlength=n * n,
            maxlength=n * n,
            dtype=tf.float64,
        )
        self.total_cm.assign_add(tf.reshape(cm, [n, n]))

    def _iou(self) -> tuple[tf.Tensor, tf.Tensor]:
        cm = tf.convert_to_tensor(self.total_cm)
        diag = tf.linalg.diag_part(cm)
        denom = tf.reduce_sum(cm, 0) + tf.reduce_sum(cm, 1) - diag
        return tf.math.divide_no_nan(diag, denom), denom > 0

    def result(self) -> tf.Tensor:
        iou, valid = self._iou()
        num_valid = tf.reduce_sum(tf.cast(valid, tf.float64))
        mean = tf.math.divide_no_nan(tf.reduce_sum(tf.where(valid, iou, 0.0)), num_valid)
        return tf.cast(mean, tf.float32)

    def per_class_iou(self) -> tf.Tensor:
        """IoU per class (float32 [num_classes]); NaN where the class never occurred."""
        iou, valid = self._iou()
        nan = tf.constant(float("nan"), tf.float64)
        return tf.cast(tf.where(valid, iou, nan), tf.float32)

    def confusion_matrix(self) -> tf.Tensor:
        """Accumulated counts, rows = ground truth, columns = prediction."""
        return tf.convert_to_tensor(self.total_cm)

    def get_config(self) -> dict:
        return {"name": self.name, "num_classes": self.num_classes,
                "ignore_label": self.ignore_label}


def _tag_probs(y_pred: tf.Tensor, from_logits: bool) -> tf.Tensor:
    y_pred = tf.cast(y_pred, tf.float32)
    return tf.sigmoid(y_pred) if from_logits else y_pred


@keras.saving.register_keras_serializable(package="tf_mtl")
class TagPrecisionRecallF1(keras.metrics.Metric):
    """Micro-averaged precision / recall / F1 of multi-label tags at a threshold.

    `result()` is F1; `precision()`, `recall()` and `results()` give the rest.
    `y_pred` are logits unless `from_logits=False` (then probabilities).
    """

    def __init__(
        self,
        num_tags: int,
        threshold: float = 0.5,
        from_logits: bool = True,
        name: str = "tag_f1",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.num_tags = int(num_tags)
        self.threshold = float(threshold)
        self.from_logits = bool(from_logits)
        self.counts = self.add_variable(
            shape=(3,), initializer="zeros", dtype="float64", name="tp_fp_fn"
        )

    def update_state(
        self, y_true: tf.Tensor, y_pred: tf.Tensor, sample_weight: tf.Tensor | None = None
    ) -> None:
        truth = tf.cast(y_true, tf.float64) > 0.5
        pred = _tag_probs(y_pred, self.from_logits) >= self.threshold
        w = tf.ones_like(tf.cast(truth, tf.float64))
        if sample_weight is not None:
            sw = tf.cast(sample_weight, tf.float64)
            w = w * tf.reshape(sw, [-1, 1]) if sw.shape.rank == 1 else w * sw

        def count(mask: tf.Tensor) -> tf.Tensor:
            return tf.reduce_sum(tf.where(mask, w, 0.0))

        self.counts.assign_add(
            tf.stack([count(truth & pred), count(~truth & pred), count(truth & ~pred)])
        )

    def precision(self) -> tf.Tensor:
        c = tf.convert_to_tensor(self.counts)
        return tf.cast(tf.math.divide_no_nan(c[0], c[0] + c[1]), tf.float32)

    def recall(self) -> tf.Tensor:
        c = tf.convert_to_tensor(self.counts)
        return tf.cast(tf.math.divide_no_nan(c[0], c[0] + c[2]), tf.float32)

    def result(self) -> tf.Tensor:
        c = tf.convert_to_tensor(self.counts)
        return tf.cast(tf.math.divide_no_nan(2.0 * c[0], 2.0 * c[0] + c[1] + c[2]), tf.float32)

    def results(self) -> dict[str, tf.Tensor]:
        """precision, recall and F1 as a dict."""
        return {"precision": self.precision(), "recall": self.recall(), "f1": self.result()}

    def get_config(self) -> dict:
        return {"name": self.name, "num_tags": self.num_tags, "threshold": self.threshold,
                "from_logits": self.from_logits}


TagF1 = TagPrecisionRecallF1


@keras.saving.register_keras_serializable(package="tf_mtl")
class BinaryMapScores(keras.metrics.Metric):
    """A binary per-pixel map (e.g. edges) scored the way edge detection reports it, over
    the whole split: the F1 at the best single threshold (ODS, "optimal dataset scale"),
    average precision, and the F1 at probability 0.5. Pixel-exact: no matching tolerance
    (BSDS allows a few pixels of slack), so the numbers are lower than published ones.

    ``y_true`` ``[B, H, W]`` in {0, 1, ignore}; ``y_pred`` one logit per position
    ``[B, h, w, 1]``, resized (bilinear) to the labels. Ignored pixels do not count. The
    probabilities are binned (``num_bins``) per class; thresholds are the bin edges."""

    def __init__(self, ignore_label: int = 255, num_bins: int = 100, name: str = "ods_f1",
                 **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        if num_bins < 2 or num_bins % 2:
            raise ValueError(f"num_bins must be even and >= 2 (0.5 is an edge), got {num_bins}")
        self.ignore_label, self.num_bins = int(ignore_label), int(num_bins)
        self.counts = self.add_variable(shape=(2, self.num_bins), initializer="zeros",
                                        dtype="float64", name="positive_negative_per_bin")

    def update_state(self, y_true: tf.Tensor, y_pred: tf.Tensor,
                     sample_weight: tf.Tensor | None = None) -> None:
        labels = tf.cast(y_true, tf.int32)
        logits = tf.image.resize(tf.cast(y_pred, tf.float32), tf.shape(labels)[1:3])[..., 0]
        bins = tf.clip_by_value(tf.cast(tf.floor(tf.sigmoid(logits) * self.num_bins), tf.int32),
                                0, self.num_bins - 1)
        valid = tf.cast(tf.not_equal(labels, self.ignore_label), tf.float64)
        if sample_weight is not None:
            valid *= tf.cast(sample_weight, tf.float64)
        positive = tf.cast(tf.equal(labels, 1), tf.float64)

        def histogram(weights: tf.Tensor) -> tf.Tensor:
            return tf.math.bincount(tf.reshape(bins, [-1]), weights=tf.reshape(weights, [-1]),
                                    minlength=self.num_bins, maxlength=self.num_bins,
                                    dtype=tf.float64)

        self.counts.assign_add(tf.stack([histogram(valid * positive),
                                         histogram(valid * (1.0 - positive))]))

    def _curve(self) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Precision, recall and F1 at thresholds k / num_bins, k = 0 .. num_bins - 1."""
        c = tf.convert_to_tensor(self.counts)
        tp = tf.cumsum(c[0], reverse=True)  # pixels with probability >= k / num_bins
        fp = tf.cumsum(c[1], reverse=True)
        fn = tf.reduce_sum(c[0]) - tp
        return (tf.math.divide_no_nan(tp, tp + fp), tf.math.divide_no_nan(tp, tp + fn),
                tf.math.divide_no_nan(2.0 * tp, 2.0 * tp + fp + fn))

    def result(self) -> tf.Tensor:
        return tf.cast(tf.reduce_max(self._curve()[2]), tf.float32)

    def results(self) -> dict[str, tf.Tensor]:
        """ods_f1, its threshold, ap (the step-wise area under precision-recall) and f1
        at 0.5."""
        precision, recall, f1 = self._curve()
        gain = recall - tf.concat([recall[1:], [0.0]], 0)  # recall gained at each threshold
        return {"ods_f1": self.result(),
                "ods_threshold": tf.cast(tf.argmax(f1), tf.float32) / self.num_bins,
                "ap": tf.cast(tf.reduce_sum(precision * gain), tf.float32),
                "f1": tf.cast(f1[self.num_bins // 2], tf.float32)}

    def get_config(self) -> dict:
        return {"name": self.name, "ignore_label": self.ignore_label, "num_bins": self.num_bins}


@keras.saving.register_keras_serializable(package="tf_mtl")
class TagMAP(keras.metrics.Metric):
    """Mean average precision over tags, from per-tag score histograms.

    Scores (sigmoid probabilities) are binned into `num_bins` equal bins in [0, 1];
    AP is computed as in sklearn's `average_precision_score` with all scores of a bin
    treated as tied. It is exact when scores are constant within bins; otherwise
    ranking is resolved to 1/num_bins in probability. Streaming and distribution-safe
    (histograms are summed). Tags without positives are left out of the mean.
    """

    def __init__(
        self, num_tags: int, num_bins: int = 1000, from_logits: bool = True,
        name: str = "tag_map", **kwargs: Any
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.num_tags = int(num_tags)
        self.num_bins = int(num_bins)
        self.from_logits = bool(from_logits)
        if self.num_bins < 2:
            raise ValueError(f"TagMAP num_bins must be >= 2, got {num_bins}.")
        shape = (2, self.num_tags, self.num_bins)  # [negatives, positives]
        self.hist = self.add_variable(shape=shape, initializer="zeros", dtype="float64",
                                      name="score_histograms")

    def update_state(
        self, y_true: tf.Tensor, y_pred: tf.Tensor, sample_weight: tf.Tensor | None = None
    ) -> None:
        probs = _tag_probs(y_pred, self.from_logits)
        truth = tf.cast(tf.cast(y_true, tf.float32) > 0.5, tf.int32)
        nb, nt = self.num_bins, self.num_tags
        bins = tf.clip_by_value(tf.cast(tf.floor(probs * nb), tf.int32), 0, nb - 1)
        tag_ids = tf.broadcast_to(tf.range(nt, dtype=tf.int32), tf.shape(bins))
        flat = tf.reshape((truth * nt + tag_ids) * nb + bins, [-1])
        w = None
        if sample_weight is not None:
            sw = tf.cast(sample_weight, tf.float64)
            sw = tf.reshape(sw, [-1, 1]) if sw.shape.rank == 1 else sw
            w = tf.reshape(tf.broadcast_to(sw, tf.shape(bins)), [-1])
        h = tf.math.bincount(flat, weights=w, minlength=2 * nt * nb, maxlength=2 * nt * nb,
                             dtype=tf.float64)
        self.hist.assign_add(tf.reshape(h, [2, nt, nb]))

    def per_tag_ap(self) -> tf.Tensor:
        """AP per tag (float32 [num_tags]); NaN for tags without positives."""
        h = tf.convert_to_tensor(self.hist)
        neg, pos = h[0, :, ::-1], h[1, :, ::-1]  # highest scores first
        tp = tf.cumsum(pos, axis=1)
        fp = tf.cumsum(neg, axis=1)
        precision = tf.math.divide_no_nan(tp, tp + fp)
        num_pos = tf.reduce_sum(pos, axis=1)
        ap = tf.math.divide_no_nan(tf.reduce_sum(precision * pos, axis=1), num_pos)
        return tf.cast(tf.where(num_pos > 0, ap, tf.constant(float("nan"), tf.float64)),
                       tf.float32)

    def result(self) -> tf.Tensor:
        ap = self.per_tag_ap()
        valid = tf.logical_not(tf.math.is_nan(ap))
        return tf.math.divide_no_nan(tf.reduce_sum(tf.where(valid, ap, 0.0)),
                                     tf.reduce_sum(tf.cast(valid, tf.float32)))

    def get_config(self) -> dict:
        return {"name": self.name, "num_tags": self.num_tags, "num_bins": self.num_bins,
                "from_logits": self.from_logits}


# --- Paired bootstrap over images: is one prediction mode really better than another? ---


def image_iou_counts(labels: np.ndarray, preds: np.ndarray, num_classes: int,
                     ignore_label: int = 255) -> np.ndarray:
    """[3, C] counts of one image: correct pixels, ground-truth pixels, predicted pixels
    per class (ignored pixels excluded, as `StreamingMeanIoU` counts them).

    IoU is linear in these three, so a resample of images only sums them: 3C numbers
    per image instead of a C x C confusion matrix (151 classes x 2000 ADE20K images
    would be 360 MB per mode as matrices, 7 MB as counts).
    """
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    preds = np.clip(np.asarray(preds).reshape(-1).astype(np.int64), 0, num_classes - 1)
    keep = labels != ignore_label
    labels, preds = labels[keep], preds[keep]
    return np.stack([np.bincount(labels[labels == preds], minlength=num_classes),
                     np.bincount(labels, minlength=num_classes),
                     np.bincount(preds, minlength=num_classes)])


def iou_from_counts(counts: np.ndarray) -> np.ndarray:
    """Per-class IoU of `image_iou_counts` sums [..., 3, C]; NaN where a class is in
    neither ground truth nor prediction (as `StreamingMeanIoU.per_class_iou`)."""
    counts = np.asarray(counts, np.float64)
    inter, gt, pred = counts[..., 0, :], counts[..., 1, :], counts[..., 2, :]
    denom = gt + pred - inter
    return np.divide(inter, denom, out=np.full_like(inter, np.nan), where=denom > 0)


def miou_from_counts(counts: np.ndarray) -> np.ndarray:
    """Mean IoU over classes with a non-zero denominator: the rule of
    `StreamingMeanIoU.result`, vectorised over leading axes."""
    iou = iou_from_counts(counts)
    valid = ~np.isnan(iou)
    return np.where(valid, iou, 0.0).sum(-1) / np.maximum(valid.sum(-1), 1)


def paired_bootstrap_miou(
    counts: dict[str, np.ndarray],
    comparisons: list[tuple[str, str]],
    num_samples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[tuple[str, str], dict[str, Any]]:
    """Bootstrap interval of mIoU(a) - mIoU(b) for each (a, b), resampling images.

    Why: on a 100-image split, two prediction modes a few tenths of a point apart can
    swap order between splits; the interval says whether a difference is larger than
    what the choice of images alone produces. `counts[m]` is [N, 3, C], the
    `image_iou_counts` of each image, in the same image order for every mode (paired:
    every resample draws the same images for both sides). Returns, per pair, ``diff`` (on all
    images), ``low``/``high`` (the central `level` interval) and ``p_greater`` (fraction
    of resamples with a > b).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    sizes = {m: np.shape(c)[0] for m, c in counts.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"every mode needs the same images; got counts {sizes}")
    n = next(iter(sizes.values()))
    rng = np.random.default_rng(seed)
    # weights[b, i]: how often resample b draws image i; one matrix product per mode.
    weights = np.zeros((num_samples, n))
    np.add.at(weights, (np.repeat(np.arange(num_samples), n),
                        rng.integers(0, n, size=num_samples * n)), 1.0)
    needed = {m for pair in comparisons for m in pair}
    missing = needed - set(counts)
    if missing:
        raise ValueError(f"no per-image counts for {sorted(missing)}")
    full, boot = {}, {}
    for m in needed:
        per_image = np.asarray(counts[m], np.float64)
        c = per_image.shape[-1]
        full[m] = float(miou_from_counts(per_image.sum(0)))
        boot[m] = miou_from_counts((weights @ per_image.reshape(n, 3 * c)).reshape(-1, 3, c))
    tail = 100 * (1 - level) / 2
    out = {}
    for a, b in comparisons:
        d = boot[a] - boot[b]
        out[(a, b)] = {"diff": full[a] - full[b], "low": float(np.percentile(d, tail)),
                       "high": float(np.percentile(d, 100 - tail)),
                       "p_greater": float(np.mean(d > 0)), "level": level,
                       "num_samples": num_samples}
    return out


class _MeanOverImages(keras.metrics.Metric):
    """Mean of a per-image value over the images that have a target (sum and count kept
    as float64 metric state); subclasses give ``(values, weights)`` per image."""

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.counts = self.add_variable(shape=(2,), initializer="zeros", dtype="float64",
                                        name="sum_count")

    def values(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        raise NotImplementedError

    def update_state(self, y_true: tf.Tensor, y_pred: tf.Tensor,
                     sample_weight: tf.Tensor | None = None) -> None:
        values, weights = self.values(y_true, y_pred)
        self.counts.assign_add(tf.stack([tf.reduce_sum(values * weights),
                                         tf.reduce_sum(weights)]))

    def result(self) -> tf.Tensor:
        c = tf.convert_to_tensor(self.counts)
        return tf.cast(tf.math.divide_no_nan(c[0], c[1]), tf.float32)

    def get_config(self) -> dict:
        return {"name": self.name}


@keras.saving.register_keras_serializable(package="tf_mtl")
class ImageClassAccuracy(_MeanOverImages):
    """Top-1 accuracy of one class per image; labels < 0 (no object) are skipped."""

    def __init__(self, name: str = "accuracy", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)

    def values(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        labels = tf.reshape(tf.cast(y_true, tf.int32), [-1])
        hit = tf.equal(tf.argmax(y_pred, -1, output_type=tf.int32), labels)
        return tf.cast(hit, tf.float64), tf.cast(labels >= 0, tf.float64)


def box_iou(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """IoU of ``[..., 4]`` boxes ``[ymin, xmin, ymax, xmax]`` (0 where both are empty)."""
    a, b = tf.cast(a, tf.float64), tf.cast(b, tf.float64)
    area = lambda x: tf.maximum(x[..., 2] - x[..., 0], 0) * tf.maximum(x[..., 3] - x[..., 1], 0)  # noqa: E731
    lo, hi = tf.maximum(a[..., :2], b[..., :2]), tf.minimum(a[..., 2:], b[..., 2:])
    inter = tf.reduce_prod(tf.maximum(hi - lo, 0), axis=-1)
    return tf.math.divide_no_nan(inter, area(a) + area(b) - inter)


@keras.saving.register_keras_serializable(package="tf_mtl")
class MeanBoxIoU(_MeanOverImages):
    """Mean IoU between predicted boxes ``[B, 4]`` and targets ``[B, 5]`` (``[present,
    ymin, xmin, ymax, xmax]``) over images with a box."""

    def __init__(self, name: str = "box_iou", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)

    def values(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        y_true = tf.cast(y_true, tf.float64)
        return box_iou(y_true[:, 1:], y_pred), y_true[:, 0]


@keras.saving.register_keras_serializable(package="tf_mtl")
class OffsetError(keras.metrics.Metric):
    """Mean Euclidean error, in pixels, of predicted 2-D vectors ``[B, H, W, 2]`` against
    targets ``[B, H, W, 3]`` (the vector, then a 0/1 mask), over the masked pixels (the
    instance task's centroid offsets)."""

    def __init__(self, name: str = "offset_error_px", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.sums = self.add_variable(shape=(2,), initializer="zeros", dtype="float64",
                                      name="error_and_pixels")

    def update_state(self, y_true: tf.Tensor, y_pred: tf.Tensor,
                     sample_weight: tf.Tensor | None = None) -> None:
        y_true = tf.cast(y_true, tf.float64)
        mask = y_true[..., 2]
        err = tf.norm(tf.cast(y_pred, tf.float64) - y_true[..., :2], axis=-1)
        self.sums.assign_add(tf.stack([tf.reduce_sum(err * mask), tf.reduce_sum(mask)]))

    def result(self) -> tf.Tensor:
        return tf.cast(tf.math.divide_no_nan(self.sums[0], self.sums[1]), tf.float32)


@keras.saving.register_keras_serializable(package="tf_mtl")
class DepthErrors(keras.metrics.Metric):
    """Inverse-depth (disparity) regression ``[B, H, W, 1]`` against targets
    ``[B, H, W, 2]`` (the value, then a 0/1 validity mask): the mean absolute error over
    valid pixels (``result()``), and the usual relative metrics over valid pixels with a
    positive target: abs rel (mean |pred - true| / true) and delta1 (the share with
    max(pred / true, true / pred) < 1.25; predictions clipped at 1e-3)."""

    def __init__(self, name: str = "mae", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.sums = self.add_variable(shape=(5,), initializer="zeros", dtype="float64",
                                      name="n_abs_nrel_rel_delta")

    def update_state(self, y_true: tf.Tensor, y_pred: tf.Tensor,
                     sample_weight: tf.Tensor | None = None) -> None:
        y_true = tf.cast(y_true, tf.float64)
        truth, valid = y_true[..., 0], y_true[..., 1]
        pred = tf.cast(y_pred, tf.float64)[..., 0]
        err = tf.abs(pred - truth)
        positive = valid * tf.cast(truth > 0, tf.float64)
        safe = tf.where(truth > 0, truth, 1.0)
        clipped = tf.maximum(pred, 1e-3)
        ratio = tf.maximum(clipped / safe, safe / clipped)
        self.sums.assign_add(tf.stack([
            tf.reduce_sum(valid), tf.reduce_sum(err * valid), tf.reduce_sum(positive),
            tf.reduce_sum(err / safe * positive),
            tf.reduce_sum(tf.cast(ratio < 1.25, tf.float64) * positive)]))

    def result(self) -> tf.Tensor:
        return tf.cast(tf.math.divide_no_nan(self.sums[1], self.sums[0]), tf.float32)

    def results(self) -> dict[str, tf.Tensor]:
        """mae, abs_rel and delta1."""
        s = tf.convert_to_tensor(self.sums)
        return {"mae": self.result(),
                "abs_rel": tf.cast(tf.math.divide_no_nan(s[3], s[2]), tf.float32),
                "delta1": tf.cast(tf.math.divide_no_nan(s[4], s[2]), tf.float32)}
