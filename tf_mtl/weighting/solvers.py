"""Small solvers on the task Gram matrix ``K [T, T]`` (T = number of tasks), in TF ops
so they run inside the train step on every replica alike. No external solver: the
problems are T-dimensional.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf


def _line_min(v1v1: tf.Tensor, v1v2: tf.Tensor, v2v2: tf.Tensor) -> tf.Tensor:
    """gamma in [0, 1] minimising |gamma v1 + (1 - gamma) v2|^2."""
    den = v1v1 + v2v2 - 2.0 * v1v2
    gamma = tf.math.divide_no_nan(v2v2 - v1v2, den)
    return tf.clip_by_value(gamma, 0.0, 1.0)


def _masked_solve(a: tf.Tensor, rhs: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Solves the rows and columns of ``a`` in ``mask`` (identity elsewhere)."""
    m = tf.cast(mask, a.dtype)
    sub = a * m[:, None] * m[None, :] + tf.linalg.diag(1.0 - m)
    return tf.linalg.solve(sub, (rhs * m)[:, None])[:, 0]


def min_norm_element(k: tf.Tensor, max_iter: int = 0, tol: float = 1e-13
                     ) -> tuple[tf.Tensor, tf.Tensor]:
    """(argmin_{w in simplex} w^T K w, iterations): MGDA's min-norm point of the convex
    hull of the task gradients (Sener & Koltun 2018), exactly. Two tasks: the closed
    form of their Algorithm 1 (exact 0 and 1 at a vertex). More: Wolfe's min-norm-point
    algorithm (1976) in float64 on K / max_i K_ii, which ends in finitely many steps
    (at most ``max_iter``, default 10 T + 10): each step finds the min-norm point of the
    affine hull of a set of gradients (the "corral") and either adds the gradient most
    opposed to it or, where that point leaves the simplex, steps to the boundary and
    drops one. It replaces the Frank-Wolfe iteration of their MinNormSolver (LibMTL's
    too), which stops on a small change of w well before the optimum when the
    gradients' norms differ by decades."""
    n = int(k.shape[0])
    if n == 1:
        return tf.ones([1], k.dtype), tf.constant(0)
    k64 = tf.cast(k, tf.float64)
    if n == 2:
        gamma = _line_min(k64[0, 0], k64[0, 1], k64[1, 1])
        return tf.cast(tf.stack([gamma, 1.0 - gamma]), k.dtype), tf.constant(0)
    a = k64 / tf.maximum(tf.reduce_max(tf.linalg.diag_part(k64)), 1e-300)
    # the corral's affine min-norm point: [A_S 1; 1^T 0] [y; -mu] = [0; 1]
    border = tf.concat([tf.concat([a, tf.ones([n, 1], tf.float64)], 1),
                        tf.concat([tf.ones([1, n], tf.float64), tf.zeros([1, 1], tf.float64)],
                                  1)], 0)
    e_last = tf.one_hot(n, n + 1, dtype=tf.float64)
    start = tf.one_hot(tf.argmin(tf.linalg.diag_part(a)), n, dtype=tf.float64)

    def body(i, w, corral, done):
        y = _masked_solve(border, e_last, tf.concat([corral, [True]], 0))[:n]
        y = tf.where(corral, y, 0.0)
        inside = tf.reduce_min(tf.where(corral, y, 1.0)) > 0.0
        # inside the simplex: y is the corral's optimum; add the most opposed gradient
        grad = tf.linalg.matvec(a, y)
        out = tf.where(corral, tf.constant(float("inf"), tf.float64), grad)
        j = tf.argmin(out)
        add = out[j] < tf.tensordot(y, grad, 1) - tol
        # outside: move from w toward y to the boundary, drop what reaches 0
        shrink = tf.logical_and(corral, y <= 0.0)
        theta = tf.reduce_min(tf.where(shrink, tf.math.divide_no_nan(w, w - y), 1.0))
        stepped = w + theta * (y - w)
        kept = tf.logical_and(corral, stepped > 1e-15)
        stepped = tf.where(kept, stepped, 0.0)
        stepped = stepped / tf.reduce_sum(stepped)
        w = tf.where(inside, y, stepped)
        corral = tf.where(inside, tf.logical_or(corral, tf.logical_and(
            add, tf.one_hot(j, n, on_value=True, off_value=False))), kept)
        return i + 1, w, corral, tf.logical_and(inside, tf.logical_not(add))

    limit = max_iter or 10 * n + 10
    steps, w, _, _ = tf.while_loop(
        lambda i, w, c, done: tf.logical_and(i < limit, tf.logical_not(done)), body,
        (tf.constant(0), start, start > 0, tf.constant(False)))
    return tf.cast(w, k.dtype), steps


