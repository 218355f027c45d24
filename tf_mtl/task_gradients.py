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

from collections.abc import Sequence
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


def task_gradient_update(model: Any, x: Any, y: Any, step: tf.Tensor
                         ) -> tuple[dict, tf.Tensor, dict, dict, list]:
    """(outputs, total, task losses, logs, [(gradient, variable)]) of one step."""
    w: GradientWeighting = model.weighting
    n = len(w.task_names)
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    ctx = tf.distribute.get_replica_context()

    def reduce(tensors, op=tf.distribute.ReduceOp.SUM):
        return ctx.all_reduce(op, tensors) if replicas > 1 and ctx is not None else tensors

    scale = tf.cast(model.optimizer.scale_loss(tf.constant(1.0, tf.float32)), tf.float32)
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
    # transform_losses is elementwise: d objective_i / d L_i is the chain-rule factor.
    factors = tf.cast(tape.gradient(summed, raw), tf.float32)
    total = summed + extra
    variables = list(model.trainable_variables)
    own_vars = list(w.trainable_variables)
    own = {id(v) for v in own_vars}
    seen = reduce(tf.stop_gradient(objectives), tf.distribute.ReduceOp.MEAN)

    def task_grads(i, sources):
        return [None if g is None else tf.cast(g, tf.float32) * factors[i]
                for g in tape.gradient(per_task[i], sources)]

    if w.rep_grad:
        up = _upstream_of_features(tape, reps, variables, own)
        down = [k for k in range(len(variables)) if k not in up]
        if not up:
            raise ValueError(f"rep_features={'+'.join(w.rep_features)}: no trainable variable "
                             "lies before these features")
        sources = [*reps, *(variables[k] for k in down)]
        per = [task_grads(i, sources) for i in range(n)]
        per_example = [tf.stack([_zeros_if_none(per[i][f], r) / scale for i in range(n)])
                       for f, r in enumerate(reps)]
        specific = {k: [per[i][len(reps) + d] for i in range(n)] for d, k in enumerate(down)}
        finite = _all_finite(per_example)
        per_example = _zeros_unless(finite, per_example)
        w._finite = finite
        k_mat = gram(reduce([tf.reduce_sum(g, axis=1) for g in per_example]))
        combined, alpha, method_logs = w.combine_representation(
            per_example, [tf.stop_gradient(r) for r in reps], seen, step, reduce, k=k_mat)
        nan = tf.constant(float("nan"))
        out_grads = [tf.cast(tf.where(finite, c, nan) * scale, r.dtype)
                     for c, r in zip(combined, reps, strict=True)]
        extra_all = tape.gradient(extra_scaled, variables)
        through = _backprop_features(tape, reps, out_grads, [variables[k] for k in up])
        grads = {}
        for k, g in zip(up, through, strict=True):
            grads[k] = g if extra_all[k] is None else g + extra_all[k]
        extra_grads = {k: extra_all[k] for k in down}
    else:
        per = [task_grads(i, variables) for i in range(n)]
        extra_all = tape.gradient(extra_scaled, variables)
        shared = [k for k in range(len(variables)) if id(variables[k]) not in own
                  and sum(per[i][k] is not None for i in range(n)) >= 2]
        if not shared:
            raise ValueError(f"--loss_weighting={w.registered_name}: no variable is shared "
                             "by two tasks, so there is nothing for a gradient method to do")
        down = [k for k in range(len(variables)) if k not in shared]
        stacks = reduce([tf.stack([_zeros_if_none(per[i][k], variables[k]) / scale
                                   for i in range(n)]) for k in shared])
        specific = {k: [per[i][k] for i in range(n)] for k in down}
        finite = _all_finite(stacks)
        stacks = _zeros_unless(finite, stacks)
        w._finite = finite
        k_mat = gram(stacks)
        combined, alpha, method_logs = w.combine_gradients(
            stacks, seen, step, variables=[variables[k] for k in shared], k=k_mat)
        nan = tf.constant(float("nan"))
        grads = {}
        for k, c in zip(shared, combined, strict=True):
            g = tf.where(finite, c, nan) * (scale / replicas)
            grads[k] = g if extra_all[k] is None else g + extra_all[k]
        extra_grads = {k: extra_all[k] for k in down}
    # The method's own trainable variables (IMTL's scales) descend the objectives' sum.
    own_pairs = [(g, v) for g, v in zip(tape.gradient(own_scaled, own_vars), own_vars,
                                        strict=True) if g is not None]
    own_pairs += [(g * (scale / replicas), v) for g, v in w.own_gradients()]
    w._finite = None

    ws = w.task_specific_weights(alpha)
    for k in down:
        parts = [ws[i] * tf.cast(g, tf.float32) for i, g in enumerate(specific[k])
                 if g is not None]
        if extra_grads.get(k) is not None:
            parts.append(tf.cast(extra_grads[k], tf.float32))
        if parts:
            grads[k] = tf.add_n(parts)
    pairs = [(grads[k], variables[k]) for k in sorted(grads)
             if grads[k] is not None and id(variables[k]) not in own]
    pairs += own_pairs
    logs = {**logs, **method_logs, **_task_logs(w, alpha, k_mat)}
    return outputs, total, losses, logs, pairs

