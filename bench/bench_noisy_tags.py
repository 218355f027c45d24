"""Evidence with wrong tags (issue 43): a release's evidence table on held-out photos with
the exact tags, one tag dropped, one false tag added, and both, and the soft rows with the
settings ``tools.tune_evidence --objective=soft`` chose on *other* photos under noise.

1. Tuning, on ``--tune_split`` (coco128-voc's 65 train photos), once per noise model of
   ``--tune_noise`` (one true tag dropped on every photo; on half of them):
   ``tune_evidence`` (what the CLI runs) on a copy of the run, starting from the refit
   settings the released-weights table records (its ``evidence_tuned.json``), searching
   the prune strength and the tag confidence (the budget ``--max_candidates`` leaves the
   refit settings as recorded). Each gives a prior without a refit (DL-MT-SPr) and the best
   soft refit (DL-BP-L2-SPr).
2. Scoring, on ``--eval_split`` (the 32 val photos), per condition of ``--conditions``
   (the noise seeded per photo, so every row sees the same tags): DL-MT, DL-MT-Pr,
   DL-BP-L2, DL-BP-L2-Pr (the table's settings, the seed's rows) and each tuning's
   DL-MT-SPr and DL-BP-L2-SPr, with 95% paired bootstrap intervals against DL-MT,
   DL-MT-Pr and DL-BP-L2-Pr. No photo scored chose a setting.

    bash bench/noisy_tags.sh W [RELEASE_NAME]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import shutil
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from deeplab_ext.data import input_pipeline  # noqa: E402
from deeplab_ext.run.evidence import load_tuned  # noqa: E402
from deeplab_ext.run.modes import (  # noqa: E402
    add_bootstrap,
    format_table,
    load_split,
    per_image_miou,
    run_rows,
)
from deeplab_ext.run.options import EvidenceOptions, TuneOptions  # noqa: E402
from deeplab_ext.run.refit_kinds import EVIDENCE_MODES  # noqa: E402
from deeplab_ext.run.rundir import restore_network  # noqa: E402
from deeplab_ext.run.tag_sources import TagSource, tag_source  # noqa: E402
from deeplab_ext.run.tuning import tune_evidence  # noqa: E402
from tf_mtl.metrics import paired_bootstrap_miou  # noqa: E402

CONDITIONS = ("exact", "drop:1,seed:0", "add:1,seed:0", "drop:1,add:1,seed:0")
ROWS = ("none", "prune", "soft_prune", "bp_l2", "bp_l2_prune", "bp_l2_soft_prune")


def tune_soft(args, hard: EvidenceOptions, noise: str) -> dict:
    """The soft setting for one noise model, tuned on other photos than those scored (reused
    if done)."""
    soft_run = pathlib.Path(args.workdir) / ("soft_" + noise.replace(":", "").replace(",", "_"))
    tuned = load_tuned(soft_run) if soft_run.is_dir() else None
    if tuned and tuned.get("objective") == "soft":
        print(f"reusing the soft tuning in {soft_run}")
        return tuned
    if soft_run.exists():
        shutil.rmtree(soft_run)
    shutil.copytree(args.checkpoint_dir, soft_run)
    (soft_run / "evidence_tuned.json").unlink()
    tune_evidence(TuneOptions(
        checkpoint_dir=str(soft_run), dataset_dir=args.dataset_dir, tune_split=args.tune_split,
        kinds=("l2",), objective="soft", tag_noise=noise, tag_confidences=(1.0, 0.7),
        max_candidates=args.max_candidates, evidence=hard,
        learning_rates=(hard.learning_rate,), clip_norms=(hard.clip_norm,)))
    return load_tuned(soft_run)


def score(network, info, batches, alignment, rows, samples: int,
          labels: dict[str, str]) -> dict:
    runs = run_rows(network, info, batches, rows, alignment=alignment, errors=False,
                    printer=print)
    results = {"eval_scales": [1.0], "add_flipped_images": False,
               "num_images": len(batches), "modes": {}}
    for name, mode, settings in rows:
        r = runs[name]
        results["modes"][name] = row = {"name": EVIDENCE_MODES[mode].row + labels.get(name, ""),
                                        "miou": r.miou, "seconds": r.seconds}
        if EVIDENCE_MODES[mode].soft:
            row.update(prune_strength=settings.prune_strength,
                       tag_confidence=settings.tag_confidence)
        if r.steps is not None:
            row["refit_steps_mean"] = float(r.steps.mean())
            row["fell_back"] = int(r.fell_back.sum())
    add_bootstrap(results, {n: r.counts for n, r in runs.items()}, samples)
    # The soft rows against the seed's pruned refit: how much of its gain they keep.
    counts = {n: np.stack(r.counts) for n, r in runs.items()}
    for soft in [n for n, mode, _ in rows if EVIDENCE_MODES[mode].soft]:
        st = paired_bootstrap_miou(counts, [(soft, "bp_l2_prune")], num_samples=samples)
        results["modes"][soft].setdefault("vs", {})["bp_l2_prune"] = st[(soft, "bp_l2_prune")]
    results["table"] = format_table(results)
    results["per_image"] = {n: per_image_miou(r.counts) for n, r in runs.items()}
    return results


def summary(payload: dict) -> str:
    """One table over the conditions: each row's mIoU and its difference to DL-MT with the
    95% paired interval; then the soft rows against DL-BP-L2-Pr, and the share of
    DL-BP-L2-Pr's gain over DL-MT they keep."""
    conditions = list(payload["conditions"])
    first = payload["conditions"][conditions[0]]["modes"]
    lines = ["| method | " + " | ".join(conditions) + " |",
             "|---|" + "---|" * len(conditions)]

    def cell(row: dict, base: str) -> str:
        st = row.get("vs", {}).get(base)
        return "" if st is None else (f" ({100 * st['diff']:+.2f} [{100 * st['low']:+.2f}, "
                                      f"{100 * st['high']:+.2f}])")

    for name in first:
        cells = []
        for c in conditions:
            row = payload["conditions"][c]["modes"][name]
            cells.append(f"{100 * row['miou']:.2f}{cell(row, 'none')}")
        lines.append(f"| {first[name]['name']} | " + " | ".join(cells) + " |")
    lines += ["", "| soft row vs DL-BP-L2-Pr | " + " | ".join(conditions) + " |",
              "|---|" + "---|" * len(conditions)]
    for name in [n for n in first if "soft" in n]:
        cells = []
        for c in conditions:
            rows = payload["conditions"][c]["modes"]
            gain = rows["bp_l2_prune"]["miou"] - rows["none"]["miou"]
            kept = (rows[name]["miou"] - rows["none"]["miou"]) / gain if gain > 0 else None
            cells.append(cell(rows[name], "bp_l2_prune").strip(" ()")
                         + ("" if kept is None else f"; keeps {100 * kept:.0f}% of its gain"))
        lines.append(f"| {first[name]['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint_dir",
                   help="an import by name (its evidence_tuned.json: the table's settings)")
    p.add_argument("--dataset_dir")
    p.add_argument("--workdir", help="where the soft tuning's run copy goes")
    p.add_argument("--output", required=True)
    p.add_argument("--tune_split", default="train")
    p.add_argument("--eval_split", default="val")
    p.add_argument("--tune_noise", default="drop:1,seed:1;drop:1,rate:0.5,seed:1",
                   help="';'-separated noise models, one soft tuning each")
    p.add_argument("--conditions", default=";".join(CONDITIONS),
                   help="';'-separated: exact, or a --tag_noise spec")
    p.add_argument("--max_candidates", type=int, default=3,
                   help="passes of the soft refit's search + 1 (3: the prior only: every "
                   "strength at tag confidence 1 and 0.7)")
    p.add_argument("--bootstrap_samples", type=int, default=1000)
    p.add_argument("--summarize", action="store_true",
                   help="print the summary table of --output and exit")
    args = p.parse_args(argv)
    if args.summarize:
        print(summary(json.loads(pathlib.Path(args.output).read_text())))
        return {}
    if not (args.checkpoint_dir and args.dataset_dir and args.workdir):
        p.error("--checkpoint_dir, --dataset_dir and --workdir are required")

    hard_tuned = load_tuned(args.checkpoint_dir)
    hard = EvidenceOptions(**hard_tuned["kinds"]["l2"]["evidence"])
    rows = [("none", "none", hard), ("prune", "prune", hard), ("bp_l2", "bp_l2", hard),
            ("bp_l2_prune", "bp_l2_prune", hard)]
    labels, softs = {}, []
    for i, noise in enumerate(args.tune_noise.split(";")):
        t0 = time.time()
        tuned = tune_soft(args, hard, noise)
        prior = EvidenceOptions(**tuned["no_refit"]["evidence"])
        soft_l2 = EvidenceOptions(**tuned["kinds"]["l2"]["best"])
        print(f"tuned with {noise}: prior (no refit) prune_strength={prior.prune_strength}, "
              f"tag_confidence={prior.tag_confidence}; soft refit prune_strength="
              f"{soft_l2.prune_strength}, tag_confidence={soft_l2.tag_confidence} (chosen over "
              f"no refit: {tuned['kinds']['l2']['refit']})")
        rows += [(f"soft_prune_{i}", "soft_prune", prior),
                 (f"bp_l2_soft_prune_{i}", "bp_l2_soft_prune", soft_l2)]
        label = f" (tuned: {noise.replace(',seed:1', '')})"
        labels.update({f"soft_prune_{i}": label, f"bp_l2_soft_prune_{i}": label})
        softs.append({"tune_noise": noise, "prior": dataclasses.asdict(prior),
                      "soft_refit": dataclasses.asdict(soft_l2),
                      "tuning": {k: tuned[k] for k in ("kinds", "no_refit", "table",
                                                       "tags_given", "seconds")},
                      "report": tuned.get("report"), "seconds": round(time.time() - t0, 1)})

    out_path = pathlib.Path(args.output)
    payload = json.loads(out_path.read_text()) if out_path.is_file() else {}
    payload.update({"checkpoint_dir": args.checkpoint_dir, "tune_split": args.tune_split,
                    "eval_split": args.eval_split, "hard": dataclasses.asdict(hard),
                    "soft": softs})
    payload.setdefault("conditions", {})
    network, info, meta = restore_network(args.checkpoint_dir)
    batches, alignment = load_split(network, info, meta, args.dataset_dir, args.eval_split)
    names = input_pipeline.split_filenames(args.dataset_dir, args.eval_split)[: len(batches)]
    for condition in args.conditions.split(";"):
        if condition in payload["conditions"]:
            print(f"{condition}: done before, kept")
            continue
        source = TagSource() if condition == "exact" else tag_source(condition, None, info)
        given, records = source.apply(batches, names, info)
        print(f"{condition}: {source.label}")
        t1 = time.time()
        results = score(network, info, given, alignment, rows, args.bootstrap_samples, labels)
        results.update(tags=records, seconds=round(time.time() - t1, 1))
        print(results["table"])
        payload["conditions"][condition] = results
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(payload, indent=1, default=list))
    print(summary(payload))
    print(f"Wrote {out_path}")
    return payload


if __name__ == "__main__":
    main()
