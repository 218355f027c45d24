"""Evidence modes over a split: the rows of the evidence table, and the table itself.

What every tool that scores modes shares (``tools.eval``, ``tools.tune_evidence``, the
demo): a split loaded and checked against the checkpoint's dataset (:func:`load_split`),
each mode's predictor (:func:`make_predictor`), its predictions and per-image IoU counts
(:func:`run_modes`), where the wrong pixels lie (:class:`ErrorBreakdown`), and the table
with paired bootstrap intervals against DL-MT and DL-MT-Pr (:func:`add_bootstrap`,
:func:`format_table`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from deeplab_ext.data import input_pipeline
from deeplab_ext.data.datasets import DatasetInfo
from deeplab_ext.models.registry import family_of
from deeplab_ext.run.evidence import NO_REFIT
from deeplab_ext.run.options import EvidenceOptions
from deeplab_ext.run.refit_kinds import EVIDENCE_MODES, REFIT_KINDS
from deeplab_ext.run.rundir import input_alignment
from tf_mtl.evidence import prune_probabilities
from tf_mtl.inference import InputAlignment, multi_scale_probabilities, network_logits_fn
from tf_mtl.metrics import (
    image_iou_counts,
    iou_from_counts,
    miou_from_counts,
    paired_bootstrap_miou,
)

__all__ = ["BASELINES", "ErrorBreakdown", "ModeRun", "add_bootstrap", "bootstrap_baselines",
           "check_modes", "format_table", "load_split", "make_predictor", "per_image_miou",
           "run_modes", "run_rows", "vs_cell"]


def check_modes(modes: Sequence[str]) -> list[str]:
    bad = [m for m in modes if m not in EVIDENCE_MODES]
    if bad:
        raise ValueError(
            f"--evidence_modes: unknown mode(s) {bad}; valid: {', '.join(EVIDENCE_MODES)}"
        )
    return list(modes)


def make_predictor(network, info: DatasetInfo, kind: str | None, evidence: EvidenceOptions,
                   scales: Sequence[float] = (1.0,), flip: bool = False,
                   alignment: InputAlignment | None = None
                   ) -> Callable[[tf.Tensor, tf.Tensor], dict]:
    """images, tags -> {"probabilities", ...} (unpruned) for one refit kind (None: plain
    inference), on inputs padded onto ``alignment``'s grid (outputs cropped back)."""
    alignment = alignment or InputAlignment()
    scales = tuple(scales)
    if kind is None:
        logits_fn = network_logits_fn(network, family_of(network).semantic_output)

        def plain(images, tags):
            del tags
            return {"probabilities": multi_scale_probabilities(logits_fn, images, scales, flip)}

        # One trace for every image size (a split's photos differ in size).
        return tf.function(alignment.wrap(plain), input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.float32),
            tf.TensorSpec([None, len(info.tag_class_ids)], tf.float32)])
    refitter = evidence.refitter(network, info, kind, False, scales, flip)
    return alignment.wrap(lambda images, tags: refitter(images, tags))


@dataclasses.dataclass
class ModeRun:
    """One evidence mode over a list of batches: per-image IoU counts [3, C] (their sum
    gives the mIoU, the bootstrap resamples them), the error split, refit statistics."""

    counts: list[np.ndarray]
    predictions: list[np.ndarray]
    errors: dict | None
    steps: np.ndarray | None
    fell_back: np.ndarray | None
    seconds: float

    @property
    def miou(self) -> float:
        return float(miou_from_counts(np.sum(self.counts, axis=0)))


def run_modes(network, info: DatasetInfo, batches: Sequence, modes: Sequence[str],
              evidence: EvidenceOptions, by_kind: Mapping[str, EvidenceOptions] | None = None,
              scales: Sequence[float] = (1.0,), flip: bool = False,
              alignment: InputAlignment | None = None, errors: bool = True,
              keep_predictions: int = 0,
              printer: Callable[[str], None] | None = None,
              sink: Callable[[str, int, np.ndarray], None] | None = None
              ) -> dict[str, ModeRun]:
    """Predict every batch with each evidence mode, with the tags ``targets["tags"]`` holds
    (the ground truth, or what ``run.tag_sources`` made of it).

    A kind refits with its settings in ``by_kind`` (tuned ones, say), else with
    ``evidence``; the rows without a refit read ``by_kind[NO_REFIT]`` (a soft prior).
    ``sink(mode, image index, class map)`` receives every prediction as it is made
    (nothing is kept in memory for it). See :func:`run_rows`.
    """
    by_kind = dict(by_kind or {})
    rows = [(mode, mode, by_kind.get(EVIDENCE_MODES[mode].kind or NO_REFIT, evidence))
            for mode in modes]
    return run_rows(network, info, batches, rows, scales, flip, alignment, errors,
                    keep_predictions, printer, sink)


