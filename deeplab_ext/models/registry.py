"""Model families and their named variants: the one registry every tool builds from.

A *family* (DeepLab, later SegNet / MTAN) is a config dataclass, a builder and the facts
the tools need about its networks: variable groups (what evidence refits), named
feature taps, which outputs are the segmentation and the tags, where the latent of the
evidence ``latent`` mode is. A *variant* is a named config of a family
(``--model_variant``). Adding a family is adding a folder that calls
:func:`register_family`; the run directory records the family and the module that
registered it, so every tool restores any family::

    register_family(ModelFamily(name="toy", config_class=ToyConfig, build=build_toy,
                                variable_groups={"trunk": "trunk_", "tag_head": "tag_"},
                                refit_groups=("trunk", "tag_head")),
                    variants={"toy_mt": ToyConfig(name="toy_mt", num_tags=4)})
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import keras

from deeplab_ext.models.layers import NormConfig
from tf_mtl.registry import Registry, discover

__all__ = [
    "DEFAULT_VARIANT",
    "ModelConfig",
    "all_families",
    "ModelFamily",
    "build_network",
    "family_of",
    "get_family",
    "get_variant",
    "group_variables",
    "register_family",
    "register_variant",
    "variable_groups",
    "variant_field",
    "variant_names",
]

DEFAULT_VARIANT = "deeplabv3plus_mobilenetv2_mt"


def variant_field() -> Any:
    """The ``--model_variant`` option (one default and help for every options dataclass)."""
    return dataclasses.field(default=DEFAULT_VARIANT, metadata={
        "help": "Zoo variant, e.g. deeplabv3plus_xception65[_mt] (python -m tools.model_info "
                "--list_variants lists them)."})


class ModelConfig:
    """Mixin for a family's config dataclass (fields ``name``, ``num_classes``, ``num_tags``).

    ``num_tags > 0`` means the network has a tag head. The one rule about tags lives
    here: overriding ``num_classes`` alone keeps a tag per class but background
    (``num_classes - 1``); :meth:`for_dataset` sets both from a dataset's own counts.
    """

    name: str
    num_classes: int
    num_tags: int

    def norm(self) -> NormConfig:
        """The BatchNorm / weight-decay settings every block of the network shares (the
        config's ``weight_decay``, ``bn_momentum``, ``bn_epsilon``, ``sync_batch_norm``)."""
        return NormConfig(self.weight_decay, self.bn_momentum, self.bn_epsilon,
                          self.sync_batch_norm)

    def replace(self, **overrides: Any) -> Any:
        """A copy with some fields changed (None = keep; unknown field -> ValueError)."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(f"unknown {type(self).__name__} field(s) {unknown}; valid fields: "
                             f"{sorted(names)}")
        # A segmentation tag head asked of a variant without tags brings the tags along.
        wants_tags = self.num_tags > 0 or overrides.get("tag_head") == "segmentation"
        if wants_tags and "num_tags" not in overrides and (
                "num_classes" in overrides or self.num_tags == 0):
            classes = int(overrides.get("num_classes", self.num_classes))
            overrides["num_tags"] = max(classes - 1, 1)
        if "num_tags" in overrides and "tag_class_ids" not in overrides:
            overrides["tag_class_ids"] = None  # the old record would not fit the new count
        return dataclasses.replace(self, **{k: v for k, v in overrides.items()
                                            if k in names})

    def for_dataset(self, num_classes: int, num_tags: int,
                    tag_class_ids: Sequence[int] | None = None) -> Any:
        """This config for a dataset with ``num_classes`` classes and ``num_tags`` tags (tag
        ``i`` of class ``tag_class_ids[i]``, recorded when given)."""
        cfg = self.replace(num_classes=num_classes,
                           num_tags=num_tags if self.num_tags > 0 else None)
        if tag_class_ids is not None and cfg.num_tags > 0 and hasattr(cfg, "tag_class_ids"):
            cfg = dataclasses.replace(cfg, tag_class_ids=tuple(int(c) for c in tag_class_ids))
        return cfg

    def to_dict(self) -> dict:
        """JSON-friendly dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Any:
        return cls(**d)


@dataclasses.dataclass(frozen=True)
class ModelFamily:
    """What the tools need to know about one family of networks.

    Attributes:
      name: recorded in every run directory (``model_config.json``).
      config_class: a dataclass with :class:`ModelConfig`'s methods.
      build: ``(config, input_shape) -> keras.Model``; the network takes raw RGB
        ``images`` ``[B, H, W, 3]`` in 0..255 and returns a dict of named outputs.
      variable_groups: group name -> layer-name prefix (evidence refit sets, reports).
      backbone_groups: the groups pretrained weights must cover for a fine-tune to make
        sense (``tools.import_weights`` and ``--tf_initial_checkpoint`` refuse a source
        that loads too little of them).
      refit_groups: groups refitted by default at prediction time (the trained encoder
        tag head's).
      refit_sets: tag head -> the refit sets worth trying for it, each a
        ``--evidence_refit`` value (``group[:bn]``, comma-separated; ``:bn`` = the group's
        BatchNorm scale and offset only, Tent's choice); the first is that head's default.
        A head without an entry: ``refit_groups`` and the same without its first group.
      feature_names: named intermediate features (identity layers) heads can tap.
      semantic_output / tags_output: output keys of the segmentation logits and the tag
        logits (serving, evaluation, evidence).
      latent_feature: the feature the evidence ``latent`` mode offsets (None: no single
        feature feeds every task, e.g. MTAN's per-task attention; no latent mode).
      shared_features: tapped features that cut every task's path to the shared weights
        (the representation of gradient methods' ``rep_grad``; those a variant lacks are
        left out); empty: none known.
      stage_features: ``config -> feature names``, the outputs of the downsampling stages,
        shallowest first (the default taps of auxiliary modules and deep supervision).
      describe: ``config -> dict`` of facts ``tools.model_info`` prints.
      input_stride: ``config -> int``, the total stride of the network: inputs of size
        ``k * stride + r`` with the training crop's ``r`` keep its sampling grid
        (prediction pads onto it, ``tf_mtl.inference.InputAlignment``); None = any size.
      original_names: ``network -> {variable path: TF1 name or None}``, the names of
        released weights of the family's original implementation (``tools.import_weights``).
      original_pooled_scopes: scopes of the original whose input is a global average
        (DeepLab's ``image_pooling``): what tells them from a parallel branch of the same
        shape when a TFLite export with stripped names is read by its structure.
      released_variants: variants with the layout of the original's released weights,
        smallest first (``tools.import_weights`` without ``--model_variant`` tries them).
      pretrained_backbone: ``(network, path) -> {TF1 name: (shape, read)}``, an ImageNet
        backbone file (Keras Applications ``.h5``) under those names.
      module: the module that registered the family (set by :func:`register_family`);
        a run directory records it so a new process can import it.
    """

    name: str
    config_class: type
    build: Callable[[Any, tuple], keras.Model]
    variable_groups: Mapping[str, str] = dataclasses.field(default_factory=dict)
    backbone_groups: tuple[str, ...] = ()
    refit_groups: tuple[str, ...] = ()
    refit_sets: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    feature_names: tuple[str, ...] = ()
    semantic_output: str = "semantic"
    tags_output: str = "tags"
    latent_feature: str | None = "encoder"
    shared_features: tuple[str, ...] = ()
    stage_features: Callable[[Any], tuple[str, ...]] | None = None
    describe: Callable[[Any], dict] | None = None
    input_stride: Callable[[Any], int] | None = None
    original_names: Callable[[keras.Model], dict[str, str | None]] | None = None
    original_pooled_scopes: tuple[str, ...] = ()
    released_variants: tuple[str, ...] = ()
    pretrained_backbone: Callable[[keras.Model, str], Any] | None = None
    module: str = ""

    def refit_choices(self, config: Any) -> tuple[str, ...]:
        """The refit sets for ``config``'s tag head, its default first."""
        head = getattr(config, "tag_head", "encoder")
        if self.refit_sets.get(head):
            return tuple(self.refit_sets[head])
        sets = [",".join(self.refit_groups)]
        if len(self.refit_groups) > 1:
            sets.append(",".join(self.refit_groups[1:]))
        return tuple(sets)


def _load_builtins() -> None:
    """The built-in families: one sub-package of ``deeplab_ext.models`` each (``deeplab``,
    ``segnet``), discovered, so a new family is a folder."""
    discover("deeplab_ext.models", packages_only=True)


FAMILIES: Registry[ModelFamily] = Registry("model family", discover=_load_builtins)
VARIANTS: Registry[tuple[str, Any]] = Registry("model variant", "--model_variant",
                                               discover=_load_builtins)


def register_family(family: ModelFamily, variants: Mapping[str, Any] | None = None, *,
                    override: bool = False) -> ModelFamily:
    """Register a family (and its variants); a name already taken is refused unless
    ``override``."""
    missing = [m for m in ("replace", "for_dataset", "to_dict", "from_dict")
               if not hasattr(family.config_class, m)]
    if missing or not dataclasses.is_dataclass(family.config_class):
        raise TypeError(f"family {family.name!r}: config_class must be a dataclass with "
                        f"ModelConfig's methods (missing {missing})")
    if not family.module:
        family = dataclasses.replace(family, module=family.build.__module__)
    FAMILIES.register(family.name, family, override=override)
    for name, config in (variants or {}).items():
        register_variant(name, family.name, config, override=override)
    return family


def register_variant(name: str, family: str, config: Any, *, override: bool = False) -> None:
    """Make ``config`` of ``family`` available as ``--model_variant=name``."""
    if family not in FAMILIES:
        raise ValueError(f"register_variant({name!r}): family {family!r} is not registered")
    if not isinstance(config, FAMILIES[family].config_class):
        raise TypeError(f"variant {name!r}: expected a {FAMILIES[family].config_class.__name__}")
    VARIANTS.register(name, (family, config), override=override)


def get_family(name: str, module: str | None = None) -> ModelFamily:
    """The family ``name``; ``module`` (as a run directory records it) is imported if needed."""
    if name not in FAMILIES and module:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ValueError(f"model family {name!r} is registered by module {module!r}, which "
                             f"cannot be imported ({e}); put it on PYTHONPATH") from e
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; registered: {sorted(FAMILIES)}. "
                         "Import the module that registers it (tools: --extra_modules=...).")
    return FAMILIES[name]


