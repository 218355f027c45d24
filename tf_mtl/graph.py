"""Graph surgery on functional Keras networks: taps, splits, upstream layers.

Model-agnostic (any functional network whose call returns a dict of named outputs):
  * :class:`FeatureTaps` runs a network once and returns its outputs *and* named
    intermediate features, so a training-only branch sees the same forward pass the
    losses do (one BatchNorm update per step, no second trunk pass);
  * :func:`feature_model`: images -> a dict of named intermediate features;
  * :func:`split_at`: the network cut at one layer (the evidence ``latent`` mode);
  * :func:`upstream_layers`: the layers an output depends on.
All of them reuse the network's layers (same variables); nothing is copied.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import keras
import tensorflow as tf

__all__ = [
    "BranchTap",
    "FeatureTaps",
    "NetworkSplit",
    "SecondPass",
    "feature_model",
    "frozen_prefix",
    "output_tensor",
    "split_at",
    "upstream_layers",
]


@keras.saving.register_keras_serializable(package="tf_mtl")
class BranchTap(keras.layers.Identity):
    """A named feature with a tensor of its own (``tf.identity``), consumed only by the
    layers after it.

    Why: a plain Identity returns its input, so the gradient of that feature counts every
    consumer of the input. At a skip connection (DeepLab v3+'s decoder reading the
    backbone's ``low_level``) the gradient methods' shared representation (``rep_grad``)
    needs the skip's own share, or the representation's features would be nested and the
    per-task gradients would each pass through the rest of the trunk.
    """

    def call(self, inputs: Any) -> Any:
        return tf.identity(inputs)


def _history(t: Any) -> tuple[Any, Any]:
    op, node_index, _ = t._keras_history
    return op, op._inbound_nodes[node_index]


def output_tensor(network: keras.Model, key: str) -> Any:
    """The symbolic output ``key`` of a functional network with dict outputs."""
    out = network.output
    if isinstance(out, dict):
        if key not in out:
            raise ValueError(f"network has no output {key!r}; outputs: {sorted(out)}")
        return out[key]
    raise ValueError(f"network output must be a dict with key {key!r} (see ARCHITECTURE.md)")


def upstream_layers(network: keras.Model, key: str = "tags") -> list[Any]:
    """Layers of a functional network that the output ``key`` depends on."""
    seen: dict[int, Any] = {}
    stack = [output_tensor(network, key)]
    visited: set[int] = set()
    while stack:
        t = stack.pop()
        if id(t) in visited:
            continue
        visited.add(id(t))
        op, node = _history(t)
        seen[id(op)] = op
        stack.extend(node.input_tensors)
    return [op for op in seen.values() if not isinstance(op, keras.layers.InputLayer)]


# --------------------------------------------------------------------------- split
@dataclasses.dataclass
class NetworkSplit:
    """A functional network cut at one layer's output.

    ``trunk``: images -> ``[latent, *side]``; ``head``: ``[latent, *side]`` -> the
    network's output dict. ``side`` are tensors the head needs that do not depend
    on the latent (e.g. DeepLab's ``low_level`` skip). Both share the network's
    layers (same variables).
    """

    trunk: keras.Model
    head: keras.Model
    side_names: list[str]


def split_at(network: keras.Model, layer_name: str) -> NetworkSplit:
    """Split a functional network at ``layer_name``'s output (model-agnostic).

    Walks the functional graph back from the outputs: tensors downstream of the
    latent form the head; every input of a head node that does not depend on the
    latent (and every output independent of it) becomes a side input. Keras 3
    builds a sub-model from intermediate tensors by cloning graph nodes, so the
    head reuses the original layers.
    """
    try:
        latent = network.get_layer(layer_name).output
    except ValueError as err:
        raise ValueError(
            f"latent layer {layer_name!r} not found in network {network.name!r}; "
            "pass EvidenceConfig(latent_layer=...) naming an identity layer"
        ) from err
    outputs = network.output
    flat_outputs = list(outputs.values()) if isinstance(outputs, dict) else list(outputs)
    side_tensors = _side_tensors(flat_outputs, latent, _depends_on(latent))
    trunk = keras.Model(network.input, [latent, *side_tensors], name=f"{network.name}_trunk")
    head = keras.Model([latent, *side_tensors], outputs, name=f"{network.name}_head")
    names = [_history(t)[0].name for t in side_tensors]
    return NetworkSplit(trunk=trunk, head=head, side_names=names)


def _depends_on(latent: Any) -> Callable[[Any], bool]:
    """A memoised test of whether a tensor of the functional graph depends on ``latent``."""
    memo: dict[int, bool] = {}

    def depends(t: Any) -> bool:
        # iterative post-order to avoid recursion limits on deep backbones
        stack = [t]
        while stack:
            cur = stack[-1]
            if id(cur) in memo:
                stack.pop()
                continue
            if cur is latent:
                memo[id(cur)] = True
                stack.pop()
                continue
            _, node = _history(cur)
            pending = [u for u in node.input_tensors if id(u) not in memo]
            if pending:
                stack.extend(pending)
                continue
            memo[id(cur)] = any(memo[id(u)] for u in node.input_tensors)
            stack.pop()
        return memo[id(t)]

    return depends


def _side_tensors(flat_outputs: list[Any], latent: Any, depends: Callable[[Any], bool]
                  ) -> list[Any]:
    """The head's inputs besides the latent: every input of a node downstream of the latent
    (and every output) that does not depend on it, in the order the walk meets them."""
    side: dict[int, Any] = {}
    visited: set[int] = set()
    stack = []
    for t in flat_outputs:
        if depends(t):
            stack.append(t)
        else:
            side[id(t)] = t
    while stack:
        t = stack.pop()
        if id(t) in visited or t is latent:
            continue
        visited.add(id(t))
        _, node = _history(t)
        for u in node.input_tensors:
            if depends(u):
                stack.append(u)
            else:
                side[id(u)] = u
    return list(side.values())


def frozen_prefix(network: keras.Model, variables: Iterable[Any]) -> NetworkSplit | None:
    """The deepest cut of ``network`` at a named feature (an identity layer) whose trunk
    holds none of ``variables``, or None.

    Why: a prediction-time refit of the layers after the cut (ASPP, logits) sees the same
    trunk output at every step, so the trunk runs once per image instead of once per
    step (the backbone is most of the cost). The trunk includes every side input the
    head needs (DeepLab v3+'s ``low_level`` skip), so nothing it computes can change.
    """
    ids = {id(v) for v in variables}
    best, best_size = None, 0
    for layer in network.layers:
        if not isinstance(layer, keras.layers.Identity):
            continue
        try:
            split = split_at(network, layer.name)
        except ValueError:
            continue
        if any(id(v) in ids for v in split.trunk.variables):
            continue
        size = len(split.trunk.layers)
        if size > best_size:
            best, best_size = split, size
    return best


def _layer_output(network: keras.Model, name: str) -> Any:
    try:
        return network.get_layer(name).output
    except ValueError as err:
        named = [layer.name for layer in network.layers
                 if isinstance(layer, keras.layers.Identity)]
        raise ValueError(f"no layer {name!r} in network {network.name!r} to tap; named "
                         f"features (identity layers): {named}") from err


def feature_model(network: keras.Model, names: Iterable[str]) -> keras.Model:
    """A model from the network's inputs to a dict of the named intermediate features."""
    names = list(names)
    inputs = network.inputs[0] if len(network.inputs) == 1 else network.inputs
    return keras.Model(inputs, {n: _layer_output(network, n) for n in names},
                       name=f"{network.name}_features")


class FeatureTaps:
    """``taps(x, training) -> (outputs, features)`` in one forward pass of ``network``.

    Why: a training-only branch on an intermediate feature must see the pass whose
    outputs the losses read. Calling the network and then a feature model would run
    the trunk twice (BatchNorm moving statistics updated twice, twice the cost).
    Functional networks are tapped by a model over the same graph with the named
    layers' outputs added; any other network may implement
    ``call_with_features(x, names, training) -> (outputs, features)``.
    With no names this is a plain call of the network.
    """

    def __init__(self, network: keras.Model, names: Iterable[str] = ()) -> None:
        self.network = network
        self.names = tuple(dict.fromkeys(names))
        self._model = None
        if not self.names or hasattr(network, "call_with_features"):
            return
        if not isinstance(network.output, Mapping):
            raise ValueError(f"network {network.name!r}: tapping features needs a functional "
                             "network whose outputs are a dict (see ARCHITECTURE.md), or a "
                             "call_with_features(x, names, training) method")
        inputs = network.inputs[0] if len(network.inputs) == 1 else network.inputs
        features = {n: _layer_output(network, n) for n in self.names}
        self._model = keras.Model(inputs, {"outputs": dict(network.output), "features": features},
                                  name=f"{network.name}_tapped")

    def symbolic(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The (outputs, features) KerasTensors of a tapped functional network (to build
        heads on before training), or None where there is no graph to read them from."""
        if self._model is None:
            return None
        return dict(self._model.output["outputs"]), dict(self._model.output["features"])

    def __call__(self, x: Any, training: bool | None = None
                 ) -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor]]:
        if not self.names:
            return self.network(x, training=training), {}
        if self._model is None:
            return self.network.call_with_features(x, self.names, training=training)
        out = self._model(x, training=training)
        return dict(out["outputs"]), dict(out["features"])


class SecondPass:
    """``features(x) -> {name: tensor}``: the network's named features on *another* input
    (a noisy or grey copy of the batch), in training mode but leaving BatchNorm's moving
    statistics where the main pass put them.

    Why: an auxiliary task whose input is not the batch's images (denoising,
    colourisation) needs a second pass through the shared trunk. Run as a plain call it
    would move BatchNorm's statistics towards corrupted images, which inference never
    sees; through ``stateless_call`` it normalises with its own batch statistics, its
    gradients reach the shared weights, and the state updates are dropped.
    """

    def __init__(self, network: keras.Model, names: Iterable[str]) -> None:
        self.model = feature_model(network, names)

    def __call__(self, x: Any) -> dict[str, tf.Tensor]:
        m = self.model
        trainable = [v.value for v in m.trainable_variables]
        non_trainable = [v.value for v in m.non_trainable_variables]
        out, _ = m.stateless_call(trainable, non_trainable, x, training=True)
        return dict(out)
