"""DeepLab zoo: configs, backbone strides, network contract, MAC counts, save/load, CLI."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from deeplab_ext.models import build_network, get_variant, variable_groups
from deeplab_ext.models.deeplab.config import MODEL_VARIANTS, DeepLabConfig
from deeplab_ext.models.deeplab.model import FEATURE_NAMES
from tf_mtl.flops import count_macs, count_params
from tf_mtl.graph import feature_model

TINY = "deeplabv3plus_mobilenetv2_tiny_mt"


def get_config(variant: str, **overrides) -> DeepLabConfig:
    return get_variant(variant, **overrides)[1]


@pytest.fixture(scope="module")
def zoo_513():
    """Models at 513x513 built once per (variant, output_stride) for this module."""
    cache: dict = {}

    def get(variant: str, output_stride: int) -> keras.Model:
        key = (variant, output_stride)
        if key not in cache:
            cache[key] = build_network(
                variant, output_stride=output_stride, num_classes=21, input_shape=(513, 513, 3)
            )
        return cache[key]

    yield get
    cache.clear()


@pytest.fixture(scope="module")
def tiny():
    keras.utils.set_random_seed(0)
    return build_network(TINY)


# ----------------------------------------------------------------------------- config


def test_registry_has_named_variants_and_mt_versions():
    for base in (
        "deeplabv3plus_xception65",
        "deeplabv3plus_mobilenetv2",
        "deeplabv3_mobilenetv2",
        "deeplabv3plus_resnet50",
        "deeplabv3plus_resnet101",
        "deeplabv3plus_mobilenetv2_tiny",
    ):
        assert MODEL_VARIANTS[base].num_tags == 0
        mt = MODEL_VARIANTS[base + "_mt"]
        assert mt.num_tags == mt.num_classes - 1 == 20
    v3 = get_config("deeplabv3_mobilenetv2")
    assert v3.atrous_rates is None and v3.decoder_output_stride is None
    assert v3.aspp_with_image_pooling
    assert get_config("deeplabv3plus_resnet50").multi_grid == (1, 2, 4)


def test_atrous_rates_scale_with_output_stride():
    cfg = get_config("deeplabv3plus_xception65", output_stride=8)
    assert cfg.effective_atrous_rates() == (12, 24, 36)
    assert get_config("deeplabv3plus_xception65").effective_atrous_rates() == (6, 12, 18)
    assert get_config("deeplabv3_mobilenetv2", output_stride=8).effective_atrous_rates() == ()


def test_mt_num_tags_follow_num_classes_unless_given():
    assert get_config(TINY, num_classes=12).num_tags == 11
    assert get_config(TINY, num_classes=12, num_tags=5).num_tags == 5
    assert get_config("deeplabv3plus_mobilenetv2_tiny", num_classes=12).num_tags == 0


def test_bad_config_errors_name_the_flag():
    with pytest.raises(ValueError, match="--model_variant"):
        get_config("deeplabv3plus_nope")
    with pytest.raises(ValueError, match="--output_stride"):
        get_config(TINY, output_stride=12)
    with pytest.raises(ValueError, match="unknown DeepLabConfig field"):
        get_config(TINY, atrous_ratez=(1,))
    cfg = get_config(TINY)
    assert DeepLabConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


# ----------------------------------------------------------------------------- strides


@pytest.mark.parametrize(
    "variant",
    [
        "deeplabv3plus_xception65",
        "deeplabv3plus_mobilenetv2",
        "deeplabv3plus_resnet50",
        "deeplabv3plus_resnet101",
    ],
)
@pytest.mark.parametrize("output_stride,size", [(16, 33), (8, 65)])
def test_encoder_resolution_at_513(zoo_513, variant, output_stride, size):
    model = zoo_513(variant, output_stride)
    shape = lambda name: tuple(model.get_layer(name).output.shape)  # noqa: E731
    assert shape("encoder")[1:3] == (size, size)
    assert shape("backbone_output")[1:3] == (size, size)
    assert shape("low_level")[1:3] == (129, 129)
    assert shape("stride8")[1:3] == (65, 65)
    assert shape("decoder_output")[1:3] == (129, 129)
    assert model.output["semantic"].shape == (None, 513, 513, 21)
    if variant != "deeplabv3plus_mobilenetv2":
        assert shape("low_level")[3] == 256
    if output_stride == 16:
        assert shape("stride16")[1:3] == (33, 33)


# ----------------------------------------------------------------------------- MACs


@pytest.mark.parametrize(
    "variant,expected",
    [("deeplabv3plus_xception65", 54.17e9), ("deeplabv3_mobilenetv2", 2.75e9)],
)
def test_macs_match_original_model_zoo(zoo_513, variant, expected):
    macs = count_macs(zoo_513(variant, 16), (1, 513, 513, 3))
    assert abs(macs - expected) / expected < 0.05, macs


def test_macs_of_dilated_convs_use_output_size():
    x = keras.Input((33, 33, 8))
    y = keras.layers.Conv2D(16, 3, dilation_rate=4, padding="same", use_bias=False)(x)
    y = keras.layers.DepthwiseConv2D(3, dilation_rate=2, padding="same", use_bias=False)(y)
    y = keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(y))
    model = keras.Model(x, y)
    expected = 33 * 33 * 9 * 8 * 16 + 33 * 33 * 9 * 16 + 16 * 5
    assert count_macs(model, (1, 33, 33, 8)) == expected
    assert count_macs(model, (2, 33, 33, 8)) == 2 * expected


def test_count_macs_needs_static_shape(tiny):
    with pytest.raises(ValueError, match="input_shape"):
        count_macs(tiny, (1, 65, 3))


# ----------------------------------------------------------------------------- contract


def test_outputs_any_size_float32(tiny):
    for h, w in ((65, 65), (47, 70)):
        images = np.random.default_rng(0).uniform(0, 255, (2, h, w, 3)).astype("float32")
        out = tiny(images, training=False)
        assert set(out) == {"semantic", "tags"}
        assert tuple(out["semantic"].shape) == (2, h, w, 21)
        assert tuple(out["tags"].shape) == (2, 20)
        assert out["semantic"].dtype == "float32" and out["tags"].dtype == "float32"
        assert np.isfinite(np.asarray(out["semantic"])).all()


def test_named_layers_groups_and_biases(tiny):
    names = {layer.name for layer in tiny.layers}
    for name in (*FEATURE_NAMES, "aspp", "decoder", "logits", "tag_head", "images"):
        assert name in names, name
    groups = variable_groups(tiny)
    # task_heads: the scene variants' per-task decoders, empty here
    assert set(groups) == {"backbone", "aspp", "decoder", "logits", "tag_head", "task_heads"}
    assert all(groups[k] for k in groups if k != "task_heads") and not groups["task_heads"]
    assert sorted(v.path for v in groups["logits"]) == ["logits/bias", "logits/kernel"]
    assert sum(len(g) for g in groups.values()) == len(tiny.trainable_weights)
    biases = sorted(v.path for v in tiny.weights if v.path.endswith("/bias"))
    assert biases == ["logits/bias", "tag_head/logits/bias"]
    with_weights = [layer.name for layer in tiny.layers if layer.weights]
    others = {"aspp", "decoder", "logits", "tag_head"}
    assert all(n.startswith("backbone_") or n in others for n in with_weights)


def test_weight_decay_is_half_of_slim_scale(tiny):
    wd = tiny.model_config.weight_decay
    reg = tiny.get_layer("logits").kernel_regularizer
    assert reg.l2 == pytest.approx(wd / 2)
    kernel = tiny.get_layer("logits").kernel
    expected = wd * 0.5 * float(np.sum(np.square(np.asarray(kernel))))
    assert float(reg(kernel)) == pytest.approx(expected, rel=1e-5)
    # every conv / dense kernel is regularised, depthwise kernels are not (as the original)
    kernels = [v for v in tiny.weights if v.path.endswith("/kernel")]
    regularised = [v for v in kernels if not v.path.endswith("depthwise/kernel")]
    assert len(kernels) > len(regularised) > 40
    assert len(tiny.losses) == len(regularised)


def test_feature_model(tiny):
    fm = feature_model(tiny, ["low_level", "encoder"])
    feats = fm(np.zeros((1, 65, 65, 3), "float32"))
    assert tuple(feats["low_level"].shape)[1:3] == (17, 17)
    assert tuple(feats["encoder"].shape)[1:3] == (5, 5)
    with pytest.raises(ValueError, match="no layer"):
        feature_model(tiny, ["nope"])


def test_micro_variant_is_the_tiny_one_with_one_block_per_stage():
    """The suite's network: 7 inverted-residual blocks (layer_2..layer_8), the low-level
    feature still at stride 4 (the 24-channel stage's last block), the same taps; a block
    count for another backbone or of the wrong length is refused."""
    micro = build_network("deeplabv3plus_mobilenetv2_micro_mt", input_shape=(65, 65, 3))
    blocks = {n.split("_")[2] for n in (layer.name for layer in micro.layers)
              if n.startswith("backbone_layer_") and n.endswith("_project")}
    assert blocks == {str(i) for i in range(2, 9)}
    feats = feature_model(micro, ["low_level", "stride16", "encoder"])(np.zeros((1, 65, 65, 3)))
    assert [tuple(feats[k].shape)[1:3] for k in ("low_level", "stride16", "encoder")] == [
        (17, 17), (5, 5), (5, 5)]
    assert feats["low_level"].shape[-1] == 48  # 24 * 0.25 = 8 channels, expanded x6
    with pytest.raises(ValueError, match="backbone_blocks is for mobilenet_v2"):
        get_config("deeplabv3plus_resnet50", backbone_blocks=(1,) * 7)
    with pytest.raises(ValueError, match="needs 7 stages"):
        build_network(TINY, backbone_blocks=(1, 1), input_shape=(33, 33, 3))


def test_no_decoder_variant_keeps_named_taps():
    model = build_network("deeplabv3_mobilenetv2_tiny", input_shape=(65, 65, 3))
    names = {layer.name for layer in model.layers}
    assert set(FEATURE_NAMES) <= names and "decoder" not in names
    assert variable_groups(model)["decoder"] == []


# ----------------------------------------------------------------------------- save/load


def test_keras_and_weights_round_trip(tiny, tmp_path):
    images = np.random.default_rng(1).uniform(0, 255, (1, 49, 49, 3)).astype("float32")
    ref = tiny(images, training=False)
    tiny.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert type(loaded).__name__ == "DeepLab"
    assert loaded.model_config == tiny.model_config
    out = loaded(images, training=False)
    for k in ref:
        np.testing.assert_array_equal(np.asarray(out[k]), np.asarray(ref[k]))

    tiny.save_weights(tmp_path / "m.weights.h5")
    fresh = build_network(TINY)
    assert not np.allclose(
        np.asarray(fresh(images, training=False)["semantic"]), np.asarray(ref["semantic"])
    )
    fresh.load_weights(tmp_path / "m.weights.h5")
    out = fresh(images, training=False)
    for k in ref:
        np.testing.assert_array_equal(np.asarray(out[k]), np.asarray(ref[k]))


# ----------------------------------------------------------------------------- CLI


def test_model_info_prints_one_json_line(capsys):
    from absl import flags

    from tools import model_info

    flags.FLAGS(
        [
            "model_info",
            "--model_variant=deeplabv3_mobilenetv2_tiny",
            "--crop_size=65",
            "--output_stride=8",
        ]
    )
    try:
        model_info.main()
    finally:
        flags.FLAGS.unparse_flags()
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    info = json.loads(lines[0])
    model = build_network("deeplabv3_mobilenetv2_tiny", output_stride=8, input_shape=(65, 65, 3))
    assert info["params"] == count_params(model)
    assert info["macs"] == count_macs(model, (1, 65, 65, 3)) > 0
    assert info["encoder_shape"] == [9, 9, 32]
    assert info["output_stride"] == 8 and info["crop_size"] == [65, 65]


def test_tag_head_pooling_modes_share_weights_and_pool_location_scores():
    from deeplab_ext.models.layers import TagHead

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 5, 6)).astype("float32")
    heads = {p: TagHead(3, pooling=p, name=f"t_{p}") for p in ("avg", "max", "lse")}
    for h in heads.values():
        h.build(x.shape)
        h.set_weights(heads["avg"].get_weights())
    w, b = heads["avg"].get_weights()
    scores = x @ w + b  # every location's tag logits
    np.testing.assert_allclose(heads["avg"](x), scores.mean(axis=(1, 2)), atol=1e-5)
    np.testing.assert_allclose(heads["max"](x), scores.max(axis=(1, 2)), atol=1e-5)
    r = heads["lse"].lse_r
    lse = np.log(np.exp(r * scores).mean(axis=(1, 2))) / r
    np.testing.assert_allclose(heads["lse"](x), lse, atol=1e-5)
    # LSE lies between mean and max; a single bright location moves max/lse, barely avg.
    assert np.all(lse >= scores.mean(axis=(1, 2)) - 1e-6)
    assert np.all(lse <= scores.max(axis=(1, 2)) + 1e-6)
    with pytest.raises(ValueError, match="tag_head_pooling"):
        get_config("deeplabv3plus_mobilenetv2_tiny_mt", tag_head_pooling="sum")
    cfg = get_config("deeplabv3plus_mobilenetv2_tiny_mt", tag_head_pooling="max")
    assert build_network(cfg, input_shape=(33, 33, 3)).get_layer("tag_head").pooling == "max"


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("training", [True, False])
def test_fused_batch_norm_matches_keras_batch_norm(dtype, training):
    """The fused kernel computes what Keras' BatchNormalization computes (outputs, the
    gradients to inputs, gamma and beta, the moving statistics), up to rounding: two
    different op graphs, so a tolerance."""
    import tensorflow as tf

    from deeplab_ext.models.layers import FusedBatchNorm

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(2, 3, (4, 9, 7, 5)), dtype)
    gamma, beta = rng.uniform(0.5, 2, 5), rng.normal(0, 1, 5)
    results = []
    for cls in (keras.layers.BatchNormalization, FusedBatchNorm):
        layer = cls(momentum=0.9, epsilon=1e-5, dtype=dtype if dtype == "float32" else
                    "mixed_float16")
        layer.build(x.shape)
        layer.gamma.assign(gamma)
        layer.beta.assign(beta)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
            s = tf.reduce_sum(tf.cast(y, tf.float32) * tf.sin(tf.cast(x, tf.float32)))
        grads = tape.gradient(s, [x, layer.gamma, layer.beta])
        results.append((y, grads, layer.moving_mean, layer.moving_variance))
    (y0, g0, m0, v0), (y1, g1, m1, v1) = results
    tol = dict(rtol=1e-5, atol=2e-5) if dtype == "float32" else dict(rtol=2e-3, atol=4e-3)
    assert y1.dtype == y0.dtype
    np.testing.assert_allclose(np.float32(y1), np.float32(y0), **tol)
    for a, b in zip(g1, g0, strict=True):
        scale = float(np.abs(np.float32(b)).max())
        np.testing.assert_allclose(np.float32(a), np.float32(b), rtol=tol["rtol"],
                                   atol=tol["atol"] * max(scale, 1.0))
    np.testing.assert_allclose(m1.numpy(), m0.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v1.numpy(), v0.numpy(), rtol=1e-5, atol=1e-6)
    if training:  # the statistics moved, and by the biased batch variance (Keras' rule)
        var = np.float32(x).reshape(-1, 5).var(axis=0)
        np.testing.assert_allclose(v1.numpy(), 0.9 + 0.1 * var, rtol=1e-4)
