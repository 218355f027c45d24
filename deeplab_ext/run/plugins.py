"""The built-in plug-ins of a run, in one place: what a run can contain.

Each module below registers on import (``register_task``, ``register_branch``); they
import ``deeplab_ext.run.tasks``, so ``tasks`` imports this module on first use of its
registries rather than at its top. A user's own task or branch is a module given to
``--extra_modules`` that calls the same functions; the model families are listed the
same way in ``deeplab_ext/models/__init__.py``.

* tasks: ``semantic`` and ``tags`` (in ``tasks.py`` itself), ``class`` and ``box``
  (``object_tasks``: SegNet / MTAN's image-level heads), ``instance`` and ``depth``
  (``scene_tasks``: Kendall et al.'s scene network);
* training-only branches: ``label_decoder`` / ``label_encoder`` (``label_structure``:
  Mostajabi's frozen label-map decoder), ``aux_tasks`` (``self_supervised``: edges,
  denoising, colourisation), ``aux_modules`` / ``deep_supervision`` (``aux_modules``:
  Liu's auxiliary modules).
"""

from deeplab_ext.run import (  # noqa: F401  (each registers on import)
    aux_modules,
    label_structure,
    object_tasks,
    scene_tasks,
    self_supervised,
)
