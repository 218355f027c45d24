"""Prediction-time evidence (tf_mtl.evidence) on a tiny contract-following network.

The graph refitter is checked against an eager reference that copies the model and
runs Keras' own optimizers with GradientTape + variable.assign.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import threading

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import GRAPH_ATOL, REPO, assert_same_argmax
from tf_mtl.evidence import (
    EvidenceConfig,
    EvidenceRefitter,
    prune_probabilities,
    select_variables,
    validate_evidence,
)
from tf_mtl.graph import split_at
from tf_mtl.inference import predict_segmentation
from tf_mtl.testing import build_toy_network

NUM_CLASSES, NUM_TAGS = 5, 4
TAG_CLASS_IDS = [1, 2, 3, 4]


def _randomise_bn(net: keras.Model, seed: int = 1) -> None:
    rng = np.random.RandomState(seed)
    bn = net.get_layer("backbone_bn")
    bn.moving_mean.assign(rng.normal(0, 0.1, bn.moving_mean.shape).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.5, 1.5, bn.moving_variance.shape).astype("float32"))


@pytest.fixture(scope="module")
def net() -> keras.Model:
    keras.utils.set_random_seed(0)
    net = build_toy_network(NUM_CLASSES, NUM_TAGS, width=8, seed=0)
    _randomise_bn(net)
    return net


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.RandomState(0).uniform(0, 255, (2, 12, 16, 3)).astype("float32")


@pytest.fixture(scope="module")
def tags() -> np.ndarray:
    return np.array([[1, 0, 1, 0], [0, 1, 0, 0]], "float32")


def _snapshot(net: keras.Model) -> list[np.ndarray]:
    return [v.numpy().copy() for v in net.variables]


def _bce(y: np.ndarray, logits: tf.Tensor) -> tf.Tensor:
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits))


def eager_reference(net, image, tag, cfg: EvidenceConfig, paths: list[str]) -> dict:
    """Copy the model; K eager steps of keras SGD/Adam with variable.assign; predict."""
    clone = keras.models.clone_model(net)
    clone.set_weights(net.get_weights())
    by_path = {v.path: v for v in clone.variables}
    refit = [by_path[p] for p in paths]
    anchors = [v.numpy().copy() for v in refit]
    if cfg.optimizer == "adam":
        opt = keras.optimizers.Adam(cfg.learning_rate, cfg.beta_1, cfg.beta_2, cfg.epsilon)
    else:
        opt = keras.optimizers.SGD(cfg.learning_rate)
    x, y = image[None], tag[None]
    taken = 0
    for _ in range(cfg.steps):
        with tf.GradientTape() as tape:
            logits = clone(x, training=False)["tags"]
            loss = _bce(y, logits)
            if cfg.alpha > 0:
                loss += cfg.alpha * tf.add_n(
                    [tf.reduce_sum(tf.square(v - a)) for v, a in zip(refit, anchors, strict=True)]
                )
        p = tf.sigmoid(logits).numpy()
        agree = np.all(np.where(y >= 0.5, p >= cfg.threshold + cfg.margin,
                                p < cfg.threshold - cfg.margin))
        if cfg.early_stopping and agree:
            break
        grads = tape.gradient(loss, refit)
        if cfg.clip_norm > 0:
            grads, _ = tf.clip_by_global_norm(grads, cfg.clip_norm)
        opt.apply_gradients(zip(grads, refit, strict=True))
        taken += 1
    out = clone(x, training=False)
    return {
        "probabilities": tf.nn.softmax(out["semantic"]).numpy()[0],
        "tags": tf.sigmoid(out["tags"]).numpy()[0],
        "steps": taken,
    }


REFERENCE_CASES = {
    "sgd": EvidenceConfig(steps=4, learning_rate=0.5, optimizer="sgd"),
    "adam": EvidenceConfig(steps=4, learning_rate=0.02, optimizer="adam"),
    "sgd_alpha": EvidenceConfig(steps=4, learning_rate=0.5, optimizer="sgd", alpha=0.3),
    "sgd_clip": EvidenceConfig(steps=4, learning_rate=0.5, optimizer="sgd", clip_norm=0.01),
    "adam_alpha_es": EvidenceConfig(
        steps=25, learning_rate=0.05, optimizer="adam", alpha=0.01, early_stopping=True
    ),
    "sgd_es_margin": EvidenceConfig(
        steps=40, learning_rate=0.5, optimizer="sgd", early_stopping=True, margin=0.3
    ),
}


@pytest.mark.parametrize("case", sorted(REFERENCE_CASES))
def test_matches_eager_reference_and_model_untouched(net, images, tags, case):
    cfg = REFERENCE_CASES[case]
    refitter = EvidenceRefitter(net, cfg)
    before = _snapshot(net)
    out = refitter(images, tags)
    after = _snapshot(net)
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True)), (
        "model variables changed"
    )
    paths = [v.path for v in refitter.refit_variables]
    assert "decoder/kernel" not in paths and "logits/kernel" not in paths
    for b in range(len(images)):
        ref = eager_reference(net, images[b], tags[b], cfg, paths)
        diff = np.abs(out["probabilities"].numpy()[b] - ref["probabilities"]).max()
        assert diff <= 1e-5, (case, b, diff)
        np.testing.assert_allclose(
            out["tag_probabilities_after"].numpy()[b], ref["tags"], atol=1e-5
        )
        assert int(out["steps_taken"][b]) == ref["steps"]
    if cfg.early_stopping:
        # early stopping must actually trigger before the cap for this setting
        assert int(np.min(out["steps_taken"])) < cfg.steps
        after = out["tag_probabilities_after"].numpy()
        agree = np.where(tags >= 0.5, after >= cfg.threshold + cfg.margin,
                         after < cfg.threshold - cfg.margin)
        assert agree.all()
    else:
        assert out["steps_taken"].numpy().tolist() == [cfg.steps] * len(images)


def test_clip_norm_bounds_each_step(net, images, tags):
    """Clipping is active at 0.01 (tags move less) and a no-op when above every norm."""
    base = EvidenceConfig(steps=4, learning_rate=0.5)
    free = EvidenceRefitter(net, base)(images, tags)
    loose = EvidenceRefitter(net, dataclasses.replace(base, clip_norm=1e6))(images, tags)
    tight = EvidenceRefitter(net, dataclasses.replace(base, clip_norm=0.01))(images, tags)
    np.testing.assert_allclose(loose["probabilities"], free["probabilities"], atol=1e-6)
    before = free["tag_probabilities_before"].numpy()
    moved = [np.abs(o["tag_probabilities_after"].numpy() - before).sum()
             for o in (free, tight)]
    assert 0 < moved[1] < 0.5 * moved[0], moved
    with pytest.raises(ValueError, match="clip_norm"):
        EvidenceConfig(clip_norm=-1.0)
    for mode_kw in ({"mode": "latent"},):
        lat = [EvidenceRefitter(net, dataclasses.replace(base, clip_norm=c, **mode_kw))(
            images, tags)["tag_probabilities_after"].numpy() for c in (0.0, 1e6, 1e-4)]
        np.testing.assert_allclose(lat[1], lat[0], atol=1e-6)
        assert np.abs(lat[2] - before).sum() < 0.5 * np.abs(lat[0] - before).sum()


def test_steps_zero_is_plain_inference(net, images, tags):
    refitter = EvidenceRefitter(net, EvidenceConfig(steps=5, learning_rate=1.0))
    out = refitter(images, tags, steps=0)
    plain = net(images, training=False)
    # The refitter's graph vs an eager call: the same math, float operations ordered
    # differently (GRAPH_ATOL); the class map agrees wherever the top two are not tied.
    np.testing.assert_allclose(
        out["probabilities"].numpy(), tf.nn.softmax(plain["semantic"]).numpy(),
        rtol=0, atol=GRAPH_ATOL)
    assert_same_argmax(out["predictions"].numpy(), tf.nn.softmax(plain["semantic"]).numpy())
    np.testing.assert_array_equal(  # one graph, the same tensor twice
        out["tag_probabilities_after"].numpy(), out["tag_probabilities_before"].numpy()
    )
    assert out["steps_taken"].numpy().tolist() == [0, 0]
    assert out["predictions"].dtype == tf.int32


def test_refit_moves_tags_towards_evidence(net, images, tags):
    out = EvidenceRefitter(net, EvidenceConfig(steps=10, learning_rate=0.05, optimizer="adam"))(
        images, tags
    )
    before = out["tag_probabilities_before"].numpy()
    after = out["tag_probabilities_after"].numpy()
    pos, neg = tags == 1, tags == 0
    # untrained toy: everything starts near 0.5; after refitting positives > 0.8, negatives < 0.2
    assert np.all(np.abs(before - 0.5) < 0.1)
    assert np.all(after[pos] > 0.8) and np.all(after[neg] < 0.2), after
    assert np.all(np.abs(after - tags) < np.abs(before - tags))
    # the segmentation changed too (the trunk moved), but stays a distribution
    plain = tf.nn.softmax(net(images, training=False)["semantic"]).numpy()
    assert np.abs(out["probabilities"].numpy() - plain).max() > 1e-3
    np.testing.assert_allclose(out["probabilities"].numpy().sum(-1), 1.0, atol=1e-5)


def test_variable_selection_forms(net, images, tags):
    cfg = EvidenceConfig(steps=3, learning_rate=0.5)
    default = [v.path for v in select_variables(net)]
    assert default == [
        "backbone_conv1/kernel",
        "backbone_conv1/bias",
        "backbone_conv2/kernel",
        "backbone_conv2/bias",
        "backbone_bn/gamma",
        "backbone_bn/beta",
        "aspp/kernel",
        "aspp/bias",
        "tag_head/kernel",
        "tag_head/bias",
    ]
    by_names = EvidenceRefitter(net, cfg, variables=["tag_head"])
    by_pred = EvidenceRefitter(net, cfg, variables=lambda p: p.startswith("tag_head/"))
    by_list = EvidenceRefitter(net, cfg, variables=net.get_layer("tag_head").trainable_variables)
    outs = [r(images, tags) for r in (by_names, by_pred, by_list)]
    for o in outs[1:]:
        np.testing.assert_array_equal(
            o["tag_probabilities_after"].numpy(), outs[0]["tag_probabilities_after"].numpy()
        )
    # Only the tag head moved: the segmentation is the plain prediction.
    plain = tf.nn.softmax(net(images, training=False)["semantic"]).numpy()
    np.testing.assert_allclose(outs[0]["probabilities"].numpy(), plain, rtol=0, atol=GRAPH_ATOL)
    assert (
        np.abs(
            outs[0]["tag_probabilities_after"].numpy() - outs[0]["tag_probabilities_before"].numpy()
        ).max()
        > 0.05
    )
    # BatchNorm moving statistics are never refitted, even when listed explicitly
    bn = net.get_layer("backbone_bn")
    only_bn = select_variables(net, [bn.moving_mean, bn.gamma])
    assert [v.path for v in only_bn] == ["backbone_bn/gamma"]
    with pytest.raises(ValueError, match="none of the selected variables feeds the tags"):
        EvidenceRefitter(net, cfg, variables=["decoder"])
    with pytest.raises(ValueError, match="refit layer 'nope' not found"):
        EvidenceRefitter(net, cfg, variables=["nope"])


def test_prune_probabilities():
    rng = np.random.RandomState(0)
    probs = tf.nn.softmax(rng.normal(size=(2, 3, 3, 5)).astype("float32")).numpy()
    tags = np.array([[1, 0, 0, 1], [0, 0, 0, 0]], "float32")
    raw = prune_probabilities(probs, tags, TAG_CLASS_IDS, renormalize=False).numpy()
    # image 0: classes 0 (background), 1 and 4 kept; 2, 3 zeroed
    np.testing.assert_array_equal(raw[0][..., [0, 1, 4]], probs[0][..., [0, 1, 4]])
    assert np.all(raw[0][..., [2, 3]] == 0)
    # image 1: no tags -> only background survives
    np.testing.assert_array_equal(raw[1][..., 0], probs[1][..., 0])
    assert np.all(raw[1][..., 1:] == 0)
    norm = prune_probabilities(probs, tags, TAG_CLASS_IDS).numpy()
    np.testing.assert_allclose(norm.sum(-1), 1.0, atol=1e-6)
    assert np.all(np.isin(np.argmax(norm[0], -1), [0, 1, 4])) and np.all(
        np.argmax(norm[1], -1) == 0
    )
    # no background (CamVid-like): keep_classes=()
    none = prune_probabilities(
        probs, tags, TAG_CLASS_IDS, keep_classes=(), renormalize=False
    ).numpy()
    assert np.all(none[0][..., 0] == 0) and np.all(none[1] == 0)
    with pytest.raises(ValueError, match="tags has 4 entries but tag_class_ids has 3"):
        prune_probabilities(probs, tags, [1, 2, 3])


def _seed_pruning(probs, tags, ids, keep=(0,)):
    """The seed's pruning as it was written before soft evidence (issue 43): a 0/1 mask."""
    onehot = tf.one_hot(ids, probs.shape[-1], dtype=tf.float32)
    present = tf.matmul(tf.convert_to_tensor(tags, tf.float32), onehot) > 0.5
    kept = tf.reduce_sum(tf.one_hot(list(keep), probs.shape[-1], dtype=tf.float32), 0) > 0.5
    out = probs * tf.cast(tf.logical_or(present, kept[None]), tf.float32)[:, None, None, :]
    return tf.math.divide_no_nan(out, tf.reduce_sum(out, axis=-1, keepdims=True))


