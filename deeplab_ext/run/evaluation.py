"""Evaluating a trained network: mIoU, per-class IoU, tag F1 and the evidence table.

The library behind `tools.eval` (the original's eval.py). Each evidence mode is one
row of the reference table (DL-MT, DL-MT-Pr, DL-BP-L2, DL-BP-ES, ... -Pr, and the soft
rows -SPr), computed with tags taken from the ground truth, made noisy (`--tag_noise`) or
read from a file (`--tags_from`): `run.tag_sources`, with the original's `eval_scales`
and `add_flipped_images` applied to every mode.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
import tensorflow as tf

from deeplab_ext.data import colormap as cmap
from deeplab_ext.data import input_pipeline
from deeplab_ext.data.datasets import DatasetInfo
from deeplab_ext.models.registry import family_of
from deeplab_ext.run.evidence import evidence_by_kind
from deeplab_ext.run.importing import checkpoint_dir_or_name
from deeplab_ext.run.modes import (
    ModeRun,
    add_bootstrap,
    check_modes,
    format_table,
    load_split,
    per_image_miou,
    run_modes,
)
from deeplab_ext.run.options import EvalOptions, evidence_given
from deeplab_ext.run.refit_kinds import EVIDENCE_MODES
from deeplab_ext.run.rundir import atomic_write, restore_network
from deeplab_ext.run.tag_sources import TagNoise, tag_source
from deeplab_ext.tasks import (
    Branch,
    TaskContext,
    branches_from_record,
    build_tasks,
    restore_branch_outputs,
    task_names,
)
from deeplab_ext.tasks.label_structure import decoder_path
from tf_mtl.inference import InputAlignment
from tf_mtl.metrics import (
    TagMAP,
    TagPrecisionRecallF1,
    image_iou_counts,
    iou_from_counts,
    miou_from_counts,
)

# Tasks evaluated by the mode table (semantic) and the tag metrics (tags); the network's
# other tasks report their own metrics.
PIXEL_TASKS = ("semantic", "tags")


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


def evaluate(options: EvalOptions, printer: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every evidence mode over the split; returns (and writes) the results dict.

    Refit rows use the run's tuned settings when it has them (``tools.tune_evidence``),
    with the evidence fields whose flags were given (``options.given``) taken from
    ``options.evidence`` instead; without tuned settings ``options.evidence`` is used.
    The steps, in order: check the options, restore the network and its split, score the
    image-level outputs, score each mode, the training-only decoder path, the intervals,
    the files.
    """
    if bool(options.model) == bool(options.checkpoint_dir):
        raise ValueError("give exactly one of --checkpoint_dir or --model")
    modes = _check(options)
    if options.model:
        return evaluate_file(options, modes, printer)
    options = dataclasses.replace(options, checkpoint_dir=checkpoint_dir_or_name(
        options.checkpoint_dir, printer=printer))
    run = _restore(options, modes, printer)
    evidence = evidence_by_kind(options.checkpoint_dir, options.evidence,
                                evidence_given(options),
                                use_tuned=options.use_tuned_evidence, printer=printer)
    source = tag_source(options.tag_noise, options.tags_from, run.info)
    filenames = input_pipeline.split_filenames(options.dataset_dir, options.eval_split)[
        : len(run.batches)]
    given, tag_records = source.apply(run.batches, filenames, run.info)
    printer(f"Evaluating {run.meta['model']['name']} on {run.info.name}:{options.eval_split} "
            f"({len(run.batches)} images), modes: {', '.join(modes)}, scales "
            f"{options.eval_scales}{' + flip' if options.add_flipped_images else ''}, "
            f"{source.label}")
    results = _header(options, run, evidence, source)
    results.update(_image_metrics(run, printer))
    vis_rows = [{"image": b[0][0].numpy(), "label": b[1]["semantic"][0].numpy(), "pred": {}}
                for b in run.batches[: options.num_vis_examples]]
    names = [f"{i:05d}_{pathlib.Path(f).stem}" for i, f in enumerate(filenames)]
    sink = (_prediction_writer(pathlib.Path(options.eval_logdir) / PREDICTIONS, names)
            if options.save_predictions else None)
    runs = run_modes(run.network, run.info, given, modes, options.evidence, evidence,
                     options.eval_scales, options.add_flipped_images, run.alignment,
                     keep_predictions=len(vis_rows), printer=printer, sink=sink)
    for mode, mode_run in runs.items():
        for row_vis, pred in zip(vis_rows, mode_run.predictions, strict=True):
            row_vis["pred"][mode] = pred
        results["modes"][mode] = row = mode_row(mode, mode_run, run.info)
        _print_row(row, len(run.batches), printer)
    per_image = {m: per_image_miou(r.counts) for m, r in runs.items()}
    results["per_image"] = [{"name": name, "miou": {m: per_image[m][i] for m in modes},
                             "tags": tag_records[i]} for i, name in enumerate(names)]
    if options.label_decoder_path_miou:
        results["label_decoder_path"] = _decoder_path_miou(run, printer)
    if options.bootstrap_samples > 0:
        add_bootstrap(results, {m: r.counts for m, r in runs.items()},
                      options.bootstrap_samples)
    results["table"] = format_table(results)
    printer(results["table"])
    if options.eval_logdir:
        _write(pathlib.Path(options.eval_logdir), results, vis_rows, modes, run.info, printer)
    return results


