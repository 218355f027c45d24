"""Kendall et al. (2018) toy: learn two regression noise levels with uncertainty weighting.

y1 = 2x + 8 + N(0, 10^2), y2 = 3x + 3 + N(0, 1^2), 1000 samples; a shared MLP trunk
with two heads, trained full-batch with Adam through MultiTaskModel.fit. The learned
sigmas should approach (10, 1) from any initial sigma.

    .venv/bin/python -m bench.bench_kendall [--steps 500] [--initial_sigmas 1,5]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tf_mtl.model import MultiTaskModel  # noqa: E402
from tf_mtl.tasks import Task  # noqa: E402
from tf_mtl.weighting import UncertaintyWeighting  # noqa: E402

TRUE_SIGMAS = (10.0, 1.0)


def make_data(n: int = 1000, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The toy data of Kendall's example: x ~ N(0, 1), two linear targets with noise."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1)).astype("float32")
    y1 = 2.0 * x + 8.0 + TRUE_SIGMAS[0] * rng.standard_normal((n, 1))
    y2 = 3.0 * x + 3.0 + TRUE_SIGMAS[1] * rng.standard_normal((n, 1))
    return x, {"y1": y1.astype("float32"), "y2": y2.astype("float32")}


def make_network(hidden: int = 32, seed: int = 0) -> keras.Model:
    """Shared MLP trunk with two linear heads, dict outputs."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((1,), name="x")
    h = keras.layers.Dense(hidden, activation="relu", name="trunk")(inp)
    return keras.Model(inp, {"y1": keras.layers.Dense(1, name="y1")(h),
                             "y2": keras.layers.Dense(1, name="y2")(h)}, name="toy")


def run_kendall(initial_sigma: float, steps: int = 500, learning_rate: float = 0.1,
                n: int = 1000, seed: int = 0) -> dict[str, float]:
    """Trains the toy; returns learned sigmas, final task MSEs and wall time."""
    x, y = make_data(n, seed)
    tasks = [Task("y1", keras.losses.MeanSquaredError(), kind="regression"),
             Task("y2", keras.losses.MeanSquaredError(), kind="regression")]
    weighting = UncertaintyWeighting(tasks, initial_sigma=initial_sigma)
    model = MultiTaskModel(make_network(seed=seed), tasks, weighting)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate))
    ds = tf.data.Dataset.from_tensors((x, y)).repeat()
    start = time.perf_counter()
    hist = model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
    seconds = time.perf_counter() - start
    return {
        "sigma1": float(weighting.sigma("y1")),
        "sigma2": float(weighting.sigma("y2")),
        "mse1": float(hist.history["y1_loss"][-1]),
        "mse2": float(hist.history["y2_loss"][-1]),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--learning_rate", type=float, default=0.1)
    parser.add_argument("--initial_sigmas", default="1,5")
    args = parser.parse_args()
    print(f"true sigmas: {TRUE_SIGMAS}")
    for s0 in (float(s) for s in args.initial_sigmas.split(",")):
        r = run_kendall(s0, args.steps, args.learning_rate)
        print(f"initial sigma {s0:g}: learned sigma1={r['sigma1']:.3f} "
              f"(ratio {r['sigma1'] / TRUE_SIGMAS[0]:.3f}) sigma2={r['sigma2']:.3f} "
              f"(ratio {r['sigma2'] / TRUE_SIGMAS[1]:.3f}); sqrt(mse)="
              f"({r['mse1'] ** 0.5:.3f}, {r['mse2'] ** 0.5:.3f}); {r['seconds']:.2f}s")


if __name__ == "__main__":
    main()
