"""Small serialisable Keras layers shared by the zoo's families.

Each block mirrors one of the original ``research/deeplab`` (slim ``conv2d`` + batch
norm, ``split_separable_conv2d``) so that padding and multiply-add counts line up with
the original; DeepLab's own heads (ASPP, the decoder) live in ``models/deeplab/layers.py``.
Every block that holds a BatchNorm takes one :class:`NormConfig` (Model Garden's
``norm_activation``): the BatchNorm momentum, epsilon and synchronisation and the weight
decay travel together instead of as four arguments through every block and backbone.
All layers are registered under the ``deeplab_ext`` package so ``.keras`` files reload
without ``custom_objects``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import keras
import tensorflow as tf

_PKG = "deeplab_ext"

__all__ = [
    "BN_EPSILON",
    "BN_MOMENTUM",
    "ConvBN",
    "DepthwiseConvBN",
    "NormConfig",
    "Preprocess",
    "ResizeBilinear",
    "SeparableConvBN",
    "TagHead",
    "fixed_padding",
    "l2_regularizer",
]

# The original's slim arg scope (``batch_norm_decay``, ``batch_norm_epsilon``).
BN_MOMENTUM, BN_EPSILON = 0.9997, 1e-5
# The keywords blocks took before NormConfig (still read from older .keras files).
_LEGACY_NORM_KEYS = {"weight_decay": "weight_decay", "bn_momentum": "momentum",
                     "bn_epsilon": "epsilon", "sync_batch_norm": "sync"}


def l2_regularizer(weight_decay: float) -> keras.regularizers.Regularizer | None:
    """slim's ``l2_regularizer(wd)`` is ``wd * sum(w**2) / 2``; Keras' L2(l) is ``l * sum(w**2)``."""
    if not weight_decay:
        return None
    return keras.regularizers.L2(weight_decay / 2.0)


def fixed_padding(x, kernel_size: int, rate: int = 1):
    """Pad like the original's ``fixed_padding`` (input-size independent, symmetric).

    Used before every strided conv so that odd crops (513 = 16*32+1) keep the corner
    alignment the original relies on, independent of whether H, W are even.
    """
    k_eff = kernel_size + (kernel_size - 1) * (rate - 1)
    total = k_eff - 1
    beg = total // 2
    end = total - beg
    if total == 0:
        return x
    return keras.ops.pad(x, [[0, 0], [beg, end], [beg, end], [0, 0]])


def _padded_shape(shape, kernel_size: int, rate: int = 1):
    total = kernel_size + (kernel_size - 1) * (rate - 1) - 1
    grow = lambda d: None if d is None else d + total  # noqa: E731
    return (shape[0], grow(shape[1]), grow(shape[2]), shape[3])


@keras.saving.register_keras_serializable(package=_PKG)
class FusedBatchNorm(keras.layers.BatchNormalization):
    """Keras' BatchNormalization computed by TensorFlow's fused kernel (``FusedBatchNormV3``
    and its gradient), as the original's slim ``batch_norm(fused=True)``.

    Keras 3 builds batch norm from separate moment, normalisation and gradient ops, about
    half of a MobileNetV2 train step's op time on CPU (BENCHMARKS 15). Same variables and
    the same rule as Keras for the moving statistics (the biased batch variance), so
    checkpoints and results carry over up to rounding. Falls back to Keras' path for what
    the kernel does not do (synchronised statistics, masks, renorm, other ranks or axes).
    """

    def _fusable(self, inputs, mask) -> bool:
        axis = self.axis if isinstance(self.axis, int) else (
            self.axis[0] if len(self.axis) == 1 else None)
        return (mask is None and not self.synchronized and not self.renorm and self.scale
                and self.center and len(inputs.shape) == 4 and axis in (-1, 3))

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        x = tf.cast(inputs, tf.float32)
        epsilon = self.epsilon
        if tf.config.list_logical_devices("GPU"):
            epsilon = max(epsilon, 1.001e-5)  # cuDNN's minimum (TF's own wrapper does this)
        gamma, beta = tf.cast(self.gamma, tf.float32), tf.cast(self.beta, tf.float32)
        moving_mean = tf.cast(self.moving_mean, tf.float32)
        moving_variance = tf.cast(self.moving_variance, tf.float32)
        if training and self.trainable:
            y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=gamma, offset=beta, mean=tf.zeros_like(gamma),
                variance=tf.ones_like(gamma), epsilon=epsilon, data_format="NHWC",
                is_training=True)
            # The kernel returns the Bessel-corrected variance; Keras' rule uses the biased.
            n = tf.cast(tf.size(x) // tf.shape(x)[-1], tf.float32)
            variance = variance * (n - 1.0) / tf.maximum(n, 1.0)
            self.moving_mean.assign(moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(
                moving_variance * self.momentum + variance * (1.0 - self.momentum))
        else:
            y, *_ = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=gamma, offset=beta, mean=moving_mean, variance=moving_variance,
                epsilon=epsilon, data_format="NHWC", is_training=False)
        return tf.cast(y, self.compute_dtype)


@dataclasses.dataclass(frozen=True)
class NormConfig:
    """BatchNorm and regularisation settings shared by every block of a network.

    ``weight_decay``: slim's L2 on conv kernels; ``momentum`` / ``epsilon``: BatchNorm's;
    ``sync``: synchronised statistics across replicas.
    """

    weight_decay: float = 0.0
    momentum: float = BN_MOMENTUM
    epsilon: float = BN_EPSILON
    sync: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "weight_decay", float(self.weight_decay))
        object.__setattr__(self, "momentum", float(self.momentum))
        object.__setattr__(self, "epsilon", float(self.epsilon))
        object.__setattr__(self, "sync", bool(self.sync))

    @classmethod
    def of(cls, value: NormConfig | Mapping[str, Any] | None) -> NormConfig:
        """A NormConfig from itself, its ``get_config`` dict, or None (the defaults)."""
        if value is None:
            return cls()
        if isinstance(value, NormConfig):
            return value
        return cls(**dict(value))

    def replace(self, **changes: Any) -> NormConfig:
        return dataclasses.replace(self, **changes)

    def batch_norm(self, name: str) -> keras.layers.Layer:
        return FusedBatchNorm(momentum=self.momentum, epsilon=self.epsilon,
                              synchronized=self.sync, name=name)

    def regularizer(self) -> keras.regularizers.Regularizer | None:
        return l2_regularizer(self.weight_decay)

    def get_config(self) -> dict:
        return dataclasses.asdict(self)


def _act(x, activation: str | None):
    if activation is None:
        return x
    if activation == "relu":
        return keras.ops.relu(x)
    if activation == "relu6":
        return keras.ops.relu6(x)
    raise ValueError(f"unsupported activation {activation!r}; use 'relu', 'relu6' or None")


class NormMixin:
    """A block that holds BatchNorm: its ``norm`` in ``get_config``, and older configs
    (the four keywords of before :class:`NormConfig`) still readable."""

    def _norm_config(self) -> dict:
        return {"norm": self.norm.get_config()}

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        legacy = {new: config.pop(old) for old, new in _LEGACY_NORM_KEYS.items() if old in config}
        if legacy:
            config["norm"] = {**NormConfig.of(config.get("norm")).get_config(), **legacy}
        return cls(**config)


class _PaddedConvBNMixin(NormMixin):
    """call/build/shape/config of "conv -> BN -> activation" with the original's explicit
    padding for strided convs; the conv is `self._conv()` (attribute names stay as
    checkpoints know them: ``conv`` / ``depthwise``)."""

    def _setup(self, kernel_size: int, strides: int, dilation_rate: int,
               activation: str | None, norm: NormConfig | Mapping[str, Any] | None,
               explicit_pad: bool) -> None:
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.dilation_rate = int(dilation_rate)
        self.activation = activation
        self.norm = NormConfig.of(norm)
        self._explicit_pad = explicit_pad

    def _conv(self):
        raise NotImplementedError

    def _padding(self) -> str:
        return "valid" if self._explicit_pad else "same"

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "dilation_rate": self.dilation_rate,
            "activation": self.activation,
            **self._norm_config(),
        }

    def _input_shape(self, input_shape):
        shape = tuple(input_shape)
        if self._explicit_pad:
            shape = _padded_shape(shape, self.kernel_size, self.dilation_rate)
        return shape

    def call(self, x, training=None):
        if self._explicit_pad:
            x = fixed_padding(x, self.kernel_size, self.dilation_rate)
        return _act(self.bn(self._conv()(x), training=training), self.activation)

    def build(self, input_shape):
        shape = self._input_shape(input_shape)
        self._conv().build(shape)
        self.bn.build(self._conv().compute_output_shape(shape))

    def compute_output_shape(self, input_shape):
        return self._conv().compute_output_shape(self._input_shape(input_shape))


@keras.saving.register_keras_serializable(package=_PKG)
class ConvBN(_PaddedConvBNMixin, keras.layers.Layer):
    """Conv2D (no bias) -> BatchNorm -> activation, i.e. slim ``conv2d`` under DeepLab's arg scope.

    Strided convs use the original's explicit ``fixed_padding`` + VALID; stride-1 convs
    use SAME (dilated or not).
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int = 1,
        strides: int = 1,
        dilation_rate: int = 1,
        activation: str | None = "relu",
        norm: NormConfig | Mapping[str, Any] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self._setup(kernel_size, strides, dilation_rate, activation, norm,
                    explicit_pad=int(strides) > 1 and int(kernel_size) > 1)
        self.conv = keras.layers.Conv2D(
            self.filters,
            self.kernel_size,
            strides=self.strides,
            dilation_rate=self.dilation_rate,
            padding=self._padding(),
            use_bias=False,
            kernel_regularizer=self.norm.regularizer(),
            kernel_initializer="he_normal",
            name="conv",
        )
        self.bn = self.norm.batch_norm("bn")  # after the conv: the variable order is kept

    def _conv(self):
        return self.conv

    def get_config(self) -> dict:
        return {**super().get_config(), "filters": self.filters}


