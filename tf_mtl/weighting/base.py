"""The two kinds of multi-task weighting and their registry.

Keras 3's `compile(loss_weights=...)` only takes constant floats, so learned or adaptive
weights act in `MultiTaskModel.train_step`:
  * a :class:`LossWeighting` combines the per-task losses into one scalar
    (`combine(task_losses, tasks, step) -> (total, logs)`): fixed, uncertainty, DWA, RLW,
    GLS, FAMO. The step costs what a fixed weighting's does.
  * a :class:`GradientWeighting` sees each task's gradient of the shared variables (or of
    a shared representation, ``rep_grad``) and returns the update of the shared variables
    (PCGrad, MGDA, CAGrad, Nash-MTL, ...); `tf_mtl.task_gradients` runs its step.
Weightings are Keras layers so their variables are tracked by the model (gradients,
checkpoints) and always float32, also under a mixed precision policy.

A method is one file in this package that calls :func:`register_weighting`; the package
imports every module in it, so adding a method is adding a file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import keras
import tensorflow as tf

from tf_mtl.tasks import Task


def task_names_of(tasks: Sequence[Task] | None, names: Sequence[str] | None) -> list[str]:
    if names is not None:
        return list(names)
    if tasks is None:
        raise ValueError("Give the tasks (or task names) the weighting combines.")
    return [t.name for t in tasks]


def prior_weights(tasks: Sequence[Task] | None, names: Sequence[str],
                  weights: Mapping[str, float] | None) -> dict[str, float]:
    """Each task's constant prior multiplier: Task.weight, overridden by ``weights``."""
    base = {t.name: t.weight for t in tasks} if tasks is not None else {}
    base.update(dict(weights or {}))
    return {n: float(base.get(n, 1.0)) for n in names}


class LossWeighting(keras.layers.Layer):
    """Interface: combines per-task losses into one scalar and reports the weights.

    Subclasses implement `combine`; `logs` contain `<task>_weight` (the effective
    multiplier of the task loss) and, where meaningful, `<task>_sigma`.
    """

    #: Whether the step must hand this weighting each task's gradient.
    needs_task_gradients: ClassVar[bool] = False

    def __init__(self, task_names: Sequence[str], **kwargs: Any) -> None:
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.task_names = list(task_names)
        if not self.task_names:
            raise ValueError(f"{type(self).__name__} needs at least one task.")

    def _check_losses(self, task_losses: Mapping[str, tf.Tensor]) -> None:
        missing = [n for n in self.task_names if n not in task_losses]
        if missing:
            raise ValueError(
                f"{type(self).__name__}: no loss for task(s) {missing}; got {sorted(task_losses)}."
            )

    def loss_vector(self, task_losses: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """The losses as a float32 vector in task order."""
        self._check_losses(task_losses)
        return tf.stack([tf.cast(task_losses[n], tf.float32) for n in self.task_names])

    def prior_vector(self) -> tf.Tensor:
        """The tasks' prior multipliers (``weights_by_task``) in task order."""
        return tf.constant([self.weights_by_task[n] for n in self.task_names], tf.float32)

    def weight_logs(self, weights: tf.Tensor) -> dict[str, tf.Tensor]:
        return {f"{n}_weight": weights[i] for i, n in enumerate(self.task_names)}

    def combine(
        self,
        task_losses: Mapping[str, tf.Tensor],
        tasks: Sequence[Task] | None = None,
        step: tf.Tensor | None = None,
    ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """Returns (total float32 scalar, logs with each task's effective weight)."""
        raise NotImplementedError

    def build_state(self, variables: Sequence[Any]) -> None:
        """Create per-variable state before training (the model calls it with the
        network's trainable variables; most weightings keep none)."""

    def call(self, task_losses: Mapping[str, tf.Tensor]) -> tf.Tensor:
        return self.combine(task_losses)[0]

    def get_config(self) -> dict:
        config = super().get_config()
        config.pop("dtype", None)
        config["task_names"] = self.task_names
        return config


def gram(grads: Sequence[tf.Tensor]) -> tf.Tensor:
    """G G^T of the flattened task gradients, summed over variables: ``[T, T]``.

    ``grads`` are per-variable stacks ``[T, *shape]``; nothing is concatenated."""
    total = None
    for g in grads:
        flat = tf.reshape(g, [tf.shape(g)[0], -1])
        k = tf.matmul(flat, flat, transpose_b=True)
        total = k if total is None else total + k
    return total


def cosines(k: tf.Tensor) -> tf.Tensor:
    """Cosine similarity matrix of the task gradients from their Gram matrix."""
    norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(k), 0.0))
    return tf.math.divide_no_nan(k, norms[:, None] * norms[None, :])


def combine_stacks(alpha: tf.Tensor, grads: Sequence[tf.Tensor]) -> list[tf.Tensor]:
    """sum_i alpha_i g_i for each per-variable stack ``[T, *shape]``."""
    return [tf.tensordot(alpha, g, axes=1) for g in grads]


