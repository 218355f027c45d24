"""Every registered layer through one harness (tf_mtl.testing.run_layer_test): weight
counts, output shapes, config and keras.saving round trips, symbolic calls.

A layer registered with keras.saving and missing from CASES fails
test_every_registered_layer_has_a_case: adding a layer means adding its case here."""

import importlib
import pkgutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import deeplab_ext
import tf_mtl
from tf_mtl.testing import run_layer_test


def _x(*shape, seed=0):
    return tf.constant(np.random.default_rng(seed).normal(size=shape).astype("float32"))


LOSSES = {"semantic": tf.constant(0.7), "tags": tf.constant(0.3)}
NORM = {"weight_decay": 1e-4, "momentum": 0.99, "epsilon": 1e-3, "sync": False}

# name -> (init kwargs, inputs, trainable, non-trainable, output shapes)
CASES = {
    "deeplab_ext>ConvBN": (dict(filters=6, kernel_size=3, strides=2, norm=NORM),
                           _x(2, 9, 9, 4), 3, 2, [(2, 5, 5, 6)]),
    "deeplab_ext>DepthwiseConvBN": (dict(kernel_size=3, dilation_rate=2), _x(2, 8, 8, 4),
                                    3, 2, [(2, 8, 8, 4)]),
    "deeplab_ext>SeparableConvBN": (dict(filters=5, pre_activation="relu"), _x(1, 8, 8, 4),
                                    6, 4, [(1, 8, 8, 5)]),
    "deeplab_ext>FusedBatchNorm": (dict(momentum=0.9), _x(2, 4, 4, 3), 2, 2, [(2, 4, 4, 3)]),
    "deeplab_ext>ResizeBilinear": ({}, [_x(1, 3, 3, 2), _x(1, 9, 7, 1)], 0, 0, [(1, 9, 7, 2)]),
    "deeplab_ext>Preprocess": (dict(mode="mean_subtraction"), _x(1, 4, 4, 3), 0, 0,
                               [(1, 4, 4, 3)]),
    "deeplab_ext>TagHead": (dict(num_tags=3, hidden=4, pooling="lse"), _x(2, 5, 5, 6), 4, 0,
                            [(2, 3)]),
    # image pooling, 1x1, two separable atrous branches, projection: 5 x (conv, bn) heads
    "deeplab_ext>ASPP": (dict(filters=8, atrous_rates=(2, 3), norm=NORM), _x(2, 9, 9, 4),
                         3 + 3 + 6 + 6 + 3, 2 + 2 + 4 + 4 + 2, [(2, 9, 9, 8)]),
    "deeplab_ext>Decoder": (dict(filters=8, low_level_filters=4),
                            [_x(1, 5, 5, 6), _x(1, 9, 9, 3)], 3 + 6 + 6, 2 + 4 + 4,
                            [(1, 9, 9, 8)]),
    # 3x3 ConvBN (kernel, gamma, beta; moving mean, variance), then the 1x1 conv with bias
    "deeplab_ext>TaskDecoder": (dict(filters=4, channels=2, norm=NORM), _x(2, 6, 6, 5),
                                3 + 2, 2, [(2, 6, 6, 2)]),
    "deeplab_ext>AttentionMask": (dict(channels=4, norm=NORM), _x(2, 6, 6, 5), 6, 4,
                                  [(2, 6, 6, 4)]),
    "deeplab_ext>MaxPoolWithArgmax": ({}, _x(2, 5, 5, 3), 0, 0, [(2, 3, 3, 3), (2, 3, 3, 3)]),
    "deeplab_ext>MaxUnpool": ({}, [_x(1, 2, 2, 3), tf.constant([[[[0, 1, 2], [6, 7, 8]],
                                                                  [[24, 25, 26], [30, 31, 32]]]],
                                                                tf.int64), _x(1, 4, 4, 3)],
                              0, 0, [(1, 4, 4, 3)]),
    "deeplab_ext>Upsample2x": ({}, _x(1, 3, 4, 2), 0, 0, [(1, 6, 8, 2)]),
    "tf_mtl>SegmentationTags": (dict(class_ids=(1, 2), temperature=5.0), _x(2, 6, 6, 3), 0, 0,
                                [(2, 2)]),
    "tf_mtl>ResizeLike": ({}, (_x(1, 3, 3, 2), _x(1, 6, 5, 1)), 0, 0, [(1, 6, 5, 2)]),
    "tf_mtl>FixedWeighting": (dict(weights={"semantic": 1.0, "tags": 0.5}), LOSSES, 0, 0, [()]),
    "tf_mtl>UncertaintyWeighting": (dict(task_names=["semantic", "tags"],
                                         kinds={"semantic": "classification",
                                                "tags": "classification"}),
                                    LOSSES, 2, 0, [()]),
    "tf_mtl>DynamicWeightAverage": (dict(task_names=["semantic", "tags"], window_steps=2),
                                    LOSSES, 0, 4, [()]),
    "tf_mtl>BranchTap": ({}, _x(1, 4, 4, 3), 0, 0, [(1, 4, 4, 3)]),
    # (name, trainable, non-trainable) of every other registered method
    **{f"tf_mtl>{name}": (dict(task_names=["semantic", "tags"]), LOSSES, trainable,
                          non_trainable, [()])
       for name, trainable, non_trainable in [
           ("RandomLossWeighting", 0, 0), ("GeometricLossStrategy", 0, 0), ("FAMO", 0, 6),
           ("PCGrad", 0, 0), ("GradVac", 0, 1), ("MGDA", 0, 0), ("CAGrad", 0, 0),
           ("IMTL", 1, 0), ("GradNorm", 1, 1), ("AlignedMTL", 0, 0), ("NashMTL", 0, 1),
           ("DBMTL", 0, 1)]},
    "tf_mtl>GradDrop": (dict(task_names=["semantic", "tags"], rep_grad=True), LOSSES, 0, 0,
                        [()]),
}