@keras.saving.register_keras_serializable(package=_PKG)
class DepthwiseConvBN(_PaddedConvBNMixin, keras.layers.Layer):
    """DepthwiseConv2D (no bias, not regularised, as in the original) -> BN -> activation."""

    def __init__(
        self,
        kernel_size: int = 3,
        strides: int = 1,
        dilation_rate: int = 1,
        activation: str | None = "relu",
        norm: NormConfig | Mapping[str, Any] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._setup(kernel_size, strides, dilation_rate, activation, norm,
                    explicit_pad=int(strides) > 1)
        self.depthwise = keras.layers.DepthwiseConv2D(
            self.kernel_size,
            strides=self.strides,
            dilation_rate=self.dilation_rate,
            padding=self._padding(),
            use_bias=False,
            depthwise_initializer=keras.initializers.TruncatedNormal(stddev=0.33),
            name="depthwise",
        )
        self.bn = self.norm.batch_norm("bn")  # after the conv: the variable order is kept

    def _conv(self):
        return self.depthwise


@keras.saving.register_keras_serializable(package=_PKG)
class SeparableConvBN(NormMixin, keras.layers.Layer):
    """The original's ``split_separable_conv2d``: depthwise(rate) -> BN -> act -> 1x1 -> BN -> act.

    ``pre_activation`` covers Xception's units built with
    ``activation_fn_in_separable_conv=False`` (ReLU on the input, no activation inside).
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int = 3,
        strides: int = 1,
        dilation_rate: int = 1,
        activation: str | None = "relu",
        pre_activation: str | None = None,
        norm: NormConfig | Mapping[str, Any] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.dilation_rate = int(dilation_rate)
        self.activation = activation
        self.pre_activation = pre_activation
        self.norm = NormConfig.of(norm)
        self.depthwise = DepthwiseConvBN(self.kernel_size, self.strides, self.dilation_rate,
                                         activation=self.activation, name="depthwise",
                                         norm=self.norm)
        self.pointwise = ConvBN(self.filters, 1, activation=self.activation, name="pointwise",
                                norm=self.norm)

    def call(self, x, training=None):
        x = _act(x, self.pre_activation)
        return self.pointwise(self.depthwise(x, training=training), training=training)

    def build(self, input_shape):
        self.depthwise.build(input_shape)
        dw_shape = self.depthwise.compute_output_shape(input_shape)
        self.pointwise.build(dw_shape)

    def compute_output_shape(self, input_shape):
        dw_shape = self.depthwise.compute_output_shape(input_shape)
        return self.pointwise.compute_output_shape(dw_shape)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "dilation_rate": self.dilation_rate,
            "activation": self.activation,
            "pre_activation": self.pre_activation,
            **self._norm_config(),
        }


def resize_bilinear(x, height, width):
    """``tf.compat.v1.image.resize_bilinear(align_corners=True)``, as the original's _resize_bilinear."""
    y = tf.raw_ops.ResizeBilinear(
        images=x, size=tf.stack([height, width]), align_corners=True, half_pixel_centers=False
    )
    return tf.cast(y, x.dtype)


@keras.saving.register_keras_serializable(package=_PKG)
class ResizeBilinear(keras.layers.Layer):
    """Resize ``inputs[0]`` bilinearly to the spatial size of ``inputs[1]`` (dynamic shapes OK).

    Uses ``align_corners=True`` like the original, which is exact for OS*k+1 crops.
    """

    def __init__(self, align_corners: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.align_corners = bool(align_corners)

    def call(self, inputs):
        x, ref = inputs
        size = tf.shape(ref)[1:3]
        if self.align_corners:
            return resize_bilinear(x, size[0], size[1])
        return tf.cast(tf.image.resize(x, size, method="bilinear"), x.dtype)

    def compute_output_shape(self, input_shape):
        x_shape, ref_shape = input_shape
        return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[-1])

    def get_config(self) -> dict:
        return {**super().get_config(), "align_corners": self.align_corners}


_PREPROCESS_MODES = ("inception", "mean_subtraction")
MEAN_RGB = (123.15, 115.90, 103.06)


@keras.saving.register_keras_serializable(package=_PKG)
class Preprocess(keras.layers.Layer):
    """Backbone normalisation inside the model, so exported models take raw [0, 255] RGB.

    ``inception``: ``2/255*x - 1`` (mobilenet, xception); ``mean_subtraction``: ``x - MEAN_RGB``
    (resnet_v1_*_beta).
    """

    def __init__(self, mode: str = "inception", **kwargs):
        super().__init__(**kwargs)
        if mode not in _PREPROCESS_MODES:
            raise ValueError(f"Preprocess(mode={mode!r}): use one of {_PREPROCESS_MODES}")
        self.mode = mode

    def call(self, x):
        x = keras.ops.cast(x, self.compute_dtype)
        if self.mode == "inception":
            return x * (2.0 / 255.0) - 1.0
        return x - keras.ops.convert_to_tensor(MEAN_RGB, dtype=self.compute_dtype)

    def get_config(self) -> dict:
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package=_PKG)
class TagHead(keras.layers.Layer):
    """Image-level multi-label head on the encoder features.

    ``pooling="avg"``: global average pool -> [Dense(hidden, relu)] -> Dense(num_tags).
    ``pooling="max"`` / ``"lse"``: the same Dense layers score every location, then the
    scores are pooled over space (max, or log-mean-exp with sharpness ``lse_r``, Pinheiro &
    Collobert 2015): presence of a small object is not averaged away, and at prediction
    time the tag gradient reaches the locations where a class is seen. The weights have the
    same shapes in every mode. Returns float32 logits (sigmoid in the loss / at prediction).
    """

    def __init__(
        self,
        num_tags: int,
        hidden: int = 0,
        weight_decay: float = 0.0,
        pooling: str = "avg",
        lse_r: float = 4.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(num_tags) < 1:
            raise ValueError(f"TagHead(num_tags={num_tags}): need >= 1 tag")
        if pooling not in ("avg", "max", "lse"):
            raise ValueError(f"TagHead(pooling={pooling!r}): use 'avg', 'max' or 'lse'")
        self.num_tags = int(num_tags)
        self.hidden = int(hidden)
        self.weight_decay = float(weight_decay)
        self.pooling = pooling
        self.lse_r = float(lse_r)
        reg = l2_regularizer(self.weight_decay)
        self.hidden_dense = (
            keras.layers.Dense(
                self.hidden, activation="relu", kernel_regularizer=reg, name="hidden"
            )
            if self.hidden > 0
            else None
        )
        self.dense = keras.layers.Dense(
            self.num_tags, kernel_regularizer=reg, name="logits", dtype="float32"
        )

    def call(self, x):
        if self.pooling == "avg":
            y = keras.ops.mean(x, axis=(1, 2))
        else:
            y = x
        if self.hidden_dense is not None:
            y = self.hidden_dense(y)
        y = keras.ops.cast(self.dense(y), "float32")
        if self.pooling == "max":
            y = keras.ops.max(y, axis=(1, 2))
        elif self.pooling == "lse":
            r = self.lse_r
            n = keras.ops.cast(keras.ops.shape(y)[1] * keras.ops.shape(y)[2], "float32")
            y = (keras.ops.logsumexp(r * y, axis=(1, 2)) - keras.ops.log(n)) / r
        return y

    def build(self, input_shape):
        channels = input_shape[-1]
        if self.hidden_dense is not None:
            self.hidden_dense.build((input_shape[0], channels))
            channels = self.hidden
        self.dense.build((input_shape[0], channels))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_tags)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_tags": self.num_tags,
            "hidden": self.hidden,
            "weight_decay": self.weight_decay,
            "pooling": self.pooling,
            "lse_r": self.lse_r,
        }