def run_rows(network, info: DatasetInfo, batches: Sequence,
             rows: Sequence[tuple[str, str, EvidenceOptions]],
             scales: Sequence[float] = (1.0,), flip: bool = False,
             alignment: InputAlignment | None = None, errors: bool = True,
             keep_predictions: int = 0,
             printer: Callable[[str], None] | None = None,
             sink: Callable[[str, int, np.ndarray], None] | None = None
             ) -> dict[str, ModeRun]:
    """Rows ``(name, evidence mode, settings)``, each predicted over every batch: the seed's
    rows with their settings made hard (:meth:`EvidenceOptions.hard`), the soft rows as
    they are. Rows that differ only by their pruning share one pass: a refit is run once
    per image, kind and evidence it refits toward, and its probabilities are then taken
    as they are and pruned (so the tuning scores a refit at every prune strength at once).
    """
    runs: dict[str, ModeRun] = {}
    for (kind, _), group in _passes(rows).items():
        t0 = time.time()
        settings = group[0][2]  # the refit's: the same for every row of the pass
        # A kind tuned to no refit (zero steps) is plain inference: no refit graph to build.
        no_refit = kind is not None and REFIT_KINDS[kind].steps(settings) == 0
        predict = make_predictor(network, info, None if no_refit else kind, settings,
                                 scales, flip, alignment)
        scores = _PassScores(info, group, errors, keep_predictions, sink)
        for images, targets in batches:
            out = predict(images, settings.soft_tags(targets["tags"]))
            scores.add(out, targets, no_refit)
        seconds = round(time.time() - t0, 2)
        if printer is not None:
            printer(f"  predicted {', '.join(EVIDENCE_MODES[m].row for _, m, _ in group)} "
                    f"({seconds:.1f}s)")
        runs.update(scores.runs(seconds))
    return {name: runs[name] for name, _, _ in rows}


def _passes(rows: Sequence[tuple[str, str, EvidenceOptions]]
            ) -> dict[tuple, list[tuple[str, str, EvidenceOptions]]]:
    """The rows grouped by the prediction pass they share (kind and what it refits toward),
    the seed's rows with their settings made hard."""
    passes: dict[tuple, list[tuple[str, str, EvidenceOptions]]] = {}
    for name, mode, settings in rows:
        row = EVIDENCE_MODES[mode]
        settings = settings if row.soft else settings.hard()
        passes.setdefault((row.kind, _refit_key(row.kind, settings)), []).append(
            (name, mode, settings))
    return passes


class _PassScores:
    """What one pass's rows collect per batch: per-image IoU counts, the error breakdown,
    the first predictions kept, the refit's steps; each row pruned as it says."""

    def __init__(self, info: DatasetInfo, group: list[tuple[str, str, EvidenceOptions]],
                 errors: bool, keep_predictions: int,
                 sink: Callable[[str, int, np.ndarray], None] | None):
        self.info, self.group, self.sink = info, group, sink
        self.keep_predictions = keep_predictions
        self.tag_ids, self.keep = list(info.tag_class_ids), info.keep_classes
        self.breakdown = {n: ErrorBreakdown(info) for n, _, _ in group} if errors else {}
        self.counts: dict[str, list] = {n: [] for n, _, _ in group}
        self.kept: dict[str, list] = {n: [] for n, _, _ in group}
        self.taken: list[np.ndarray] = []
        self.back: list[np.ndarray] = []
        self.index = 0

    def add(self, out: dict, targets: dict, no_refit: bool) -> None:
        tags, info = targets["tags"], self.info
        labels = targets["semantic"].numpy()
        for name, mode, row_settings in self.group:
            probs = out["probabilities"]
            if EVIDENCE_MODES[mode].prune:
                probs = prune_probabilities(probs, row_settings.soft_tags(tags), self.tag_ids,
                                            self.keep, strength=row_settings.prune_strength)
            preds = tf.argmax(probs, -1, output_type=tf.int32).numpy()
            self.counts[name] += [image_iou_counts(lab, pred, info.num_classes,
                                                   info.ignore_label)
                                  for lab, pred in zip(labels, preds, strict=True)]
            if name in self.breakdown:
                self.breakdown[name].update(labels, preds, tags.numpy())
            if len(self.kept[name]) < self.keep_predictions:
                self.kept[name].append(preds[0])
            if self.sink is not None:
                for i, pred in enumerate(preds):
                    self.sink(name, self.index + i, pred)
        self.index += len(labels)
        if "steps_taken" in out:
            self.taken.append(out["steps_taken"].numpy().reshape(-1))
            self.back.append(out["fell_back"].numpy().reshape(-1))
        elif no_refit:
            self.taken.append(np.zeros([len(labels)], np.int32))
            self.back.append(np.zeros([len(labels)], bool))

    def runs(self, seconds: float) -> dict[str, ModeRun]:
        taken = np.concatenate(self.taken) if self.taken else None
        back = np.concatenate(self.back) if self.back else None
        return {name: ModeRun(self.counts[name], self.kept[name],
                              self.breakdown[name].result() if name in self.breakdown
                              else None, taken, back, seconds)
                for name, _, _ in self.group}