def test_prune_strength_is_a_prior_and_one_is_the_seeds_pruning_exactly():
    rng = np.random.RandomState(1)
    probs = tf.nn.softmax(rng.normal(size=(3, 4, 5, 5)).astype("float32")).numpy()
    hard = np.array([[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1]], "float32")
    # Strength 1 (the default) with 0/1 tags: bit for bit the seed's pruning.
    np.testing.assert_array_equal(prune_probabilities(probs, hard, TAG_CLASS_IDS).numpy(),
                                  _seed_pruning(probs, hard, TAG_CLASS_IDS).numpy())
    np.testing.assert_array_equal(
        prune_probabilities(probs, hard, TAG_CLASS_IDS, strength=1.0).numpy(),
        _seed_pruning(probs, hard, TAG_CLASS_IDS).numpy())
    # Strength s: an untagged class keeps 1 - s of its probability, tagged ones and the
    # background all of it; a tag given with probability t keeps 1 - s * (1 - t).
    raw = prune_probabilities(probs, hard, TAG_CLASS_IDS, renormalize=False,
                              strength=0.25).numpy()
    np.testing.assert_allclose(raw[0][..., [0, 1, 4]], probs[0][..., [0, 1, 4]], rtol=1e-6)
    np.testing.assert_allclose(raw[0][..., [2, 3]], 0.75 * probs[0][..., [2, 3]], rtol=1e-6)
    soft = np.array([[0.6, 0, 0, 1]] * 3, "float32")
    raw = prune_probabilities(probs, soft, TAG_CLASS_IDS, renormalize=False,
                              strength=0.5).numpy()
    np.testing.assert_allclose(raw[..., 1], (1 - 0.5 * 0.4) * probs[..., 1], rtol=1e-6)
    np.testing.assert_allclose(raw[..., 2], 0.5 * probs[..., 2], rtol=1e-6)
    # Strength 0: no pruning (renormalising an unchanged distribution).
    np.testing.assert_allclose(
        prune_probabilities(probs, hard, TAG_CLASS_IDS, strength=0.0).numpy(), probs,
        rtol=0, atol=1e-6)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="prune strength .* must be in \\[0, 1\\]"):
            prune_probabilities(probs, hard, TAG_CLASS_IDS, strength=bad)
    with pytest.raises(ValueError, match="EvidenceConfig.prune_strength=1.5"):
        EvidenceConfig(prune_strength=1.5)


