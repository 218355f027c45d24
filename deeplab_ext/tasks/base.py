"""What a run trains, by name: tasks on the network's outputs, and training-only branches.

A :class:`TaskSpec` names the targets it needs from the input pipeline
(``deeplab_ext.data.targets``) and builds its :class:`tf_mtl.tasks.Task` (loss, metrics,
kind, weight) from the run's context. A run has every registered task whose network output
exists (``semantic``; ``tags`` for models with a tag head).

A :class:`BranchSpec` builds a training-only :class:`Branch`: heads on tapped features,
loss terms, the tasks that read the heads' outputs and the targets they need
(``--training_branches=name``). Branches are trained and checkpointed with the model and
never exported. A new task or branch is a new file in this package (discovered) or a
module given to ``--extra_modules`` that calls :func:`register_task` /
:func:`register_branch`. ``semantic`` and ``tags``, every run's own, are registered here,
first, so they lead the task order (checkpoints and weightings follow that order).
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

from deeplab_ext.data.datasets import DatasetInfo
from deeplab_ext.models.registry import ModelFamily
from tf_mtl.branches import LossTerm, TrainingHead
from tf_mtl.graph import feature_model
from tf_mtl.inference import InputAlignment
from tf_mtl.losses import SoftmaxCrossEntropyWithIgnore, TagBCE
from tf_mtl.metrics import StreamingMeanIoU, TagPrecisionRecallF1
from tf_mtl.registry import Registry, discover
from tf_mtl.tasks import Task

__all__ = [
    "BRANCHES",
    "TASKS",
    "Branch",
    "BranchSpec",
    "TaskContext",
    "TaskSpec",
    "branch_record",
    "branches_from_record",
    "restore_branch_outputs",
    "build_branches",
    "build_tasks",
    "check_task_weight",
    "parse_task_weights",
    "register_branch",
    "register_task",
    "targets_of",
    "task_names",
    "task_pictures",
]


@dataclasses.dataclass(frozen=True)
class TaskContext:
    """What a task builder may read: the network, its family, the dataset, the options."""

    network: keras.Model
    family: ModelFamily
    info: DatasetInfo
    options: Any  # deeplab_ext.run.options.TrainOptions (or a look-alike in benches)

    def output_size(self, key: str) -> int:
        return int(self.network.output[key].shape[-1])


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One task on a network output, by name.

    ``output``: ``family -> network output key`` the task reads; a run has the task
    whenever its network has that output. ``targets``: input-pipeline targets it reads.
    ``picture``: ``(output [B, H, W, C], target or None) -> uint8 [B, H, W', 3]``, how a
    dense output looks: with a target, the target's picture and the output's side by side
    at the same scale (TensorBoard), without, the output's alone (``tools.vis``).
    """

    name: str
    build: Callable[[TaskContext], Task]
    targets: tuple[str, ...]
    output: Callable[[ModelFamily], str]
    picture: Callable[[Any, Any], Any] | None = None


_builtins_loading = []


def _load_builtins() -> None:
    """The plug-in files of ``deeplab_ext.tasks`` (each registers on import; they import
    this module, so they are discovered on first use of a registry, not imported here).
    One discovery for both registries: a plug-in registering into the other registry
    while this runs must not start a second, nested one (the order of the branches, which
    a checkpoint's heads follow, is the files' order)."""
    if not _builtins_loading:
        _builtins_loading.append(True)
        discover("deeplab_ext.tasks", skip=("base",))


TASKS: Registry[TaskSpec] = Registry("task", discover=_load_builtins)


def register_task(spec: TaskSpec, *, override: bool = False) -> TaskSpec:
    """Add a task; a name already taken is refused unless ``override``."""
    return TASKS.register(spec.name, spec, override=override)


def _spec(name: str) -> TaskSpec:
    return TASKS.get(name)


def task_names(network: keras.Model, family: ModelFamily) -> list[str]:
    """The tasks the network's outputs call for (every task whose output exists)."""
    outputs = set(network.output) if isinstance(network.output, dict) else set()
    return [s.name for s in TASKS.values() if s.output(family) in outputs]