def simplex_minimize(grad_hess: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]], n: int,
                     max_iter: int = 100, tol: float = 1e-13
                     ) -> tuple[tf.Tensor, tf.Tensor]:
    """(argmin_{w in simplex} f(w), iterations) for a smooth convex f given by
    ``grad_hess(w) -> (gradient, Hessian)`` in float64: the primal-dual interior-point
    method (Boyd & Vandenberghe, Convex Optimization, 11.7; mu = 10, backtracking on the
    residual) until the surrogate duality gap is below ``tol`` and the dual residual below
    100 ``tol``, at most ``max_iter`` steps. Newton steps: the solution to round-off
    where first-order methods stall on ill-conditioned problems."""
    one = tf.ones([n], tf.float64)

    def residual(w, lam, nu, tinv):
        g, _ = grad_hess(w)
        return tf.concat([g - lam + nu * one, lam * w - tinv, [tf.reduce_sum(w) - 1.0]], 0)

    def body(i, w, lam, nu, done):
        tinv = tf.tensordot(w, lam, 1) / (10.0 * n)
        g, h = grad_hess(w)
        r = tf.concat([g - lam + nu * one, lam * w - tinv, [tf.reduce_sum(w) - 1.0]], 0)
        r_dual, r_cent, r_pri = r[:n], r[n:2 * n], r[2 * n]
        kkt = tf.concat([tf.concat([h + tf.linalg.diag(lam / w), one[:, None]], 1),
                         tf.concat([one[None, :], tf.zeros([1, 1], tf.float64)], 1)], 0)
        rhs = tf.concat([-r_dual - r_cent / w, [-r_pri]], 0)
        sol = tf.linalg.solve(kkt, rhs[:, None])[:, 0]
        dw, dnu = sol[:n], sol[n]
        dlam = -(r_cent + lam * dw) / w
        big = tf.constant(1e300, tf.float64)
        cap = tf.minimum(tf.reduce_min(tf.where(dlam < 0, -lam / tf.where(dlam < 0, dlam, -1.0),
                                                big)),
                         tf.reduce_min(tf.where(dw < 0, -w / tf.where(dw < 0, dw, -1.0), big)))
        step = tf.minimum(tf.constant(1.0, tf.float64), 0.99 * cap)
        norm0 = tf.norm(r)
        step = tf.while_loop(
            lambda s: tf.logical_and(
                s > 1e-12, tf.norm(residual(w + s * dw, lam + s * dlam, nu + s * dnu, tinv))
                > (1.0 - 0.01 * s) * norm0),
            lambda s: (s * 0.5,), (step,))[0]
        w, lam, nu = w + step * dw, lam + step * dlam, nu + step * dnu
        g, _ = grad_hess(w)
        done = tf.logical_and(tf.tensordot(w, lam, 1) < tol,
                              tf.norm(g - lam + nu * one) < 100.0 * tol)
        return i + 1, w, lam, nu, done

    steps, w, _, _, _ = tf.while_loop(
        lambda i, w, lam, nu, done: tf.logical_and(i < max_iter, tf.logical_not(done)), body,
        (tf.constant(0), one / n, one, tf.constant(0.0, tf.float64), tf.constant(False)))
    return w, steps


def cagrad_weights(k: tf.Tensor, c: float, max_iter: int = 100
                   ) -> tuple[tf.Tensor, tf.Tensor]:
    """(w, iterations): argmin_{w in simplex} w^T K b + c |g0| sqrt(w^T K w + 1e-8),
    b = 1/T, |g0| = sqrt(mean(K) + 1e-8): the dual of CAGrad's inner problem as LibMTL
    states it (Liu et al. 2021). Dividing the objective by s = max_i K_ii leaves the
    minimiser unchanged; solved in float64 by :func:`simplex_minimize` to a duality gap
    of 1e-13 (first-order methods stall on nearly parallel gradients; LibMTL's SLSQP
    stops at its default tolerance of 1e-6)."""
    n = int(k.shape[0])
    k64 = tf.cast(k, tf.float64)
    s = tf.maximum(tf.reduce_max(tf.linalg.diag_part(k64)), 1e-300)
    a = k64 / s
    cn = c * tf.sqrt(tf.maximum(tf.reduce_mean(k64), 0.0) + 1e-8) / tf.sqrt(s)
    eps = 1e-8 / s
    ab = tf.linalg.matvec(a, tf.fill([n], tf.constant(1.0 / n, tf.float64)))

    def grad_hess(w):
        aw = tf.linalg.matvec(a, w)
        q = tf.sqrt(tf.maximum(tf.tensordot(w, aw, 1), 0.0) + eps)
        return (ab + cn * aw / q,
                cn * (a / q - aw[:, None] * aw[None, :] / q ** 3))

    w, steps = simplex_minimize(grad_hess, n, max_iter)
    return tf.cast(w, k.dtype), steps


def nash_weights(k: tf.Tensor, start: tf.Tensor, max_iter: int = 20, tol: float = 1e-9
                 ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(alpha in ``start``'s dtype, Newton steps taken, max_i |alpha_i (K alpha)_i - 1|
    (float32)): the Nash bargaining
    solution of Navon et al. 2022, alpha > 0 with alpha_i (K alpha)_i = 1 for the raw
    Gram matrix K = G G^T (the authors' and LibMTL's fixed point: their normalisation
    of K only conditions the convex program and is undone in its constraint).

    Solved in float64 on beta = sqrt(s) alpha, s = |K|_F, which satisfies the same
    equation with K / s: beta minimises the self-concordant
    f(beta) = beta^T (K / s) beta / 2 - sum_i log beta_i; damped Newton steps (Newton
    decrement lambda, step 1 / (1 + lambda) stays feasible) until the residual is below
    ``tol`` or ``max_iter`` steps, warm-started at ``start`` rescaled to the best multiple.
    A ridge of 1e-10 K_ii (and 1e-16 s) keeps f bounded when task gradients are linearly
    dependent (the paper assumes they are not); it moves alpha by about 1e-10 relative. An all-zero K (nothing to bargain over) returns ``start``.
    """
    n = int(k.shape[0])
    k64 = tf.cast(k, tf.float64)
    s = tf.norm(k64)
    kn = k64 / tf.maximum(s, 1e-300)
    kn = kn + tf.linalg.diag(1e-10 * tf.linalg.diag_part(kn) + 1e-16)
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
    alpha = tf.cast(b / tf.sqrt(tf.maximum(s, 1e-300)), start.dtype)
    solved = s > 0
    return (tf.where(solved, alpha, start), tf.where(solved, steps, 0),
            tf.cast(tf.where(solved, r, 0.0), tf.float32))
