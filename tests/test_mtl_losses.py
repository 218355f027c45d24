"""Losses: the original DeepLab softmax CE (ignore, class weights, hard-pixel mining), tag BCE."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_mtl.losses import (
    SoftmaxCrossEntropyWithIgnore,
    TagBCE,
    softmax_cross_entropy_with_ignore,
    tag_bce,
)

C, IGN = 5, 255


def np_pixel_ce(labels, logits):
    """Per-pixel softmax CE (flattened); ignore pixels get 0."""
    lab = labels.reshape(-1)
    lg = logits.reshape(-1, logits.shape[-1]).astype(np.float64)
    lg = lg - lg.max(-1, keepdims=True)
    logp = lg - np.log(np.exp(lg).sum(-1, keepdims=True))
    keep = lab != IGN
    ce = np.zeros(lab.shape)
    ce[keep] = -logp[keep, lab[keep]]
    return ce, keep


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, C, size=(2, 8, 8)).astype(np.int32)
    labels[rng.random(labels.shape) < 0.2] = IGN
    logits = (3 * rng.standard_normal((2, 8, 8, C))).astype(np.float32)
    # Ignore pixels get extreme logits: they would dominate if they leaked into the loss.
    ign = labels == IGN
    logits[ign] = 0.0
    logits[ign, 1] = 50.0
    return labels, logits


def test_plain_ce_matches_numpy_mean_over_kept_pixels(batch):
    labels, logits = batch
    ce, keep = np_pixel_ce(labels, logits)
    got = float(softmax_cross_entropy_with_ignore(labels, logits, num_classes=C, ignore_label=IGN))
    assert got == pytest.approx(ce[keep].mean(), rel=1e-5)


def test_class_weights_normalised_by_kept_pixels(batch):
    labels, logits = batch
    weights = [1.0, 2.0, 0.5, 0.0, 3.0]
    ce, keep = np_pixel_ce(labels, logits)
    w = np.zeros_like(ce)
    w[keep] = np.asarray(weights)[labels.reshape(-1)[keep]]
    expect = (ce * w).sum() / keep.sum()  # the original divides by kept pixels
    got = float(
        softmax_cross_entropy_with_ignore(
            labels, logits, num_classes=C, ignore_label=IGN, class_weights=weights
        )
    )
    assert got == pytest.approx(expect, rel=1e-5)


def test_hard_pixel_mining_after_warmup_is_mean_of_top_quarter(batch):
    labels, logits = batch
    ce, keep = np_pixel_ce(labels, logits)
    k = int(0.25 * ce.size)  # the original: k over all pixels of the batch
    top = np.sort(ce)[::-1][:k]
    expect = top.sum() / np.count_nonzero(top)
    loss = SoftmaxCrossEntropyWithIgnore(
        C, IGN, top_k_percent_pixels=0.25, hard_example_mining_step=100
    )
    step = tf.Variable(100, dtype=tf.int64)
    loss.set_step(step)
    got_after = float(loss(labels, logits))
    assert got_after == pytest.approx(expect, rel=1e-5)
    step.assign(1000)  # ratio saturates at 1
    assert float(loss(labels, logits)) == pytest.approx(expect, rel=1e-5)
    # Mean of the hardest quarter is well above the mean over all kept pixels.
    assert got_after > 1.2 * ce[keep].mean()
    # Ignore pixels (huge wrong-class logits, would be the hardest) never contribute:
    # computing on the kept pixels only gives the same top-k values.
    assert top.min() > 0 and np.all(np.isin(top, ce[keep]))


def test_hard_pixel_mining_ramp_and_no_ramp(batch):
    labels, logits = batch
    ce, _ = np_pixel_ce(labels, logits)
    srt = np.sort(ce)[::-1]

    def ref(frac):
        top = srt[: int(frac * ce.size)]
        return top.sum() / np.count_nonzero(top)

    # Halfway through the ramp: fraction = 0.5 * 0.25 + 0.5 = 0.625.
    got = softmax_cross_entropy_with_ignore(
        labels,
        logits,
        num_classes=C,
        ignore_label=IGN,
        top_k_percent_pixels=0.25,
        hard_example_mining_step=100,
        step=50,
    )
    assert float(got) == pytest.approx(ref(0.625), rel=1e-5)
    # Step 0: all pixels kept -> equals the plain loss.
    got0 = softmax_cross_entropy_with_ignore(
        labels,
        logits,
        num_classes=C,
        ignore_label=IGN,
        top_k_percent_pixels=0.25,
        hard_example_mining_step=100,
        step=0,
    )
    plain = softmax_cross_entropy_with_ignore(labels, logits, num_classes=C, ignore_label=IGN)
    assert float(got0) == pytest.approx(float(plain), rel=1e-5)
    # hard_example_mining_step=0: the final fraction at once, no step needed.
    got_now = softmax_cross_entropy_with_ignore(
        labels, logits, num_classes=C, ignore_label=IGN, top_k_percent_pixels=0.25
    )
    assert float(got_now) == pytest.approx(ref(0.25), rel=1e-5)


def test_ignore_pixels_get_no_gradient(batch):
    labels, logits = batch
    x = tf.Variable(logits)
    loss = SoftmaxCrossEntropyWithIgnore(C, IGN, top_k_percent_pixels=0.25)
    with tf.GradientTape() as tape:
        value = loss(labels, x)
    grad = tape.gradient(value, x).numpy()
    assert np.all(grad[labels == IGN] == 0.0)
    assert np.abs(grad[labels != IGN]).sum() > 0


def test_errors_are_clear(batch):
    labels, logits = batch
    with pytest.raises(ValueError, match="upsample the logits"):
        softmax_cross_entropy_with_ignore(labels[:, :4], logits, num_classes=C, ignore_label=IGN)
    with pytest.raises(ValueError, match="training step"):
        SoftmaxCrossEntropyWithIgnore(
            C, IGN, top_k_percent_pixels=0.5, hard_example_mining_step=10
        )(labels, logits)
    with pytest.raises(ValueError, match="--top_k_percent_pixels"):
        SoftmaxCrossEntropyWithIgnore(C, IGN, top_k_percent_pixels=0.0)
    with pytest.raises(ValueError, match="class_weights"):
        SoftmaxCrossEntropyWithIgnore(C, IGN, class_weights=[1.0, 2.0])


def test_float16_logits_and_label_channel_axis(batch):
    labels, logits = batch
    ref = float(softmax_cross_entropy_with_ignore(labels, logits, num_classes=C, ignore_label=IGN))
    got = softmax_cross_entropy_with_ignore(
        labels[..., None], tf.cast(logits, tf.float16), num_classes=C, ignore_label=IGN
    )
    assert got.dtype == tf.float32
    assert float(got) == pytest.approx(ref, rel=2e-3)


def test_tag_bce_matches_numpy_and_roundtrips():
    rng = np.random.default_rng(1)
    labels = (rng.random((4, 6)) < 0.3).astype(np.float32)
    logits = rng.standard_normal((4, 6)).astype(np.float32)
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    expect = -(labels * np.log(p) + (1 - labels) * np.log(1 - p)).mean()
    assert float(tag_bce(labels, logits)) == pytest.approx(expect, rel=1e-5)
    assert float(TagBCE()(labels, logits)) == pytest.approx(expect, rel=1e-5)
    ce = SoftmaxCrossEntropyWithIgnore(
        21, 255, class_weights=[1.0] * 21, top_k_percent_pixels=0.5, hard_example_mining_step=7
    )
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(ce))
    assert clone.get_config() == ce.get_config()
    assert clone.hard_example_mining_step == 7 and clone.needs_step
