"""Auxiliary modules and deep supervision as training-only branches (Liu et al. 2019).

``--aux_modules=semantic[,edges]``: per named task, a :class:`tf_mtl.aux_modules.
AuxiliaryModule` on ``--aux_module_taps`` (DeepLab: the outputs of the backbone's
downsampling stages, ``low_level,stride8,stride16``) with ``--aux_module_adaptor`` and
``--aux_module_aggregator``, its prediction supervised by the task's own loss against the
task's own target (weight ``--aux_module_weight``, outside the task weighting).
``--deep_supervision=semantic[,edges]``: the paper's baseline instead: a 1x1 conv on each
tap predicts the task there, each such loss scaled by ``--deep_supervision_weight``
(0.1). Both are dropped at inference (never exported).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from deeplab_ext.tasks.base import Branch, BranchSpec, TaskContext, register_branch
from deeplab_ext.tasks.self_supervised import edge_loss
from tf_mtl.aux_modules import AuxiliaryModule, StageHeads
from tf_mtl.branches import OutputLoss
from tf_mtl.losses import label_map_loss

__all__ = ["MODULE_TASKS"]


def _semantic(ctx: TaskContext) -> tuple[int, Callable[..., Any], str]:
    info = ctx.info
    return info.num_classes, label_map_loss(info.num_classes, info.ignore_label), "semantic"


def _edges(ctx: TaskContext) -> tuple[int, Callable[..., Any], str]:
    return 1, edge_loss(ctx.info), "edges"


# task -> ctx -> (output channels, loss(target, prediction) resizing to the target, target)
MODULE_TASKS: dict[str, Callable[[TaskContext], tuple[int, Callable[..., Any], str]]] = {
    "semantic": _semantic, "edges": _edges}


def _tasks(names: tuple[str, ...], flag: str) -> list[str]:
    unknown = [n for n in names if n not in MODULE_TASKS]
    if unknown:
        raise ValueError(f"--{flag}: unknown task(s) {unknown}; known: {sorted(MODULE_TASKS)}")
    return list(dict.fromkeys(names))


def _taps(ctx: TaskContext) -> tuple[str, ...]:
    """``--aux_module_taps``, or the family's downsampling stages."""
    taps = tuple(ctx.options.aux_module_taps or ())
    if taps:
        return taps
    stages = ctx.family.stage_features
    if stages is None:
        raise ValueError(f"--aux_module_taps: model family {ctx.family.name!r} declares no "
                         f"downsampling stages; name the features to tap "
                         f"({list(ctx.family.feature_names)})")
    return tuple(stages(ctx.network.model_config))


def _modules(ctx: TaskContext) -> Branch:
    o, total = ctx.options, Branch()
    for task in _tasks(o.aux_modules, "aux_modules"):
        channels, loss, target = MODULE_TASKS[task](ctx)
        output = f"aux_module_{task}"
        head = AuxiliaryModule(_taps(ctx), o.aux_module_channels, channels, output,
                               o.aux_module_adaptor, o.aux_module_aggregator,
                               name=f"aux_module_{task}")
        total = total + Branch(heads=[head], targets=(target,), loss_terms=[OutputLoss(
            output, target, loss, o.aux_module_weight, name=f"aux_module_{task}_loss")])
    return total


def _deep_supervision(ctx: TaskContext) -> Branch:
    o, total = ctx.options, Branch()
    for task in _tasks(o.deep_supervision, "deep_supervision"):
        channels, loss, target = MODULE_TASKS[task](ctx)
        taps = _taps(ctx)
        head = StageHeads(taps, channels, f"deep_{task}", name=f"deep_{task}")
        terms = [OutputLoss(head.output_name(f), target, loss, o.deep_supervision_weight,
                            name=f"deep_{task}_{f}_loss") for f in taps]
        total = total + Branch(heads=[head], targets=(target,), loss_terms=terms)
    return total


_MODULE_OPTIONS = ("aux_module_taps", "aux_module_channels", "aux_module_adaptor",
                   "aux_module_aggregator")
register_branch(BranchSpec(
    "aux_modules", _modules, enabled=lambda o: bool(getattr(o, "aux_modules", None)),
    options=("aux_modules", *_MODULE_OPTIONS, "aux_module_weight")))
register_branch(BranchSpec(
    "deep_supervision", _deep_supervision,
    enabled=lambda o: bool(getattr(o, "deep_supervision", None)),
    options=("deep_supervision", "aux_module_taps", "deep_supervision_weight")))
