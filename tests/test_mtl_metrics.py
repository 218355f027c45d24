"""Streaming metrics against independent NumPy references (single device)."""

import keras
import numpy as np
import pytest

from tf_mtl.metrics import (
    BinaryMapScores,
    StreamingMeanIoU,
    TagF1,
    TagMAP,
    TagPrecisionRecallF1,
)

C, IGN = 6, 255


def np_miou(labels, preds, num_classes=C, ignore=IGN):
    lab, pr = labels.reshape(-1), preds.reshape(-1)
    keep = lab != ignore
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (lab[keep], pr[keep]), 1)
    inter = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)
    iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    return np.nanmean(iou), iou, cm


def np_average_precision(y, s):
    """sklearn-style AP with ties: sum over distinct thresholds of dRecall * precision."""
    order = np.argsort(-s, kind="stable")
    y, s = y[order], s[order]
    distinct = np.r_[np.where(np.diff(s))[0], y.size - 1]
    tp = np.cumsum(y)[distinct]
    fp = (1 + distinct) - tp
    precision = tp / (tp + fp)
    recall = tp / y.sum()
    return np.sum(np.diff(np.r_[0.0, recall]) * precision)


def random_seg(rng, shape=(3, 10, 12), p_ignore=0.15):
    labels = rng.integers(0, C - 1, size=shape)  # class C-1 never in ground truth
    labels[rng.random(shape) < p_ignore] = IGN
    preds = np.where(rng.random(shape) < 0.6, labels, rng.integers(0, C, size=shape))
    preds[labels == IGN] = rng.integers(0, C, size=int((labels == IGN).sum()))
    preds = np.where(preds == IGN, 0, preds)
    return labels.astype(np.int32), preds.astype(np.int32)


def test_streaming_miou_matches_numpy_over_batches():
    rng = np.random.default_rng(0)
    m = StreamingMeanIoU(C, IGN)
    all_l, all_p = [], []
    for _ in range(3):
        labels, preds = random_seg(rng)
        m.update_state(labels, preds)
        all_l.append(labels)
        all_p.append(preds)
    expect, iou, cm = np_miou(np.stack(all_l), np.stack(all_p))
    assert float(m.result()) == pytest.approx(expect, rel=1e-6)
    np.testing.assert_allclose(m.per_class_iou().numpy(), iou, rtol=1e-6)
    np.testing.assert_array_equal(m.confusion_matrix().numpy(), cm)
    assert cm.sum() == sum((lab != IGN).sum() for lab in all_l)  # ignore pixels excluded
    m.reset_state()
    assert float(m.result()) == 0.0


def test_miou_takes_logits_and_skips_absent_classes():
    labels = np.array([[[0, 0, 1, IGN]]], np.int32)
    logits = np.zeros((1, 1, 4, C), np.float32)
    for i, c in enumerate([0, 1, 1, 4]):  # the ignore pixel predicts 4: must not count
        logits[0, 0, i, c] = 5.0
    m = StreamingMeanIoU(C, IGN)
    m.update_state(labels, logits)
    # class 0: 1/2, class 1: 1/2; classes 2..5 absent from gt and pred -> excluded.
    assert float(m.result()) == pytest.approx(0.5)
    iou = m.per_class_iou().numpy()
    assert iou[0] == pytest.approx(0.5) and np.isnan(iou[4])
    clone = StreamingMeanIoU.from_config(m.get_config())
    assert clone.num_classes == C and clone.ignore_label == IGN