def test_soft_tags_are_the_refit_target(net, images):
    """A tag given as a probability is the target of the refit's cross-entropy (the eager
    reference's loss takes the same soft labels), and the refitter prunes with its
    strength."""
    soft = np.array([[0.7, 0, 1, 0.2], [0, 0.9, 0, 0]], "float32")
    cfg = EvidenceConfig(steps=4, learning_rate=0.5)
    refitter = EvidenceRefitter(net, cfg)
    out = refitter(images, soft)
    paths = [v.path for v in refitter.refit_variables]
    for b in range(len(images)):
        ref = eager_reference(net, images[b], soft[b], cfg, paths)
        np.testing.assert_allclose(out["probabilities"].numpy()[b], ref["probabilities"],
                                   atol=1e-5)
        np.testing.assert_allclose(out["tag_probabilities_after"].numpy()[b], ref["tags"],
                                   atol=1e-5)
    hard = EvidenceRefitter(net, cfg)(images, (soft >= 0.5).astype("float32"))
    assert np.abs(hard["tag_probabilities_after"].numpy()
                  - out["tag_probabilities_after"].numpy()).max() > 1e-3
    pruned = EvidenceRefitter(net, EvidenceConfig(steps=0, prune=True, prune_strength=0.5),
                              tag_class_ids=TAG_CLASS_IDS)(images, soft)
    plain = tf.nn.softmax(net(images, training=False)["semantic"])
    expect = prune_probabilities(plain, soft, TAG_CLASS_IDS, strength=0.5).numpy()
    np.testing.assert_allclose(pruned["probabilities"].numpy(), expect, rtol=0, atol=GRAPH_ATOL)


