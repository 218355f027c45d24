"""Our multi-task methods against LibMTL's own source on identical inputs (issue 41).

Each case is 5 steps of given task gradients and losses (2 and 3 tasks; random,
conflicting, nearly parallel and very unequal-norm gradients). Our side runs them through
``MultiTaskModel.train_step`` (SGD, lr 1): a probe network whose task loss is
``G_i . (theta - stop_gradient(theta)) + (b_i - stop_gradient(b_i)) + L_i`` has exactly
the value L_i, the gradient G_i on the shared ``theta`` and 1 on the task's own bias b_i
(for representation gradients, the per-example gradients H_i on a shared Dense layer's
output). LibMTL's side runs the same losses through its weighting classes (PyTorch, CPU)
imported from the checkout named by ``--libmtl_dir`` (nothing of it is copied here).
Random draws are matched: LibMTL's ``random.shuffle``, ``torch.randn`` and
``torch.rand_like`` are handed the numbers our stateless draws give.

Printed per method and case, the largest relative difference over the 5 steps
(|ours - theirs| / |theirs|) of the shared update, the task-specific update (the bias
gradients: the effective loss weights), the weights the method reports and its state;
for the methods that solve a problem (MGDA, CAGrad, Nash-MTL, IMTL, Aligned-MTL) also
both sides against a float64 NumPy solution of the same problem. A row passes at 1e-4;
a larger difference passes only where the method's docstring states it (checked) and,
where LibMTL's solver is the inexact one, ours is within 1e-4 of the float64 solution.
Exit status 1 on any other difference::

    .venv/bin/pip install -r bench/requirements-libmtl.txt
    git clone https://github.com/median-research-group/LibMTL /tmp/LibMTL  # at 4336804
    .venv/bin/python -m bench.bench_libmtl_parity --libmtl_dir=/tmp/LibMTL
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import itertools
import json
import math
import os
import pathlib
import sys
import types
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tf_mtl.model import MultiTaskModel  # noqa: E402
from tf_mtl.tasks import Task  # noqa: E402
from tf_mtl.weighting import get_weighting, registered_weightings  # noqa: E402
from tf_mtl.weighting.pcgrad import random_orders  # noqa: E402

STEPS = 5
DIM = 12          # shared parameters (parameter-gradient cases)
BATCH, FEAT, REP = 4, 3, 6  # representation cases: X [B, F] @ W [F, R]
TOL = 1e-4
KINDS = ("random", "conflicting", "parallel", "unequal")


# ------------------------------------------------------------------------- inputs
def _directions(kind: str, t: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """``[t, dim]`` task gradients of the given kind."""
    noise = rng.standard_normal((t, dim))
    if kind == "random":
        return noise
    if kind == "conflicting":  # evenly spread in a plane (pairwise cosines ~ -1/(t-1))
        e = np.linalg.qr(rng.standard_normal((dim, 2)))[0].T
        ang = 2 * np.pi * np.arange(t) / t + rng.uniform(-0.2, 0.2, t)
        base = np.cos(ang)[:, None] * e[0] + np.sin(ang)[:, None] * e[1]
        return (base + 0.1 * noise / np.sqrt(dim)) * rng.uniform(0.5, 2.0, (t, 1))
    if kind == "parallel":  # cosines ~ 0.9998
        u = rng.standard_normal(dim)
        return (u + 0.02 * noise) * rng.uniform(0.8, 1.2, (t, 1))
    if kind == "unequal":  # norms over three decades
        scale = np.array([1.0, 1e-3]) if t == 2 else np.array([10.0, 1.0, 1e-2])
        return noise / np.linalg.norm(noise, axis=1, keepdims=True) * scale[:, None]
    raise ValueError(kind)


@dataclasses.dataclass
class Case:
    kind: str
    tasks: int
    grads: list[np.ndarray]    # per step: [T, DIM] or, rep cases, [T, B, R]
    losses: list[np.ndarray]   # per step (and one more, FAMO's next losses): [T]
    x: np.ndarray | None = None  # rep cases: the Dense layer's input [B, F]
    w0: np.ndarray | None = None

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.tasks}"

    @property
    def rep(self) -> bool:
        return self.x is not None


def make_case(kind: str, t: int, rep: bool, seed: int) -> Case:
    rng = np.random.default_rng(seed)
    grads = []
    for _ in range(STEPS):
        if not rep:
            grads.append(_directions(kind, t, DIM, rng).astype(np.float32))
            continue
        sums = _directions(kind, t, REP, rng)
        noise = 0.3 * rng.standard_normal((t, BATCH, REP)) * np.linalg.norm(
            sums, axis=1)[:, None, None] / np.sqrt(REP)
        noise -= noise.mean(1, keepdims=True)  # the batch sums stay of the kind
        grads.append((sums[:, None, :] / BATCH + noise).astype(np.float32))
    l0 = rng.uniform(0.5, 3.0, t)
    losses = [(l0 * np.exp(-0.15 * s + 0.05 * rng.standard_normal(t))).astype(np.float32)
              for s in range(STEPS + 1)]
    x = rng.standard_normal((BATCH, FEAT)).astype(np.float32) if rep else None
    w0 = 0.3 * rng.standard_normal((FEAT, REP)).astype(np.float32) if rep else None
    return Case(kind, t, grads, losses, x, w0)


# ---------------------------------------------------------------------- our side
NAMES = ("a", "b", "c")


def _mean(y, p):
    return tf.reduce_mean(p)


def _biases(layer: keras.layers.Layer, t: int) -> list:
    """One scalar per task: each is reached by its task only (task-specific)."""
    out = []
    for i in range(t):
        b = layer.add_weight(shape=(), initializer="zeros", name=f"bias_{i}")
        setattr(layer, f"bias_{i}", b)
        out.append(b)
    return out


def _task_outputs(gdot: tf.Tensor, losses: tf.Tensor, biases: list) -> dict:
    return {NAMES[i]: gdot[:, i:i + 1] + (b - tf.stop_gradient(b)) + losses[:, i:i + 1]
            for i, b in enumerate(biases)}


class _Probe(keras.layers.Layer):
    """Task outputs with given values, shared-parameter gradients and bias gradients."""

    def __init__(self, t: int, **kw):
        super().__init__(**kw)
        self.t = t
        self.theta = self.add_weight(shape=(DIM,), initializer="zeros", name="theta")
        self.biases = _biases(self, t)

    def call(self, x):
        t = self.t
        g = tf.reshape(x[:, :t * DIM], [-1, t, DIM])
        dtheta = self.theta - tf.stop_gradient(self.theta)
        return _task_outputs(tf.linalg.matvec(g, dtheta), x[:, t * DIM:], self.biases)


class _RepHeads(keras.layers.Layer):
    def __init__(self, t: int, **kw):
        super().__init__(**kw)
        self.t = t
        self.biases = _biases(self, t)

    def call(self, inputs):
        x, rep = inputs
        t = self.t
        h = tf.reshape(x[:, FEAT:FEAT + t * REP], [-1, t, REP])
        drep = rep - tf.stop_gradient(rep)
        batch = tf.cast(tf.shape(x)[0], tf.float32)  # the loss is a batch mean
        return _task_outputs(batch * tf.linalg.matvec(h, drep),
                             x[:, FEAT + t * REP:], self.biases)


@dataclasses.dataclass
class Step:
    update: np.ndarray
    heads: np.ndarray
    weights: np.ndarray | None
    state: np.ndarray | None


def run_ours(method: Method, case: Case) -> list[Step]:
    t = case.tasks
    tasks = [Task(NAMES[i], _mean) for i in range(t)]
    if case.rep:
        inp = keras.Input((FEAT + t * REP + t,))
        # the shared kernel is held at 0 (its update is then read exactly); the
        # representation is X (W0 + W)
        dense = keras.layers.Dense(REP, use_bias=False, name="shared", kernel_initializer="zeros")
        feat = inp[:, :FEAT]
        rep = keras.layers.Identity(name="rep")(dense(feat) + feat @ tf.constant(case.w0))
        heads = _RepHeads(t)
        net = keras.Model(inp, heads([inp, rep]))
        shared, biases = dense.kernel, heads.biases
    else:
        inp = keras.Input((t * DIM + t,))
        probe = _Probe(t)
        net = keras.Model(inp, probe(inp))
        shared, biases = probe.theta, probe.biases
    weighting = get_weighting(method.ours, tasks, method.options, **method.kwargs(t))
    model = MultiTaskModel(net, tasks, weighting)
    model.compile(optimizer=keras.optimizers.SGD(1.0), run_eagerly=True)
    out = []
    for s in range(STEPS):
        if case.rep:
            h = case.grads[s].transpose(1, 0, 2).reshape(BATCH, -1)
            x = np.concatenate([case.x, h, np.tile(case.losses[s], (BATCH, 1))], 1)
        else:
            x = np.concatenate([case.grads[s].ravel(), case.losses[s]])[None]
        y = {NAMES[i]: np.zeros((len(x), 1), np.float32) for i in range(t)}
        for v in (shared, *biases):  # from 0: minus the new value is the update, exactly
            v.assign(tf.zeros_like(v))
        logs = model.train_on_batch(x.astype(np.float32), y, return_dict=True)
        weights = np.array([float(logs[f"{n}_weight"]) for n in NAMES[:t]])
        heads = -np.array([b.numpy() for b in biases])
        out.append(Step(-shared.numpy(), heads, weights,
                        method.our_state(model.weighting)))
    return out


# -------------------------------------------------------------------- LibMTL's side
def load_libmtl(root: pathlib.Path) -> types.ModuleType:
    """LibMTL's ``weighting`` package, imported without its package ``__init__`` files
    (they import the trainer and the architectures, which need more than torch)."""
    pkg = root / "LibMTL"
    if not (pkg / "weighting" / "abstract_weighting.py").is_file():
        raise SystemExit(f"--libmtl_dir={root}: no LibMTL/weighting/abstract_weighting.py "
                         "there; pass the folder of a LibMTL checkout (git clone "
                         "https://github.com/median-research-group/LibMTL)")
    try:
        import torch
    except ImportError:
        raise SystemExit("PyTorch is not installed; the bench needs it and LibMTL's solvers: "
                         ".venv/bin/pip install -r bench/requirements-libmtl.txt") from None
    # torch.symeig was removed from torch (it raises); Aligned_MTL still calls it
    torch.symeig = lambda m, eigenvectors=True: torch.linalg.eigh(m)
    for name, path in (("LibMTL", pkg), ("LibMTL.weighting", pkg / "weighting")):
        module = types.ModuleType(name)
        module.__path__ = [str(path)]
        sys.modules[name] = module
    return sys.modules["LibMTL.weighting"]


class _Proxy:
    """A module whose named functions are replaced (the rest is the module's)."""

    def __init__(self, module, **functions):
        self._module, self._functions = module, functions

    def __getattr__(self, name):
        return self._functions.get(name) or getattr(self._module, name)


def run_libmtl(method: Method, case: Case) -> list[Step]:
    import torch
    try:
        cls = getattr(importlib.import_module(f"LibMTL.weighting.{method.theirs}"),
                      method.theirs)
    except ImportError as e:
        raise SystemExit(f"LibMTL's {method.theirs} needs {e.name}: .venv/bin/pip install -r "
                         "bench/requirements-libmtl.txt") from None
    t = case.tasks
    module = sys.modules[cls.__module__]
    originals = dict(vars(module))  # the patched names are restored at the end
    step_box = [0]
    ours = get_weighting(method.ours, [Task(NAMES[i], _mean) for i in range(t)],
                         method.options, **method.kwargs(t))

    if method.theirs in ("PCGrad", "GradVac"):
        calls = []

        def shuffle(lst):  # task i meets the others in our order for (seed, step)
            orders = random_orders(ours.random_seed(tf.constant(step_box[0])), t).numpy()
            i = len(calls) % t
            calls.append(i)
            lst[:] = [j for j in orders[i] if j in lst]
        module.random = _Proxy(module.random, shuffle=shuffle)
    if method.theirs == "RLW":
        module.torch = _Proxy(torch, randn=lambda n: torch.from_numpy(tf.random.stateless_normal(
            [n], seed=tf.stack([tf.constant(ours.seed, tf.int64),
                                tf.constant(step_box[0], tf.int64)])).numpy()))
    if method.theirs == "GradDrop":
        module.torch = _Proxy(torch, rand_like=lambda p: torch.from_numpy(
            tf.random.stateless_uniform(tuple(p.shape), seed=ours.random_seed(
                tf.constant(step_box[0]), salt=0)).numpy()))

    shared = torch.nn.Parameter(torch.zeros(FEAT, REP) if case.rep else torch.zeros(DIM))
    bias = torch.nn.Parameter(torch.zeros(t))

    class Harness(cls):
        def __init__(self):
            super().__init__()
            self.task_num, self.device, self.rep_grad = t, "cpu", case.rep
            self.task_name = list(NAMES[:t])
            self.epoch = 0
            self.train_loss_buffer = np.zeros([t, STEPS + 1])
            self.encoder = torch.nn.Module()

        def get_share_params(self):
            return [shared]

        def zero_grad_share_params(self):
            if shared.grad is not None:
                shared.grad.zero_()

    h = Harness()
    h.init_param()
    own = [p for p in h.parameters()]  # the method's learned parameters (UW, IMTL, GradNorm)
    out = []
    for s in range(STEPS):
        step_box[0] = s
        method.prepare_libmtl(h, case, s)
        for p in (shared, bias, *own):
            p.grad = None
        lv = torch.from_numpy(case.losses[s])
        dbias = bias - bias.detach()
        if case.rep:
            x = torch.from_numpy(case.x)
            h.rep = x @ (torch.from_numpy(case.w0) + shared)
            h.rep_tasks = {n: h.rep.detach().clone().requires_grad_() for n in h.task_name}
            hg = torch.from_numpy(case.grads[s])
            losses = torch.stack([
                (hg[i] * (h.rep_tasks[n] - h.rep_tasks[n].detach())).sum() + dbias[i] + lv[i]
                for i, n in enumerate(h.task_name)])
        else:
            g = torch.from_numpy(case.grads[s])
            losses = torch.stack([(g[i] * (shared - shared.detach())).sum() + dbias[i] + lv[i]
                                  for i in range(t)])
        famo = method.theirs == "FAMO"
        state = method.their_state(h) if famo else None  # FAMO: w as our step sees it
        w = h.backward(losses, **method.their_kwargs)
        with torch.no_grad():
            for p in own:  # the model's optimizer: SGD, lr 1
                if p.grad is not None:
                    p -= p.grad
        if not famo:
            state = method.their_state(h)
        update = shared.grad.detach().numpy().copy()
        heads = bias.grad.detach().numpy().copy()
        out.append(Step(update, heads, None if w is None else np.asarray(w, np.float64), state))
        if method.theirs == "FAMO":  # the trainer's update_w with the batch's new losses
            h.update_w(torch.from_numpy(case.losses[s + 1]))
    vars(module).update(originals)
    return out


# ------------------------------------------------------------- float64 solutions
def min_norm_exact(k: np.ndarray) -> np.ndarray:
    """argmin over the simplex of w^T K w: every support S, w_S prop. to K_SS^-1 1."""
    best = None
    for r in range(1, len(k) + 1):
        for s in itertools.combinations(range(len(k)), r):
            try:
                w = np.linalg.solve(k[np.ix_(s, s)], np.ones(len(s)))
            except np.linalg.LinAlgError:
                continue
            if w.sum() <= 0 or (w < 0).any():
                continue
            full = np.zeros(len(k))
            full[list(s)] = w / w.sum()
            v = full @ k @ full
            if best is None or v < best[0]:
                best = (v, full)
    return best[1]


def cagrad_exact(k: np.ndarray, calpha: float) -> np.ndarray:
    """LibMTL's CAGrad problem min_{w in simplex} w^T K b + c sqrt(w^T K w + 1e-8),
    b = 1/T, c = calpha sqrt(mean K + 1e-8) + 1e-8, exactly: on each support S the
    stationary point solves K_SS u = (mu 1 - p_S) / c (u = w / q), mu the root of a
    quadratic; the feasible candidate with the least objective wins."""
    n, eps = len(k), 1e-8
    b = np.full(n, 1.0 / n)
    c = calpha * np.sqrt(k.mean() + eps) + eps
    p = k @ b

    def f(w):
        return w @ p + c * np.sqrt(w @ k @ w + eps)

    cands = list(np.eye(n))
    for r in range(2, n + 1):
        for s in itertools.combinations(range(n), r):
            s = list(s)
            try:
                inv1 = np.linalg.solve(k[np.ix_(s, s)], np.ones(r))
                invp = np.linalg.solve(k[np.ix_(s, s)], p[s])
            except np.linalg.LinAlgError:
                continue
            al, be, ga = inv1.sum(), invp.sum(), p[s] @ invp
            a2 = al * (1 + eps * al)
            disc = (be * (1 + eps * al)) ** 2 + a2 * (c * c - ga - eps * be * be)
            if al <= 0 or disc < 0:
                continue
            mu = (be * (1 + eps * al) + np.sqrt(disc)) / a2
            u = (mu * inv1 - invp) / c
            if u.sum() <= 0 or (u < 0).any():
                continue
            w = np.zeros(n)
            w[s] = u / u.sum()
            cands.append(w)
    return min(cands, key=f)


def cagrad_alpha(k: np.ndarray, w: np.ndarray, calpha: float, rescale: int) -> np.ndarray:
    c = calpha * np.sqrt(k.mean() + 1e-8) + 1e-8
    alpha = 1.0 / len(k) + c / (np.sqrt(max(w @ k @ w, 0.0)) + 1e-8) * w
    return alpha / {0: 1.0, 1: 1 + calpha ** 2, 2: 1 + calpha}[rescale]


def nash_exact(k: np.ndarray) -> np.ndarray:
    """alpha_i (K alpha)_i = 1 by Newton steps kept positive."""
    a = np.ones(len(k)) * np.sqrt(len(k) / k.sum())
    for _ in range(500):
        f = k @ a - 1 / a
        d = np.linalg.solve(k + np.diag(1 / a ** 2), f)
        s = 1.0
        while (a - s * d <= 0).any():
            s /= 2
        a = a - s * d
        if np.abs(a * (k @ a) - 1).max() < 1e-13:
            break
    return a


def imtl_exact(g: np.ndarray) -> np.ndarray:
    u = g / np.linalg.norm(g, axis=1, keepdims=True)
    d, uu = g[0] - g[1:], u[0] - u[1:]
    alpha = np.linalg.solve((d @ uu.T).T, uu @ g[0])
    return np.concatenate([[1 - alpha.sum()], alpha])


def aligned_exact(k: np.ndarray) -> np.ndarray:
    lam, v = np.linalg.eigh(k)
    keep = lam > lam.max() * len(k) * np.finfo(np.float32).eps
    lam, v = lam[keep], v[:, keep]
    return (np.sqrt(lam.min()) * (v / np.sqrt(lam)) @ v.T).sum(0)


# ------------------------------------------------------------------------ methods
@dataclasses.dataclass
class Method:
    """One row: our registered name and options, LibMTL's class and keyword arguments,
    how to read the state on both sides, the float64 solution, and the stated departure
    (a phrase our docstring must contain, and the rule it is held to)."""

    label: str
    ours: str
    theirs: str
    options: str = ""
    their_kwargs: dict = dataclasses.field(default_factory=dict)
    extra: Callable[[int], dict] = lambda t: {}
    our_state: Callable = lambda w: None
    their_state: Callable = lambda h: None
    compare_weights: bool = True
    reference: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    stated: str = ""          # phrase of our docstring that states the difference
    rule: str = "agree"       # agree | float64 (ours within 1e-4 of the float64 solution)
    rep_only: bool = False
    params_only: bool = True
    prepare_libmtl: Callable = lambda h, case, s: None

    def kwargs(self, t: int) -> dict:
        return self.extra(t)


def _np(v):
    return np.asarray(v, np.float64).ravel()


def _gradnorm_prepare(h, case, s):
    h.epoch = 1  # LibMTL keeps equal weights in epoch 0; L(0): our first step's losses
    h.train_loss_buffer[:, 0] = case.losses[0]


def _dwa_prepare(h, case, s):
    h.epoch = s  # one step per window (our window_steps=1)
    for e in range(s):
        h.train_loss_buffer[:, e] = case.losses[e]


def _mgda_ref(gn):
    def ref(g, losses):
        norms = np.linalg.norm(g, axis=1)
        n = {"none": np.ones(len(g)), "loss+": losses * norms}[gn]
        return min_norm_exact((g / n[:, None]) @ (g / n[:, None]).T)
    return ref


METHODS = [
    Method("ew", "fixed", "EW"),
    Method("uw (LibMTL's init)", "uncertainty", "UW",
           extra=lambda t: {"initial_sigma": math.exp(-0.25),
                            "kinds": {n: "regression" for n in NAMES[:t]}},
           our_state=lambda w: _np([w.log_vars[n].numpy() for n in w.task_names]),
           their_state=lambda h: _np(h.loss_scale.detach().numpy())),
    Method("dwa (1-step windows)", "dwa", "DWA", their_kwargs={"T": 2.0},
           extra=lambda t: {"window_steps": 1}, prepare_libmtl=_dwa_prepare),
    Method("rlw", "rlw", "RLW"),
    Method("gls", "gls", "GLS", compare_weights=False),
    Method("famo (full batch)", "famo", "FAMO",
           their_kwargs={"FAMO_w_lr": 0.025, "FAMO_w_gamma": 1e-3}, compare_weights=False,
           our_state=lambda w: _np(w.logits.numpy()),
           their_state=lambda h: _np(h.w.detach().numpy())),
    Method("gradnorm (L(0) matched)", "gradnorm", "GradNorm", their_kwargs={"alpha": 1.5},
           prepare_libmtl=_gradnorm_prepare,
           our_state=lambda w: _np(w.loss_scale.numpy()),
           their_state=lambda h: _np(h.loss_scale.detach().numpy())),
    Method("pcgrad", "pcgrad", "PCGrad"),
    Method("gradvac", "gradvac", "GradVac",
           their_kwargs={"GradVac_beta": 0.5, "GradVac_group_type": 0}, compare_weights=False,
           our_state=lambda w: _np(w.rho_target.numpy()),
           their_state=lambda h: _np(h.rho_T[:, :, 0].numpy())),
    Method("db_mtl", "db_mtl", "DB_MTL", their_kwargs={"DB_beta": 0.9, "DB_beta_sigma": 0},
           compare_weights=False,
           our_state=lambda w: np.concatenate([_np(b.numpy()) for b in w._buffers.values()
                                               if len(b.shape) > 1]),  # theta's, not biases'

           their_state=lambda h: _np(h.grad_buffer.numpy())),
    Method("mgda", "mgda", "MGDA", their_kwargs={"mgda_gn": "none"},
           reference=_mgda_ref("none"), stated="MinNormSolver", rule="float64"),
    Method("mgda loss+", "mgda", "MGDA", "mgda_gn=loss+", {"mgda_gn": "loss+"},
           reference=_mgda_ref("loss+"), stated="LibMTL's parameter-gradient path applies w",
           rule="float64"),
    Method("mgda_ub", "mgda_ub", "MGDA", "rep_features=rep", {"mgda_gn": "none"},
           reference=_mgda_ref("none"), stated="MinNormSolver", rule="float64",
           rep_only=True),
    Method("mgda_ub loss+", "mgda_ub", "MGDA", "rep_features=rep,mgda_gn=loss+",
           {"mgda_gn": "loss+"}, reference=_mgda_ref("loss+"), stated="MinNormSolver",
           rule="float64", rep_only=True),
    Method("graddrop", "graddrop", "GradDrop", "rep_features=rep", {"leak": 0.0},
           compare_weights=False, rep_only=True),
    Method("imtl", "imtl", "IMTL", reference=lambda g, _: imtl_exact(g),
           our_state=lambda w: _np(w.loss_scale.numpy()),
           their_state=lambda h: _np(h.loss_scale.detach().numpy()),
           stated="inverse", rule="float64"),
    Method("aligned_mtl", "aligned_mtl", "Aligned_MTL",
           reference=lambda g, _: aligned_exact(g @ g.T), stated="torch.symeig",
           rule="float64"),
    Method("cagrad", "cagrad", "CAGrad", their_kwargs={"calpha": 0.5, "rescale": 1},
           compare_weights=False,
           reference=lambda g, _: cagrad_alpha(g @ g.T, cagrad_exact(g @ g.T, 0.5), 0.5, 1),
           stated="SLSQP", rule="float64"),
    Method("nash_mtl", "nash_mtl", "Nash_MTL",
           their_kwargs={"update_weights_every": 1, "optim_niter": 20, "max_norm": 1.0},
           compare_weights=False,
           our_state=lambda w: _np(w.alpha.numpy()),
           their_state=lambda h: _np(h.prvs_alpha),
           reference=lambda g, _: nash_exact(g @ g.T), stated="1e-3", rule="float64"),
    Method("nash_mtl max_norm=0", "nash_mtl", "Nash_MTL", "max_norm=0",
           {"update_weights_every": 1, "optim_niter": 20, "max_norm": 0.0},
           compare_weights=False,
           our_state=lambda w: _np(w.alpha.numpy()),
           their_state=lambda h: _np(h.prvs_alpha),
           reference=lambda g, _: nash_exact(g @ g.T), stated="1e-3", rule="float64"),
]


# ---------------------------------------------------------------------- comparing
def rel(a, b) -> float:
    a, b = _np(a), _np(b)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def reference_steps(method: Method, case: Case) -> list[dict]:
    """The float64 update (and coefficients) of the same problem at each step."""
    out = []
    for s in range(STEPS):
        g = case.grads[s].astype(np.float64)
        flat = g.sum(1) if case.rep else g   # the coefficients see the batch sums
        alpha = method.reference(flat, case.losses[s].astype(np.float64))
        update = np.tensordot(alpha, g, 1)
        if case.rep:  # the shared Dense kernel's update
            update = case.x.T.astype(np.float64) @ update
        if method.ours == "nash_mtl" and "max_norm=0" not in method.options:
            update = update * min(1.0, 1.0 / (np.linalg.norm(update) + 1e-6))
        out.append({"update": update, "alpha": alpha})
    return out


def compare(method: Method, case: Case) -> dict:
    ours, theirs = run_ours(method, case), run_libmtl(method, case)
    row = {"method": method.label, "case": case.name + ("-rep" if case.rep else "")}
    pairs = list(zip(ours, theirs, strict=True))
    row["update"] = max(rel(o.update, t.update) for o, t in pairs)
    row["heads"] = max(rel(o.heads, t.heads) for o, t in pairs)
    if method.compare_weights and theirs[0].weights is not None:
        row["weights"] = max(rel(o.weights, t.weights) for o, t in pairs)
    if ours[0].state is not None:
        row["state"] = max(rel(o.state, t.state) for o, t in pairs)
    if method.reference is not None:
        # our coefficients: the logged weights (Nash-MTL: its unclipped alpha, the state)
        coef = [o.state if method.ours == "nash_mtl" else o.weights for o in ours]
        ref = reference_steps(method, case)
        if method.ours == "imtl":  # IMTL-L's scales differ once the sides' steps differ
            ours, theirs, ref, coef = ours[:1], theirs[:1], ref[:1], coef[:1]
        row["ours_vs_f64"] = max(max(rel(o.update, r["update"]), rel(c, r["alpha"]))
                                 for o, c, r in zip(ours, coef, ref, strict=True))
        row["libmtl_vs_f64"] = max(rel(t.update, r["update"]) for t, r in zip(theirs, ref,
                                                                               strict=True))
    row["verdict"] = verdict(method, row)
    return row


def verdict(method: Method, row: dict) -> str:
    worst = max(v for k, v in row.items() if k in ("update", "heads", "weights", "state"))
    if worst <= TOL:
        return "agree"
    docs = " ".join(c.__doc__ or "" for c in registered_weightings()[method.ours].cls.__mro__
                    if c.__module__.startswith("tf_mtl."))
    stated = method.stated and " ".join(method.stated.split()) in " ".join(docs.split())
    if not stated:
        return "FAIL: a difference no docstring states"
    if method.rule == "float64":
        if row["ours_vs_f64"] <= TOL and row["ours_vs_f64"] < row["libmtl_vs_f64"]:
            return f"stated ({method.stated}); ours = float64 solution"
        return "FAIL: ours is not within 1e-4 of the float64 solution"
    return "FAIL"


def cases() -> list[Case]:
    out = []
    for i, (kind, t) in enumerate(itertools.product(KINDS, (2, 3))):
        out.append(make_case(kind, t, rep=False, seed=100 + i))
        out.append(make_case(kind, t, rep=True, seed=200 + i))
    return out


def _fmt(v) -> str:
    return "" if v is None else f"{v:.1e}"


def summary(rows: list[dict]) -> str:
    """Per method: the largest difference to LibMTL over its cases, ours and LibMTL's
    against the float64 solution, and how many cases agree (or differ as stated)."""
    lines = ["| method | cases | largest difference to LibMTL (update, heads, weights, "
             "state) | ours vs float64 | LibMTL vs float64 | verdicts |",
             "|---|---|---|---|---|---|"]
    for label in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == label]
        worst = max(max(r.get(c, 0.0) for c in ("update", "heads", "weights", "state"))
                    for r in mine)
        f64 = [r["ours_vs_f64"] for r in mine if "ours_vs_f64" in r]
        lib = [r["libmtl_vs_f64"] for r in mine if "libmtl_vs_f64" in r]
        verdicts = {}
        for r in mine:
            key = r["verdict"].split(";")[0]
            verdicts[key] = verdicts.get(key, 0) + 1
        lines.append(f"| {label} | {len(mine)} | {worst:.1e} | "
                     f"{_fmt(max(f64)) if f64 else ''} | {_fmt(max(lib)) if lib else ''} | "
                     + ", ".join(f"{v} {k}" for k, v in verdicts.items()) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--libmtl_dir", required=True, help="a LibMTL checkout (its LibMTL/ folder "
                   "inside); the issue's commit is 4336804")
    p.add_argument("--methods", default="", help="labels to run (default: all)")
    p.add_argument("--json", default="", help="write the rows here too")
    args = p.parse_args(argv)
    load_libmtl(pathlib.Path(args.libmtl_dir))
    import torch
    torch.set_default_dtype(torch.float32)
    chosen = [m for m in METHODS if not args.methods or m.label in args.methods.split(",")]
    rows = []
    cols = ("update", "heads", "weights", "state", "ours_vs_f64", "libmtl_vs_f64")
    print("| method | case | " + " | ".join(cols) + " | verdict |")
    print("|---|---|" + "---|" * len(cols) + "---|")
    for method in chosen:
        for case in cases():
            if case.rep != method.rep_only:
                continue
            row = compare(method, case)
            rows.append(row)
            print(f"| {row['method']} | {row['case']} | "
                  + " | ".join(_fmt(row.get(c)) for c in cols) + f" | {row['verdict']} |",
                  flush=True)
    print()
    print(summary(rows))
    failed = [r for r in rows if r["verdict"].startswith("FAIL")]
    print(json.dumps({"rows": len(rows), "failed": len(failed)}))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
