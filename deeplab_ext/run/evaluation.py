"""Evaluating a trained network: mIoU, per-class IoU, tag F1 and the evidence table.

The library behind `tools.eval` (the original's eval.py). Each evidence mode is one
row of the reference table (DL-MT, DL-MT-Pr, DL-BP-L2, DL-BP-ES, ... -Pr), computed
with tags taken from the ground truth, with the original's `eval_scales` and
`add_flipped_images` applied to every mode.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import textwrap
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import cv2
import numpy as np
import tensorflow as tf

from deeplab_ext.data import colormap as cmap
from deeplab_ext.data import input_pipeline
from deeplab_ext.data.datasets import DatasetInfo
from deeplab_ext.models.registry import family_of
from deeplab_ext.run.evidence import (
    evidence_by_kind,
    keep_classes,
    make_refitter,
)
from deeplab_ext.run.label_structure import decoder_path
from deeplab_ext.run.options import EvalOptions, EvidenceOptions
from deeplab_ext.run.refit_kinds import EVIDENCE_MODES, REFIT_KINDS
from deeplab_ext.run.rundir import atomic_write, input_alignment, restore_network
from deeplab_ext.run.tasks import TaskContext, build_tasks, task_names
from tf_mtl.evidence import prune_probabilities
from tf_mtl.inference import InputAlignment, multi_scale_probabilities, network_logits_fn
from tf_mtl.metrics import (
    TagMAP,
    TagPrecisionRecallF1,
    image_iou_counts,
    iou_from_counts,
    miou_from_counts,
    paired_bootstrap_miou,
)

# Tasks evaluated by the mode table (semantic) and the tag metrics (tags); the network's
# other tasks report their own metrics.
PIXEL_TASKS = ("semantic", "tags")


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
    refitter = make_refitter(network, info, evidence, kind, False, scales, flip)
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
              evidence: Mapping[str | None, EvidenceOptions], scales: Sequence[float] = (1.0,),
              flip: bool = False, alignment: InputAlignment | None = None,
              errors: bool = True, keep_predictions: int = 0,
              printer: Callable[[str], None] | None = None) -> dict[str, ModeRun]:
    """Predict every batch with each evidence mode (tags from the ground truth).

    Modes that differ only by pruning share one pass: a refit is run once per image and
    kind, and its probabilities are then taken as they are and pruned (``evidence``:
    refit settings by kind).
    """
    tag_ids, keep = list(info.tag_class_ids), keep_classes(info)
    runs: dict[str, ModeRun] = {}
    kinds = list(dict.fromkeys(EVIDENCE_MODES[m].kind for m in modes))
    for kind in kinds:
        group = [m for m in modes if EVIDENCE_MODES[m].kind == kind]
        t0 = time.time()
        settings = evidence.get(kind, evidence.get(None))
        # A kind tuned to no refit (zero steps) is plain inference: no refit graph to build.
        no_refit = kind is not None and REFIT_KINDS[kind].steps(settings) == 0
        predict = make_predictor(network, info, None if no_refit else kind, settings,
                                 scales, flip, alignment)
        breakdown = {m: ErrorBreakdown(info) for m in group} if errors else {}
        counts: dict[str, list] = {m: [] for m in group}
        kept: dict[str, list] = {m: [] for m in group}
        taken, back = [], []
        for images, targets in batches:
            out = predict(images, targets["tags"])
            labels, tags = targets["semantic"].numpy(), targets["tags"]
            for mode in group:
                probs = out["probabilities"]
                if EVIDENCE_MODES[mode].prune:
                    probs = prune_probabilities(probs, tags, tag_ids, keep)
                preds = tf.argmax(probs, -1, output_type=tf.int32).numpy()
                counts[mode] += [image_iou_counts(lab, pred, info.num_classes, info.ignore_label)
                                 for lab, pred in zip(labels, preds, strict=True)]
                if mode in breakdown:
                    breakdown[mode].update(labels, preds, tags.numpy())
                if len(kept[mode]) < keep_predictions:
                    kept[mode].append(preds[0])
            if "steps_taken" in out:
                taken.append(out["steps_taken"].numpy().reshape(-1))
                back.append(out["fell_back"].numpy().reshape(-1))
            elif no_refit:
                taken.append(np.zeros([len(labels)], np.int32))
                back.append(np.zeros([len(labels)], bool))
        seconds = round(time.time() - t0, 2)
        if printer is not None:
            printer(f"  predicted {', '.join(EVIDENCE_MODES[m].row for m in group)} "
                    f"({seconds:.1f}s)")
        for mode in group:
            runs[mode] = ModeRun(counts[mode], kept[mode],
                                 breakdown[mode].result() if mode in breakdown else None,
                                 np.concatenate(taken) if taken else None,
                                 np.concatenate(back) if back else None, seconds)
    return {m: runs[m] for m in modes}


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


def _colour(label: np.ndarray, info: DatasetInfo) -> np.ndarray:
    label = np.where(label == info.ignore_label, 0, label)
    return cmap.label_to_color_image(label.astype(np.int32), info.colormap)


def comparison_figure(rows: list[dict], columns: Sequence[str], info: DatasetInfo,
                      scale: int = 1) -> np.ndarray:
    """Grid of input | ground truth | one prediction per mode (the reference's figure)."""
    tiles, col_w = [], None
    cell_h = min(160, max(r["image"].shape[0] for r in rows))
    for r in rows:
        cells = [r["image"].astype(np.uint8), _colour(r["label"], info)]
        cells += [_colour(r["pred"][m], info) for m in columns]
        # Images of a split may differ in size: every cell gets the same height.
        h, w = cells[0].shape[:2]
        size = (max(1, round(w * cell_h / h)), cell_h)
        cells = [cv2.resize(c, size, interpolation=cv2.INTER_NEAREST) for c in cells]
        col_w = col_w or size[0] + 4
        tiles.append(np.concatenate([np.pad(c, ((2, 2), (2, 2), (0, 0)), constant_values=255)
                                     for c in cells], axis=1))
    width = max(t.shape[1] for t in tiles)
    tiles = [np.pad(t, ((0, 0), (0, width - t.shape[1]), (0, 0)), constant_values=255)
             for t in tiles]
    grid = np.concatenate(tiles, axis=0)
    if scale > 1:
        grid = cv2.resize(grid, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    header = np.full((18 * scale, grid.shape[1], 3), 255, np.uint8)
    width = col_w * scale
    for i, title in enumerate(["input", "ground truth", *[EVIDENCE_MODES[m].row for m in columns]]):
        cv2.putText(header, title, (i * width + 3, 13 * scale), cv2.FONT_HERSHEY_SIMPLEX,
                    0.35 * scale, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([header, grid], axis=0)


def load_split(network, info: DatasetInfo, meta: dict, dataset_dir: str, split: str, *,
               crop: tuple[int, int] | None = None, max_examples: int | None = None,
               align: bool = True, min_resize_value: int | None = None,
               max_resize_value: int | None = None, printer: Callable[[str], None] = print,
               targets: Sequence[str] = input_pipeline.DEFAULT_TARGETS
               ) -> tuple[list, InputAlignment]:
    """The split's (images, targets) batches of one image each, checked against the
    checkpoint's dataset, and the input alignment to predict them with. Images (and
    labels, as the original's eval does) are resized into the run's training
    ``min/max_resize_value`` range unless other values are given: a model trained on
    frames shrunk to 241 pixels sees full-size frames at the wrong scale."""
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
                                      whose="the checkpoint's dataset")
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


def evaluate(options: EvalOptions, printer: Callable[[str], None] = print,
             explicit: Collection[str] = ()) -> dict[str, Any]:
    """Run every evidence mode over the split; returns (and writes) the results dict.

    Refit rows use the run's tuned settings when it has them (``tools.tune_evidence``),
    with the evidence fields named in ``explicit`` (flags given) taken from
    ``options.evidence`` instead; without tuned settings ``options.evidence`` is used.
    """
    modes = check_modes(options.evidence_modes)
    if options.bootstrap_samples < 0:
        raise ValueError(f"--bootstrap_samples must be >= 0 (0 turns the intervals off), "
                         f"got {options.bootstrap_samples}")
    network, info, meta = restore_network(options.checkpoint_dir, options.checkpoint_path)
    family = family_of(network)
    has_tags = family.tags_output in network.output
    refits = [m for m in modes if EVIDENCE_MODES[m].kind is not None]
    if not has_tags and refits:  # pruning needs the tags only, refitting needs a tag head
        raise ValueError(
            f"--evidence_modes={','.join(refits)} needs a model with a tag head (a *_mt "
            f"--model_variant); {meta['model']['name']} has none."
        )
    image_tasks = build_tasks(TaskContext(network, family, info, None),
                              [n for n in task_names(network, family) if n not in PIXEL_TASKS])
    batches, alignment = load_split(
        network, info, meta, options.dataset_dir, options.eval_split,
        crop=options.eval_crop_size, max_examples=options.max_examples,
        align=options.align_inputs, min_resize_value=options.min_resize_value,
        max_resize_value=options.max_resize_value, printer=printer,
        targets=[t.target_key for t in image_tasks])
    evidence = evidence_by_kind(options.checkpoint_dir, options.evidence, explicit,
                                use_tuned=options.use_tuned_evidence, printer=printer)
    printer(f"Evaluating {meta['model']['name']} on {info.name}:{options.eval_split} "
            f"({len(batches)} images), modes: {', '.join(modes)}, scales {options.eval_scales}"
            f"{' + flip' if options.add_flipped_images else ''}")

    class_names = list(info.class_names)
    results: dict[str, Any] = {"dataset": info.name, "split": options.eval_split,
                               "num_images": len(batches), "model": meta["model"]["name"],
                               "eval_scales": list(options.eval_scales),
                               "add_flipped_images": options.add_flipped_images,
                               "evidence": dataclasses.asdict(options.evidence),
                               "evidence_by_kind": {k: dataclasses.asdict(v)
                                                    for k, v in evidence.items()},
                               "modes": {}}
    vis_rows = [{"image": b[0][0].numpy(), "label": b[1]["semantic"][0].numpy(), "pred": {}}
                for b in batches[: options.num_vis_examples]]
    # One plain pass serves the tag metrics and the image-level tasks (SegNet's class and
    # box heads, on the whole image).
    f1, tag_map = TagPrecisionRecallF1(len(info.tag_class_ids)), TagMAP(len(info.tag_class_ids))
    if has_tags or image_tasks:
        for images, targets in batches:
            out = network(images, training=False)
            if has_tags:
                f1.update_state(targets["tags"], out[family.tags_output])
                tag_map.update_state(targets["tags"], out[family.tags_output])
            for task in image_tasks:
                for metric in task.metrics:
                    metric.update_state(targets[task.target_key], out[task.output_key])
    if has_tags:
        results["tags"] = {k: float(v) for k, v in f1.results().items()}
        results["tags"]["mAP"] = float(tag_map.result())
        printer(f"tags: precision {results['tags']['precision']:.4f} recall "
                f"{results['tags']['recall']:.4f} F1 {results['tags']['f1']:.4f} "
                f"mAP {results['tags']['mAP']:.4f}")
    for task in image_tasks:
        results[task.name] = {m.name: float(m.result()) for m in task.metrics}
        printer(f"{task.name}: " + " ".join(f"{k} {v:.4f}" for k, v in results[task.name].items()))
    image_counts: dict[str, list[np.ndarray]] = {}
    runs = run_modes(network, info, batches, modes, {None: options.evidence, **evidence},
                     options.eval_scales, options.add_flipped_images, alignment,
                     keep_predictions=len(vis_rows), printer=printer)
    for mode, run in runs.items():
        image_counts[mode] = run.counts
        for row_vis, pred in zip(vis_rows, run.predictions, strict=True):
            row_vis["pred"][mode] = pred
        per_class = iou_from_counts(np.sum(run.counts, axis=0))
        row = {
            "name": EVIDENCE_MODES[mode].row,
            "miou": run.miou,
            "per_class_iou": {n: (None if np.isnan(v) else float(v))
                              for n, v in zip(class_names, per_class, strict=True)},
            "seconds": run.seconds,
        }
        steps_note = ""
        if run.errors is not None:
            row["errors"] = e = run.errors
            share = e["untagged_fraction"] / e["wrong_fraction"] if e["wrong_fraction"] else 0.0
            steps_note += (f", wrong pixels {100 * e['wrong_fraction']:.3f}%, "
                           f"{100 * share:.0f}% of them an untagged class; "
                           f"missed / spurious / confused {100 * e['missed_fraction']:.3f} / "
                           f"{100 * e['spurious_fraction']:.3f} / "
                           f"{100 * e['confused_fraction']:.3f}%")
        if run.steps is not None:  # refit modes: how far each image went, and the safeguard
            steps, back = run.steps, run.fell_back
            row["refit_steps"] = {"mean": float(steps.mean()), "max": int(steps.max()),
                                  "fraction_zero": float(np.mean(steps == 0)),
                                  "fell_back": int(back.sum())}
            steps_note += (f", refit steps mean {steps.mean():.1f}, "
                           f"{100 * np.mean(steps == 0):.0f}% zero, safeguard kept the plain "
                           f"prediction for {int(back.sum())} of {back.size} images")
        results["modes"][mode] = row
        printer(f"  {row['name']:<14} mIoU {100 * row['miou']:6.2f}%   ({row['seconds']:.1f}s"
                f"{steps_note})")
        per_class = ", ".join(f"{n} {'n/a' if v is None else f'{100 * v:.2f}'}"
                              for n, v in row["per_class_iou"].items())
        for line in textwrap.wrap("per-class IoU: " + per_class, width=100,
                                  initial_indent="    ", subsequent_indent="      "):
            printer(line)
    if options.label_decoder_path_miou:
        predict = decoder_path(meta["checkpoint_path"], network, family, info,
                               meta.get("training_branches", {}), alignment, batches[0][0])
        counts = [image_iou_counts(lab, pred, info.num_classes, info.ignore_label)
                  for images, targets in batches
                  for lab, pred in zip(targets["semantic"].numpy(),
                                       tf.argmax(predict(images), -1).numpy(), strict=True)]
        miou = float(miou_from_counts(np.sum(counts, axis=0)))
        results["label_decoder_path"] = {"miou": miou}
        printer(f"  decoder path (training-only, not served) mIoU {100 * miou:6.2f}%")
    if options.bootstrap_samples > 0:
        add_bootstrap(results, image_counts, options.bootstrap_samples)
    results["table"] = format_table(results)
    printer(results["table"])
    if options.eval_logdir:
        out = pathlib.Path(options.eval_logdir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "eval_results.json", json.dumps(results, indent=2))
        if vis_rows:
            fig = comparison_figure(vis_rows, modes, info,
                                    scale=max(1, 256 // max(vis_rows[0]["image"].shape[:2])))
            _, png = cv2.imencode(".png", fig[..., ::-1])
            atomic_write(out / "comparison.png", png.tobytes())
            results["comparison_png"] = str(out / "comparison.png")
        results["results_json"] = str(out / "eval_results.json")
        printer(f"Wrote {out / 'eval_results.json'}")
    return results


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
