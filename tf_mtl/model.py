"""MultiTaskModel: a Keras model that trains any dict-output network on several tasks.

The train step (TF backend) is where Keras 3's constant `loss_weights` are not
enough: per-task losses on float32 outputs, extra regulariser terms, the network's
own regularisation losses, a (possibly learned) `LossWeighting`, per-replica scaling
by 1/num_replicas_in_sync (gradients are summed across replicas), loss scaling for
mixed_float16 via `optimizer.scale_loss`, and in-step TensorBoard summaries.
Training-only heads and loss terms (`tf_mtl.branches`) read features tapped in the
same forward pass; they are checkpointed with the model and never exported.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import tensorflow as tf

from tf_mtl.branches import LossTerm, LossTermLike, TrainingHead, requested_features, term_name
from tf_mtl.graph import FeatureTaps
from tf_mtl.losses import call_loss
from tf_mtl.summaries import ImageSummaryFn, StepSummaries
from tf_mtl.task_gradients import task_gradient_update
from tf_mtl.tasks import Task, check_tasks
from tf_mtl.weighting import FixedWeighting, LossWeighting

__all__ = ["LossTerm", "MultiTaskModel", "TrainingHead"]


def _metric_results(prefix: str, metric: keras.metrics.Metric) -> dict[str, tf.Tensor]:
    name = metric.name if metric.name.startswith(prefix) else f"{prefix}_{metric.name}"
    result = metric.result()
    if isinstance(result, Mapping):
        return {f"{name}_{k}": v for k, v in result.items()}
    return {name: result}


class MultiTaskModel(keras.Model):
    """Trains `network` (call returns a dict of named outputs) on a list of Tasks.

    Args:
      network: Keras model whose call returns `{output_key: tensor}`; this is what is
        exported / saved (`model.network.save(...)`).
      tasks: the Tasks; `y` must be a dict keyed by task name (a single tensor is
        accepted for one task).
      weighting: a LossWeighting (default FixedWeighting with each Task.weight).
      loss_terms: extra LossTerm layers or callables `fn(x, y, outputs, training)`.
      heads: training-only `TrainingHead`s; their outputs join the step outputs that
        tasks and terms read (`Task(output=...)`).
      summary_writer: a tf.summary writer or a log directory; scalars are written
        every `summary_every_n_steps` steps from inside the step.
      image_summary_fn: `fn(x, y, outputs) -> {name: images [B,H,W,C]}` written every
        `image_summary_every_n_steps` (default: summary_every_n_steps).
      gradient_multipliers: `{variable path: factor}`: those variables' gradients are
        multiplied by it before the optimizer (the original's
        `--last_layer_gradient_multiplier`: a new classifier on a pretrained trunk).
    """

    def __init__(
        self,
        network: keras.Model,
        tasks: Sequence[Task],
        weighting: LossWeighting | None = None,
        *,
        loss_terms: Sequence[LossTermLike] = (),
        heads: Sequence[TrainingHead] = (),
        summary_writer: tf.summary.SummaryWriter | str | pathlib.Path | None = None,
        summary_every_n_steps: int = 100,
        image_summary_fn: ImageSummaryFn | None = None,
        image_summary_every_n_steps: int | None = None,
        gradient_multipliers: Mapping[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.network = network
        self.gradient_multipliers = {str(k): float(v)
                                     for k, v in (gradient_multipliers or {}).items()}
        self.tasks = check_tasks(tasks)
        self.weighting = weighting if weighting is not None else FixedWeighting(self.tasks)
        missing = [t.name for t in self.tasks if t.name not in self.weighting.task_names]
        if missing:
            raise ValueError(f"The loss weighting has no entry for task(s) {missing}.")
        self.loss_terms = list(loss_terms)
        self.heads = list(heads)
        for head in self.heads:
            if not isinstance(head, TrainingHead):
                raise TypeError(f"heads: expected tf_mtl.branches.TrainingHead, got "
                                f"{type(head).__name__}")
        rep = list(getattr(self.weighting, "rep_features", ())) if getattr(
            self.weighting, "rep_grad", False) else []
        self.taps = FeatureTaps(network, [*requested_features([*self.heads, *self.loss_terms]),
                                          *rep])
        self._build_heads()
        own = {id(v) for v in self.weighting.weights}
        self.weighting.build_state([v for v in [*network.trainable_variables,
                                                *(v for h in self.heads for v in h.trainable_variables)]
                                    if id(v) not in own])
        self.summary_every_n_steps = int(summary_every_n_steps)
        self.summaries = None
        if summary_writer is not None:
            self.summaries = StepSummaries(
                summary_writer, summary_every_n_steps, image_summary_fn,
                image_summary_every_n_steps,
            )
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.task_loss_trackers = [keras.metrics.Mean(name=f"{t.name}_loss") for t in self.tasks]
        self.task_metrics = [m for t in self.tasks for m in t.all_metrics]
        if getattr(network, "built", False):
            self.built = True

    # ----------------------------------------------------------------- basics
    def call(self, inputs: Any, training: bool | None = None) -> dict[str, tf.Tensor]:
        return self.network(inputs, training=training)

    def _build_heads(self) -> None:
        """Create the heads' variables now (a symbolic pass), before any optimizer."""
        if all(head.built for head in self.heads):
            return
        symbolic = self.taps.symbolic()
        if symbolic is None:
            raise ValueError("training-only heads are built on a functional network's "
                             "tapped features; build the heads yourself before training a "
                             "network that taps through call_with_features")
        outputs, features = symbolic
        self._head_outputs(features, outputs, None)

    def _head_outputs(self, features: Mapping[str, Any], outputs: dict[str, Any],
                      training: bool | None) -> dict[str, Any]:
        for head in self.heads:
            new = head({n: features[n] for n in head.features}, training=training)
            clash = sorted(set(new) & (set(outputs) | set(features)))
            if clash:
                raise ValueError(f"head {head.name!r} outputs {clash}, names the step already "
                                 "has; give the head's outputs other names")
            outputs.update(new)
        return outputs

    def forward(self, x: Any, training: bool) -> dict[str, tf.Tensor]:
        """The step outputs: network outputs, heads' outputs, tapped features (one pass)."""
        outputs, features = self.taps(x, training=training)
        if not features:
            return outputs
        outputs = self._head_outputs(features, dict(outputs), training)
        return {**outputs, **{k: v for k, v in features.items() if k not in outputs}}

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.loss_tracker, *self.task_loss_trackers, *self.task_metrics]

    def compile(self, optimizer: Any = "rmsprop", **kwargs: Any) -> None:
        """Keras compile without `loss`/`metrics` (they come from the Tasks).

        Binds `optimizer.iterations` into losses that need the step (hard-pixel
        mining ramp) and defaults jit_compile to False (summary ops, dynamic top-k).
        """
        for key in ("loss", "loss_weights", "metrics", "weighted_metrics"):
            if kwargs.get(key) is not None:
                raise ValueError(
                    f"MultiTaskModel.compile: do not pass {key}=; losses, weights and metrics "
                    "come from the Tasks and the LossWeighting."
                )
            kwargs.pop(key, None)
        kwargs.setdefault("jit_compile", False)
        super().compile(optimizer=optimizer, **kwargs)
        for task in self.tasks:
            if hasattr(task.loss, "set_step") and getattr(task.loss, "_step", None) is None:
                task.loss.set_step(self.optimizer.iterations)

    # ------------------------------------------------------------------ losses
    def _targets(self, y: Any) -> Mapping[str, Any]:
        if isinstance(y, Mapping):
            return y
        if len(self.tasks) == 1:
            return {self.tasks[0].name: y}
        raise ValueError(
            "Targets must be a dict keyed by task name "
            f"({[t.name for t in self.tasks]}) when there are several tasks."
        )

    def task_losses(self, y: Mapping[str, Any],
                    outputs: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Each task's float32 loss on float32-cast outputs."""
        losses = {}
        for task in self.tasks:
            if task.output_key not in outputs:
                raise KeyError(
                    f"Task {task.name!r} reads network output {task.output_key!r}, but the "
                    f"network returns {sorted(outputs)}; set Task(output=...)."
                )
            if task.target_key not in y:
                raise KeyError(
                    f"Task {task.name!r} reads target {task.target_key!r}; the targets dict "
                    f"has {sorted(y)}."
                )
            pred = tf.cast(outputs[task.output_key], tf.float32)
            losses[task.name] = call_loss(task.loss, y[task.target_key], pred)
        return losses

    def extra_losses(self, x: Any, y: Mapping[str, Any], outputs: Mapping[str, tf.Tensor],
                     training: bool) -> dict[str, tf.Tensor]:
        """Extra loss terms added to the total (override, or pass `loss_terms`)."""
        extras = {}
        for term in self.loss_terms:
            if isinstance(term, LossTerm):
                value = term.loss_value(x, y, outputs, training)
            else:
                value = term(x, y, outputs, training)
            extras[term_name(term)] = tf.cast(value, tf.float32)
        return extras

    def compute_total_loss(
        self, x: Any, y: Mapping[str, Any], outputs: Mapping[str, tf.Tensor],
        training: bool, step: tf.Tensor | None = None,
    ) -> tuple[tf.Tensor, dict[str, tf.Tensor], dict[str, tf.Tensor]]:
        """(unscaled total, task losses, logs) for one replica's batch."""
        losses = self.task_losses(y, outputs)
        total, logs = self.weighting.combine(losses, self.tasks, step)
        extra, extra_logs = self.added_losses(x, y, outputs, training)
        return total + extra, losses, {**logs, **extra_logs}

    def added_losses(self, x: Any, y: Mapping[str, Any], outputs: Mapping[str, tf.Tensor],
                     training: bool) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """(what is added to the weighted task losses: loss terms + regularisation, logs)."""
        total = tf.constant(0.0, tf.float32)
        logs = {}
        for name, value in self.extra_losses(x, y, outputs, training).items():
            total = total + value
            logs[name] = value
        reg = [tf.cast(v, tf.float32) for v in self.losses]
        if reg:
            reg_total = tf.add_n(reg)
            total = total + reg_total
            logs["regularization_loss"] = reg_total
        return total, logs

    # ------------------------------------------------------------------- steps
    def _learning_rate(self) -> tf.Tensor | None:
        try:
            return tf.cast(tf.convert_to_tensor(self.optimizer.learning_rate), tf.float32)
        except (AttributeError, TypeError, ValueError):
            return None

    def _update_and_log(self, y, outputs, total, losses, logs, batch_size,
                        training: bool = True) -> dict[str, Any]:
        """Trackers and metrics updated and read; a train step skips ``eval_metrics``."""
        self.loss_tracker.update_state(total, sample_weight=batch_size)
        for task, tracker in zip(self.tasks, self.task_loss_trackers, strict=True):
            tracker.update_state(losses[task.name], sample_weight=batch_size)
            for metric in task.metrics if training else task.all_metrics:
                metric.update_state(y[task.target_key],
                                    tf.cast(outputs[task.output_key], tf.float32))
        results: dict[str, Any] = {"loss": self.loss_tracker.result()}
        for task, tracker in zip(self.tasks, self.task_loss_trackers, strict=True):
            results[tracker.name] = tracker.result()
            for metric in task.metrics if training else task.all_metrics:
                results.update(_metric_results(task.name, metric))
        results.update(logs)
        return results

    @staticmethod
    def _batch_size(x: Any) -> tf.Tensor:
        first = tf.nest.flatten(x)[0]
        return tf.cast(tf.shape(first)[0], tf.float32)

    def train_step(self, data: Any) -> dict[str, Any]:
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        y = self._targets(y)
        step = tf.convert_to_tensor(self.optimizer.iterations)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if self.weighting.needs_task_gradients:
            outputs, total, losses, logs, pairs = task_gradient_update(self, x, y, step)
        else:
            with tf.GradientTape() as tape:
                outputs = self.forward(x, training=True)
                total, losses, logs = self.compute_total_loss(x, y, outputs, True, step)
                # Gradients are summed over replicas: scale every term by 1/replicas.
                per_replica = total / replicas if replicas > 1 else total
                scaled = self.optimizer.scale_loss(per_replica)
            variables = self.trainable_variables
            grads = tape.gradient(scaled, variables)
            pairs = [(g, v) for g, v in zip(grads, variables, strict=True) if g is not None]
        lr = self._learning_rate()  # the rate this step's update uses
        if lr is not None:
            logs["learning_rate"] = lr
        if not pairs:
            raise ValueError("No gradients: no trainable variable depends on the loss.")
        # How hard the losses pull on the network (what training-only modules add to it).
        network = {id(v) for v in self.network.trainable_variables}
        norm = tf.linalg.global_norm([tf.cast(g, tf.float32) for g, v in pairs
                                      if id(v) in network])
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            norm = norm / tf.cast(self.optimizer.scale_loss(1.0), tf.float32)
        logs["network_grad_norm"] = norm * replicas if replicas > 1 else norm
        if self.gradient_multipliers:
            pairs = [(g * self.gradient_multipliers[v.path]
                      if v.path in self.gradient_multipliers else g, v) for g, v in pairs]
        self.optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
        results = self._update_and_log(y, outputs, total, losses, logs, self._batch_size(x))
        if self.summaries is not None:
            scalars = {k: v for k, v in results.items() if tf.convert_to_tensor(v).shape.rank == 0}
            # Losses as this step's values: Keras' trackers are running means that restart
            # at every fit() epoch (each checkpoint chunk), which drew steps into the curves.
            scalars["loss"] = total
            for task, tracker in zip(self.tasks, self.task_loss_trackers, strict=True):
                scalars[tracker.name] = losses[task.name]
            self.summaries.write(step, scalars, x, y, outputs, prefix="train/")
        return self._reducible(results)

    def test_step(self, data: Any) -> dict[str, Any]:
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        y = self._targets(y)
        outputs = self.forward(x, training=False)
        total, losses, logs = self.compute_total_loss(x, y, outputs, False, None)
        return self._reducible(self._update_and_log(y, outputs, total, losses, logs,
                                                    self._batch_size(x), training=False))

    @staticmethod
    def _reducible(logs: dict[str, Any]) -> dict[str, Any]:
        """Across workers Keras reduces each log with a mean over axis 0, which a scalar
        does not have (Keras 3.x): under a multi-worker strategy logs are ``[1]``, and the
        reduction returns the scalar (their mean over workers)."""
        strategy = tf.distribute.get_strategy()
        if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return logs
        return {k: tf.reshape(v, [1]) if tf.convert_to_tensor(v).shape.rank == 0 else v
                for k, v in logs.items()}

    def predict_step(self, data: Any) -> Any:
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self.network(x, training=False)

    def _maybe_symbolic_build(self, iterator: Any = None, data_batch: Any = None) -> None:
        """Keras' fit reduces one batch over the replicas only to build unbuilt layers;
        under MultiWorkerMirroredStrategy that reduce fails on a dict of targets (Keras
        3.x). Nothing is left to build when the network and optimizer are built (the
        trainer builds both before fit), so the reduce is skipped then."""
        if all(layer.built for layer in self._flatten_layers()) and (
                self.optimizer is None or self.optimizer.built):
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def fit(self, *args: Any, **kwargs: Any) -> keras.callbacks.History:
        """keras fit, then flushes the in-step summary writer."""
        try:
            return super().fit(*args, **kwargs)
        finally:
            if self.summaries is not None:
                self.summaries.flush()

    # ------------------------------------------------------------- checkpoints
    def make_checkpoint(self, **extra: Any) -> tf.train.Checkpoint:
        """tf.train.Checkpoint over network, weighting, optimizer and step (+ extra).

        Training-only heads and loss terms that own variables are saved too (keys
        ``heads`` / ``loss_terms``, present only when there are any, so checkpoints of
        models without them keep their layout).
        """
        if self.optimizer is None:
            raise ValueError("compile() the MultiTaskModel before make_checkpoint().")
        step = self.optimizer.iterations
        step = getattr(step, "value", step)
        items = dict(network=self.network, weighting=self.weighting, optimizer=self.optimizer,
                     step=step)
        if self.heads:
            items["heads"] = list(self.heads)
        terms = [t for t in self.loss_terms if isinstance(t, LossTerm) and t.weights]
        if terms:
            items["loss_terms"] = terms
        ckpt = tf.train.Checkpoint(**items, **extra)
        # A Keras 3 layer kept inside a list or dict attribute of a head is trained but not
        # reachable by tf.train.Checkpoint: a resume would silently start it afresh.
        reachable = {id(t) for t in tf.train.TrackableView(ckpt).descendants()}
        lost = [w.path for branch in [*self.heads, *terms] for w in branch.weights
                if id(w) not in reachable]
        if lost:
            raise ValueError(f"{len(lost)} variable(s) of training-only heads / loss terms "
                             f"would not be checkpointed: {lost[:5]}. Keep sub-layers as "
                             "attributes of the layer, not inside a list or dict attribute.")
        return ckpt

    def get_config(self) -> dict:
        """Config of the wrapper; the network itself is what gets exported."""
        ser = keras.saving.serialize_keras_object
        return {
            "network": ser(self.network),
            "weighting": ser(self.weighting),
            "tasks": [
                {"name": t.name, "loss": ser(t.loss), "kind": t.kind,
                 "metrics": [ser(m) for m in t.metrics], "output": t.output,
                 "eval_metrics": [ser(m) for m in t.eval_metrics],
                 "weight": t.weight, "target": t.target}
                for t in self.tasks
            ],
            "summary_every_n_steps": self.summary_every_n_steps,
        }

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> MultiTaskModel:
        de = keras.saving.deserialize_keras_object
        config = dict(config)
        tasks = [
            Task(name=t["name"], loss=de(t["loss"], custom_objects=custom_objects),
                 kind=t["kind"], output=t["output"], weight=t["weight"],
                 target=t.get("target"),
                 metrics=[de(m, custom_objects=custom_objects) for m in t["metrics"]],
                 eval_metrics=[de(m, custom_objects=custom_objects)
                               for m in t.get("eval_metrics", [])])
            for t in config.pop("tasks")
        ]
        network = de(config.pop("network"), custom_objects=custom_objects)
        weighting = de(config.pop("weighting"), custom_objects=custom_objects)
        return cls(network, tasks, weighting, **config)
