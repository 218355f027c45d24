"""The train step of a gradient method (`tf_mtl.weighting.GradientWeighting`).

One forward pass and one persistent tape; then T gradient calls:
  * parameter gradients: each task's gradient of every trainable variable. Variables
    that two or more tasks reach are *shared*: their per-task gradients go to the method
    (reduced over replicas first, so every replica computes the same update and two
    replicas give what one device gives on the same global batch). The others get their
    task's gradient as usual.
  * representation gradients (``rep_grad``, LibMTL's option): each task's gradient of the
    shared features (``rep_features``: tapped features that every path from the shared
    variables to a loss passes, e.g. DeepLab's ``low_level`` + ``encoder``; one may be
    computed from another), and of the variables after them. The method combines the
    per-example feature gradients (its coefficients from their batch sums, reduced over
    replicas); one backward pass from the features with the combined gradient gives the
    shared variables' update. T cheap passes through the heads instead of T through the
    trunk. With a set that is not such a cut the update is wrong, not an error:
    `tests/test_gradient_methods_deeplab.py` checks a family's set against the
    equal-weight update.
Training-only heads, loss terms and regularisation losses add their gradient to every
variable as in the plain step. Under mixed_float16 every task loss is scaled by the
optimizer's loss scale, the gradients are unscaled before the method and re-scaled after
it; a non-finite gradient makes the whole update non-finite, so the LossScaleOptimizer
skips the step, and the method's state is left as it was.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

from tf_mtl.weighting import GradientWeighting, cosines, gram


def _all_finite(tensors: Sequence[tf.Tensor]) -> tf.Tensor:
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in tensors])


def _zeros_unless(finite: tf.Tensor, tensors: Sequence[tf.Tensor]) -> list[tf.Tensor]:
    """The method sees zeros on a step that will be skipped (its solvers need finite
    input; the update is made non-finite afterwards so the step is still skipped)."""
    return [tf.where(finite, t, tf.zeros_like(t)) for t in tensors]


def _zeros_if_none(g: Any, like: Any) -> tf.Tensor:
    return tf.zeros(like.shape, tf.float32) if g is None else tf.cast(g, tf.float32)


def _task_logs(weighting: GradientWeighting, alpha: tf.Tensor, k: tf.Tensor
               ) -> dict[str, tf.Tensor]:
    logs = weighting.weight_logs(alpha)
    cos = cosines(k)
    names = weighting.task_names
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            logs[f"cos_{names[i]}_{names[j]}"] = cos[i, j]
    return logs


def _upstream_of_features(tape: tf.GradientTape, reps: Sequence[tf.Tensor],
                          variables: Sequence[Any], own: set[int]) -> list[int]:
    """Indices of the variables some shared feature is computed from."""
    reach = [tape.gradient(r, variables) for r in reps]
    return [k for k in range(len(variables)) if id(variables[k]) not in own
            and any(r[k] is not None for r in reach)]


def _backprop_features(tape: tf.GradientTape, reps: Sequence[tf.Tensor],
                       grads: Sequence[tf.Tensor], variables: Sequence[Any]) -> list[Any]:
    """The variables' gradient given each shared feature's (combined) gradient.

    A feature's gradient counts every path through it, also those that go on through a
    later feature (DeepLab's ``low_level`` feeds the decoder and, through the rest of the
    backbone, the ``encoder``). Backpropagating every feature's full gradient would count
    those paths twice. So the latest features go first: the backward pass from feature b
    also yields (db/da)^T g_b at each earlier feature a it is computed from, which is
    taken off g_a before a's own pass (a's *direct* gradient). Each path is counted once;
    the cost is one backward pass through the trunk plus one through the part below each
    earlier feature."""
    n = len(reps)
    after = [[a != b and tape.gradient(reps[b], reps[a]) is not None for b in range(n)]
             for a in range(n)]  # after[a][b]: feature b is computed from feature a
    order = sorted(range(n), key=lambda a: sum(after[a]))  # the latest features first
    direct = list(grads)
    total: list[Any] = [None] * len(variables)
    for b in order:
        earlier = [a for a in range(n) if after[a][b]]
        out = tape.gradient(reps[b], [*(reps[a] for a in earlier), *variables],
                            output_gradients=direct[b])
        for a, g in zip(earlier, out[:len(earlier)], strict=True):
            if g is not None:
                direct[a] = direct[a] - tf.cast(g, direct[a].dtype)
        for k, g in enumerate(out[len(earlier):]):
            if g is not None:
                total[k] = g if total[k] is None else total[k] + g
    return total


@dataclasses.dataclass
class _Forward:
    """The forward pass's tensors that the gradient calls after it need (one object, not
    a dozen return values)."""
    tape: tf.GradientTape
    outputs: dict
    losses: dict
    raw: tf.Tensor
    objectives: tf.Tensor
    summed: tf.Tensor
    extra: tf.Tensor
    logs: dict
    per_task: list
    extra_scaled: tf.Tensor
    own_scaled: tf.Tensor
    reps: list


@dataclasses.dataclass
class _Step:
    """What both branches (parameter and representation gradients) read: the tape, the
    scaled losses, the variables and the replica reduction."""
    w: GradientWeighting
    n: int
    tape: tf.GradientTape
    per_task: list
    extra_scaled: tf.Tensor
    reps: list
    factors: tf.Tensor
    variables: list
    own: set
    seen: tf.Tensor
    scale: tf.Tensor
    replicas: int
    reduce: Callable
    step: tf.Tensor

    def task_grads(self, i: int, sources: Sequence[Any]) -> list[Any]:
        """Task i's gradient of ``sources``, times its objective's chain-rule factor (still
        loss-scaled)."""
        return [None if g is None else tf.cast(g, tf.float32) * self.factors[i]
                for g in self.tape.gradient(self.per_task[i], sources)]


def _replica_reduce(replicas: int) -> Callable:
    """An all-reduce over the replicas that is the identity on one device."""
    ctx = tf.distribute.get_replica_context()

    def reduce(tensors, op=tf.distribute.ReduceOp.SUM):
        return ctx.all_reduce(op, tensors) if replicas > 1 and ctx is not None else tensors
    return reduce


def _forward(model: Any, w: GradientWeighting, x: Any, y: Any, scale: tf.Tensor,
             replicas: int) -> _Forward:
    """The forward pass and every loss that is differentiated afterwards, under one
    persistent tape."""
    with tf.GradientTape(persistent=True) as tape:
        outputs = model.forward(x, training=True)
        losses = model.task_losses(y, outputs)
        raw = w.loss_vector(losses)
        objectives = w.transform_losses(raw)
        summed = tf.reduce_sum(objectives)
        extra, logs = model.added_losses(x, y, outputs, True)
        # Each task's raw loss, so that which variables a task reaches is read off its own
        # graph (a slice of a stacked vector would reach every variable with zeros).
        per_task = [losses[name] * (scale / replicas) for name in w.task_names]
        extra_scaled = extra * (scale / replicas)
        own_scaled = summed * (scale / replicas)
        reps = [outputs[f] for f in w.rep_features] if w.rep_grad else []
    return _Forward(tape, outputs, losses, raw, objectives, summed, extra, logs, per_task,
                    extra_scaled, own_scaled, reps)


def _representation_update(s: _Step) -> tuple:
    """rep_grad: the method combines the per-example feature gradients; one backward pass
    from the features gives the shared variables' update."""
    w, n, tape, reps, variables, scale = s.w, s.n, s.tape, s.reps, s.variables, s.scale
    up = _upstream_of_features(tape, reps, variables, s.own)
    down = [k for k in range(len(variables)) if k not in up]
    if not up:
        raise ValueError(f"rep_features={'+'.join(w.rep_features)}: no trainable variable "
                         "lies before these features")
    sources = [*reps, *(variables[k] for k in down)]
    per = [s.task_grads(i, sources) for i in range(n)]
    per_example = [tf.stack([_zeros_if_none(per[i][f], r) / scale for i in range(n)])
                   for f, r in enumerate(reps)]
    specific = {k: [per[i][len(reps) + d] for i in range(n)] for d, k in enumerate(down)}
    finite = _all_finite(per_example)
    per_example = _zeros_unless(finite, per_example)
    w._finite = finite
    k_mat = gram(s.reduce([tf.reduce_sum(g, axis=1) for g in per_example]))
    combined, alpha, method_logs = w.combine_representation(
        per_example, [tf.stop_gradient(r) for r in reps], s.seen, s.step, s.reduce, k=k_mat)
    nan = tf.constant(float("nan"))
    out_grads = [tf.cast(tf.where(finite, c, nan) * scale, r.dtype)
                 for c, r in zip(combined, reps, strict=True)]
    extra_all = tape.gradient(s.extra_scaled, variables)
    through = _backprop_features(tape, reps, out_grads, [variables[k] for k in up])
    grads = {}
    for k, g in zip(up, through, strict=True):
        grads[k] = g if extra_all[k] is None else g + extra_all[k]
    extra_grads = {k: extra_all[k] for k in down}
    return grads, extra_grads, specific, down, alpha, method_logs, k_mat