def test_tag_prf1_micro_counts():
    y = np.array([[1, 0, 1], [0, 1, 0]], np.float32)
    logits = np.array([[2.0, 1.0, -1.0], [-3.0, 0.5, 0.1]], np.float32)
    # preds at p>=0.5 (logit>=0): [[1,1,0],[0,1,1]] -> tp=2, fp=2, fn=1
    m = TagPrecisionRecallF1(3)
    m.update_state(y, logits)
    assert float(m.precision()) == pytest.approx(0.5)
    assert float(m.recall()) == pytest.approx(2 / 3)
    assert float(m.result()) == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))
    probs = TagF1(3, threshold=0.6, from_logits=False)
    probs.update_state(y, 1 / (1 + np.exp(-logits)))  # 0.62 passes, 0.525 not
    assert float(probs.precision()) == pytest.approx(2 / 3)  # tp 2, fp 1


def test_tag_map_matches_numpy_average_precision():
    rng = np.random.default_rng(3)
    nb = 50
    y = (rng.random((40, 4)) < 0.4).astype(np.float32)
    y[:, 3] = 0.0  # a tag without positives is left out of the mean
    # Scores on bin centres -> the histogram AP is exact (ties resolved as sklearn).
    probs = (rng.integers(0, nb, size=y.shape) + 0.5) / nb
    probs = np.clip(probs + 0.3 * (y - 0.5), 0.5 / nb, 1 - 0.5 / nb)
    probs = (np.floor(probs * nb) + 0.5) / nb
    m = TagMAP(4, num_bins=nb, from_logits=False)
    m.update_state(y[:20], probs[:20])
    m.update_state(y[20:], probs[20:])
    aps = [np_average_precision(y[:, t], probs[:, t]) for t in range(3)]
    np.testing.assert_allclose(m.per_tag_ap().numpy()[:3], aps, rtol=1e-6)
    assert np.isnan(m.per_tag_ap().numpy()[3])
    assert float(m.result()) == pytest.approx(np.mean(aps), rel=1e-6)
    assert 0.5 < float(m.result()) < 1.0
    # Logit inputs with fine bins: close to the exact AP of the raw scores.
    logits = rng.standard_normal((200, 3)).astype(np.float32)
    yy = (rng.random((200, 3)) < 1 / (1 + np.exp(-2 * logits))).astype(np.float32)
    fine = TagMAP(3, num_bins=10000)
    fine.update_state(yy, logits)
    exact = np.mean([np_average_precision(yy[:, t], logits[:, t]) for t in range(3)])
    assert float(fine.result()) == pytest.approx(exact, abs=5e-3)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(fine))
    assert clone.num_bins == 10000


# ------------------------------------------------------- paired bootstrap over images
def _random_pair(rng, n_images=40, c=4, hw=(12, 12)):
    labels = rng.integers(0, c, size=(n_images, *hw))
    labels[:, 0, 0] = 255  # an ignored pixel per image
    preds = np.where(rng.random(labels.shape) < 0.7, labels, rng.integers(0, c, labels.shape))
    preds = np.where(labels == 255, 0, preds)
    return labels, preds


def test_image_counts_and_miou_match_streaming_metric():
    from tf_mtl.metrics import image_iou_counts, iou_from_counts, miou_from_counts

    rng = np.random.default_rng(0)
    labels, preds = _random_pair(rng, n_images=5, c=5)
    preds[preds == 4] = 3  # class 4 never predicted; still in the ground truth
    metric = StreamingMeanIoU(5)
    metric.update_state(labels, preds)
    cm = metric.confusion_matrix().numpy()
    counts = np.stack([image_iou_counts(lab, p, 5) for lab, p in zip(labels, preds, strict=True)])
    np.testing.assert_array_equal(counts.sum(0), [np.diag(cm), cm.sum(1), cm.sum(0)])
    assert miou_from_counts(counts.sum(0)) == pytest.approx(float(metric.result()), abs=1e-6)
    np.testing.assert_allclose(iou_from_counts(counts.sum(0)), metric.per_class_iou().numpy(),
                               rtol=1e-6)
    # A class absent from ground truth and prediction does not count (as in the metric).
    padded = np.concatenate([counts.sum(0), np.zeros((3, 1))], axis=1)
    assert miou_from_counts(padded) == pytest.approx(miou_from_counts(counts.sum(0)))


