"""Arms x seeds on CamVid from scratch, the way the seed-system experiments are run: the
same network, schedule and budget in every arm, ``tools.train`` then ``tools.eval`` on
val, one JSON line per finished run (a stopped sweep resumes), then mean +- std per arm
and the seed-paired differences to the first arm with 95% t intervals.

A bench script names its arms (extra ``tools.train`` flags, optionally another
variant and extra ``tools.eval`` flags) and calls :func:`main_for`; seeds run outermost,
so a stopped sweep leaves complete seed columns.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import time
from collections.abc import Callable, Sequence

from bench.common import REPO, append_run, finished_runs, mean_std, paired_interval, run_tool

__all__ = ["Arm", "SweepSettings", "camvid_shards", "main_for", "rescore", "run_arm", "summary"]

DEFAULT_VARIANT = "deeplabv3plus_mobilenetv2_tiny_mt"


@dataclasses.dataclass(frozen=True)
class Arm:
    """One arm: flags added to the base ``tools.train`` command (``{workdir}`` is replaced
    by the sweep's folder), its variant (None: the sweep's) and extra eval flags."""

    name: str
    train_flags: tuple[str, ...] = ()
    variant: str | None = None
    eval_flags: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class SweepSettings:
    """The schedule every arm shares (CamVid frames shrunk to ``max_resize_value``; 0: not
    resized) and the dataset (another one brings its shards through ``main_for``'s
    ``shards``)."""

    variant: str = DEFAULT_VARIANT
    dataset: str = "camvid"
    train_steps: int = 900
    base_learning_rate: float = 3e-3
    crop: str = "177,241"
    max_resize_value: int = 241
    batch_size: int = 8
    curve_points: int = 1  # > 1: val mIoU also at every train_steps / curve_points
    # A released model's name: every arm starts from it (its trunk and ASPP; a new
    # classifier for the dataset's classes; BatchNorm frozen, as folded releases need) in
    # the release's own network, with a tag head where the arm's variant has one.
    from_release: str = ""


def camvid_shards(workdir: pathlib.Path, camvid_dir: str, env: dict,
                  list_files: Sequence[str] = ()) -> str:
    """CamVid TFRecords in ``workdir/tfrecord`` (built once)."""
    shards = workdir / "tfrecord"
    if not (shards / "done").exists():
        if not (pathlib.Path(camvid_dir) / "train.txt").is_file():
            raise SystemExit(
                f"--camvid_dir={camvid_dir}: the full CamVid split (SegNet's 367 train, 101 val "
                "frames) is not there; the repository ships 6 frames only. Get it with "
                "`python -m tools.download_data --dataset=camvid --download_dir=DIR` and pass "
                "--camvid_dir=<the folder with train.txt in DIR>")
        run_tool("build_camvid_data", [f"--camvid_dir={camvid_dir}", f"--output_dir={shards}",
                                       *[f"--list_files={f}" for f in list_files]],
                 env, workdir / "prepare.log")
        (shards / "done").write_text("ok")
    return str(shards)


def released_start(variant: str, release: str) -> tuple[str, list[str]]:
    """The variant and the extra ``tools.train`` flags of an arm started from ``release``
    (none: the arm as it is, from scratch)."""
    if not release:
        return variant, []
    from deeplab_ext.weights import get_entry

    base = get_entry(release, "--from_release").variant
    return (f"{base}_mt" if variant.endswith("_mt") else base,
            [f"--tf_initial_checkpoint={release}", "--fine_tune_batch_norm=false"])


def run_arm(arm: Arm, seed: int, settings: SweepSettings, workdir: pathlib.Path, shards: str,
            env: dict, extract: Callable[[dict], dict] | None = None) -> dict:
    """Train and evaluate one (arm, seed); the result row (``extract(eval_results)`` adds
    arm-specific numbers)."""
    run = workdir / f"{arm.name}_seed{seed}"
    run.mkdir(parents=True, exist_ok=True)
    log = run / "log.txt"
    s = settings
    resize = [f"--max_resize_value={s.max_resize_value}"] if s.max_resize_value else []
    every = max(1, s.train_steps // max(1, s.curve_points))
    variant, start = released_start(arm.variant or s.variant, s.from_release)
    train = [f"--train_logdir={run / 'train'}", f"--dataset={s.dataset}",
             f"--dataset_dir={shards}", f"--model_variant={variant}", *start,
             f"--train_crop_size={s.crop}", *resize,
             f"--train_batch_size={s.batch_size}", f"--training_number_of_steps={s.train_steps}",
             "--optimizer=adam", f"--base_learning_rate={s.base_learning_rate}",
             f"--save_interval_steps={every}", f"--max_checkpoints_to_keep={s.curve_points + 1}",
             "--save_summaries_images=false",
             f"--seed={seed}", *[f.format(workdir=workdir) for f in arm.train_flags]]
    t0 = time.time()
    run_tool("train", train, env, log)
    train_s = time.time() - t0
    evaluate = [f"--checkpoint_dir={run / 'train'}", f"--dataset_dir={shards}",
                "--eval_split=val", f"--eval_logdir={run / 'eval'}", "--bootstrap_samples=0",
                "--num_vis_examples=0", *arm.eval_flags]
    run_tool("eval", evaluate, env, log)
    res = json.loads((run / "eval" / "eval_results.json").read_text())
    curve = []
    for step in range(every, s.train_steps, every) if s.curve_points > 1 else ():
        at = [a for a in evaluate if not a.startswith("--eval_logdir=")] + [
            f"--eval_logdir={run / f'eval_{step}'}",
            f"--checkpoint_path={run / 'train' / f'ckpt-{step}'}"]
        run_tool("eval", at, env, log)
        curve.append([step, json.loads((run / f"eval_{step}" / "eval_results.json")
                                       .read_text())["modes"]["none"]["miou"]])
    return {"run": f"{arm.name}_seed{seed}", "arm": arm.name, "seed": seed,
            "miou": res["modes"]["none"]["miou"], "tag_f1": res.get("tags", {}).get("f1"),
            **({"curve": [*curve, [s.train_steps, res["modes"]["none"]["miou"]]]}
               if s.curve_points > 1 else {}),
            **(extract(res) if extract else {}),
            "train_command": "python -m tools.train " + " ".join(train),
            "eval_command": "python -m tools.eval " + " ".join(evaluate),
            "train_seconds": round(train_s, 1), "seconds": round(time.time() - t0, 1)}


def rescore(workdir: pathlib.Path, extract: Callable[[dict], dict],
            needs: Callable[[dict], bool]) -> dict[str, dict]:
    """Re-run the recorded ``tools.eval`` command of every finished row for which
    ``needs(row)`` holds (a metric added after it ran; the checkpoints are kept) and append
    the row with ``extract(eval_results)`` merged in: the later line wins on resume."""
    out = workdir / "results.jsonl"
    rows = finished_runs(out)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    for name, row in rows.items():
        if not needs(row):
            continue
        args = row["eval_command"].split()[3:]  # after "python -m tools.eval"
        run_tool("eval", args, env, workdir / name / "log.txt")
        logdir = next(a.split("=", 1)[1] for a in args if a.startswith("--eval_logdir="))
        added = extract(json.loads((pathlib.Path(logdir) / "eval_results.json").read_text()))
        rows[name] = row = {**row, **added}
        append_run(out, row)
        print(json.dumps({"run": name, **added}), flush=True)
    return rows


def summary(rows: dict[str, dict], arms: Sequence[str], baseline: str | None = None,
            fields: Sequence[str] = ()) -> str:
    """Mean +- std of val mIoU per arm and the seed-paired difference to ``baseline``
    (default: the first arm), in points; then mean +- std of each of ``fields`` (other
    fractions the rows carry: a decoder path's mIoU, a head's accuracy) over the rows
    that have it."""
    baseline = baseline or arms[0]

    def by_seed(arm: str, key: str) -> dict[int, float]:
        return {r["seed"]: r[key] for r in rows.values()
                if r.get("arm") == arm and r.get(key) is not None}

    lines = ["| arm | runs | val mIoU (%) mean +- std | vs "
             f"{baseline}, seed-paired (95% t) |" + "".join(f" {f} (%) |" for f in fields),
             "|---|---|---|---|" + "---|" * len(fields)]
    base = by_seed(baseline, "miou")
    for arm in arms:
        values = by_seed(arm, "miou")
        if not values:
            continue
        mean, std = mean_std([100 * v for v in values.values()])
        cell = ""
        common = sorted(set(values) & set(base))
        if arm != baseline and common:
            d, lo, hi = paired_interval([100 * (values[s] - base[s]) for s in common])
            cell = f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}] ({len(common)} seeds)"
        extra = ""
        for f in fields:
            got = by_seed(arm, f)
            if got:
                m, sd = mean_std([100 * v for v in got.values()])
                extra += f" {m:.2f} +- {sd:.2f} ({len(got)}) |"
            else:
                extra += " |"
        lines.append(f"| {arm} | {len(values)} | {mean:.2f} +- {std:.2f} | {cell} |{extra}")
    return "\n".join(lines)


def main_for(description: str, arms: Sequence[Arm], argv: list[str] | None = None, *,
             settings: SweepSettings = SweepSettings(),
             prepare: Callable[[argparse.Namespace, pathlib.Path, dict], dict] | None = None,
             add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
             extract: Callable[[dict], dict] | None = None,
             late_arms: Callable[[argparse.Namespace, pathlib.Path], list[Arm]] | None = None,
             shards: Callable[[argparse.Namespace, pathlib.Path, dict], str] | None = None,
             ) -> dict[str, dict]:
    """The command line of a sweep: ``--workdir``, ``--arms``, ``--seeds``, the schedule
    flags; ``shards(args, workdir, env)`` makes the dataset's shards once and returns their
    folder (default: CamVid's, :func:`camvid_shards`);
    ``prepare(args, workdir, env)`` runs once first (its dict is printed);
    ``late_arms(args, workdir)`` adds arms that exist only after it (a search's winner)."""
    known = {a.name: a for a in arms}
    late_names = list(getattr(late_arms, "names", ()))
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--workdir", required=True)
    # The full CamVid split: on this project's machines beside the checkout (../shared).
    p.add_argument("--camvid_dir", default=str(REPO.parent / "shared" / "data" / "camvid"),
                   help="SegNet's CamVid folder (train.txt, train/, trainannot/, ...)")
    p.add_argument("--arms", default=",".join([*known, *late_names]))
    p.add_argument("--seeds", default="0,1,2")
    for field in dataclasses.fields(SweepSettings):
        p.add_argument(f"--{field.name}", type=type(getattr(settings, field.name)),
                       default=getattr(settings, field.name))
    if add_arguments:
        add_arguments(p)
    args = p.parse_args(argv)
    chosen = args.arms.split(",")
    unknown = sorted(set(chosen) - set(known) - set(late_names))
    if unknown:
        p.error(f"--arms: unknown {unknown}; known: {sorted(known)}")
    settings = SweepSettings(**{f.name: getattr(args, f.name)
                                for f in dataclasses.fields(SweepSettings)})
    workdir = pathlib.Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    shards = (shards(args, workdir, env) if shards
              else camvid_shards(workdir, args.camvid_dir, env))
    if prepare:
        print(json.dumps(prepare(args, workdir, env)), flush=True)
    if late_arms and set(chosen) & set(late_names):
        known.update({a.name: a for a in late_arms(args, workdir)})
    out = workdir / "results.jsonl"
    done = finished_runs(out)
    for seed in (int(s) for s in args.seeds.split(",")):
        for name in chosen:
            run = f"{name}_seed{seed}"
            if run in done:
                continue
            done[run] = row = run_arm(known[name], seed, settings, workdir, shards, env, extract)
            append_run(out, row)
            print(json.dumps({k: row[k] for k in ("run", "miou", "seconds")}), flush=True)
    print(summary(done, chosen))
    return done


def _summarize(argv: list[str] | None = None) -> None:
    """``python -m bench.sweep RESULTS.jsonl [MORE.jsonl ...]``: the table of (committed)
    results files; several files when one sweep's baseline ran in another's workdir."""
    p = argparse.ArgumentParser(description=_summarize.__doc__)
    p.add_argument("results", nargs="+")
    p.add_argument("--arms", default="", help="order (default: as the rows first appear)")
    p.add_argument("--baseline", default=None)
    p.add_argument("--fields", default="", help="more per-run fractions to average")
    args = p.parse_args(argv)
    rows = {}
    for path in args.results:
        rows.update(finished_runs(pathlib.Path(path)))
    arms = args.arms.split(",") if args.arms else list(dict.fromkeys(r["arm"] for r in rows.values()))
    print(summary(rows, arms, args.baseline, [f for f in args.fields.split(",") if f]))


if __name__ == "__main__":
    _summarize()
