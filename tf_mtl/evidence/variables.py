"""Which variables a refit moves (weights mode)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras

from tf_mtl.graph import upstream_layers

__all__ = ["VariableSpec", "select_variables"]

# Which variables to refit: variables | layer names | predicate(variable path) | None.
VariableSpec = Sequence[Any] | Callable[[str], bool] | None


def select_variables(network: keras.Model, spec: VariableSpec = None, tags_key: str = "tags") -> list:
    """Resolve which variables to refit.

    ``spec`` may be: ``None`` (every trainable variable upstream of the tags output:
    trunk + tag branch, decoder excluded), a list of variables (e.g.
    ``groups["backbone"] + groups["aspp"] + groups["tag_head"]`` from
    ``deeplab_ext.models.variable_groups``), a list of layer names, or a predicate
    on variable paths (``lambda path: not path.startswith("decoder")``).
    Only trainable variables are refitted: BatchNorm moving statistics in an
    explicit list are dropped (they stay at their trained values).
    """
    if spec is None:
        found: dict[int, Any] = {}
        for layer in upstream_layers(network, tags_key):
            for v in layer.trainable_variables:
                found[id(v)] = v
        return [v for v in network.trainable_variables if id(v) in found]
    if callable(spec):
        chosen = [v for v in network.trainable_variables if spec(v.path)]
        if not chosen:
            raise ValueError("variable predicate matched no variable of the network")
        return chosen
    spec = list(spec)
    if spec and all(isinstance(s, str) for s in spec):
        chosen = []
        for name in spec:
            try:
                chosen.extend(network.get_layer(name).trainable_variables)
            except ValueError as err:
                raise ValueError(f"refit layer {name!r} not found in network") from err
        return chosen
    known = {id(v) for v in network.variables}
    for v in spec:
        if id(v) not in known:
            raise ValueError(f"variable {getattr(v, 'path', v)!r} does not belong to the network")
    trainable = {id(v) for v in network.trainable_variables}
    return [v for v in spec if id(v) in trainable]