def test_prune_in_refitter_is_pruned_plain_inference(net, images, tags):
    out = EvidenceRefitter(net, EvidenceConfig(steps=0, prune=True), tag_class_ids=TAG_CLASS_IDS)(
        images, tags
    )
    plain = tf.nn.softmax(net(images, training=False)["semantic"])
    expect = prune_probabilities(plain, tags, TAG_CLASS_IDS).numpy()
    np.testing.assert_allclose(out["probabilities"].numpy(), expect, rtol=0, atol=GRAPH_ATOL)
    assert np.all(np.isin(out["predictions"].numpy()[1], [0, 2]))  # image 1: bg + class 2
    with pytest.raises(ValueError, match="prune=True needs tag_class_ids"):
        EvidenceRefitter(net, EvidenceConfig(prune=True))


def test_split_at_reproduces_network(net, images):
    split = split_at(net, "encoder")
    assert split.side_names == ["images", "low_level"]
    assert split.trunk.outputs[0].shape[-1] == 16
    feats = split.trunk(images, training=False)
    out = split.head(feats, training=False)
    ref = net(images, training=False)
    for k in ("semantic", "tags"):
        np.testing.assert_allclose(out[k].numpy(), ref[k].numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="latent layer 'nope' not found"):
        split_at(net, "nope")