def _header(options: EvalOptions, run: _Restored, evidence: dict[str, Any], source: Any
            ) -> dict[str, Any]:
    """What the results say before any row: the data, the model, the settings, the tags."""
    return {
        "dataset": run.info.name, "split": options.eval_split, "num_images": len(run.batches),
        "model": run.meta["model"]["name"], "checkpoint": run.meta["checkpoint_path"],
        "eval_scales": list(options.eval_scales),
        "add_flipped_images": options.add_flipped_images,
        "evidence": dataclasses.asdict(options.evidence),
        "evidence_by_kind": {k: dataclasses.asdict(v) for k, v in evidence.items()},
        "tags_given": source.describe, "modes": {}}


@dataclasses.dataclass
class _Restored:
    """A restored network and the split it is scored on."""

    network: Any
    family: Any
    info: DatasetInfo
    meta: dict
    image_tasks: list
    branch: Branch
    batches: list
    alignment: InputAlignment

    @property
    def has_tags(self) -> bool:
        return self.family.tags_output in self.network.output


def _check(options: EvalOptions) -> list[str]:
    modes = check_modes(options.evidence_modes)
    if options.tag_noise and options.tags_from:
        raise ValueError("give at most one of --tag_noise (the true tags, made noisy) and "
                         "--tags_from (your own tags per image)")
    if options.tag_noise:
        TagNoise.parse(options.tag_noise)  # a bad spec fails before anything is loaded
    if options.save_predictions and not options.eval_logdir:
        raise ValueError("--save_predictions writes into --eval_logdir: give one")
    if options.bootstrap_samples < 0:
        raise ValueError(f"--bootstrap_samples must be >= 0 (0 turns the intervals off), "
                         f"got {options.bootstrap_samples}")
    return modes


def _restore(options: EvalOptions, modes: Sequence[str],
             printer: Callable[[str], None]) -> _Restored:
    """The checkpoint, its image-level tasks, and the split (checked against both)."""
    network, info, meta = restore_network(options.checkpoint_dir, options.checkpoint_path)
    family = family_of(network)
    refits = [m for m in modes if EVIDENCE_MODES[m].kind is not None]
    if family.tags_output not in network.output and refits:
        # Pruning needs the tags only, refitting needs a tag head.
        raise ValueError(
            f"--evidence_modes={','.join(refits)} needs a model with a tag head (a *_mt "
            f"--model_variant); {meta['model']['name']} has none."
        )
    image_tasks = build_tasks(TaskContext(network, family, info, None),
                              [n for n in task_names(network, family) if n not in PIXEL_TASKS])
    # Training-only branches whose tasks have metrics (e.g. --aux_tasks=edges) are scored
    # too: a multi-task comparison needs every task's number, served or not.
    branch = branches_from_record(network, family, info, meta.get("training_branches", {}))
    branch.tasks = [t for t in branch.tasks if t.all_metrics]
    batches, alignment = load_split(
        network, info, meta, options.dataset_dir, options.eval_split,
        crop=options.eval_crop_size, max_examples=options.max_examples,
        align=options.align_inputs, min_resize_value=options.min_resize_value,
        max_resize_value=options.max_resize_value, printer=printer,
        targets=list(dict.fromkeys(t.target_key for t in image_tasks + branch.tasks)),
        named=options.dataset)
    return _Restored(network, family, info, meta, image_tasks, branch, batches, alignment)