def task_pictures(network: keras.Model, family: ModelFamily
                  ) -> dict[str, tuple[str, str, Callable[[Any, Any], Any]]]:
    """``{task: (output key, target key, picture)}`` of the network's tasks that draw
    their dense outputs (:attr:`TaskSpec.picture`)."""
    return {n: (_spec(n).output(family), _spec(n).targets[0], _spec(n).picture)
            for n in task_names(network, family) if _spec(n).picture is not None}


def parse_task_weights(text: str, flag: str = "--task_weights") -> dict[str, float]:
    """``"semantic=0.7,class=0.1"`` -> ``{"semantic": 0.7, "class": 0.1}``."""
    weights = {}
    for item in (i.strip() for i in (text or "").split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise ValueError(f"{flag}={text!r}: write task=weight pairs separated by commas, "
                             "e.g. semantic=0.7,class=0.1,box=0.2")
        check_task_weight(weights[name.strip()], f"{flag}={text} ({name.strip()})")
    return weights


def check_task_weight(value: float, flag: str) -> float:
    """A task weight is finite and >= 0 (0 turns the task off): a negative one maximises
    its loss, a NaN one trains NaN weights into the checkpoint."""
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{flag}: a task weight must be a finite number >= 0 (0 disables "
                         f"the task), got {value}")
    return value


def build_tasks(ctx: TaskContext, names: Sequence[str] | None = None) -> list[Task]:
    """The network's tasks (or the ``names`` of them); ``--task_weights`` replaces the
    weights of those it names."""
    names = task_names(ctx.network, ctx.family) if names is None else names
    tasks = [_spec(n).build(ctx) for n in names]
    weights = parse_task_weights(getattr(ctx.options, "task_weights", "") or "")
    unknown = sorted(set(weights) - {t.name for t in tasks})
    if unknown:
        raise ValueError(f"--task_weights: {unknown} are not tasks of this run; its tasks: "
                         f"{[t.name for t in tasks]}")
    for task in tasks:
        task.weight = check_task_weight(weights.get(task.name, task.weight),
                                        f"the weight of task {task.name!r}")
    return tasks


def targets_of(names: Sequence[str]) -> tuple[str, ...]:
    """The input-pipeline targets the named tasks read, in order, without repeats."""
    return tuple(dict.fromkeys(t for n in names for t in _spec(n).targets))


@dataclasses.dataclass
class Branch:
    """Training-only additions: heads, loss terms, the tasks reading the heads' outputs,
    the input-pipeline targets those need, and the head outputs that are per-pixel class
    logits (``label_maps``: shown beside the prediction in TensorBoard)."""

    heads: list[TrainingHead] = dataclasses.field(default_factory=list)
    loss_terms: list[LossTerm] = dataclasses.field(default_factory=list)
    tasks: list[Task] = dataclasses.field(default_factory=list)
    targets: tuple[str, ...] = ()
    label_maps: tuple[str, ...] = ()

    def __add__(self, other: Branch) -> Branch:
        return Branch(self.heads + other.heads, self.loss_terms + other.loss_terms,
                      self.tasks + other.tasks, tuple(dict.fromkeys(self.targets + other.targets)),
                      tuple(dict.fromkeys(self.label_maps + other.label_maps)))


@dataclasses.dataclass(frozen=True)
class BranchSpec:
    """A training-only branch by name; ``enabled(options)`` adds it without naming it in
    ``--training_branches`` (a branch with flags of its own, e.g. ``--label_decoder``).
    ``options``: the option fields ``build`` reads; the run directory records them, so a
    later tool can rebuild the branch and read its trained heads back
    (:func:`branches_from_record`)."""

    name: str
    build: Callable[[TaskContext], Branch]
    enabled: Callable[[Any], bool] | None = None
    options: tuple[str, ...] = ()


BRANCHES: Registry[BranchSpec] = Registry("training-only branch", "--training_branches",
                                          discover=_load_builtins)


def register_branch(spec: BranchSpec, *, override: bool = False) -> BranchSpec:
    """Add a training-only branch; a name already taken is refused unless ``override``."""
    return BRANCHES.register(spec.name, spec, override=override)


def _branch_names(options: Any, names: Sequence[str]) -> list[str]:
    """The named branches and those the options enable, in build order."""
    enabled = [s.name for s in BRANCHES.values() if s.enabled and s.enabled(options)]
    names = list(dict.fromkeys([*names, *enabled]))
    for name in names:
        BRANCHES.get(name)  # unknown: an error listing the registered ones
    return names


def build_branches(ctx: TaskContext, names: Sequence[str]) -> Branch:
    """The named branches and those the options enable, combined."""
    total = Branch()
    for name in _branch_names(ctx.options, names):
        total = total + BRANCHES[name].build(ctx)
    return total


def branch_record(options: Any, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``{branch: {option: value}}`` of the branches :func:`build_branches` builds, for the
    run directory."""
    return {name: {f: getattr(options, f) for f in BRANCHES[name].options}
            for name in _branch_names(options, names)}


def branches_from_record(network: keras.Model, family: ModelFamily, info: DatasetInfo,
                         record: dict[str, dict[str, Any]]) -> Branch:
    """The branches a run recorded, rebuilt in the same order (so their heads line up with
    the checkpoint's ``heads``), from the options recorded for each."""
    total = Branch()
    for name in _branch_names(types.SimpleNamespace(), list(record)):
        ctx = TaskContext(network, family, info, types.SimpleNamespace(**record[name]))
        total = total + BRANCHES[name].build(ctx)
    return total


def restore_branch_outputs(checkpoint_path: str, network: keras.Model, branch: Branch,
                           alignment: InputAlignment, example: tf.Tensor
                           ) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    """``images -> {head output: tensor}`` of a trained run's training-only ``branch``
    (rebuilt by :func:`branches_from_record`), its heads read back from the checkpoint,
    every spatial output resized (bilinear) to the images' size so tools score branch
    tasks on the same pixels as the served ones. ``example``: an input batch to build
    the heads on."""
    if not branch.heads:
        return lambda images: {}
    features = feature_model(network, dict.fromkeys(f for h in branch.heads for f in h.features))
    for h in branch.heads:  # variables exist before the checkpoint is read into them
        h(features(alignment.pad(example), training=False), training=False)
    tf.train.Checkpoint(heads=list(branch.heads)).read(checkpoint_path).expect_partial()

    def outputs(images: tf.Tensor) -> dict[str, tf.Tensor]:
        found = features(images, training=False)
        out: dict[str, tf.Tensor] = {}
        for h in branch.heads:
            out.update(h(found, training=False))
        size = tf.shape(images)[1:3]
        return {k: tf.image.resize(tf.cast(v, tf.float32), size, method="bilinear")
                if v.shape.rank == 4 else v for k, v in out.items()}

    return tf.function(alignment.wrap(outputs), reduce_retracing=True)


def _semantic(ctx: TaskContext) -> Task:
    info, options = ctx.info, ctx.options
    return Task(
        "semantic",
        SoftmaxCrossEntropyWithIgnore(
            num_classes=info.num_classes, ignore_label=info.ignore_label,
            top_k_percent_pixels=options.top_k_percent_pixels,
            hard_example_mining_step=options.hard_example_mining_step,
        ),
        kind="classification", output=ctx.family.semantic_output,
        metrics=[StreamingMeanIoU(info.num_classes, info.ignore_label, name="miou")],
    )


def _tags(ctx: TaskContext) -> Task:
    num_tags = ctx.output_size(ctx.family.tags_output)
    weight = check_task_weight(ctx.options.tag_loss_weight, "--tag_loss_weight")
    return Task("tags", TagBCE(), kind="classification", weight=weight,
                output=ctx.family.tags_output,
                metrics=[TagPrecisionRecallF1(num_tags, name="tag_f1")])


register_task(TaskSpec("semantic", _semantic, targets=("semantic",),
                       output=lambda family: family.semantic_output))
register_task(TaskSpec("tags", _tags, targets=("tags",),
                       output=lambda family: family.tags_output))