def all_families() -> list[ModelFamily]:
    """Every registered family, in registration order."""
    return FAMILIES.values()


def variant_names() -> list[str]:
    return sorted(VARIANTS)


def get_variant(variant: str, **overrides: Any) -> tuple[ModelFamily, Any]:
    """(family, config) of ``--model_variant=variant`` with ``overrides`` (None = keep)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown --model_variant={variant!r}; valid names: {variant_names()}")
    family, config = VARIANTS[variant]
    return FAMILIES[family], config.replace(**overrides)


def _family_of_config(config: Any) -> ModelFamily:
    # The exact class first: a family's config may subclass another's (MTAN of SegNet).
    for family in FAMILIES.values():
        if type(config) is family.config_class:
            return family
    for family in FAMILIES.values():
        if isinstance(config, family.config_class):
            return family
    raise TypeError(f"no registered model family takes a {type(config).__name__}")


def build_network(config: Any, *, input_shape: Sequence[int | None] = (None, None, 3),
                  **overrides: Any) -> keras.Model:
    """Build a network from a variant name or a family config (+ field overrides).

    The network carries ``model_family`` (the family's name) and ``model_config``.
    """
    if len(tuple(input_shape)) != 3 or tuple(input_shape)[-1] != 3:
        raise ValueError(f"input_shape={tuple(input_shape)} must be (H, W, 3) with H, W or None")
    if isinstance(config, str):
        family, config = get_variant(config, **overrides)
    else:
        family = _family_of_config(config)
        config = config.replace(**overrides)
    network = family.build(config, tuple(input_shape))
    network.model_family = family.name
    network.model_config = config
    return network


def family_of(network: keras.Model) -> ModelFamily:
    """The family a network was built by (``build_network`` / the family's builder)."""
    name = getattr(network, "model_family", None)
    if name is None:
        raise ValueError(f"network {network.name!r} records no model family; build it with "
                         "deeplab_ext.models.build_network or a registered family's builder")
    return get_family(name)


def variable_groups(network: keras.Model, trainable_only: bool = True) -> dict[str, list]:
    """The network's variables by its family's groups (layer-name prefixes).

    ``trainable_only=False`` also returns BatchNorm moving statistics.
    """
    prefixes = family_of(network).variable_groups
    groups: dict[str, list] = {g: [] for g in prefixes}
    for layer in network.layers:
        for group, prefix in prefixes.items():
            if layer.name.startswith(prefix):
                groups[group].extend(layer.trainable_weights if trainable_only else layer.weights)
                break
    return groups


BATCH_NORM_ONLY = ":bn"


def _batch_norm_variables(network: keras.Model) -> set[int]:
    """ids of every BatchNorm scale and offset in the network (nested layers included)."""
    return {id(v) for layer in network._flatten_layers(include_self=False)  # noqa: SLF001
            if isinstance(layer, keras.layers.BatchNormalization)
            for v in layer.trainable_weights}


def group_variables(network: keras.Model, groups: str | Iterable[str] | None = None,
                    flag: str = "--evidence_refit") -> list:
    """Trainable variables of the named groups ("backbone,aspp,tag_head"; ``group:bn``
    keeps the group's BatchNorm scale and offset only); None = the family's default refit
    set for the network's tag head. Unknown names raise a ValueError naming ``flag``."""
    family = family_of(network)
    if groups is None:
        groups = family.refit_choices(network.model_config)[0]
    if isinstance(groups, str):
        groups = [g.strip() for g in groups.split(",") if g.strip()]
    names = list(groups)
    all_groups = variable_groups(network)
    bad = [g for g in names if g.removesuffix(BATCH_NORM_ONLY) not in all_groups]
    if bad:
        raise ValueError(f"{flag}: unknown group(s) {bad} for model family {family.name!r}; "
                         f"valid: {sorted(all_groups)}, each optionally with "
                         f"{BATCH_NORM_ONLY} (its BatchNorm scale and offset only)")
    bn = _batch_norm_variables(network) if any(g.endswith(BATCH_NORM_ONLY) for g in names) \
        else set()
    out = []
    for g in names:
        variables = all_groups[g.removesuffix(BATCH_NORM_ONLY)]
        out += [v for v in variables if id(v) in bn] if g.endswith(BATCH_NORM_ONLY) \
            else variables
    return out
