"""Task descriptors: which output a loss reads, how it is weighted and evaluated.

A `Task` ties one entry of the step's outputs to one entry of the targets (both named
like the task unless told otherwise), the loss that compares them, the metrics to update
and what a loss weighting needs (`kind` for uncertainty weighting, `weight` for fixed
weights).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

VALID_KINDS = ("classification", "regression")


@dataclasses.dataclass
class Task:
    """One task of a multi-task model.

    Attributes:
      name: key of the target dict (and, unless `output` is given, of the network's
        output dict). Also the prefix of the task's logs (`<name>_loss`, ...).
      loss: callable `loss(y_true, y_pred) -> scalar` (a `keras.losses.Loss` or a
        plain function). Predictions are cast to float32 before the loss.
      kind: "classification" or "regression"; uncertainty weighting uses
        1/sigma^2 for classification and 1/(2 sigma^2) for regression terms.
      metrics: keras metrics updated with `(y_true, y_pred)` of this task.
      eval_metrics: metrics updated only when evaluating (``test_step``, ``tools.eval``),
        never in a train step: costly ones (``InstanceQuality`` clusters the offsets in
        NumPy) that would slow every step for a number nobody reads there.
      output: key of the step's outputs when it differs from `name` (a network output,
        a training-only head's output, or a tapped feature).
      weight: the fixed weight used by `FixedWeighting`.
      target: key of the targets dict when it differs from `name` (e.g. deep supervision:
        Task("semantic_aux", ..., output="semantic_aux", target="semantic")).
    """

    name: str
    loss: Callable[..., Any]
    kind: str = "classification"
    metrics: list = dataclasses.field(default_factory=list)
    output: str | None = None
    weight: float = 1.0
    target: str | None = None
    eval_metrics: list = dataclasses.field(default_factory=list)

    @property
    def all_metrics(self) -> list:
        """What evaluation updates: ``metrics`` then ``eval_metrics``."""
        return [*self.metrics, *self.eval_metrics]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Task name must be a non-empty string, got {self.name!r}.")
        if self.kind not in VALID_KINDS:
            raise ValueError(
                f"Task {self.name!r}: kind={self.kind!r} is not valid; use one of {VALID_KINDS}."
            )
        if not callable(self.loss):
            raise TypeError(
                f"Task {self.name!r}: loss must be callable (a keras Loss or a function), "
                f"got {type(self.loss).__name__}."
            )
        if self.output is None:
            self.output = self.name
        if self.target is None:
            self.target = self.name
        self.metrics = list(self.metrics or [])
        self.weight = float(self.weight)

    @property
    def output_key(self) -> str:
        """Key of the step output this task reads (`output`, default `name`)."""
        return self.output or self.name

    @property
    def target_key(self) -> str:
        """Key of the target this task reads (`target`, default `name`)."""
        return self.target or self.name


def check_tasks(tasks: Sequence[Task]) -> list[Task]:
    """Validates a task list (non-empty, unique names) and returns it as a list."""
    tasks = list(tasks)
    if not tasks:
        raise ValueError("At least one Task is needed.")
    for t in tasks:
        if not isinstance(t, Task):
            raise TypeError(f"Expected tf_mtl.tasks.Task objects, got {type(t).__name__}.")
    names = [t.name for t in tasks]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"Task names must be unique; duplicated: {dupes}.")
    return tasks
