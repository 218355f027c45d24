"""Networks: the family registry, shared layers, and one folder per family (``deeplab/``).

Imports nothing from ``deeplab_ext.data`` or ``deeplab_ext.run``. The registry's API is
re-exported here: ``from deeplab_ext.models import build_network, register_family``.
"""

from deeplab_ext.models import registry
from deeplab_ext.models.registry import *  # noqa: F403

__all__ = registry.__all__