def _image_metrics(run: _Restored, printer: Callable[[str], None]) -> dict[str, dict]:
    """Tag F1 / mAP and the image-level tasks (SegNet's class and box heads), from one plain
    pass over the whole images."""
    num_tags = len(run.info.tag_class_ids)
    f1, tag_map = TagPrecisionRecallF1(num_tags), TagMAP(num_tags)
    tags_key = run.family.tags_output
    if run.has_tags or run.image_tasks:
        for images, targets in run.batches:
            out = run.network(images, training=False)
            if run.has_tags:
                f1.update_state(targets["tags"], out[tags_key])
                tag_map.update_state(targets["tags"], out[tags_key])
            for task in run.image_tasks:
                for metric in task.all_metrics:
                    metric.update_state(targets[task.target_key], out[task.output_key])
    found: dict[str, dict] = {}
    if run.has_tags:
        found["tags"] = {k: float(v) for k, v in f1.results().items()}
        found["tags"]["mAP"] = float(tag_map.result())
        t = found["tags"]
        printer(f"tags: precision {t['precision']:.4f} recall {t['recall']:.4f} "
                f"F1 {t['f1']:.4f} mAP {t['mAP']:.4f}")
    if run.branch.tasks:
        outputs = restore_branch_outputs(run.meta["checkpoint_path"], run.network, run.branch,
                                         run.alignment, run.batches[0][0])
        for images, targets in run.batches:
            out = outputs(images)
            for task in run.branch.tasks:
                for metric in task.all_metrics:
                    metric.update_state(targets[task.target_key], out[task.output_key])
    for task in [*run.image_tasks, *run.branch.tasks]:
        values = {m.name: float(m.result()) for m in task.all_metrics}
        for m in task.all_metrics:  # precision / recall beside an F1
            values.update({k: float(v) for k, v in getattr(m, "results", dict)().items()})
        found[task.name] = values
        printer(f"{task.name}: " + " ".join(f"{k} {v:.4f}" for k, v in values.items()))
    return found


def evaluate_file(options: EvalOptions, modes: Sequence[str],
                  printer: Callable[[str], None] = print) -> dict[str, Any]:
    """``tools.eval --model=FILE``: the mIoU a shipped LiteRT / ONNX file gets on a split,
    plain (DL-MT) and pruned to the ground-truth tags (DL-MT-Pr); the files carry no refit."""
    from deeplab_ext.run.deploy import FileSegmenter
    from tf_mtl.evidence import prune_probabilities

    refits = [m for m in modes if m not in ("none", "prune")]
    if refits:
        raise ValueError(f"--evidence_modes={','.join(refits)} with --model: a LiteRT / ONNX "
                         "file has no refit; use none,prune (or --checkpoint_dir)")
    seg = FileSegmenter(options.model)
    info = seg.info
    input_pipeline.check_shards_match(info, options.dataset_dir, options.eval_split,
                                      num_examples=0, whose="the model's dataset",
                                      named=options.dataset, require_record=True)
    ds = input_pipeline.make_dataset(info, options.dataset_dir, options.eval_split,
                                     crop_size=None, batch_size=1, is_training=False)
    if options.max_examples:
        ds = ds.take(options.max_examples)
    source = tag_source(options.tag_noise, options.tags_from, info)
    filenames = input_pipeline.split_filenames(options.dataset_dir, options.eval_split)[
        : options.max_examples or None]
    source.check_names(filenames)
    counts: dict[str, list] = {m: [] for m in modes}
    records = []
    for index, (images, targets) in enumerate(ds):
        probs = seg.predict(images[0].numpy())["semantic_probabilities"]
        label = targets["semantic"][0].numpy()
        given, record = source.tags(index, filenames[index], targets["tags"][0].numpy(), info)
        records.append(record)
        for mode in modes:
            p = probs if mode == "none" else prune_probabilities(
                probs, given[None], list(info.tag_class_ids), info.keep_classes).numpy()
            counts[mode].append(image_iou_counts(label, p[0].argmax(-1), info.num_classes,
                                                 info.ignore_label))
    printer(f"Evaluated {options.model} (input {seg.size[0]}x{seg.size[1]}, letterboxed) on "
            f"{info.name}:{options.eval_split} ({len(counts[modes[0]])} images)")
    results: dict[str, Any] = {"model_file": str(options.model), "dataset": info.name,
                               "split": options.eval_split, "input_size": list(seg.size),
                               "num_images": len(counts[modes[0]]),
                               "tags_given": source.describe, "modes": {},
                               "per_image": [{"name": n, "tags": r} for n, r in
                                             zip(filenames, records, strict=True)]}
    for mode in modes:
        miou = float(miou_from_counts(np.sum(counts[mode], axis=0)))
        results["modes"][mode] = {"name": EVIDENCE_MODES[mode].row, "miou": miou}
        printer(f"  {EVIDENCE_MODES[mode].row:<14} mIoU {100 * miou:6.2f}%")
    if options.eval_logdir:
        out = pathlib.Path(options.eval_logdir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "eval_results.json", json.dumps(results, indent=2))
    return results


def mode_row(mode: str, run: ModeRun, info: DatasetInfo) -> dict[str, Any]:
    """One row of eval_results.json: mIoU, per-class IoU, seconds, the error split and the
    refit statistics."""
    per_class = iou_from_counts(np.sum(run.counts, axis=0))
    row: dict[str, Any] = {
        "name": EVIDENCE_MODES[mode].row,
        "miou": run.miou,
        "per_class_iou": {n: (None if np.isnan(v) else float(v))
                          for n, v in zip(info.class_names, per_class, strict=True)},
        "seconds": run.seconds,
    }
    if run.errors is not None:
        row["errors"] = run.errors
    if run.steps is not None:  # refit modes: how far each image went, and the safeguard
        steps, back = run.steps, run.fell_back
        row["refit_steps"] = {"mean": float(steps.mean()), "max": int(steps.max()),
                              "fraction_zero": float(np.mean(steps == 0)),
                              "fell_back": int(back.sum())}
    return row