def _refit_key(kind: str | None, settings: EvidenceOptions) -> str:
    """What a pass's predictions depend on beyond the images: nothing without a refit; the
    refit settings and the tags it refits toward (``tag_confidence``) with one, but not the
    prune strength, which acts after it (unless the anchor term prunes inside the refit)."""
    if kind is None:
        return ""
    fields = dataclasses.asdict(settings)
    if settings.anchor == 0:
        fields.pop("prune_strength")
    return repr(sorted(fields.items()))


class ErrorBreakdown:
    """Wrong pixels, split by whether the predicted class is among the image's tags.

    Why: pruning removes exactly the errors on untagged classes (``untagged``) and
    nothing else; refitting can also reach the rest (``tagged``), which is split further
    into a tagged object ``missed`` (predicted background), ``spurious`` (a tagged class
    on background) and ``confused`` (one tagged class for another): which of these a
    refit trades for which says where its gain or loss comes from.
    """

    def __init__(self, info: DatasetInfo) -> None:
        self.ignore = info.ignore_label
        self.tag_ids = np.asarray(info.tag_class_ids, np.int64)
        self.background = info.background_class
        self.keep = [] if self.background is None else [int(self.background)]
        self.valid = self.wrong = self.untagged = self.missed = self.spurious = 0

    def update(self, labels: np.ndarray, preds: np.ndarray, tags: np.ndarray) -> None:
        """labels / preds [B,H,W], tags [B,T] multi-hot."""
        for label, pred, tag in zip(labels, preds, tags, strict=True):
            valid = label != self.ignore
            wrong = valid & (pred != label)
            allowed = np.concatenate([self.tag_ids[tag >= 0.5], self.keep])
            untagged = wrong & ~np.isin(pred, allowed)
            self.valid += int(valid.sum())
            self.wrong += int(wrong.sum())
            self.untagged += int(untagged.sum())
            if self.background is not None:
                tagged = wrong & ~untagged
                self.missed += int((tagged & (pred == self.background)).sum())
                self.spurious += int((tagged & (label == self.background)).sum())

    def result(self) -> dict[str, float]:
        n = max(self.valid, 1)
        tagged = self.wrong - self.untagged
        return {"wrong_fraction": self.wrong / n, "untagged_fraction": self.untagged / n,
                "tagged_fraction": tagged / n, "missed_fraction": self.missed / n,
                "spurious_fraction": self.spurious / n,
                "confused_fraction": (tagged - self.missed - self.spurious) / n}