@pytest.fixture(scope="module")
def latent_refitter(net):
    return EvidenceRefitter(
        net,
        EvidenceConfig(mode="latent", steps=8, learning_rate=0.05, optimizer="adam", alpha=1e-3),
    )


def test_latent_batch_independent_and_moves_tags(net, latent_refitter, images, tags):
    before = _snapshot(net)
    both = latent_refitter(images, tags)
    assert all(np.array_equal(a, b) for a, b in zip(before, _snapshot(net), strict=True))
    for b in range(2):
        alone = latent_refitter(images[b : b + 1], tags[b : b + 1])
        for k in ("probabilities", "tag_probabilities_after", "tag_probabilities_before"):
            np.testing.assert_allclose(
                both[k].numpy()[b], alone[k].numpy()[0], atol=1e-5, err_msg=k
            )
    after, start = both["tag_probabilities_after"].numpy(), both["tag_probabilities_before"].numpy()
    assert np.all(np.abs(after - tags) < np.abs(start - tags)), (start, after)
    assert np.mean(np.abs(start - tags)) - np.mean(np.abs(after - tags)) > 0.1, (start, after)
    assert both["steps_taken"].numpy().tolist() == [8, 8]
    # steps=0 is plain inference (through another graph: GRAPH_ATOL)
    zero = latent_refitter(images, tags, steps=0)
    np.testing.assert_allclose(
        zero["probabilities"].numpy(),
        tf.nn.softmax(net(images, training=False)["semantic"]).numpy(), rtol=0, atol=GRAPH_ATOL,
    )


def test_latent_early_stopping_per_image(net, images):
    # image 0 asks for what the net already predicts (stop at 0), image 1 needs work
    start = tf.sigmoid(net(images, training=False)["tags"]).numpy()
    easy = (start[0] >= 0.5).astype("float32")
    hard = 1.0 - (start[1] >= 0.5).astype("float32")
    refitter = EvidenceRefitter(
        net,
        EvidenceConfig(
            mode="latent", steps=50, learning_rate=0.05, optimizer="adam", early_stopping=True
        ),
    )
    out = refitter(images, np.stack([easy, hard]))
    taken = out["steps_taken"].numpy()
    assert taken[0] == 0 and 0 < taken[1] < 50, taken
    np.testing.assert_array_equal(
        out["tag_probabilities_after"].numpy() >= 0.5, np.stack([easy, hard]) == 1
    )


