"""Networks: the family registry, shared layers, and one folder per family (``deeplab/``,
``segnet/``).

Imports nothing from ``deeplab_ext.data`` or ``deeplab_ext.run``. The registry's API is
re-exported here: ``from deeplab_ext.models import build_network, register_family``.
Every sub-package is a family, discovered on the registry's first use: a new family is a
folder like ``deeplab/`` (outside this package: a module given to ``--extra_modules``).
"""

from deeplab_ext.models import registry
from deeplab_ext.models.registry import *  # noqa: F403

__all__ = registry.__all__
