"""Multi-task loss weighting and gradient methods, one file per method.

Every module of this package is imported here, and each registers its method by name
(:func:`register_weighting`): adding a method is adding a file. ``WEIGHTINGS`` are the
names ``--loss_weighting`` takes.
"""

from __future__ import annotations

import importlib
import pkgutil

from tf_mtl.weighting.base import (
    GradientWeighting,
    LossWeighting,
    WeightingSpec,
    cosines,
    get_weighting,
    gram,
    parse_weighting_options,
    register_weighting,
    registered_weightings,
)

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "solvers"):
        importlib.import_module(f"{__name__}.{_module.name}")

from tf_mtl.weighting.dwa import DWAEpochCallback, DynamicWeightAverage  # noqa: E402
from tf_mtl.weighting.fixed import FixedWeighting  # noqa: E402
from tf_mtl.weighting.uncertainty import UncertaintyWeighting  # noqa: E402

WEIGHTINGS = tuple(sorted(registered_weightings()))

__all__ = [
    "WEIGHTINGS",
    "DWAEpochCallback",
    "DynamicWeightAverage",
    "FixedWeighting",
    "GradientWeighting",
    "LossWeighting",
    "UncertaintyWeighting",
    "WeightingSpec",
    "cosines",
    "get_weighting",
    "gram",
    "parse_weighting_options",
    "register_weighting",
    "registered_weightings",
]
