"""Multi-task loss weighting and gradient methods, one file per method.

Every module of this package is discovered (``base.WEIGHTINGS_REGISTRY``), and each
registers its method by name with its options and their ranges
(:func:`register_weighting`): adding a method is adding a file. ``WEIGHTINGS`` are the
names ``--loss_weighting`` takes.
"""

from __future__ import annotations

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
    weighting_class,
)
from tf_mtl.weighting.dwa import DWAEpochCallback, DynamicWeightAverage  # noqa: E402
from tf_mtl.weighting.fixed import FixedWeighting  # noqa: E402
from tf_mtl.weighting.uncertainty import UncertaintyWeighting  # noqa: E402

WEIGHTINGS = tuple(sorted(registered_weightings()))

__all__ = [
    "WEIGHTINGS",
    "weighting_class",
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
