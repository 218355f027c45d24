"""Small solvers on the task Gram matrix ``K [T, T]`` (T = number of tasks), in TF ops
so they run inside the train step on every replica alike. No external solver: the
problems are T-dimensional.
"""

from __future__ import annotations

import itertools

import tensorflow as tf


def project_to_simplex(y: tf.Tensor) -> tf.Tensor:
    """Euclidean projection of ``y [T]`` onto {w >= 0, sum w = 1} (sort-based)."""
    t = tf.shape(y)[0]
    u = tf.sort(y, direction="DESCENDING")
    css = tf.cumsum(u) - 1.0
    ind = tf.cast(tf.range(1, t + 1), y.dtype)
    cond = u - css / ind > 0
    rho = tf.reduce_max(tf.where(cond, tf.range(t), 0))
    theta = css[rho] / tf.cast(rho + 1, y.dtype)
    return tf.maximum(y - theta, 0.0)


def _line_min(v1v1: tf.Tensor, v1v2: tf.Tensor, v2v2: tf.Tensor) -> tf.Tensor:
    """gamma in [0, 1] minimising |gamma v1 + (1 - gamma) v2|^2."""
    den = v1v1 + v2v2 - 2.0 * v1v2
    gamma = tf.math.divide_no_nan(v2v2 - v1v2, den)
    return tf.clip_by_value(gamma, 0.0, 1.0)


def min_norm_element(k: tf.Tensor, max_iter: int = 250, tol: float = 1e-5) -> tf.Tensor:
    """argmin_{w in simplex} w^T K w: MGDA's min-norm point of the convex hull of the
    task gradients (Sener & Koltun 2018, Algorithm 2, Frank-Wolfe with exact line
    search), started from the best pair as their MinNormSolver is."""
    n = int(k.shape[0])
    if n == 1:
        return tf.ones([1], k.dtype)
    best, best_cost = None, None
    for i, j in itertools.combinations(range(n), 2):
        gamma = _line_min(k[i, i], k[i, j], k[j, j])
        cost = (gamma ** 2 * k[i, i] + 2 * gamma * (1 - gamma) * k[i, j]
                + (1 - gamma) ** 2 * k[j, j])
        sol = tf.tensor_scatter_nd_update(tf.zeros([n], k.dtype), [[i], [j]],
                                          tf.stack([gamma, 1.0 - gamma]))
        if best is None:
            best, best_cost = sol, cost
        else:
            better = cost < best_cost
            best = tf.where(better, sol, best)
            best_cost = tf.where(better, cost, best_cost)
    if n == 2:
        return best

    def body(i, w, done):
        kw = tf.linalg.matvec(k, w)
        t = tf.argmin(kw)
        v1v1 = tf.tensordot(w, kw, 1)
        v1v2 = kw[t]
        v2v2 = k[t, t]
        gamma = _line_min(v1v1, v1v2, v2v2)
        new = gamma * w + (1.0 - gamma) * tf.one_hot(t, n, dtype=k.dtype)
        done = tf.reduce_sum(tf.abs(new - w)) < tol
        return i + 1, tf.where(done, w, new), done

    _, w, _ = tf.while_loop(lambda i, w, done: tf.logical_and(i < max_iter, ~done), body,
                            (tf.constant(0), best, tf.constant(False)))
    return w


def cagrad_weights(k: tf.Tensor, c: float, iters: int = 100) -> tf.Tensor:
    """argmin_{w in simplex} w^T K b + c |g0| sqrt(w^T K w), b = 1/T, |g0|^2 = mean(K):
    the dual of CAGrad's inner problem (Liu et al. 2021; LibMTL solves it with SLSQP).
    Dividing the objective by s = max_i K_ii leaves the minimiser unchanged (c |g0|
    becomes c sqrt(mean(K) / s)) and bounds the curvature of the quadratic part by T;
    solved by accelerated projected gradient descent (FISTA)."""
    n = int(k.shape[0])
    s = tf.reduce_max(tf.linalg.diag_part(k)) + 1e-20
    a = k / s
    cn = c * tf.sqrt(tf.maximum(tf.reduce_mean(a), 0.0))
    b = tf.fill([n], 1.0 / n)
    ab = tf.linalg.matvec(a, b)
    step = 1.0 / ((tf.linalg.trace(a) + 1e-12) * (1.0 + cn))

    def grad(w):
        aw = tf.linalg.matvec(a, w)
        return ab + cn * aw / tf.sqrt(tf.maximum(tf.tensordot(w, aw, 1), 0.0) + 1e-8)

    def body(i, w, prev):
        y = w + tf.cast(i, a.dtype) / tf.cast(i + 3, a.dtype) * (w - prev)
        return i + 1, project_to_simplex(y - step * grad(y)), w

    _, w, _ = tf.while_loop(lambda i, w, prev: i < iters, body, (tf.constant(0), b, b))
    return w


def nash_weights(k: tf.Tensor, start: tf.Tensor, max_iter: int = 20, tol: float = 1e-9
                 ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(alpha, Newton steps taken, max_i |alpha_i (K alpha)_i - 1|): the Nash bargaining
    solution of Navon et al. 2022, alpha > 0 with alpha_i (K alpha)_i = 1 for the raw
    Gram matrix K = G G^T (the authors' and LibMTL's fixed point: their normalisation
    of K only conditions the convex program and is undone in its constraint).

    Solved in float64 on beta = sqrt(s) alpha, s = |K|_F, which satisfies the same
    equation with K / s: beta minimises the self-concordant
    f(beta) = beta^T (K / s) beta / 2 - sum_i log beta_i; damped Newton steps (Newton
    decrement lambda, step 1 / (1 + lambda) stays feasible) until the residual is below
    ``tol`` or ``max_iter`` steps, warm-started at ``start`` rescaled to the best multiple.
    A ridge of 1e-10 s keeps f bounded when task gradients are linearly dependent (the
    paper assumes they are not). An all-zero K (nothing to bargain over) returns ``start``.
    """
    n = int(k.shape[0])
    k64 = tf.cast(k, tf.float64)
    s = tf.norm(k64)
    kn = k64 / tf.maximum(s, 1e-300) + 1e-10 * tf.eye(n, dtype=tf.float64)
    b0 = tf.cast(tf.where(start > 0, start, tf.ones_like(start)), tf.float64)
    b0 = b0 * tf.sqrt(float(n) / tf.tensordot(b0, tf.linalg.matvec(kn, b0), 1))

    def residual(b):
        return tf.reduce_max(tf.abs(b * tf.linalg.matvec(kn, b) - 1.0))

    def body(i, b, r):
        g = tf.linalg.matvec(kn, b) - 1.0 / b
        h = kn + tf.linalg.diag(1.0 / tf.square(b))
        d = -tf.linalg.solve(h, g[:, None])[:, 0]
        lam = tf.sqrt(tf.maximum(-tf.tensordot(g, d, 1), 0.0))
        b = b + d / (1.0 + lam)
        return i + 1, b, residual(b)

    steps, b, r = tf.while_loop(lambda i, b, r: tf.logical_and(i < max_iter, r > tol), body,
                                (tf.constant(0), b0, residual(b0)))
    alpha = tf.cast(b / tf.sqrt(tf.maximum(s, 1e-300)), k.dtype)
    solved = s > 0
    return (tf.where(solved, alpha, start), tf.where(solved, steps, 0),
            tf.cast(tf.where(solved, r, 0.0), k.dtype))