def _parameter_update(s: _Step) -> tuple:
    """Parameter gradients: the method combines the per-task gradients of the variables
    two or more tasks reach."""
    w, n, tape, variables, scale = s.w, s.n, s.tape, s.variables, s.scale
    per = [s.task_grads(i, variables) for i in range(n)]
    extra_all = tape.gradient(s.extra_scaled, variables)
    shared = [k for k in range(len(variables)) if id(variables[k]) not in s.own
              and sum(per[i][k] is not None for i in range(n)) >= 2]
    if not shared:
        raise ValueError(f"--loss_weighting={w.registered_name}: no variable is shared "
                         "by two tasks, so there is nothing for a gradient method to do")
    down = [k for k in range(len(variables)) if k not in shared]
    stacks = s.reduce([tf.stack([_zeros_if_none(per[i][k], variables[k]) / scale
                                 for i in range(n)]) for k in shared])
    specific = {k: [per[i][k] for i in range(n)] for k in down}
    finite = _all_finite(stacks)
    stacks = _zeros_unless(finite, stacks)
    w._finite = finite
    k_mat = gram(stacks)
    combined, alpha, method_logs = w.combine_gradients(
        stacks, s.seen, s.step, variables=[variables[k] for k in shared], k=k_mat)
    nan = tf.constant(float("nan"))
    grads = {}
    for k, c in zip(shared, combined, strict=True):
        g = tf.where(finite, c, nan) * (scale / s.replicas)
        grads[k] = g if extra_all[k] is None else g + extra_all[k]
    extra_grads = {k: extra_all[k] for k in down}
    return grads, extra_grads, specific, down, alpha, method_logs, k_mat


