"""Tasks and training-only branches, one file per plug-in.

``base`` holds the registries and what builds a run's tasks and branches (with
``semantic`` and ``tags``, every run's own); every other module here is discovered on
first use of a registry and registers itself: ``object_tasks`` (SegNet / MTAN's ``class``
and ``box``), ``scene_tasks`` (Kendall et al.'s ``instance`` and ``depth``),
``label_structure`` (Mostajabi's frozen label-map decoder: ``label_decoder``,
``label_encoder``), ``self_supervised`` (``aux_tasks``: edges, denoising, colourisation),
``aux_modules`` (Liu's ``aux_modules`` / ``deep_supervision``). Adding a task or a branch
is adding a file here (or a module given to ``--extra_modules``).
"""

from deeplab_ext.tasks import base
from deeplab_ext.tasks.base import *  # noqa: F401,F403  (the API: base.__all__)

__all__ = list(base.__all__)
