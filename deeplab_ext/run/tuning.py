"""Refit settings tuned per trained model (``tools.tune_evidence``).

Why: the settings that make prediction-time refitting help are a property of a trained
model, not of the method (the same command on another CPU trains another model, and the
fixed settings that helped one model hurt the next). For each refit kind (L2, early
stopping, latent) a small budgeted coordinate search over the learning rate, clipping,
steps / early-stopping cap and margin, L2 weight, the refitted variable groups and the
safeguard runs on a split that is not the reported one. Its candidates include "no
refit" (plain inference), and a refit is chosen only when it beats it, so the choice is
never worse than plain inference on the tuning split. The choice is written into the run
directory; evaluation, export and predict use it (flags given still win).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from deeplab_ext.data import input_pipeline
from deeplab_ext.models.registry import family_of
from deeplab_ext.models.tag_heads import SEGMENTATION
from deeplab_ext.run.evidence import NO_REFIT, TUNED_FILE, save_json, save_tuned
from deeplab_ext.run.locking import directory_lock
from deeplab_ext.run.modes import (
    ModeRun,
    add_bootstrap,
    format_table,
    load_split,
    run_modes,
    run_rows,
)
from deeplab_ext.run.options import OBJECTIVES, EvidenceOptions, TuneOptions
from deeplab_ext.run.refit_kinds import (
    EVIDENCE_MODES,
    REFIT_KINDS,
    kind_names,
    mode_of,
    table_modes,
)
from deeplab_ext.run.rundir import load_run_config, restore_network
from deeplab_ext.run.tag_sources import TagNoise, tag_source
from tf_mtl.metrics import miou_from_counts, paired_bootstrap_miou

__all__ = ["candidate_dimensions", "choose", "cross_fit", "search", "tune_evidence"]

def prior_dimensions(options: TuneOptions) -> list[tuple[str, tuple]]:
    """The soft evidence's coordinates (``--objective=soft``): the prune strength, then the
    tag confidence."""
    return [("prune_strength", tuple(options.prune_strengths)),
            ("tag_confidence", tuple(options.tag_confidences))]


def candidate_dimensions(kind: str, options: TuneOptions, refit_sets: tuple[str, ...],
                         refit_first: bool = False) -> list[tuple[str, tuple]]:
    """The coordinates searched for one kind, in order, each with its values
    (``refit_sets``: the family's for the network's tag head, its default first).

    ``refit_first``, for tags pooled from the segmentation: which layers move, the rate
    and the anchor to the pruned prediction matter most there (BENCHMARKS 19), so they come
    first; a trained tag head keeps the order its tuned results were measured with. The
    soft objective searches its prior first: with tags that may be wrong it matters more
    than any refit setting (BENCHMARKS 27)."""
    prior = prior_dimensions(options) if options.objective == "soft" else []
    rate = ("learning_rate", tuple(options.learning_rates))
    clip = ("clip_norm", tuple(options.clip_norms))
    row = REFIT_KINDS[kind]
    schedule = list(row.search)
    refit = [("refit", (None, *refit_sets[1:]))] if row.weights and len(refit_sets) > 1 else []
    anchor = [("anchor", (0.0, 1.0))] if row.weights else []
    safeguard = [("safeguard", (True, False))]
    if refit_first:
        return [*prior, *refit, rate, *anchor, *schedule, clip, *safeguard]
    return [*prior, rate, clip, *schedule, *refit, *safeguard, *anchor]


def _key(candidate: EvidenceOptions) -> str:
    return repr(dataclasses.asdict(candidate))


def _label(candidate: EvidenceOptions, base: EvidenceOptions, shown: tuple[str, ...] = ()
           ) -> str:
    """The fields where a candidate differs from ``base``, and those ``shown`` always (the
    soft prior: its search starts where the prior without a refit ended, not at base)."""
    changed = [f"{f.name}={getattr(candidate, f.name)}" for f in dataclasses.fields(candidate)
               if getattr(candidate, f.name) != getattr(base, f.name) and f.name not in shown]
    return ", ".join(changed + [f"{f}={getattr(candidate, f)}" for f in shown]) or "start point"


def choose(no_refit: float, refits: list[tuple[float, float, Any]],
           min_confidence: float = 0.0) -> Any | None:
    """The best refit ``(mIoU, P(beats no refit), candidate)`` among those that beat no
    refit on the tuning split and do so in at least ``min_confidence`` of the bootstrap
    resamples of its images (ties keep no refit: simpler, and never worse); None means
    no refit. Why a confidence: on 50 images the best of a dozen candidates is partly
    luck, and a refit chosen by luck can cost points elsewhere."""
    eligible = [(m, c) for m, p, c in refits if m > no_refit and p >= min_confidence]
    return max(eligible, key=lambda r: r[0])[1] if eligible else None


def _check(options: TuneOptions) -> None:
    bad = [k for k in options.kinds if k not in REFIT_KINDS]
    if bad:
        raise ValueError(f"--kinds: unknown refit kind(s) {bad}; valid: "
                         f"{', '.join(kind_names())}")
    if options.max_candidates < 2:
        raise ValueError(f"--max_candidates must be >= 2 (no refit and one refit), got "
                         f"{options.max_candidates}")
    if not 0.0 <= options.min_confidence < 1.0:
        raise ValueError(f"--min_confidence must be in [0, 1), got {options.min_confidence}")
    if options.min_confidence > 0 and options.bootstrap_samples < 1:
        raise ValueError("--min_confidence needs --bootstrap_samples >= 1")
    if options.objective not in OBJECTIVES:
        raise ValueError(f"--objective={options.objective!r}: use one of {', '.join(OBJECTIVES)}")
    if options.tag_noise and options.tags_from:
        raise ValueError("give at most one of --tag_noise and --tags_from")
    if options.tag_noise:
        TagNoise.parse(options.tag_noise)
    for name, values, ok, why in (
            ("prune_strengths", options.prune_strengths, lambda v: 0 <= v <= 1, "[0, 1]"),
            ("tag_confidences", options.tag_confidences, lambda v: 0.5 < v <= 1, "(0.5, 1]")):
        if not values or not all(ok(v) for v in values):
            raise ValueError(f"--{name}={','.join(map(str, values))}: each must be in {why}")
    if options.folds == 1 or options.folds < 0:
        raise ValueError(f"--folds={options.folds}: 0 (tune on the whole split) or >= 2 "
                         "(cross-fitting: tune on the other folds, score each fold held out)")


def tune_evidence(options: TuneOptions, printer: Callable[[str], None] = print) -> dict:
    """Search each kind's refit settings on the tuning split; write and return the choice.

    With ``--folds=K`` the split is cut into K interleaved folds instead: each fold is
    scored with the settings tuned on the others, and the held-out table over every image
    is written (``evidence_crossfit.json``); ``evidence_tuned.json`` is left as it is.
    """
    _check(options)
    load_run_config(options.checkpoint_dir)  # a clear error before the lock is taken
    # The run directory is written at the end: no training may move its checkpoint meanwhile.
    with directory_lock(options.checkpoint_dir, "--checkpoint_dir", printer=printer):
        return _tune(options, printer)


def _tune(options: TuneOptions, printer: Callable[[str], None]) -> dict:
    network, info, meta = restore_network(options.checkpoint_dir)
    family = family_of(network)
    if family.tags_output not in network.output:
        raise ValueError(f"{meta['model']['name']} has no tag head: nothing to refit")
    if options.tune_split == "val":
        printer("warning: tuning on 'val'; report results on another split, or they are "
                "tuned on what they report")
    batches, alignment = load_split(network, info, meta, options.dataset_dir,
                                    options.tune_split, crop=options.eval_crop_size,
                                    max_examples=options.max_examples,
                                    align=options.align_inputs, printer=printer,
                                    named=options.dataset)
    source = tag_source(options.tag_noise, options.tags_from, info)
    batches, _ = source.apply(batches, input_pipeline.split_filenames(
        options.dataset_dir, options.tune_split)[: len(batches)], info)
    if not source.is_truth:
        printer(f"Tuning with {source.label}")
    if not any(float(np.max(targets["tags"])) > 0.5 for _, targets in batches):
        raise ValueError(f"--tune_split={options.tune_split}: none of its {len(batches)} images "
                         "has a tag (an object of a tagged class), so no refit can be told "
                         "from plain inference; nothing was written. Tune on a split with "
                         "objects")
    if options.folds:
        return cross_fit(network, info, meta, batches, alignment, options, printer)
    printer(f"Tuning refit settings of {meta['model']['name']} on {info.name}:"
            f"{options.tune_split} ({len(batches)} images), kinds {', '.join(options.kinds)}, "
            f"objective {options.objective}, at most {options.max_candidates} candidates each")
    payload = {"tune_split": options.tune_split, "dataset_dir": str(options.dataset_dir),
               "num_images": len(batches), "model": meta["model"]["name"],
               "tags_given": source.describe,
               **search(network, info, batches, alignment, options, printer)}
    payload["report"] = format_tuning(payload)
    path = save_tuned(options.checkpoint_dir, payload)
    printer(payload["report"])
    printer(f"Wrote {path}: evaluation, export and predict of this run now refit with these "
            f"settings (flags given still win; --nouse_tuned_evidence ignores them)")
    return payload


def search(network, info, batches: list, alignment, options: TuneOptions,
           printer: Callable[[str], None] = print) -> dict:
    """The budgeted search of every kind on ``batches``: ``{"kinds", "serving_kind",
    "table", "seconds", "objective"}`` (what ``evidence_tuned.json`` holds), and with
    ``--objective=soft`` ``"no_refit"``: the prior chosen for the rows without a refit."""
    family = family_of(network)
    pruned, soft = options.objective != "plain", options.objective == "soft"
    baseline = {"plain": "none", "pruned": "prune", "soft": "soft_prune"}[options.objective]

    def run(mode: str, evidence: EvidenceOptions) -> dict[str, tuple[EvidenceOptions, ModeRun]]:
        """The candidate scored, and with it (one pass) its twins at the other prune
        strengths searched, when its row prunes softly and the strength acts after the
        refit (no anchor): the keys of ``_KindSearch.seen``."""
        twins = [evidence]
        if soft and EVIDENCE_MODES[mode].soft and evidence.anchor == 0:
            twins += [dataclasses.replace(evidence, prune_strength=v)
                      for v in options.prune_strengths if v != evidence.prune_strength]
        named = {_key(t): t for t in twins}
        runs = run_rows(network, info, batches, [(k, mode, t) for k, t in named.items()],
                        alignment=alignment, errors=False)
        return {k: (named[k], runs[k]) for k in named}

    t0 = time.time()
    found: dict[str, Any] = {}
    if soft:  # no refit has a prior to tune too: a refit must beat the best of those
        prior_search = _KindSearch(None, baseline, run, None, options, printer)
        prior_search.coordinate_descent(prior_dimensions(options), budget=False)
        no_refit = prior_search.choice()
        start = EvidenceOptions(**no_refit["evidence"])
        plain = prior_search.seen[_key(start)]
        table = prior_search.rows
        found["no_refit"] = no_refit
    else:
        start = options.evidence
        plain = run(baseline, start)[_key(start)][1]
        table = [{"kind": "-", "candidate": f"no refit ({'pruned' if pruned else 'plain'} "
                  "inference)", "miou": plain.miou, "vs_no_refit": 0.0,
                  "seconds": plain.seconds}]
        printer(f"  no refit: mIoU {100 * plain.miou:.2f}")
    refit_sets = family.refit_choices(network.model_config)
    segmentation_tags = getattr(network.model_config, "tag_head", None) == SEGMENTATION
    kinds: dict[str, dict] = {}
    for kind in options.kinds:
        kind_search = _KindSearch(kind, mode_of(kind, pruned, soft), run, plain, options,
                                  printer, start=start)
        kind_search.coordinate_descent(
            candidate_dimensions(kind, options, refit_sets, refit_first=segmentation_tags))
        table += kind_search.rows
        kinds[kind] = kind_search.choice()
    serving_kind = max(kinds, key=lambda k: (kinds[k]["miou"], -options.kinds.index(k)))
    return {"kinds": kinds, "serving_kind": serving_kind, "table": table,
            "objective": options.objective, **found, "seconds": round(time.time() - t0, 1)}


class _KindSearch:
    """One kind's coordinate search: each candidate scored once (within the budget), the
    best kept per coordinate, then the choice against no refit (``plain``). Kind None is
    the soft objective's search of the prior without a refit: its candidates are judged
    against its start point (the seed's pruning, unless flags say otherwise)."""

    def __init__(self, kind: str | None, mode: str,
                 run: Callable[[str, EvidenceOptions], dict[str, tuple[EvidenceOptions,
                                                                       ModeRun]]],
                 plain: ModeRun | None, options: TuneOptions, printer: Callable[[str], None],
                 start: EvidenceOptions | None = None):
        self.kind, self.mode, self.run, self.plain = kind, mode, run, plain
        self.options, self.printer = options, printer
        self.start = start or options.evidence
        self.seen: dict[str, ModeRun] = {}
        self.candidates: dict[str, EvidenceOptions] = {}
        self.twins: dict[str, tuple[EvidenceOptions, ModeRun]] = {}  # scored by a pass, free
        self.passes = 0
        self.rows: list[dict] = []

    def score(self, candidate: EvidenceOptions, budget: bool = True) -> float | None:
        """The candidate's mIoU (None: over the budget, which counts the passes run: a
        candidate a pass scored as another's twin costs nothing)."""
        key = _key(candidate)
        if key not in self.seen:
            if key not in self.twins:
                if budget and self.passes + 1 >= self.options.max_candidates:  # + no refit
                    return None
                self.passes += 1
                self.twins.update(self.run(self.mode, candidate))
            self.candidates[key], self.seen[key] = self.twins.pop(key)
            result = self.seen[key]
            if self.plain is None:  # the no-refit prior's search: its start is its baseline
                self.plain = result
            label = _label(candidate, self.options.evidence,
                           ("prune_strength", "tag_confidence")
                           if self.options.objective == "soft" else ())
            if self.kind is None:
                label = f"no refit ({EVIDENCE_MODES[self.mode].row}), {label}"
            row = {"kind": self.kind or "-", "candidate": label, "miou": result.miou,
                   "vs_no_refit": result.miou - self.plain.miou,
                   "seconds": result.seconds, "key": key}
            self.rows.append(row)
            self.printer(f"  {row['kind']}: {row['candidate']}: mIoU {100 * result.miou:.2f} "
                         f"({100 * row['vs_no_refit']:+.2f} vs "
                         f"{'no refit' if self.kind else 'the start point'}, "
                         f"{result.seconds:.0f}s)")
        return self.seen[key].miou

    def coordinate_descent(self, dims: list[tuple[str, tuple]], budget: bool = True) -> None:
        best, best_miou = self.start, self.score(self.start, budget)
        for name, values in dims:
            for value in values:
                candidate = dataclasses.replace(best, **{name: value})
                miou = self.score(candidate, budget)
                if miou is not None and miou > best_miou:
                    best, best_miou = candidate, miou
        self.best = best

    def choice(self) -> dict:
        """The kind's entry of evidence_tuned.json: the best candidate that beats no refit
        confidently enough (``choose``), else no refit (with the start point's prior)."""
        options, plain = self.options, self.plain
        start_key = _key(self.start)
        refits, vs_no_refit = [], {}
        for key, result in self.seen.items():
            if self.kind is None and key == start_key:
                continue  # the baseline itself
            p_greater = 1.0
            if options.bootstrap_samples > 0:
                pair = ("candidate", "no refit")  # (the prior search: one mode for both)
                counts = {"candidate": np.stack(result.counts),
                          "no refit": np.stack(plain.counts)}
                vs_no_refit[key] = paired_bootstrap_miou(
                    counts, [pair], num_samples=options.bootstrap_samples)[pair]
                p_greater = vs_no_refit[key]["p_greater"]
            refits.append((result.miou, p_greater, key))
            next(r for r in self.rows if r["key"] == key)["p_greater"] = p_greater
        for row in self.rows:
            row.pop("key")
        chosen_key = choose(plain.miou, refits, options.min_confidence)
        chosen = self.candidates[chosen_key] if chosen_key else None
        if self.kind is None:  # the prior: no steps to take in any case
            final = chosen or self.start
        else:
            final = chosen or dataclasses.replace(
                self.best, **{k.steps_field: 0 for k in REFIT_KINDS.values()},
                prune_strength=self.start.prune_strength,
                tag_confidence=self.start.tag_confidence)
        entry = {"evidence": dataclasses.asdict(final), "refit": chosen is not None,
                 "miou": self.seen[chosen_key].miou if chosen else plain.miou,
                 # The best candidate tried, chosen or not (what a refit would have been).
                 "best": dataclasses.asdict(self.best),
                 "best_miou": self.seen[_key(self.best)].miou,
                 "no_refit_miou": plain.miou, "candidates": len(self.seen) + 1,
                 "passes": self.passes,
                 "min_confidence": options.min_confidence}
        if chosen is not None and options.bootstrap_samples > 0:
            entry["vs_no_refit"] = vs_no_refit[chosen_key]
        return entry


CROSSFIT_FILE = "evidence_crossfit.json"


def crossfit_modes(options: TuneOptions) -> list[str]:
    """The rows of a cross-fitted table: those of the tuned kinds and those without a
    refit, their soft rows too when tuned for the soft objective."""
    soft = options.objective == "soft"
    return [m for m, row in EVIDENCE_MODES.items() if m in table_modes(options.kinds)
            or (soft and row.soft and (row.kind is None or row.kind in options.kinds))]


def _held_out_table(modes: list[str], counts: dict, seconds: dict, steps: dict,
                    num_images: int, scales: tuple[float, ...], flip: bool,
                    bootstrap_samples: int) -> dict:
    """One protocol's table over every image, each scored held out."""
    results = {"eval_scales": list(scales), "add_flipped_images": flip,
               "num_images": num_images, "modes": {}}
    for m in modes:
        row = {"name": EVIDENCE_MODES[m].row,
               "miou": float(miou_from_counts(np.sum(counts[m], axis=0))),
               "seconds_per_image": seconds[m] / num_images}
        if steps[m]:
            row["refit_steps_mean"] = float(np.concatenate(steps[m]).mean())
        results["modes"][m] = row
    if bootstrap_samples > 0:
        add_bootstrap(results, counts, bootstrap_samples)
    results["table"] = format_table(results)
    return results


def cross_fit(network, info, meta: dict, batches: list, alignment, options: TuneOptions,
              printer: Callable[[str], None] = print) -> dict:
    """Every image scored held out: fold ``k`` (images ``k, k + K, ...``) with the settings
    :func:`search` chose on the other folds. Why: where nothing is trained (a released
    model with tags pooled from its segmentation) every image can serve both roles, but
    never at once; the table over all images is then held out and twice as large as one
    split's. Written to ``RUN/evidence_crossfit.json``."""
    k = options.folds
    if len(batches) <= k:
        raise ValueError(f"--folds={k} needs more than {k} images (each fold is scored, and "
                         f"tuned on the others); the split has {len(batches)}")
    modes = crossfit_modes(options)
    protocols = [((1.0,), False)]
    if tuple(options.eval_scales) != (1.0,) or options.add_flipped_images:
        protocols.append((tuple(options.eval_scales), options.add_flipped_images))
    printer(f"Cross-fitting refit settings of {meta['model']['name']} on {info.name}:"
            f"{options.tune_split} ({len(batches)} images, {k} folds), kinds "
            f"{', '.join(options.kinds)}, objective {options.objective}")
    counts = {p: {m: [] for m in modes} for p in protocols}
    seconds = {p: dict.fromkeys(modes, 0.0) for p in protocols}
    steps = {p: {m: [] for m in modes} for p in protocols}
    folds = []
    t0 = time.time()
    for i in range(k):
        held = batches[i::k]
        rest = [b for j, b in enumerate(batches) if j % k != i]
        printer(f"fold {i + 1}/{k}: tuning on {len(rest)} images, scoring {len(held)}")
        found = search(network, info, rest, alignment, options, printer)
        entries = {**found["kinds"], **({NO_REFIT: found["no_refit"]} if "no_refit" in found
                                        else {})}
        evidence = {kind: EvidenceOptions(**entry["evidence"]) for kind, entry in entries.items()}
        folds.append({"images": len(held), "tuned_on": len(rest),
                      "kinds": {kk: {"refit": e["refit"], "evidence": e["evidence"]}
                                for kk, e in entries.items()}})
        for scales, flip in protocols:
            runs = run_modes(network, info, held, modes, options.evidence, evidence, scales,
                             flip, alignment, errors=False)
            for m, r in runs.items():
                counts[(scales, flip)][m] += r.counts
                seconds[(scales, flip)][m] += r.seconds
                if r.steps is not None:
                    steps[(scales, flip)][m].append(r.steps)
    tables = []
    for scales, flip in protocols:
        p = (scales, flip)
        results = _held_out_table(modes, counts[p], seconds[p], steps[p], len(batches), scales,
                                  flip, options.bootstrap_samples)
        tables.append(results)
        printer(f"Held out over {len(batches)} images ({k} folds), scales {list(scales)}"
                f"{' + flip' if flip else ''}:")
        printer(results["table"])
    payload = {"split": options.tune_split, "dataset_dir": str(options.dataset_dir),
               "num_images": len(batches), "folds": folds, "model": meta["model"]["name"],
               "objective": options.objective, "tables": tables,
               "seconds": round(time.time() - t0, 1)}
    path = save_json(options.checkpoint_dir, CROSSFIT_FILE, payload)
    printer(f"Wrote {path}")
    return payload


def describe_settings(kind: str, evidence: dict) -> str:
    """The settings a kind uses, as ``name=value`` (the report and the tuning table)."""
    keys = ("learning_rate", "clip_norm", *REFIT_KINDS[kind].fields, "anchor", "refit",
            "safeguard")
    soft = [k for k in ("prune_strength", "tag_confidence") if evidence.get(k, 1.0) != 1.0]
    return ", ".join(f"{k}={evidence[k]}" for k in (*keys, *soft) if k in evidence)


def format_tuning(payload: dict) -> str:
    """The search table and the choice per kind (markdown)."""
    lines = [f"Refit settings tuned on {payload['tune_split']} ({payload['num_images']} "
             f"images; written to {TUNED_FILE}):", "",
             "| kind | candidate | mIoU (%) | vs no refit | P(beats no refit) |",
             "|---|---|---|---|---|"]
    for row in payload["table"]:
        p = row.get("p_greater")
        lines.append(f"| {row['kind']} | {row['candidate']} | {100 * row['miou']:.2f} | "
                     f"{100 * row['vs_no_refit']:+.2f} | {'' if p is None else f'{p:.2f}'} |")
    lines.append("")
    for kind, entry in payload["kinds"].items():
        ev = entry["evidence"]
        if not entry["refit"]:
            what = (f"no refit (no candidate beat no refit in at least "
                    f"{entry['min_confidence']:.0%} of the resamples)")
        else:
            what = describe_settings(kind, ev)
            vs = entry.get("vs_no_refit")
            if vs:
                what += (f"; {100 * vs['diff']:+.2f} [{100 * vs['low']:+.2f}, "
                         f"{100 * vs['high']:+.2f}] vs no refit")
        lines.append(f"- {kind}: {what}")
    prior = payload.get("no_refit")
    if prior:
        ev = prior["evidence"]
        lines.append(f"- no refit (soft prior): prune_strength={ev['prune_strength']}, "
                     f"tag_confidence={ev['tag_confidence']}"
                     + ("" if prior["refit"] else " (the start point: no other prior beat it "
                        f"in at least {prior['min_confidence']:.0%} of the resamples)"))
    lines.append(f"- served (segment_with_evidence): {payload['serving_kind']}")
    return "\n".join(lines)