def _registered_layers() -> dict[str, type]:
    for package in (deeplab_ext, tf_mtl):
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            importlib.import_module(module.name)
    return {name: obj for name, obj in keras.saving.get_custom_objects().items()
            if name.split(">")[0] in ("deeplab_ext", "tf_mtl") and isinstance(obj, type)
            and issubclass(obj, keras.layers.Layer) and not issubclass(obj, keras.Model)}


def test_every_registered_layer_has_a_case():
    assert sorted(_registered_layers()) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_layer(name):
    kwargs, inputs, trainable, non_trainable, shapes = CASES[name]
    symbolic_ok = not isinstance(inputs, dict)  # loss weightings take a dict of scalars
    cls = keras.saving.get_registered_object(name)
    run_layer_test(cls, kwargs, inputs, expected_trainable=trainable,
                   expected_non_trainable=non_trainable, expected_output_shape=shapes,
                   symbolic=symbolic_ok)


def test_blocks_read_configs_written_before_norm_config():
    """A .keras file of an earlier version carries the four BatchNorm keywords."""
    from deeplab_ext.models.layers import ConvBN, NormConfig

    old = {"filters": 4, "kernel_size": 3, "weight_decay": 1e-4, "bn_momentum": 0.9,
           "bn_epsilon": 1e-3, "sync_batch_norm": False, "name": "conv"}
    layer = ConvBN.from_config(old)
    assert layer.norm == NormConfig(1e-4, 0.9, 1e-3, False)
    layer(_x(1, 4, 4, 2))
    assert layer.bn.momentum == 0.9 and layer.bn.epsilon == 1e-3


def test_harness_catches_a_config_that_does_not_round_trip():
    """The harness can fail: a layer that forgets an argument in get_config."""

    @keras.saving.register_keras_serializable(package="tests")
    class Forgetful(keras.layers.Layer):
        def __init__(self, scale=1.0, **kwargs):
            super().__init__(**kwargs)
            self.scale = scale

        def call(self, x):
            return x * self.scale

        def get_config(self):
            return {"name": self.name}

    with pytest.raises(AssertionError):
        run_layer_test(Forgetful, {"scale": 2.0}, _x(1, 2), expected_trainable=0)


def test_conv_blocks_keep_their_variable_order():
    """Conv before BatchNorm: the order of a network's variables is what the refit's
    gradient norms and the optimiser sum over, so a refactor that reorders them changes
    the numbers at round-off (issue 29: the demo's results must stay identical)."""
    from deeplab_ext.models.layers import ConvBN, DepthwiseConvBN

    for layer, first in ((ConvBN(4, 3, strides=2), "conv/kernel"),
                         (DepthwiseConvBN(3, strides=2), "depthwise/kernel")):
        layer.build((1, 9, 9, 2))
        names = [w.path.split("/", 1)[1] for w in layer.weights]
        assert names[0] == first and names[1:] == ["bn/gamma", "bn/beta", "bn/moving_mean",
                                                    "bn/moving_variance"], names
