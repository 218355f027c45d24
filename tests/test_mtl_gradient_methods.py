"""Every weighting method against a NumPy reference written from its paper's equations.

The problem: a shared vector theta and one bias per task, with task losses
L_i = c_i . theta + b_i + const_i, so the task gradients of the shared variable are the
hand-made rows c_i (tasks 1 and 2 conflict: c_1 . c_2 < 0). One step of SGD (lr 1)
through `MultiTaskModel.train_step` moves theta by minus the method's update, which the
reference computes from C and the losses. Representation-gradient methods use a shared
linear layer whose output is the representation. Tolerances are stated per method:
1e-5 (relative) for closed forms, looser for the iterative solvers.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from bench.bench_libmtl_parity import (
    aligned_exact,
    cagrad_alpha,
    cagrad_exact,
    imtl_exact,
    min_norm_exact,
    nash_exact,
)
from tf_mtl.model import MultiTaskModel
from tf_mtl.precision import policy_scope, wrap_optimizer
from tf_mtl.tasks import Task
from tf_mtl.weighting import WEIGHTINGS, get_weighting, parse_weighting_options
from tf_mtl.weighting.pcgrad import random_orders

C = np.array([[1.0, 0.5, 0.0, 0.2],
              [-0.8, 0.3, 0.4, 0.0],
              [0.2, 0.1, -0.5, 0.6]], np.float32)
CONST = np.array([2.0, 3.0, 1.5], np.float32)
THETA0 = np.array([0.1, -0.2, 0.3, 0.05], np.float32)
NAMES = ["a", "b", "c"]


class _Shared(keras.layers.Layer):
    def __init__(self, c, **kw):
        super().__init__(**kw)
        self.c = np.asarray(c, np.float32)
        self.theta = self.add_weight(shape=(self.c.shape[1],), name="theta",
                                     initializer=keras.initializers.Constant(THETA0[:self.c.shape[1]]))
        self.bias = [self.add_weight(shape=(), name=f"bias_{i}", initializer="zeros")
                     for i in range(self.c.shape[0])]
        for i, b in enumerate(self.bias):  # attributes: checkpoints do not follow lists
            setattr(self, f"bias_{i}", b)

    def call(self, x):
        ones = x[:, :1]  # 1 in the data below; a huge x overflows float16
        out = tf.linalg.matvec(tf.constant(self.c, self.compute_dtype),
                               tf.cast(self.theta, self.compute_dtype))
        return {NAMES[i]: ones * (out[i] + self.bias[i] + CONST[i])
                for i in range(self.c.shape[0])}


def _mean_loss(y, p):
    return tf.reduce_mean(p)


def _tasks(n):
    return [Task(NAMES[i], _mean_loss) for i in range(n)]


def _model(name, n=3, options=None, c=C, lr=1.0):
    inp = keras.Input((1,))
    layer = _Shared(c[:n])
    net = keras.Model(inp, layer(inp))
    tasks = _tasks(n)
    model = MultiTaskModel(net, tasks, get_weighting(name, tasks, options))
    model.compile(optimizer=keras.optimizers.SGD(lr), run_eagerly=True)
    return model, layer


def _current_losses(layer):
    """The task losses now (theta and the task biases as the steps left them)."""
    return C @ layer.theta.numpy() + np.array([b.numpy() for b in layer.bias]) + CONST


def _data(n):
    x = np.ones((2, 1), np.float32)
    return x, {NAMES[i]: np.zeros((2, 1), np.float32) for i in range(n)}


def _step(model, n):
    x, y = _data(n)
    return model.train_on_batch(x, y, return_dict=True)


def _update(name, n=3, options=None, steps=1):
    model, layer = _model(name, n, options)
    logs = None
    before = layer.theta.numpy().copy()
    for _ in range(steps):
        before = layer.theta.numpy().copy()
        logs = _step(model, n)
    return before - layer.theta.numpy(), model, layer, logs


def _losses(theta, n=3):
    return C[:n] @ theta + CONST[:n]


# ------------------------------------------------------------------ references
def ref_pcgrad(g, orders):
    pc = g.copy()
    for i in range(len(g)):
        for j in orders[i]:
            d = pc[i] @ g[j]
            if d < 0:
                pc[i] -= d / (g[j] @ g[j] + 1e-8) * g[j]
    return pc.sum(0)


def ref_gradvac(g, orders, beta, phi):
    pc, phi = g.copy(), phi.copy()
    for i in range(len(g)):
        for j in orders[i]:
            if j == i:
                continue
            rho = pc[i] @ g[j] / (np.linalg.norm(pc[i]) * np.linalg.norm(g[j]) + 1e-8)
            if rho < phi[i, j]:
                w = np.linalg.norm(pc[i]) * (phi[i, j] * np.sqrt(1 - rho ** 2) - rho * np.sqrt(
                    1 - phi[i, j] ** 2)) / (np.linalg.norm(g[j]) * np.sqrt(1 - phi[i, j] ** 2))
                pc[i] += w * g[j]
            phi[i, j] = (1 - beta) * phi[i, j] + beta * rho
    return pc.sum(0), phi


def ref_min_norm(g):
    return min_norm_exact(g @ g.T)


def ref_cagrad(g, calpha=0.5):
    k = g @ g.T
    return cagrad_alpha(k, cagrad_exact(k, calpha), calpha, 1) @ g


def ref_imtl(g):
    return imtl_exact(g) @ g, g / np.linalg.norm(g, axis=1, keepdims=True)


def ref_aligned(g):
    return aligned_exact(g @ g.T) @ g


def ref_nash(g, max_norm=1.0):
    """alpha_i (K alpha)_i = 1 with the raw Gram matrix (the authors' fixed point)."""
    a = nash_exact(g @ g.T)
    assert np.abs(a * (g @ g.T @ a) - 1).max() < 1e-10
    d = a @ g
    if max_norm > 0:
        d = d * min(1.0, max_norm / (np.linalg.norm(d) + 1e-6))
    return d, a


# ------------------------------------------------------------------------ tests
def test_every_method_is_registered():
    expected = {"fixed", "uncertainty", "dwa", "rlw", "gls", "db_mtl", "famo", "pcgrad",
                "graddrop", "gradvac", "mgda", "mgda_ub", "cagrad", "imtl", "gradnorm",
                "aligned_mtl", "nash_mtl"}
    assert expected <= set(WEIGHTINGS)


def test_weighting_options_are_parsed_and_checked():
    assert parse_weighting_options("cagrad", "calpha=0.4,rescale=2")["calpha"] == 0.4
    assert parse_weighting_options("pcgrad", "rep_grad=true")["rep_grad"] is True
    with pytest.raises(ValueError, match="'alpha' is not an option of --loss_weighting=cagrad"):
        parse_weighting_options("cagrad", "alpha=1")
    with pytest.raises(ValueError, match="must be a float"):
        parse_weighting_options("cagrad", "calpha=big")
    with pytest.raises(ValueError, match="not a known loss weighting"):
        get_weighting("pcgard", _tasks(2))
    with pytest.raises(ValueError, match="representation gradients only"):
        get_weighting("graddrop", _tasks(2), "rep_grad=false")
    with pytest.raises(ValueError, match="does not support representation"):
        get_weighting("db_mtl", _tasks(2), "rep_grad=true")


def test_conflicting_pair_is_conflicting():
    assert C[0] @ C[1] < 0


@pytest.mark.parametrize("n", [2, 3])
def test_pcgrad_matches_reference(n):
    d, model, _, logs = _update("pcgrad", n)
    orders = random_orders(model.weighting.random_seed(tf.constant(0)), n).numpy()
    ref = ref_pcgrad(C[:n].astype(np.float64), orders)
    np.testing.assert_allclose(d, ref, rtol=1e-5, atol=1e-6)
    assert logs["cos_a_b"] < 0  # the conflict is logged


def test_gradvac_matches_reference_over_two_steps():
    model, layer = _model("gradvac", 3, "beta=0.5")
    phi = np.zeros((3, 3))
    for step in range(2):
        before = layer.theta.numpy().copy()
        _step(model, 3)
        orders = random_orders(model.weighting.random_seed(tf.constant(step)), 3).numpy()
        ref, phi = ref_gradvac(C.astype(np.float64), orders, 0.5, phi)
        np.testing.assert_allclose(before - layer.theta.numpy(), ref, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(model.weighting.rho_target.numpy(), phi, atol=1e-5)


@pytest.mark.parametrize("n", [2, 3])
def test_mgda_finds_the_min_norm_point(n):
    d, _, _, _ = _update("mgda", n)
    ref = ref_min_norm(C[:n].astype(np.float64)) @ C[:n]
    np.testing.assert_allclose(d, ref, atol=1e-4)


@pytest.mark.parametrize("gn", ["l2", "loss", "loss+"])
def test_mgda_normalisers_choose_weights_for_the_raw_gradients(gn):
    """The authors' code: weights from the normalised gradients, applied to the raw ones."""
    d, _, _, _ = _update("mgda", 3, f"mgda_gn={gn}")
    g = C.astype(np.float64)
    norms, losses = np.linalg.norm(g, axis=1), _losses(THETA0).astype(np.float64)
    gn_i = {"l2": norms, "loss": losses, "loss+": losses * norms}[gn]
    w = ref_min_norm(g / gn_i[:, None])
    np.testing.assert_allclose(d, w @ g, atol=1e-4)
    assert np.linalg.norm(d - w @ (g / gn_i[:, None])) > 0.1 * np.linalg.norm(d)  # not those


def test_cagrad_matches_reference():
    d, _, _, logs = _update("cagrad", 3)
    np.testing.assert_allclose(d, ref_cagrad(C.astype(np.float64)), rtol=1e-5, atol=1e-7)
    assert 1 <= logs["cagrad_steps"] < 100  # converged, not capped


@pytest.mark.parametrize("kind", ["parallel", "unequal"])
def test_solvers_reach_the_float64_solution(kind):
    """Where first-order solvers stopped short (FISTA on nearly parallel gradients,
    Frank-Wolfe on norms three decades apart), ours land within 1e-6 of the exact
    float64 solutions of the same problems."""
    from tf_mtl.weighting.solvers import cagrad_weights, min_norm_element
    rng = np.random.default_rng(3)
    if kind == "parallel":
        g = rng.standard_normal(8) + 0.02 * rng.standard_normal((3, 8))
    else:
        g = rng.standard_normal((3, 8))
        g = g / np.linalg.norm(g, axis=1, keepdims=True) * np.array([[10.0], [1.0], [1e-2]])
    k = g @ g.T
    w, steps = min_norm_element(tf.constant(k, tf.float64))
    ref = min_norm_exact(k)
    np.testing.assert_allclose(w.numpy() @ g, ref @ g, rtol=1e-6, atol=1e-12)
    assert steps.numpy() < 40
    w, steps = cagrad_weights(tf.constant(k, tf.float64), 0.5)
    ref = cagrad_exact(k, 0.5)
    np.testing.assert_allclose(cagrad_alpha(k, w.numpy(), 0.5, 1) @ g,
                               cagrad_alpha(k, ref, 0.5, 1) @ g, rtol=1e-6)
    assert steps.numpy() < 100


def test_mgda_vertex_is_exact():
    """g_1 . g_2 >= |g_2|^2: the min-norm point is g_2 itself, weights exactly 0 and 1
    (the authors' MinNormSolver returns 0.001 and 0.999)."""
    from tf_mtl.weighting.solvers import min_norm_element
    k = tf.constant([[4.0, 1.5], [1.5, 1.0]])
    w, _ = min_norm_element(k)
    np.testing.assert_array_equal(w.numpy(), [0.0, 1.0])
    k3 = tf.constant([[4.0, 1.5, 2.0], [1.5, 1.0, 1.2], [2.0, 1.2, 3.0]])
    w, _ = min_norm_element(k3)
    np.testing.assert_allclose(w.numpy(), [0.0, 1.0, 0.0], atol=1e-7)


def test_imtl_and_aligned_on_nearly_parallel_gradients():
    """Ill-conditioned: the float64 Gram matrix keeps both within 1e-4 of the float64
    closed forms (from the float32 one IMTL landed 1e-3 away)."""
    rng = np.random.default_rng(5)
    c = (rng.standard_normal(4) + 0.02 * rng.standard_normal((3, 4))).astype(np.float32)
    for name, ref in (("imtl", ref_imtl(c.astype(np.float64))[0]),
                      ("aligned_mtl", ref_aligned(c.astype(np.float64)))):
        model, layer = _model(name, 3, c=c)
        _step(model, 3)
        np.testing.assert_allclose(THETA0 - layer.theta.numpy(), ref, rtol=1e-4, atol=1e-6)


def test_imtl_update_has_equal_projections_and_learns_scales():
    model, layer = _model("imtl", 3)
    _step(model, 3)
    d = THETA0 - layer.theta.numpy()
    ref, u = ref_imtl(C.astype(np.float64))
    np.testing.assert_allclose(d, ref, rtol=1e-4, atol=1e-6)
    proj = u @ d
    np.testing.assert_allclose(proj, proj[0], rtol=1e-4)
    # exp(s) L - s at s = 0: ds = -(L - 1) with SGD(1)
    np.testing.assert_allclose(model.weighting.loss_scale.numpy(), -(_losses(THETA0) - 1),
                               rtol=1e-5)


def test_aligned_mtl_matches_reference():
    d, _, _, _ = _update("aligned_mtl", 3)
    np.testing.assert_allclose(d, ref_aligned(C.astype(np.float64)), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("scale", [1.0, 0.05])
def test_nash_mtl_solves_the_bargaining_equation(scale):
    """The raw Gram matrix: alpha scales as 1 / scale. At scale 0.05 T |K|_F < 1 (the
    old normalised equation's update was not clipped there); max_norm=0: no clip."""
    c = C * scale
    model, layer = _model("nash_mtl", 3, "max_norm=0", c=c)
    logs = _step(model, 3)
    d = THETA0 - layer.theta.numpy()
    ref, alpha = ref_nash(c.astype(np.float64), max_norm=0)
    got = model.weighting.alpha.numpy().astype(np.float64)
    k = c.astype(np.float64) @ c.T.astype(np.float64)
    # the authors' equation alpha_i (G G^T alpha)_i = 1, to 1e-5 relative
    np.testing.assert_allclose(got * (k @ got), 1.0, rtol=1e-5)
    np.testing.assert_allclose(got, alpha, rtol=1e-5)
    np.testing.assert_allclose(d, ref, rtol=1e-5, atol=1e-7)
    # task-specific biases descend alpha_i L_i (not clipped)
    np.testing.assert_allclose([-b.numpy() for b in layer.bias], alpha, rtol=1e-5)
    assert 1 <= logs["nash_steps"] <= 20 and logs["nash_residual"] < 1e-6


@pytest.mark.parametrize("scale", [1.0, 0.05])
def test_nash_mtl_clips_the_shared_update(scale):
    """Also where T |K|_F < 1 (scale 0.05), which the normalised equation left unclipped."""
    c = C * scale
    model, layer = _model("nash_mtl", 3, c=c)
    _step(model, 3)
    d = THETA0 - layer.theta.numpy()
    ref, alpha = ref_nash(c.astype(np.float64))
    np.testing.assert_allclose(d, ref, rtol=1e-5, atol=1e-7)
    # at the fixed point |sum alpha_i g_i| = sqrt(T) > max_norm = 1: clipped to norm 1
    np.testing.assert_allclose(np.linalg.norm(alpha @ c), np.sqrt(3), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(d), 1.0, rtol=1e-5)
    np.testing.assert_allclose([-b.numpy() for b in layer.bias], alpha, rtol=1e-5)


def test_nash_mtl_warm_start_is_scale_free():
    """From the previous alpha at another gradient scale the solver still converges."""
    from tf_mtl.weighting.solvers import nash_weights
    k = tf.constant(C @ C.T, tf.float32)
    for start in ([1.0, 1.0, 1.0], [1e4, 1e-3, 5.0]):
        alpha, steps, res = nash_weights(k * 1e-6, tf.constant(start), 50)
        a = alpha.numpy().astype(np.float64)
        np.testing.assert_allclose(a * ((C @ C.T).astype(np.float64) * 1e-6 @ a), 1.0,
                                   rtol=1e-5)
        assert res.numpy() < 1e-9 and 1 <= steps.numpy() < 50


def test_gradnorm_weights_follow_the_gradnorm_loss():
    model, layer = _model("gradnorm", 3)
    _step(model, 3)
    d = THETA0 - layer.theta.numpy()
    np.testing.assert_allclose(d, C.sum(0), rtol=1e-5)  # w = 1 at the start
    norms = np.linalg.norm(C.astype(np.float64), axis=1)
    target = norms.mean()  # r = 1 at the first step (L = L(0))
    dldw = np.sign(norms - target) * norms
    z = np.ones(3) / 3
    dldv = 3 * (np.diag(z) - np.outer(z, z)) @ dldw
    np.testing.assert_allclose(model.weighting.loss_scale.numpy(), 1 - dldv, rtol=1e-5)
    np.testing.assert_allclose(model.weighting.initial_losses.numpy(), _losses(THETA0),
                               rtol=1e-6)


def test_db_mtl_balances_log_loss_gradients():
    model, layer = _model("db_mtl", 3)
    h = np.zeros_like(C, dtype=np.float64)
    for _ in range(2):
        g = C / _current_losses(layer)[:, None]  # gradient of log L_i
        h = 0.1 * g + 0.9 * h
        norms = np.linalg.norm(h, axis=1)
        ref = (norms.max() / norms) @ h
        before = layer.theta.numpy().copy()
        _step(model, 3)
        np.testing.assert_allclose(before - layer.theta.numpy(), ref, rtol=1e-4)


def test_gls_is_the_geometric_mean():
    d, _, _, logs = _update("gls", 3)
    L = _losses(THETA0).astype(np.float64)
    total = np.prod(L) ** (1 / 3)
    np.testing.assert_allclose(d, (total / (3 * L)) @ C, rtol=1e-5)
    np.testing.assert_allclose(logs["loss"], total, rtol=1e-5)


def test_famo_weights_and_its_logit_update():
    model, layer = _model("famo", 3, lr=0.1)
    w = np.zeros(3)
    m = v = np.zeros(3)
    prev = None
    for t in range(3):
        L = _current_losses(layer)
        if prev is not None:  # Adam step on the logits from the change in log loss
            delta = np.log(prev) - np.log(L)
            z = np.exp(w) / np.exp(w).sum()
            dw = z * (delta - (z * delta).sum()) + 1e-3 * w
            m = 0.9 * m + 0.1 * dw
            v = 0.999 * v + 0.001 * dw ** 2
            w = w - 0.025 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
        z = np.exp(w) / np.exp(w).sum()
        c = (z / L).sum()
        ref = 0.1 * (z / (c * L)) @ C
        before = layer.theta.numpy().copy()
        _step(model, 3)
        np.testing.assert_allclose(before - layer.theta.numpy(), ref, rtol=1e-4)
        np.testing.assert_allclose(model.weighting.logits.numpy(), w, atol=1e-6)
        prev = L


def test_rlw_weights_are_softmax_of_a_normal_draw():
    w = get_weighting("rlw", _tasks(3), "seed=3")
    draws = np.stack([w.draw(tf.constant(s)).numpy() for s in range(3000)])
    np.testing.assert_allclose(draws.sum(1), 1.0, rtol=1e-6)
    rng = np.random.default_rng(0)
    z = rng.standard_normal((200000, 3))
    ref = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    # mean of the largest weight: 0.5636 for T = 3; 3000 draws: std error ~ 0.003
    assert abs(draws.max(1).mean() - ref.max(1).mean()) < 0.015
    assert abs(draws.mean() - 1 / 3) < 1e-6
    assert not np.allclose(draws[0], draws[1])
    d, model, _, _ = _update("rlw", 3)
    np.testing.assert_allclose(d, model.weighting.draw(tf.constant(0)).numpy() @ C, rtol=1e-5)


# ------------------------------------------------------ representation gradients
class _RepHeads(keras.layers.Layer):
    def __init__(self, c, **kw):
        super().__init__(**kw)
        self.c = np.asarray(c, np.float32)

    def call(self, rep):
        return {NAMES[i]: tf.reduce_sum(rep * self.c[i], -1, keepdims=True) + CONST[i]
                for i in range(len(self.c))}


X = np.array([[1.0, 2.0], [0.5, -1.0]], np.float32)
W0 = np.array([[0.3, -0.1, 0.2, 0.4], [0.1, 0.2, -0.3, 0.0]], np.float32)


def _rep_model(name, options, n=3):
    inp = keras.Input((2,))
    dense = keras.layers.Dense(4, use_bias=False, name="shared",
                               kernel_initializer=keras.initializers.Constant(W0))
    rep = keras.layers.Identity(name="rep")(dense(inp))
    net = keras.Model(inp, _RepHeads(C[:n])(rep))
    tasks = _tasks(n)
    model = MultiTaskModel(net, tasks, get_weighting(name, tasks, options))
    model.compile(optimizer=keras.optimizers.SGD(1.0), run_eagerly=True)
    return model, dense


def _rep_update(alpha_rows):
    """SGD(1) change of the shared kernel when every example's combined representation
    gradient is ``alpha_rows[b] / B``."""
    return X.T @ (alpha_rows / len(X))


@pytest.mark.parametrize("name", ["mgda_ub", "mgda_ub+loss+", "pcgrad", "imtl", "aligned_mtl"])
def test_representation_gradient_methods(name):
    name, _, gn = name.partition("+")
    options = "rep_grad=true,rep_features=rep" + (f",mgda_gn={gn}" if gn else "")
    model, dense = _rep_model(name, options)
    x, y = X, {n: np.zeros((2, 1), np.float32) for n in NAMES}
    model.train_on_batch(x, y)
    g = C.astype(np.float64)  # the batch-summed representation gradients are the rows c_i
    if name == "mgda_ub":  # loss+: weights from the normalised rows, applied to the raw
        n = (C @ W0.T @ X.T).sum(1) / len(X) + CONST if gn else np.ones(3)  # mean losses
        n = n * np.linalg.norm(g, axis=1) if gn else n
        comb = ref_min_norm(g / n[:, None]) @ g
    elif name == "pcgrad":
        orders = random_orders(model.weighting.random_seed(tf.constant(0)), 3).numpy()
        comb = ref_pcgrad(g, orders)
    elif name == "imtl":
        comb = ref_imtl(g)[0]
    else:
        comb = ref_aligned(g)
    ref = _rep_update(np.tile(comb, (2, 1)))
    np.testing.assert_allclose(W0 - dense.kernel.numpy(), ref, rtol=1e-4, atol=1e-6)


def test_graddrop_keeps_each_sign_with_its_purity():
    w = get_weighting("graddrop", _tasks(2))
    # two tasks, elements with purity P = 0.8 (s = [+0.6, -0.15] ...): 20000 columns
    s = np.tile(np.array([[0.6], [-0.15]], np.float32), (1, 20000))
    p = 0.5 * (1 + s.sum(0) / np.abs(s).sum(0))
    keep = w.masks([tf.constant(s)], tf.constant(5))[0].numpy()
    assert abs(keep[0].mean() - p[0]) < 0.01   # positive signal kept with prob. P
    assert abs(keep[1].mean() - (1 - p[0])) < 0.01  # negative with 1 - P
    np.testing.assert_array_equal(keep[0] + keep[1], 1.0)  # exactly one sign survives
    again = w.masks([tf.constant(s)], tf.constant(5))[0].numpy()
    np.testing.assert_array_equal(keep, again)  # seeded by the step


def test_graddrop_step_applies_the_masks():
    model, dense = _rep_model("graddrop", "rep_features=rep", n=2)
    y = {n: np.zeros((2, 1), np.float32) for n in NAMES[:2]}
    model.train_on_batch(X, y)
    sign = np.sign(X @ W0)  # the representation's sign per example
    per = np.stack([np.tile(C[i], (2, 1)) / 2 for i in range(2)])  # [T, B, 4]
    s = (per * sign[None]).sum(1)
    keep = model.weighting.masks([tf.constant(s, tf.float32)], tf.constant(0))[0].numpy()
    comb = (per * keep[:, None, :]).sum(0)
    np.testing.assert_allclose(W0 - dense.kernel.numpy(), X.T @ comb, rtol=1e-5, atol=1e-7)


def test_fixed_and_uncertainty_still_plain():
    d, _, _, _ = _update("fixed", 3)
    np.testing.assert_allclose(d, C.sum(0), rtol=1e-6)


STATEFUL = ["gradvac", "famo", "db_mtl", "gradnorm", "nash_mtl", "imtl"]


@pytest.mark.parametrize("name", STATEFUL)
def test_resume_gives_the_uninterrupted_next_update(name, tmp_path):
    straight, layer = _model(name, 3, lr=0.05)
    for _ in range(3):
        _step(straight, 3)
    first, _ = _model(name, 3, lr=0.05)
    for _ in range(2):
        _step(first, 3)
    path = first.make_checkpoint().save(str(tmp_path / "ckpt"))
    resumed, layer2 = _model(name, 3, lr=0.05)
    resumed.make_checkpoint().restore(path).assert_existing_objects_matched()
    _step(resumed, 3)
    for a, b in zip(straight.weighting.weights, resumed.weighting.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(layer.theta.numpy(), layer2.theta.numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["gradvac", "nash_mtl", "mgda"])
def test_mixed_float16_overflow_skips_the_step(name):
    with policy_scope("mixed_float16"):
        inp = keras.Input((1,))
        layer = _Shared(C)
        net = keras.Model(inp, layer(inp))
        tasks = _tasks(3)
        model = MultiTaskModel(net, tasks, get_weighting(name, tasks))
        model.compile(optimizer=wrap_optimizer(keras.optimizers.SGD(0.05), "mixed_float16"),
                      run_eagerly=True)
        x, y = _data(3)
        model.train_on_batch(x, y)
        state = [w.numpy().copy() for w in model.weighting.weights]
        theta = layer.theta.numpy().copy()
        scale = float(model.optimizer.dynamic_scale.numpy())
        model.train_on_batch(np.full_like(x, 1e6), y)  # float16 overflow: inf gradients
        np.testing.assert_array_equal(layer.theta.numpy(), theta)
        for a, b in zip(state, model.weighting.weights, strict=True):
            np.testing.assert_array_equal(a, b.numpy())
        assert float(model.optimizer.dynamic_scale.numpy()) == scale / 2
        model.train_on_batch(x, y)  # and the next finite step trains again
        assert np.all(np.isfinite(layer.theta.numpy()))
        assert not np.allclose(layer.theta.numpy(), theta)


def test_opposite_gradients_give_finite_weights():
    """At a Pareto point the gradients are opposite and rounding can make mean(K) or
    w^T K w slightly negative (the toy's K below made CAGrad's square roots NaN)."""
    k = tf.constant([[1.958685, -1.95814], [-1.95814, 1.9575951]], tf.float32)
    losses = tf.constant([1.0, 2.0])
    for name in ("pcgrad", "gradvac", "mgda", "cagrad", "imtl", "gradnorm", "aligned_mtl",
                 "nash_mtl"):
        w = get_weighting(name, _tasks(2))
        alpha, _ = w.coefficients(k, losses, tf.constant(1))
        assert np.all(np.isfinite(alpha.numpy())), (name, alpha.numpy())