def test_paired_bootstrap_orders_modes_only_when_the_images_agree():
    from tf_mtl.metrics import image_iou_counts, paired_bootstrap_miou

    rng = np.random.default_rng(1)
    labels, base = _random_pair(rng)
    better = np.where(rng.random(labels.shape) < 0.5, labels, base)  # fixes half the errors
    better = np.where(labels == 255, 0, better)
    # "mixed": better on the first half of the images, worse on the second half.
    worse = np.where(rng.random(labels.shape) < 0.21, (labels + 1) % 4, base)  # ~as many
    mixed = np.concatenate([better[:20], np.where(labels[20:] == 255, 0, worse[20:])])

    def cms(preds):
        return np.stack([image_iou_counts(lab, p, 4) for lab, p in zip(labels, preds, strict=True)])

    conf = {"base": cms(base), "better": cms(better), "mixed": cms(mixed), "same": cms(base)}
    out = paired_bootstrap_miou(conf, [("better", "base"), ("same", "base"), ("mixed", "base")],
                                num_samples=400)
    b = out[("better", "base")]
    assert b["diff"] > 0.05 and b["low"] > 0 and b["p_greater"] == 1.0
    assert b["low"] <= b["diff"] <= b["high"]
    s = out[("same", "base")]
    assert s["diff"] == s["low"] == s["high"] == 0.0 and s["p_greater"] == 0.0
    m = out[("mixed", "base")]
    assert m["low"] < 0 < m["high"] and 0.05 < m["p_greater"] < 0.95, m
    assert m["high"] - m["low"] > b["high"] - b["low"]  # image-to-image spread widens it
    # Same seed, same answer; paired: the same resamples for both sides.
    again = paired_bootstrap_miou(conf, [("mixed", "base")], num_samples=400)
    assert again[("mixed", "base")] == m
    with pytest.raises(ValueError, match="same images"):
        paired_bootstrap_miou({"a": conf["base"], "b": conf["base"][:5]}, [("a", "b")])
    with pytest.raises(ValueError, match="no per-image counts"):
        paired_bootstrap_miou(conf, [("base", "nope")])
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap_miou(conf, [("better", "base")], level=1.5)


def test_binary_map_scores_by_hand():
    """Six scored pixels and one ignored: probabilities 0.9, 0.7, 0.35 (edges), 0.6, 0.2,
    0.1 (not), 0.95 (ignored). At 0.5: tp 2, fp 1, fn 1 -> F1 2/3. At 0.35 (ODS): tp 3,
    fp 1 -> F1 6/7. AP: precision 1 at recall 1/3 and 2/3 (0.9, 0.7), then 3/4 at recall 1
    (0.35, with 0.6 above it): 1/3 + 1/3 + 3/4 * 1/3 = 0.9167."""
    p = np.array([0.9, 0.7, 0.35, 0.6, 0.2, 0.1, 0.95])
    logits = np.log(p / (1 - p)).reshape(1, 1, 7, 1).astype("float32")
    labels = np.array([[[1, 1, 1, 0, 0, 0, 255]]])
    m = BinaryMapScores(ignore_label=255)
    m.update_state(labels[:, :, :4], logits[:, :, :4])  # two batches accumulate
    m.update_state(labels[:, :, 4:], logits[:, :, 4:])
    got = {k: float(v) for k, v in m.results().items()}
    assert got["f1"] == pytest.approx(2 / 3, abs=1e-6)
    assert got["ods_f1"] == pytest.approx(6 / 7, abs=1e-6) == float(m.result())
    assert 0.21 - 1e-6 <= got["ods_threshold"] <= 0.35  # the lowest of the tied thresholds
    assert got["ap"] == pytest.approx(1 / 3 + 1 / 3 + 0.75 / 3, abs=1e-6)
    with pytest.raises(ValueError, match="even"):
        BinaryMapScores(num_bins=7)