def _print_row(row: dict, num_images: int, printer: Callable[[str], None]) -> None:
    note = ""
    if "errors" in row:
        e = row["errors"]
        share = e["untagged_fraction"] / e["wrong_fraction"] if e["wrong_fraction"] else 0.0
        note += (f", wrong pixels {100 * e['wrong_fraction']:.3f}%, {100 * share:.0f}% of them "
                 f"an untagged class; missed / spurious / confused "
                 f"{100 * e['missed_fraction']:.3f} / {100 * e['spurious_fraction']:.3f} / "
                 f"{100 * e['confused_fraction']:.3f}%")
    if "refit_steps" in row:
        r = row["refit_steps"]
        note += (f", refit steps mean {r['mean']:.1f}, {100 * r['fraction_zero']:.0f}% zero, "
                 f"safeguard kept the plain prediction for {r['fell_back']} of {num_images} "
                 "images")
    printer(f"  {row['name']:<14} mIoU {100 * row['miou']:6.2f}%   ({row['seconds']:.1f}s{note})")
    per_class = ", ".join(f"{n} {'n/a' if v is None else f'{100 * v:.2f}'}"
                          for n, v in row["per_class_iou"].items())
    for line in textwrap.wrap("per-class IoU: " + per_class, width=100,
                              initial_indent="    ", subsequent_indent="      "):
        printer(line)


def _decoder_path_miou(run: _Restored, printer: Callable[[str], None]) -> dict[str, float]:
    """The training-only label decoder's own segmentation (not served)."""
    predict = decoder_path(run.meta["checkpoint_path"], run.network, run.family, run.info,
                           run.meta.get("training_branches", {}), run.alignment,
                           run.batches[0][0])
    info = run.info
    counts = [image_iou_counts(lab, pred, info.num_classes, info.ignore_label)
              for images, targets in run.batches
              for lab, pred in zip(targets["semantic"].numpy(),
                                   tf.argmax(predict(images), -1).numpy(), strict=True)]
    miou = float(miou_from_counts(np.sum(counts, axis=0)))
    printer(f"  decoder path (training-only, not served) mIoU {100 * miou:6.2f}%")
    return {"miou": miou}


PREDICTIONS = "predictions"  # <eval_logdir>/predictions/<mode>/<name>.png (--save_predictions)


def _prediction_writer(folder: pathlib.Path, names: Sequence[str]
                       ) -> Callable[[str, int, np.ndarray], None]:
    """``run_modes``'s sink for --save_predictions: one class-id PNG per image and mode."""
    def write(mode: str, index: int, pred: np.ndarray) -> None:
        (folder / mode).mkdir(parents=True, exist_ok=True)
        _, png = cv2.imencode(".png", pred.astype(np.uint8))
        atomic_write(folder / mode / f"{names[index]}.png", png.tobytes())
    return write


def _write_summaries(out: pathlib.Path, results: dict) -> None:
    """The rows' mIoU and the tag metrics as TensorBoard scalars in the eval folder (the
    original's eval.py wrote its mIoU there too), at the checkpoint's step."""
    step = int(str(results["checkpoint"]).rsplit("-", 1)[-1]) if str(
        results["checkpoint"]).rsplit("-", 1)[-1].isdigit() else 0
    with tf.summary.create_file_writer(str(out)).as_default():
        for row in results["modes"].values():
            tf.summary.scalar(f"evidence/{row['name']}_miou", row["miou"], step=step)
        for name, value in results.get("tags", {}).items():
            tf.summary.scalar(f"tags/{name}", value, step=step)
    tf.summary.flush()


def _write(out: pathlib.Path, results: dict, vis_rows: list[dict], modes: Sequence[str],
           info: DatasetInfo, printer: Callable[[str], None]) -> None:
    """eval_results.json and comparison.png, each written atomically; the TensorBoard
    scalars."""
    out.mkdir(parents=True, exist_ok=True)
    _write_summaries(out, results)
    atomic_write(out / "eval_results.json", json.dumps(results, indent=2))
    if vis_rows:
        fig = comparison_figure(vis_rows, modes, info,
                                scale=max(1, 256 // max(vis_rows[0]["image"].shape[:2])))
        _, png = cv2.imencode(".png", fig[..., ::-1])
        atomic_write(out / "comparison.png", png.tobytes())
        results["comparison_png"] = str(out / "comparison.png")
    results["results_json"] = str(out / "eval_results.json")
    printer(f"Wrote {out / 'eval_results.json'}")