@pytest.mark.parametrize("mode", ["weights", "latent"])
def test_early_stopping_margin(net, images, mode):
    """A margin keeps refitting images whose tags agree only barely; margin 0 stops at once."""
    start = tf.sigmoid(net(images, training=False)["tags"]).numpy()
    evidence = (start >= 0.5).astype("float32")  # already agrees: plain ES takes no step
    cfg = EvidenceConfig(mode=mode, steps=60, learning_rate=0.05, optimizer="adam",
                         early_stopping=True)
    plain = EvidenceRefitter(net, cfg)(images, evidence)
    assert plain["steps_taken"].numpy().tolist() == [0, 0]
    slack = np.abs(start - 0.5).min(axis=-1)  # how far each image's closest tag is
    margin = float(min(0.45, slack.max() + 0.1))
    out = EvidenceRefitter(net, dataclasses.replace(cfg, margin=margin))(images, evidence)
    taken = out["steps_taken"].numpy()
    assert (taken > 0).all() and (taken < 60).all(), (taken, slack, margin)
    after = out["tag_probabilities_after"].numpy()
    np.testing.assert_array_equal(
        np.where(evidence == 1, after >= 0.5 + margin, after < 0.5 - margin), True
    )
    for bad in (-0.1, 0.5, 0.6):
        with pytest.raises(ValueError, match="margin"):
            EvidenceConfig(margin=bad)
    with pytest.raises(ValueError, match="margin"):
        EvidenceConfig(threshold=0.8, margin=0.25)


@pytest.mark.parametrize("mode", ["weights", "latent"])
def test_multi_scale_flip_combines_with_evidence(net, images, tags, mode):
    cfg = EvidenceConfig(
        mode=mode,
        steps=3,
        learning_rate=0.05,
        optimizer="adam",
        eval_scales=(0.75, 1.0),
        add_flipped_images=True,
    )
    refitter = EvidenceRefitter(net, cfg)
    zero = refitter(images, tags, steps=0)
    plain = predict_segmentation(net, images, (0.75, 1.0), add_flipped_images=True)
    np.testing.assert_allclose(
        zero["probabilities"].numpy(), plain["probabilities"].numpy(), atol=1e-6
    )
    out = refitter(images, tags)
    assert np.all(np.isfinite(out["probabilities"].numpy()))
    assert np.abs(out["probabilities"].numpy() - plain["probabilities"].numpy()).max() > 1e-4
    single = EvidenceRefitter(
        net, dataclass_replace(cfg, eval_scales=(1.0,), add_flipped_images=False)
    )(images, tags)
    # refitting itself does not depend on the evaluation scales
    np.testing.assert_allclose(
        out["tag_probabilities_after"].numpy(), single["tag_probabilities_after"].numpy(), atol=1e-6
    )


def dataclass_replace(cfg, **kw):
    import dataclasses

    return dataclasses.replace(cfg, **kw)


# ------------------------------------------------------------------ bad evidence
def test_bad_evidence_errors(net, images, tags):
    refitter = EvidenceRefitter(net, EvidenceConfig(steps=1))
    with pytest.raises(
        ValueError, match=r"tags: expected 4 tag values per image .* got shape \[2, 3\]"
    ):
        refitter(images, tags[:, :3])
    refitter(images, np.array([[1, 0.5, 0, 0], [0, 0, 0, 0.25]]))  # probabilities: soft evidence
    for bad, shown in ((1.5, "1.5"), (-0.25, "-0.25"), (np.nan, "nan")):
        with pytest.raises(ValueError, match=rf"tags: tag values must be probabilities in "
                           rf"\[0, 1\], got {shown} at index \[0, 1\]"):
            refitter(images, np.array([[1, bad, 0, 0], [0, 0, 0, 0]]))
        # the graph refuses them too (a caller of the SavedModel signature skips the check)
        with pytest.raises(tf.errors.InvalidArgumentError, match="tags must be probabilities"):
            refitter.refit_fn(tf.constant(images), tf.constant([[1, bad, 0, 0], [0, 0, 0, 0]],
                                                               tf.float32), tf.constant(1))
    with pytest.raises(ValueError, match=r"steps: must be an integer >= 0 .* got -1"):
        refitter(images, tags, steps=-1)
    with pytest.raises(ValueError, match=r"tags: 1 tag vectors for 2 images"):
        refitter(images, tags[:1])
    with pytest.raises(ValueError, match=r"--evidence_tags: expected 4 tag values"):
        validate_evidence([1, 0], 4, name="--evidence_tags")
    with pytest.raises(ValueError, match=r"--evidence_steps: must be an integer >= 0"):
        validate_evidence([1, 0, 0, 0], 4, steps=2.5, steps_name="--evidence_steps")
    with pytest.raises(ValueError, match=r"expected a numeric tag vector"):
        validate_evidence(["cat", "dog"], 4)
    np.testing.assert_array_equal(validate_evidence([True, False, 0, 1], 4), [[1, 0, 0, 1]])
    with pytest.raises(ValueError, match=r"EvidenceConfig.optimizer='rmsprop': must be one of"):
        EvidenceConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match=r"EvidenceConfig.steps=-2"):
        EvidenceConfig(steps=-2)
    # the graph itself also refuses negative steps (e.g. through a SavedModel signature)
    with pytest.raises(tf.errors.InvalidArgumentError, match="steps must be >= 0"):
        refitter.refit_fn(tf.constant(images), tf.constant(tags), tf.constant(-1))


