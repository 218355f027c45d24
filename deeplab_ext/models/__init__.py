"""Networks: the family registry, shared layers, and one folder per family (``deeplab/``).

Imports nothing from ``deeplab_ext.data`` or ``deeplab_ext.run``. The registry's API is
re-exported here: ``from deeplab_ext.models import build_network, register_family``.
The built-in families register on import below: a new family is a folder like
``deeplab/`` and a name in that import (outside this package: a module given to
``--extra_modules``).
"""

from deeplab_ext.models import deeplab, registry, segnet  # noqa: F401  (families register)
from deeplab_ext.models.registry import *  # noqa: F403

__all__ = registry.__all__
