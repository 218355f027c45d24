"""The original DeepLab's variable names for this zoo's layers (importing released weights).

This zoo names a layer like the original's scope with ``/`` turned into ``_`` where
Keras needs flat layer names; :func:`original_variable_names` maps every variable path
back to the TF1 name the original's checkpoints (and its TFLite exports) use:

* the heads: ASPP branches at top level (``image_pooling``, ``aspp0``, ``aspp1..3``,
  ``concat_projection``), ``decoder/feature_projection0``, ``decoder/decoder_conv0|1``,
  ``logits/semantic`` (``weights``, ``biases``);
* conv + BatchNorm ``S``: ``S/weights``, ``S/BatchNorm/{gamma,beta,moving_mean,
  moving_variance}``; depthwise ``S/depthwise_weights``; a separable conv ``S`` is
  ``S_depthwise`` + ``S_pointwise`` (the original's ``split_separable_conv2d``);
* the backbone: each backbone's ``original_scope`` (``backbones.BACKBONES``).
The tag head has no original: its variables map to None.
"""

from __future__ import annotations

import keras

from deeplab_ext.models.deeplab.backbones import get_backbone
from tf_mtl.released import Entries, keras_model_entries

__all__ = ["keras_applications_weights", "original_variable_names"]

# Keras sub-path -> TF1 suffix, longest first (a separable conv's parts before plain ones).
_LEAVES = (
    ("/depthwise/depthwise/kernel", "_depthwise/depthwise_weights"),
    ("/depthwise/bn/", "_depthwise/BatchNorm/"),
    ("/pointwise/conv/kernel", "_pointwise/weights"),
    ("/pointwise/bn/", "_pointwise/BatchNorm/"),
    ("/conv/kernel", "/weights"),
    ("/depthwise/kernel", "/depthwise_weights"),
    ("/bn/", "/BatchNorm/"),
)
_HEADS = {"aspp": "", "decoder": "decoder/"}  # our head layer -> the original's scope prefix
_LOGITS = {"logits/kernel": "logits/semantic/weights", "logits/bias": "logits/semantic/biases"}
_BACKBONE = "backbone_"


def _translate(path: str, backbone: str) -> str | None:
    if path in _LOGITS:
        return _LOGITS[path]
    top, rest = path.split("/", 1)
    if top.startswith(_BACKBONE):
        scope = get_backbone(backbone).original_scope(top[len(_BACKBONE):])
    elif top in _HEADS:
        sub, rest = rest.split("/", 1)
        scope = _HEADS[top] + sub
    else:
        return None  # the tag head: the original has none
    rest = "/" + rest
    for ours, theirs in _LEAVES:
        if rest.startswith(ours):
            return scope + theirs + rest[len(ours):]
    raise ValueError(f"no original name for variable {path!r}")


def original_variable_names(network: keras.Model) -> dict[str, str | None]:
    """``{variable path: the original's TF1 name, or None}`` for a DeepLab network."""
    backbone = network.model_config.backbone
    return {v.path: _translate(v.path, backbone) for v in network.weights}


def keras_applications_weights(network: keras.Model, path: str) -> Entries:
    """A Keras Applications ImageNet ``.h5`` of the network's backbone, under the original's
    names (backbone initialisation: the heads are not in it)."""
    cfg = network.model_config
    app = get_backbone(cfg.backbone).keras_application
    if app is None:
        raise ValueError(f"--source={path}: Keras Applications weights can initialise "
                         f"mobilenet_v2 backbones; this model's is {cfg.backbone}")
    build, scope_of = app
    model = build(cfg.depth_multiplier)
    try:
        model.load_weights(path)
    except (ValueError, OSError) as e:
        raise ValueError(f"--source={path}: not the weights of a Keras Applications "
                         f"{model.name} at depth multiplier {cfg.depth_multiplier} ({e})") from e
    return keras_model_entries(model, scope_of)
