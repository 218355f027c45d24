"""The two-objective toy of the CAGrad (Liu et al. 2021) and Nash-MTL (Navon et al. 2022)
papers, optimised by our registered methods from the same starts (issue 30, BENCHMARKS).

The problem (CAGrad's `toy.py`): two objectives of x in R^2 whose Pareto front is a
curve, with a flat region where one objective's gradient dominates and a steep valley.
Each method's `coefficients` (the code the train step runs) turns the two gradients into
an update direction, which Adam follows, as in the papers (lr 1e-3; their 100000 steps
unless --steps says otherwise). Printed per method and start: the final point, both
objectives, and the Pareto-stationarity gap (the norm of MGDA's min-norm combination of
the two gradients: 0 on the Pareto front). A plot of the trajectories over the contours
of the mean objective is written to --plot.

  .venv/bin/python bench/bench_mtl_toy.py --steps=100000 --plot=bench/results/mtl_toy.png
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tf_mtl.weighting import get_weighting  # noqa: E402
from tf_mtl.weighting.solvers import min_norm_element  # noqa: E402

LOWER = 5e-6
STARTS = ((-8.5, 7.5), (-8.5, -5.0), (9.0, 9.0))  # the papers' initial points
METHODS = ("fixed", "mgda", "pcgrad", "cagrad", "nash_mtl")


def objectives(x: tf.Tensor) -> tf.Tensor:
    """[f1, f2] at x = [x1, x2] (CAGrad's toy; works on [..., 2] batches too)."""
    x1, x2 = x[..., 0], x[..., 1]
    f1 = tf.math.log(tf.maximum(tf.abs(0.5 * (-x1 - 7) - tf.tanh(-x2)), LOWER)) + 6
    f2 = tf.math.log(tf.maximum(tf.abs(0.5 * (-x1 + 3) + tf.tanh(-x2) + 2), LOWER)) + 6
    c1 = tf.maximum(tf.tanh(x2 * 0.5), 0.0)
    f1_sq = ((-x1 + 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    f2_sq = ((-x1 - 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    c2 = tf.maximum(tf.tanh(-x2 * 0.5), 0.0)
    return tf.stack([f1 * c1 + f1_sq * c2, f2 * c1 + f2_sq * c2], -1)


def gradients(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        f = objectives(x)
        f1, f2 = f[0], f[1]
    return f, tf.stack([tape.gradient(f1, x), tape.gradient(f2, x)])


def run(method: str, start: tuple[float, float], steps: int, lr: float, every: int
        ) -> tuple[np.ndarray, float]:
    """Adam on the method's direction: (trajectory [steps / every + 1, 2], seconds)."""
    w = get_weighting(method, [], task_names=["f1", "f2"]) if method != "fixed" else None
    x = tf.Variable(np.asarray(start, np.float32))
    m = tf.Variable(tf.zeros(2))
    v = tf.Variable(tf.zeros(2))

    @tf.function
    def chunk(t0):
        def body(i, _):
            f, g = gradients(tf.convert_to_tensor(x))
            if w is None:
                d = tf.reduce_sum(g, 0)
            else:
                alpha, _ = w.coefficients(tf.matmul(g, g, transpose_b=True), f, t0 + i)
                d = tf.tensordot(alpha, g, 1)
            t = tf.cast(t0 + i + 1, tf.float32)
            m.assign(0.9 * m + 0.1 * d)
            v.assign(0.999 * v + 0.001 * d * d)
            x.assign_sub(lr * (m / (1 - 0.9 ** t)) / (tf.sqrt(v / (1 - 0.999 ** t)) + 1e-8))
            return i + 1, 0
        tf.while_loop(lambda i, _: i < every, body, (tf.constant(0), 0))
        return tf.convert_to_tensor(x)

    tic = time.perf_counter()
    traj = [x.numpy().copy()]
    for t0 in range(0, steps, every):
        traj.append(chunk(tf.constant(t0)).numpy().copy())
    return np.stack(traj), time.perf_counter() - tic


def stationarity_gap(x: np.ndarray) -> float:
    """|min-norm point of the hull of the two gradients|: 0 where no direction improves
    both objectives (the Pareto front)."""
    _, g = gradients(tf.constant(x, tf.float32))
    k = tf.matmul(g, g, transpose_b=True)
    alpha, _ = min_norm_element(k)
    return float(tf.norm(tf.tensordot(alpha, g, 1)))


def plot(trajs: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = np.linspace(-10, 10, 300)
    grid = np.stack(np.meshgrid(xs, xs), -1).astype(np.float32)
    mean = objectives(tf.constant(grid)).numpy().mean(-1)
    # the Pareto front: where the hull of the two gradients contains 0 (x1 in [-7, 3],
    # on the valley floor), read from the objectives on the grid
    fig, axes = plt.subplots(1, len(trajs), figsize=(4 * len(trajs), 4), sharey=True)
    for ax, (method, runs) in zip(axes, trajs.items(), strict=True):
        ax.contourf(xs, xs, mean, levels=30, cmap="Greys")
        for traj in runs:
            ax.plot(traj[:, 0], traj[:, 1], lw=1.5)
            ax.plot(traj[0, 0], traj[0, 1], "o", ms=4, color="k")
            ax.plot(traj[-1, 0], traj[-1, 1], "*", ms=10, color="tab:red")
        ax.set_title(method)
        ax.set_xlim(-10, 10)
        ax.set_ylim(-10, 10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100000)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--every", type=int, default=500, help="trajectory point every N steps")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--plot", default="")
    p.add_argument("--json", default="")
    a = p.parse_args(argv)
    rows, trajs = [], {}
    for method in a.methods.split(","):
        trajs[method] = []
        for start in STARTS:
            traj, secs = run(method, start, a.steps, a.lr, a.every)
            trajs[method].append(traj)
            end = traj[-1]
            f = objectives(tf.constant(end)).numpy()
            row = {"method": method, "start": list(start), "end": end.round(3).tolist(),
                   "f1": round(float(f[0]), 3), "f2": round(float(f[1]), 3),
                   "gap": round(stationarity_gap(end), 4), "seconds": round(secs, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if a.plot:
        plot(trajs, pathlib.Path(a.plot))
        print(f"plot: {a.plot}")
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps(rows, indent=1) + "\n")
    return {"rows": rows}


if __name__ == "__main__":
    main()
