"""Multi-scale + flip inference (tf_mtl.inference) against a direct NumPy composition."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_mtl.inference import (
    multi_scale_probabilities,
    network_logits_fn,
    predict_segmentation,
    resize_bilinear_align_corners,
    scale_dimension,
)
from tf_mtl.testing import build_toy_network


@pytest.fixture(scope="module")
def net() -> keras.Model:
    return build_toy_network(num_classes=5, num_tags=3, width=8, seed=3)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.RandomState(1).uniform(0, 255, (2, 13, 17, 3)).astype("float32")


def np_resize_align_corners(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Reference bilinear resize, align_corners=True (corner pixels map to corners)."""
    _, h, w, _ = x.shape

    def coords(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        src = np.arange(n_out) * scale
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (src - lo).astype(np.float64)

    y0, y1, fy = coords(h, out_h)
    x0, x1, fx = coords(w, out_w)
    x = x.astype(np.float64)
    top = (
        x[:, y0][:, :, x0] * (1 - fx)[None, None, :, None]
        + x[:, y0][:, :, x1] * fx[None, None, :, None]
    )
    bot = (
        x[:, y1][:, :, x0] * (1 - fx)[None, None, :, None]
        + x[:, y1][:, :, x1] * fx[None, None, :, None]
    )
    return top * (1 - fy)[None, :, None, None] + bot * fy[None, :, None, None]


def np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_scale_dimension_matches_original():
    # (dim - 1) * scale + 1, as for the 513 crops of the original.
    got = [int(scale_dimension(513, s)) for s in (0.5, 0.75, 1.0, 1.25, 1.75)]
    assert got == [257, 385, 513, 641, 897]
    assert int(scale_dimension(13, 0.5)) == 7 and int(scale_dimension(17, 0.75)) == 13


def test_resize_matches_numpy_reference():
    x = np.random.RandomState(0).normal(size=(1, 5, 7, 2)).astype("float32")
    got = resize_bilinear_align_corners(tf.constant(x), [9, 4]).numpy()
    np.testing.assert_allclose(got, np_resize_align_corners(x, 9, 4), atol=1e-5)
    # corners are preserved exactly with align_corners
    np.testing.assert_allclose(
        got[:, [0, -1]][:, :, [0, -1]], x[:, [0, -1]][:, :, [0, -1]], atol=1e-6
    )
    same = resize_bilinear_align_corners(tf.constant(x), [5, 7]).numpy()
    np.testing.assert_array_equal(same, x)


def test_single_scale_equals_softmax_of_network(net, images):
    got = multi_scale_probabilities(network_logits_fn(net), images, scales=(1.0,))
    expect = tf.nn.softmax(net(images, training=False)["semantic"])
    np.testing.assert_array_equal(got.numpy(), expect.numpy())
    pred = predict_segmentation(net, images)
    assert pred["predictions"].dtype == tf.int32
    np.testing.assert_array_equal(pred["predictions"].numpy(), np.argmax(expect.numpy(), -1))


def test_multi_scale_flip_equals_numpy_composition(net, images):
    scales = (0.5, 0.75, 1.25)
    got = multi_scale_probabilities(network_logits_fn(net), images, scales, add_flipped_images=True)
    h, w = images.shape[1:3]
    probs = []
    for s in scales:
        sh, sw = int((h - 1) * s + 1), int((w - 1) * s + 1)
        scaled = np_resize_align_corners(images, sh, sw).astype("float32")
        for flip in (False, True):
            inp = scaled[:, :, ::-1] if flip else scaled
            logits = net(np.ascontiguousarray(inp), training=False)["semantic"].numpy()
            assert logits.shape[1:3] == (sh, sw)
            if flip:
                logits = logits[:, :, ::-1]
            probs.append(np_softmax(np_resize_align_corners(logits, h, w)))
    expect = np.mean(probs, axis=0)
    assert got.shape == (2, h, w, 5)
    np.testing.assert_allclose(got.numpy(), expect, atol=2e-5)


def test_unscaled_logits_replace_the_scale_one_unflipped_call(net, images):
    calls = []

    def fn(x):
        calls.append(x.shape)
        return net(x, training=False)["semantic"]

    given = net(images, training=False)["semantic"]
    for scales, flip, expect_calls in (((1.0,), False, 0), ((0.5, 1.0), True, 3)):
        calls.clear()
        got = multi_scale_probabilities(fn, images, scales, flip, unscaled_logits=given)
        assert len(calls) == expect_calls
        np.testing.assert_allclose(got.numpy(),
                                   multi_scale_probabilities(fn, images, scales, flip).numpy(),
                                   atol=1e-6)
    # It is really used: other logits give other probabilities.
    other = multi_scale_probabilities(fn, images, unscaled_logits=given * 0.0)
    np.testing.assert_allclose(other.numpy(), 0.2, atol=1e-6)


def test_flip_averaging_makes_prediction_flip_equivariant(net, images):
    fn = network_logits_fn(net)
    flipped = images[:, :, ::-1].copy()
    for scales in ((1.0,), (0.5, 1.0)):
        with_flip = multi_scale_probabilities(fn, images, scales, add_flipped_images=True).numpy()
        of_flipped = multi_scale_probabilities(fn, flipped, scales, add_flipped_images=True).numpy()
        np.testing.assert_allclose(of_flipped, with_flip[:, :, ::-1], atol=1e-5)
    # Without flip averaging the (non-symmetric) toy network is not flip-equivariant,
    # so the check above is not vacuous.
    plain = multi_scale_probabilities(fn, images).numpy()
    plain_f = multi_scale_probabilities(fn, flipped).numpy()
    assert np.abs(plain_f - plain[:, :, ::-1]).max() > 1e-3


def test_flipped_logits_fn_is_used_for_flipped_inputs(images):
    calls = []

    def fn(x):
        calls.append("plain")
        return tf.zeros(tf.concat([tf.shape(x)[:3], [2]], 0))

    def fn_flipped(x):
        calls.append("flipped")
        return tf.concat(
            [
                tf.ones(tf.concat([tf.shape(x)[:3], [1]], 0)),
                tf.zeros(tf.concat([tf.shape(x)[:3], [1]], 0)),
            ],
            -1,
        )

    p = multi_scale_probabilities(fn, images, (1.0,), True, flipped_logits_fn=fn_flipped).numpy()
    assert calls == ["plain", "flipped"]
    e = np.exp(1.0)
    np.testing.assert_allclose(p[..., 0], 0.5 * (0.5 + e / (e + 1)), atol=1e-6)


def test_bad_scales_error():
    with pytest.raises(
        ValueError, match=r"eval_scales must be a non-empty list of positive floats"
    ):
        multi_scale_probabilities(
            lambda x: x, np.zeros((1, 3, 3, 3), "float32"), scales=(0.5, -1.0)
        )
    with pytest.raises(ValueError, match=r"eval_scales must be a list of positive floats"):
        multi_scale_probabilities(lambda x: x, np.zeros((1, 3, 3, 3), "float32"), scales=("a",))


def test_input_alignment_pads_onto_the_grid_and_crops_back(net):
    from tf_mtl.inference import InputAlignment

    al = InputAlignment.from_crop((65, 65), 16)
    assert al.aligned_size(64, 64) == (65, 65) and al.aligned_size(65, 70) == (65, 81)
    assert al.is_aligned(65, 81) and not al.is_aligned(64, 64)
    assert InputAlignment.from_crop((512, 512), 16).aligned_size(500, 513) == (512, 528)
    x = np.random.RandomState(0).uniform(0, 255, (2, 64, 60, 3)).astype("float32")
    padded = al.pad(x).numpy()
    assert padded.shape == (2, 65, 65, 3)
    np.testing.assert_array_equal(padded[:, :64, :60], x)  # the image itself untouched
    assert np.all(padded[:, 64:] == 127.5) and np.all(padded[:, :, 60:] == 127.5)
    seen = {}

    def fn(images, extra):
        seen["shape"] = tuple(images.shape)
        return {"probabilities": tf.zeros(tf.concat([tf.shape(images)[:3], [5]], 0)),
                "predictions": tf.zeros(tf.shape(images)[:3], tf.int32),
                "tags": tf.zeros([2, 4]) + extra}

    out = al.wrap(fn)(tf.constant(x), 1.0)
    assert seen["shape"] == (2, 65, 65, 3)
    assert tuple(out["probabilities"].shape) == (2, 64, 60, 5)
    assert tuple(out["predictions"].shape) == (2, 64, 60)
    assert tuple(out["tags"].shape) == (2, 4)
    assert InputAlignment().wrap(fn) is fn  # stride 1: nothing to do
