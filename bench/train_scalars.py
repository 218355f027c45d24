"""A training scalar of a sweep's runs, per arm: mean +- std over seeds of each run's mean
over its logged steps (early and late halves apart), read from the runs' TensorBoard
event files. Issue 17 reads ``train/network_grad_norm`` with it: how hard the losses
pull on the network's layers with and without auxiliary modules (the paper's training
curves, as numbers)::

    .venv/bin/python -m bench.train_scalars /work/ss17 /work/ss17b \\
        --tag=train/network_grad_norm --arms=edges,aux_modules

A sweep's runs log to ``WORKDIR/<arm>_seed<k>/train/train`` (``bench.sweep.run_arm``'s
``--train_logdir``, then ``tools.train``'s ``train`` summary folder).
"""

from __future__ import annotations

import argparse
import pathlib
import re

from bench.common import mean_std
from tf_mtl.tbevents import read_scalars

_RUN = re.compile(r"^(?P<arm>.+)_seed(?P<seed>\d+)$")


def run_means(workdirs: list[pathlib.Path], tag: str) -> dict[str, dict[int, tuple]]:
    """``{arm: {seed: (mean, early-half mean, late-half mean)}}`` over the logged steps
    of each finished run."""
    out: dict[str, dict[int, tuple]] = {}
    for workdir in workdirs:
        for run in sorted(p for p in workdir.iterdir() if p.is_dir()):
            m = _RUN.match(run.name)
            # Finished runs only (a sweep evaluates a run after its last step).
            if not m or not (run / "eval" / "eval_results.json").is_file():
                continue
            values = [v for _, v in read_scalars(run / "train" / "train", [tag]).get(tag, [])]
            if not values:
                continue
            half = len(values) // 2
            mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
            out.setdefault(m["arm"], {})[int(m["seed"])] = (
                mean(values), mean(values[:half] or values), mean(values[half:]))
    return out


def table(means: dict[str, dict[int, tuple]], arms: list[str], tag: str) -> str:
    lines = [f"| arm | runs | {tag}: mean over steps | first half | second half |",
             "|---|---|---|---|---|"]
    for arm in arms:
        runs = means.get(arm, {})
        if not runs:
            continue
        cells = [mean_std([r[i] for r in runs.values()]) for i in range(3)]
        lines.append(f"| {arm} | {len(runs)} | "
                     + " | ".join(f"{m:.3f} +- {s:.3f}" for m, s in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("workdirs", nargs="+", type=pathlib.Path)
    p.add_argument("--tag", default="train/network_grad_norm")
    p.add_argument("--arms", default="", help="order (default: sorted)")
    args = p.parse_args(argv)
    means = run_means(args.workdirs, args.tag)
    print(table(means, args.arms.split(",") if args.arms else sorted(means), args.tag))


if __name__ == "__main__":
    main()