# ------------------------------------------------------- export and concurrency
def test_saved_model_export_and_threads(net, images, tags, tmp_path):
    refitter = EvidenceRefitter(net, EvidenceConfig(steps=3, learning_rate=0.5))
    expect = refitter(images, tags)
    module = tf.Module()
    module.variables_ = list(net.variables)
    module.segment_with_evidence = refitter.refit_fn
    tf.saved_model.save(module, str(tmp_path / "sm"))
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    got = loaded.segment_with_evidence(tf.constant(images), tf.constant(tags), tf.constant(3))
    np.testing.assert_allclose(
        got["probabilities"].numpy(), expect["probabilities"].numpy(), atol=1e-6
    )
    # concurrent calls with different evidence give the sequential answers
    other = 1.0 - tags
    seq = refitter(images, other)["tag_probabilities_after"].numpy()
    results = {}

    def run(name, t):
        results[name] = refitter(images, t)["tag_probabilities_after"].numpy()

    threads = [threading.Thread(target=run, args=(n, t)) for n, t in (("a", tags), ("b", other))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    np.testing.assert_allclose(results["a"], expect["tag_probabilities_after"].numpy(), atol=1e-6)
    np.testing.assert_allclose(results["b"], seq, atol=1e-6)


def test_jit_compile_matches(net, images, tags):
    cfg = EvidenceConfig(steps=2, learning_rate=0.05, optimizer="adam", alpha=0.1)
    plain = EvidenceRefitter(net, cfg)(images, tags)
    jit = EvidenceRefitter(net, dataclass_replace(cfg, jit_compile=True))(images, tags)
    for k in ("probabilities", "tag_probabilities_after"):
        np.testing.assert_allclose(jit[k].numpy(), plain[k].numpy(), atol=1e-5, err_msg=k)


def test_bench_step_cost_is_about_one_forward_backward():
    from bench.bench_evidence import main

    res = main(["--size", "33", "--steps", "5", "--repeats", "5", "--width", "8"])
    assert res["fwd_bwd_ms"] > 0 and res["step_ms"] > 0
    # the functional loop should cost about one forward/backward per step (measured
    # ~0.8x on the dev box); a generous bound for a loaded 2-core machine
    assert res["ratio_step_to_fwd_bwd"] < 5, res


# ------------------------------------------------------------- mixed precision
MIXED_SCRIPT = textwrap.dedent(
    """
    import json, os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import keras, numpy as np
    from tf_mtl.evidence import EvidenceConfig, EvidenceRefitter
    from tf_mtl.testing import build_toy_network
    f32 = build_toy_network(5, 4, seed=0)
    keras.mixed_precision.set_global_policy("mixed_float16")
    f16 = build_toy_network(5, 4, seed=0)
    f16.set_weights(f32.get_weights())
    x = np.random.RandomState(0).uniform(0, 255, (2, 12, 16, 3)).astype("float32")
    t = np.array([[1, 0, 1, 0], [0, 1, 0, 0]], "float32")
    res = {"compute_dtype": f16.get_layer("aspp").compute_dtype,
           "var_dtype": f16.get_layer("aspp").kernel.dtype}
    for mode, opt, lr in (("weights", "sgd", 0.5), ("weights", "adam", 0.05),
                          ("latent", "adam", 0.05)):
        cfg = EvidenceConfig(mode=mode, steps=5, learning_rate=lr, optimizer=opt)
        a = EvidenceRefitter(f32, cfg)(x, t)
        b = EvidenceRefitter(f16, cfg)(x, t)
        res[mode + "_" + opt] = {
            "finite": bool(all(np.isfinite(v.numpy()).all() for v in b.values())),
            "prob_diff": float(np.abs(a["probabilities"].numpy() - b["probabilities"].numpy()).max()),
            "tag_diff": float(np.abs(a["tag_probabilities_after"].numpy()
                                     - b["tag_probabilities_after"].numpy()).max()),
            "steps": b["steps_taken"].numpy().tolist(),
            "dtype": b["probabilities"].dtype.name,
        }
    print("RESULT " + json.dumps(res))
    """
)


def test_mixed_float16_close_to_float32():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-c", MIXED_SCRIPT],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    res = json.loads(line[len("RESULT ") :])
    assert res["compute_dtype"] == "float16" and res["var_dtype"] == "float32"
    for case, r in res.items():
        if case.endswith("dtype"):
            continue
        assert r["finite"] and r["dtype"] == "float32", (case, r)
        assert r["steps"] == [5, 5], (case, r)  # no step skipped by the loss scale
        assert r["tag_diff"] < 1e-3, (case, r)
        # Adam on weights normalises tiny, float16-noisy gradients to ~lr-sized steps, so
        # weights that barely matter move differently; SGD/latent stay within fp16 noise.
        assert r["prob_diff"] < (5e-2 if case == "weights_adam" else 2e-3), (case, r)


# ------------------------------------------------------------------- safeguard
def test_refit_hurt_by_hand():
    from tf_mtl.evidence import refit_hurt

    tags = np.array([[1, 0], [1, 0], [1, 0], [1, 0], [1, 0]], "float32")
    before = np.array([[0.6, 0.3], [0.6, 0.3], [0.6, 0.3], [0.6, 0.45], [0.6, 0.3]], "float32")
    after = np.array([[0.6, 0.3],    # no step taken: never fires
                      [0.8, 0.2],    # loss down, nothing flipped: keep the refit
                      [0.55, 0.35],  # loss up: fall back
                      [0.99, 0.55],  # loss down, but the absent tag crossed 0.5: fall back
                      [0.4, 0.01]],  # loss down, the present tag crossed to absent: fall back
                     "float32")
    taken = np.array([0, 3, 3, 3, 3], "int32")
    got = refit_hurt(before, after, tags, taken).numpy()
    assert got.tolist() == [False, False, True, True, True]


@pytest.mark.parametrize("mode", ["weights", "latent"])
def test_safeguard_falls_back_exactly_when_the_refit_hurt(net, images, tags, mode):
    """An L2 pull so strong the second step overshoots (the tags end on the wrong side):
    the safeguard serves those images the plain prediction, and fires exactly where
    refit_hurt holds for the unguarded refit; a sane refit keeps its result."""
    from tf_mtl.evidence import refit_hurt

    plain = tf.nn.softmax(net(images, training=False)["semantic"]).numpy()
    for kw, want_any in ((dict(steps=2, learning_rate=0.1, alpha=100.0), True),
                         (dict(steps=3, learning_rate=0.05, optimizer="adam"), False)):
        cfg = EvidenceConfig(mode=mode, safeguard=False, **kw)
        free = EvidenceRefitter(net, cfg)(images, tags)
        guarded = EvidenceRefitter(net, dataclasses.replace(cfg, safeguard=True))(images, tags)
        want = refit_hurt(free["tag_probabilities_before"], free["tag_probabilities_after"],
                          tf.constant(tags), free["steps_taken"]).numpy()
        got = guarded["fell_back"].numpy()
        np.testing.assert_array_equal(got, want)
        assert bool(got.any()) == want_any, (kw, got)
        assert not free["fell_back"].numpy().any()  # off when turned off
        for b in range(len(images)):
            ref = plain[b] if got[b] else free["probabilities"].numpy()[b]
            np.testing.assert_allclose(guarded["probabilities"].numpy()[b], ref,
                                       rtol=0, atol=GRAPH_ATOL)
            after = (guarded["tag_probabilities_before"] if got[b]
                     else free["tag_probabilities_after"]).numpy()[b]
            np.testing.assert_allclose(guarded["tag_probabilities_after"].numpy()[b], after,
                                       rtol=0, atol=GRAPH_ATOL)