def _add_task_specific(grads: dict, ws: Any, down: Sequence[int], specific: dict,
                       extra_grads: dict) -> None:
    """The variables the method does not combine: each task's gradient times its weight,
    plus the added losses' gradient."""
    for k in down:
        parts = [ws[i] * tf.cast(g, tf.float32) for i, g in enumerate(specific[k])
                 if g is not None]
        if extra_grads.get(k) is not None:
            parts.append(tf.cast(extra_grads[k], tf.float32))
        if parts:
            grads[k] = tf.add_n(parts)


def task_gradient_update(model: Any, x: Any, y: Any, step: tf.Tensor
                         ) -> tuple[dict, tf.Tensor, dict, dict, list]:
    """(outputs, total, task losses, logs, [(gradient, variable)]) of one step."""
    w: GradientWeighting = model.weighting
    n = len(w.task_names)
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    reduce = _replica_reduce(replicas)
    scale = tf.cast(model.optimizer.scale_loss(tf.constant(1.0, tf.float32)), tf.float32)
    f = _forward(model, w, x, y, scale, replicas)
    tape = f.tape
    # transform_losses is elementwise: d objective_i / d L_i is the chain-rule factor.
    factors = tf.cast(tape.gradient(f.summed, f.raw), tf.float32)
    total = f.summed + f.extra
    variables = list(model.trainable_variables)
    own_vars = list(w.trainable_variables)
    own = {id(v) for v in own_vars}
    seen = reduce(tf.stop_gradient(f.objectives), tf.distribute.ReduceOp.MEAN)
    s = _Step(w, n, tape, f.per_task, f.extra_scaled, f.reps, factors, variables, own, seen,
              scale, replicas, reduce, step)
    branch = _representation_update if w.rep_grad else _parameter_update
    grads, extra_grads, specific, down, alpha, method_logs, k_mat = branch(s)
    # The method's own trainable variables (IMTL's scales) descend the objectives' sum.
    own_pairs = [(g, v) for g, v in zip(tape.gradient(f.own_scaled, own_vars), own_vars,
                                        strict=True) if g is not None]
    own_pairs += [(g * (scale / replicas), v) for g, v in w.own_gradients()]
    w._finite = None

    _add_task_specific(grads, w.task_specific_weights(alpha), down, specific, extra_grads)
    pairs = [(grads[k], variables[k]) for k in sorted(grads)
             if grads[k] is not None and id(variables[k]) not in own]
    pairs += own_pairs
    logs = {**f.logs, **method_logs, **_task_logs(w, alpha, k_mat)}
    return f.outputs, total, f.losses, logs, pairs
