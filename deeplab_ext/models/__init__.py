"""Networks: the family registry, shared layers, and one folder per family (``deeplab/``).

Imports nothing from ``deeplab_ext.data`` or ``deeplab_ext.run``.
"""

from deeplab_ext.models.registry import (
    DEFAULT_VARIANT,
    ModelConfig,
    ModelFamily,
    build_network,
    family_of,
    get_family,
    get_variant,
    group_variables,
    register_family,
    register_variant,
    variable_groups,
    variant_names,
)

__all__ = [
    "DEFAULT_VARIANT",
    "ModelConfig",
    "ModelFamily",
    "build_network",
    "family_of",
    "get_family",
    "get_variant",
    "group_variables",
    "register_family",
    "register_variant",
    "variable_groups",
    "variant_names",
]