def load_split(network, info: DatasetInfo, meta: dict, dataset_dir: str, split: str, *,
               crop: tuple[int, int] | None = None, max_examples: int | None = None,
               align: bool = True, min_resize_value: int | None = None,
               max_resize_value: int | None = None, printer: Callable[[str], None] = print,
               targets: Sequence[str] = input_pipeline.DEFAULT_TARGETS,
               named: str | None = None) -> tuple[list, InputAlignment]:
    """The split's (images, targets) batches of one image each, checked against the
    checkpoint's dataset, and the input alignment to predict them with. Images (and
    labels, as the original's eval does) are resized into the run's training
    ``min/max_resize_value`` range unless other values are given: a model trained on
    frames shrunk to 241 pixels sees full-size frames at the wrong scale. ``named``: the
    dataset the user says the shards hold (shards without a record need it)."""
    min_resize_value = min_resize_value or meta.get("min_resize_value")
    max_resize_value = max_resize_value or meta.get("max_resize_value")
    if min_resize_value or max_resize_value:
        printer(f"Resizing {split} into the range min_resize_value={min_resize_value}, "
                f"max_resize_value={max_resize_value} (the run's training range unless "
                "given), labels too")
    alignment = input_alignment(network, meta) if align else InputAlignment()
    if crop and not alignment.is_aligned(*crop):
        printer(f"warning: --eval_crop_size={crop[0]},{crop[1]} is off the grid the model was "
                f"trained on (stride {alignment.stride}, training crop "
                f"{meta['train_crop_size'][0]}x{meta['train_crop_size'][1]}); inputs are padded "
                f"further to {','.join(map(str, alignment.aligned_size(*crop)))}: use that as "
                "--eval_crop_size")
    # Shards of another dataset, or corrupt ones, are refused before anything is scored.
    input_pipeline.check_shards_match(info, dataset_dir, split, num_examples=0,
                                      whose="the checkpoint's dataset", named=named,
                                      require_record=True)
    dataset = input_pipeline.make_dataset(info, dataset_dir, split, crop_size=crop,
                                          batch_size=1, is_training=False,
                                          min_resize_value=min_resize_value,
                                          max_resize_value=max_resize_value,
                                          targets=tuple(dict.fromkeys(
                                              (*input_pipeline.DEFAULT_TARGETS, *targets))))
    if max_examples:
        dataset = dataset.take(max_examples)
    batches = list(dataset)
    if not batches:
        raise ValueError(f"split {split!r} in {dataset_dir} is empty")
    input_pipeline.check_labels_match(
        np.concatenate([np.unique(b[1]["semantic"].numpy()) for b in batches]), info,
        dataset_dir, split, whose="the checkpoint's dataset")
    return batches, alignment


def per_image_miou(counts: Sequence[np.ndarray]) -> list[float]:
    """Each image's own mIoU (over the classes in its truth or its prediction), from the
    per-image counts of :class:`ModeRun`: which photos a mode helped, which it hurt."""
    with np.errstate(invalid="ignore"):
        return [float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")
                for iou in (iou_from_counts(c) for c in counts)]


BASELINES = ("none", "prune")  # every other row is compared with these when present


def add_bootstrap(results: dict, image_counts: dict[str, list[np.ndarray]],
                  num_samples: int, level: float = 0.95) -> None:
    """Add ``vs`` to each row: its mIoU minus DL-MT's / DL-MT-Pr's, with a paired bootstrap
    interval over the images (`tf_mtl.metrics.paired_bootstrap_miou`)."""
    modes = list(results["modes"])
    # Every row against DL-MT; every row except the baselines against DL-MT-Pr too.
    pairs = [(m, b) for b in BASELINES if b in modes
             for m in modes if m != b and not (b == "prune" and m in BASELINES)]
    if not pairs:
        return
    stats = paired_bootstrap_miou({m: np.stack(image_counts[m]) for m in modes}, pairs,
                                  num_samples=num_samples, level=level)
    for (a, b), st in stats.items():
        results["modes"][a].setdefault("vs", {})[b] = st
    results["bootstrap"] = {"num_samples": num_samples, "level": level,
                            "num_images": results["num_images"]}


def bootstrap_baselines(results: dict) -> list[str]:
    """The baseline modes the rows were compared with (none without a bootstrap)."""
    if not results.get("bootstrap"):
        return []
    return [b for b in BASELINES if b in results["modes"]]


def vs_cell(row: dict, baseline: str) -> str:
    """'+1.23 [+0.40, +2.10]': a row's difference to a baseline row, in points."""
    st = row.get("vs", {}).get(baseline)
    if st is None:
        return ""
    return (f"{100 * st['diff']:+.2f} [{100 * st['low']:+.2f}, {100 * st['high']:+.2f}]")


def format_table(results: dict) -> str:
    """The reference table: one row per evidence mode, mIoU in percent.

    With a bootstrap (`add_bootstrap`), two more columns: the difference to DL-MT and to
    DL-MT-Pr in points, with its interval over resampled images.
    """
    header = (f"| method | mIoU (%) | scales {results['eval_scales']}"
              f"{' + flip' if results['add_flipped_images'] else ''} |")
    rule = "|---|---|---|"
    boot = results.get("bootstrap")
    present = bootstrap_baselines(results)
    for b in present:
        header += (f" vs {EVIDENCE_MODES[b].row} ({100 * boot['level']:.0f}% CI, "
                   f"{boot['num_images']} images) |")
        rule += "---|"
    lines = [header, rule]
    for mode, row in results["modes"].items():
        line = f"| {row['name']} | {100 * row['miou']:.2f} | {mode} |"
        for b in present:
            line += f" {vs_cell(row, b)} |"
        lines.append(line)
    return "\n".join(lines)