class GradientWeighting(LossWeighting):
    """A method that sees each task's gradient (LibMTL's gradient methods).

    The step (``tf_mtl.task_gradients``) hands it the task gradients of the shared
    variables as per-variable stacks ``[T, *shape]`` (or, with ``rep_grad``, of the shared
    representation, summed over the batch as LibMTL does), unscaled, float32 and reduced
    over replicas. Most methods are a combination ``sum_i alpha_i g_i`` whose coefficients
    depend on the Gram matrix only: they implement :meth:`coefficients`, and the same code
    serves shared-variable and representation gradients. Elementwise methods (GradDrop,
    DB-MTL) override :meth:`combine_gradients`.

    Variables that only one task reaches get that task's gradient; the losses the method
    saw (after :meth:`transform_losses`) are what they descend, weighted by the method's
    coefficients where :meth:`task_specific_weights` says so (Nash-MTL) and unweighted
    otherwise, as in LibMTL.
    """

    needs_task_gradients: ClassVar[bool] = True
    #: Whether representation gradients are allowed (LibMTL's support table).
    supports_rep_grad: ClassVar[bool] = True
    #: Whether parameter gradients are allowed (GradDrop works on a representation only).
    supports_param_grad: ClassVar[bool] = True
    #: The precision of the Gram matrix handed to :meth:`coefficients`. float64 for the
    #: methods that solve a T x T problem: on nearly parallel or very unequal gradients
    #: the float32 Gram matrix's round-off alone moves their solution by up to 1e-3.
    gram_dtype: ClassVar[tf.DType] = tf.float32

    def __init__(self, tasks: Sequence[Task] | None = None, *, rep_grad: bool = False,
                 rep_features: Sequence[str] | str = ("encoder",), seed: int = 0,
                 task_names: Sequence[str] | None = None,
                 weights: Mapping[str, float] | None = None, **kwargs: Any) -> None:
        names = task_names_of(tasks, task_names)
        super().__init__(names, **kwargs)
        self.weights_by_task = prior_weights(tasks, names, weights)
        self.rep_grad = bool(rep_grad)
        if isinstance(rep_features, str):
            rep_features = [f for f in rep_features.split("+") if f]
        self.rep_features = tuple(rep_features)
        self.seed = int(seed)
        label = getattr(self, "registered_name", type(self).__name__)
        if self.rep_grad and not self.supports_rep_grad:
            raise ValueError(f"--loss_weighting={label} does not support representation "
                             "gradients (rep_grad=true); drop it from --weighting_options")
        if not self.rep_grad and not self.supports_param_grad:
            raise ValueError(f"--loss_weighting={label} works on representation gradients "
                             "only; set --weighting_options=rep_grad=true")
        if self.rep_grad and not self.rep_features:
            raise ValueError("rep_grad=true needs rep_features=NAME[+NAME...]: the tapped "
                             "features every task's gradient to the shared variables passes")
        self._finite = None

    # ------------------------------------------------------------------ losses
    def transform_losses(self, losses: tf.Tensor) -> tf.Tensor:
        """The per-task objectives whose gradients the method sees (default: the losses
        times their prior weights). Differentiable: IMTL learns its scales through it."""
        return self.prior_vector() * losses

    def combine(self, task_losses, tasks=None, step=None):
        """The plain weighted sum (evaluation; the train step uses the gradients)."""
        total = tf.reduce_sum(self.transform_losses(self.loss_vector(task_losses)))
        return total, self.weight_logs(tf.ones([len(self.task_names)]))

    # --------------------------------------------------------------- gradients
    def coefficients(self, k: tf.Tensor, losses: tf.Tensor, step: tf.Tensor
                     ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """``alpha [T]`` from the Gram matrix ``k [T, T]`` (of dtype :attr:`gram_dtype`;
        the losses, the step: float32)."""
        raise NotImplementedError

    def combine_gradients(self, grads: Sequence[tf.Tensor], losses: tf.Tensor,
                          step: tf.Tensor, variables: Sequence[Any] | None = None,
                          k: tf.Tensor | None = None
                          ) -> tuple[list[tf.Tensor], tf.Tensor, dict[str, tf.Tensor]]:
        """(combined gradient per stack, effective weights ``[T]``, logs); ``variables``
        are the shared variables the stacks belong to (for per-variable state), ``k``
        their Gram matrix when the caller has it."""
        if k is None or k.dtype != self.gram_dtype:
            k = gram([tf.cast(g, self.gram_dtype) for g in grads])
        alpha, logs = self.coefficients(k, losses, step)
        alpha = tf.cast(alpha, tf.float32)
        return combine_stacks(alpha, grads), alpha, logs

    def combine_representation(self, per_example: Sequence[tf.Tensor],
                               reps: Sequence[tf.Tensor], losses: tf.Tensor,
                               step: tf.Tensor, reduce: Callable[[Any], Any],
                               k: tf.Tensor | None = None
                               ) -> tuple[list[tf.Tensor], tf.Tensor, dict[str, tf.Tensor]]:
        """Representation gradients ``[T, B, ...]`` per feature -> the combined ``[B, ...]``.
        Coefficients come from the Gram matrix ``k`` of the batch-summed gradients
        (reduced over replicas; computed here when not given)."""
        if k is None or k.dtype != self.gram_dtype:
            k = gram(reduce([tf.reduce_sum(tf.cast(g, self.gram_dtype), axis=1)
                             for g in per_example]))
        alpha, logs = self.coefficients(k, losses, step)
        alpha = tf.cast(alpha, tf.float32)
        return combine_stacks(alpha, per_example), alpha, logs

    def task_specific_weights(self, alpha: tf.Tensor) -> tf.Tensor:
        """Multipliers of each task's gradient on variables only it reaches."""
        return tf.ones_like(alpha)

    def own_gradients(self) -> list[tuple[tf.Tensor, Any]]:
        """(gradient, variable) pairs the method computed for its own variables this step
        (GradNorm's weights); unscaled, reduced over replicas."""
        return []

    # ------------------------------------------------------------------- state
    def commit(self, variable: Any, value: tf.Tensor) -> None:
        """Assign state unless this step's gradients are not finite (a skipped step under
        mixed_float16 leaves the method's state as it was)."""
        value = tf.cast(value, variable.dtype)
        if self._finite is not None:
            value = tf.where(self._finite, value, tf.convert_to_tensor(variable))
        variable.assign(value)

    def random_seed(self, step: tf.Tensor, salt: int = 0) -> tf.Tensor:
        """A stateless seed from (seed, step): every replica draws the same numbers and a
        resumed run the numbers an uninterrupted one would have."""
        step = tf.cast(step if step is not None else 0, tf.int64)
        return tf.stack([tf.constant(self.seed * 1000003 + salt, tf.int64), step])

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(rep_grad=self.rep_grad, rep_features=list(self.rep_features),
                      seed=self.seed, weights=dict(self.weights_by_task))
        return config


# -------------------------------------------------------------------- registry
@dataclasses.dataclass(frozen=True)
class WeightingSpec:
    """A registered method: its class, defaults of its options, and the paper."""

    name: str
    cls: type
    options: Mapping[str, Any]
    reference: str


_REGISTRY: dict[str, WeightingSpec] = {}
_COMMON_GRADIENT_OPTIONS = {"rep_grad": False, "rep_features": "encoder", "seed": 0}


def register_weighting(name: str, reference: str = "", **defaults: Any
                       ) -> Callable[[type], type]:
    """Class decorator: ``--loss_weighting=name`` builds this class. ``defaults`` are the
    method's ``--weighting_options`` with their defaults (LibMTL's unless stated)."""
    def wrap(cls: type) -> type:
        options = dict(defaults)
        if issubclass(cls, GradientWeighting):
            options = {**_COMMON_GRADIENT_OPTIONS, **options}
        _REGISTRY[name] = WeightingSpec(name, cls, options, reference)
        if not hasattr(cls, "registered_name"):
            cls.registered_name = name
        return cls
    return wrap


def registered_weightings() -> dict[str, WeightingSpec]:
    return dict(_REGISTRY)


def _parse_value(text: str, default: Any, key: str, method: str) -> Any:
    text = text.strip()
    try:
        if isinstance(default, bool):
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        raise ValueError(f"--weighting_options: {key}={text!r} for --loss_weighting={method} "
                         f"must be a {type(default).__name__} (default {default!r})") from None
    return text


def parse_weighting_options(name: str, text: str | Mapping[str, Any] | None
                            ) -> dict[str, Any]:
    """``"k=v,k2=v2"`` -> the method's options (defaults filled in, types checked)."""
    spec = _spec(name)
    options = dict(spec.options)
    if not text:
        return options
    if isinstance(text, Mapping):
        items = [(k, str(v)) for k, v in text.items()]
    else:
        items = []
        for part in text.split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise ValueError(f"--weighting_options: {part.strip()!r} is not key=value")
            k, v = part.split("=", 1)
            items.append((k.strip(), v))
    for k, v in items:
        if k not in spec.options:
            known = ", ".join(f"{o}={d}" for o, d in spec.options.items()) or "none"
            raise ValueError(f"--weighting_options: {k!r} is not an option of "
                             f"--loss_weighting={name}; its options: {known}")
        options[k] = _parse_value(v, spec.options[k], k, name)
    return options


def _spec(name: str) -> WeightingSpec:
    key = (name or "").strip().lower()
    if key not in _REGISTRY:
        raise ValueError(f"--loss_weighting={name!r} is not a known loss weighting; valid "
                         f"names: {', '.join(sorted(_REGISTRY))}.")
    return _REGISTRY[key]


def get_weighting(name: str, tasks: Sequence[Task], options: str | Mapping[str, Any] | None
                  = None, **kwargs: Any) -> LossWeighting:
    """Builds a weighting by registered name (flag --loss_weighting) with its
    ``--weighting_options``; ``kwargs`` are passed as they are (e.g. DWA's window)."""
    spec = _spec(name)
    merged = parse_weighting_options(spec.name, options)
    merged.update(kwargs)
    return spec.cls(tasks, **merged)
