"""The main job: data -> train a multi-task DeepLab -> evidence table -> export -> serve -> report.

`make demo` runs this on the built-in `shapes_evidence` dataset; `--data=FOLDER`
points it at a VOC-layout or CamVid-layout folder instead (converted to the
original TFRecord format first). Every stage prints progress and its wall time.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Callable, Collection

import cv2
import numpy as np

from deeplab_ext.data import download, input_pipeline, synthetic
from deeplab_ext.data.datasets import get_dataset_info
from deeplab_ext.models.tag_heads import SEGMENTATION
from deeplab_ext.run.evaluation import evaluate
from deeplab_ext.run.export import export_checkpoint
from deeplab_ext.run.importing import import_weights
from deeplab_ext.run.modes import bootstrap_baselines, check_modes, vs_cell
from deeplab_ext.run.options import (
    DEMO_VARIANT,
    DemoOptions,
    EvalOptions,
    EvidenceOptions,
    ExportOptions,
    ImportOptions,
    TrainOptions,
    TuneOptions,
)
from deeplab_ext.run.refit_kinds import EVIDENCE_MODES
from deeplab_ext.run.trainer import train
from deeplab_ext.run.tuning import describe_settings, tune_evidence
from tf_mtl import tbevents
from tf_mtl.report import write_html_report

REPO = pathlib.Path(__file__).resolve().parents[2]


class _Stage:
    """Prints `[i/n] name ...` and the stage's wall time: no silent minutes."""

    def __init__(self, total: int, printer: Callable[[str], None]):
        self.total, self.i, self.printer, self.t0 = total, 0, printer, time.time()

    def __call__(self, name: str):
        self.i += 1
        self.printer(f"\n[{self.i}/{self.total}] {name} (t={time.time() - self.t0:.0f}s)")


def prepare_data(options: DemoOptions, out: pathlib.Path, printer,
                 num_tune: int) -> tuple[str, str, str]:
    """(dataset name, TFRecord dir, tuning split): the built-in dataset with its own
    generated tuning split ("test"), or a converted user folder (tuned on "train")."""
    if options.data is None:
        data_dir = out / "data" / "shapes_evidence"
        marker = data_dir / (f"done-{options.num_train}-{options.num_val}-{num_tune}-"
                             f"{options.image_size}")
        if not marker.exists():
            splits = ("train", "val", "test") if num_tune else ("train", "val")
            counts = synthetic.write_tfrecords(
                data_dir, options.num_train, options.num_val, size=options.image_size,
                seed=options.seed, splits=splits, num_test=num_tune)
            marker.write_text(json.dumps(counts))
            printer(f"Generated the built-in dataset: {counts} ({options.image_size}px) in {data_dir}")
        else:
            printer(f"Using the built-in dataset already in {data_dir}")
        return "shapes_evidence", str(data_dir), "test"
    root = pathlib.Path(options.data)
    if not root.is_dir():
        raise FileNotFoundError(f"--data={root}: no such folder (a VOC- or CamVid-layout folder)")
    for layout, dataset in (("voc", "pascal_voc_seg"), ("camvid", "camvid")):
        try:
            data_root = download.find_data_root(root, layout)
        except download.DownloadError:
            continue
        data_dir = out / "data" / f"{dataset}_{root.name}"
        reports = download.convert_layout(layout, data_root, data_dir)
        for split, rep in reports.items():
            printer(f"Converted {layout} {split}: {rep.summary() if hasattr(rep, 'summary') else rep}")
        return dataset, str(data_dir), "train"
    raise ValueError(
        f"--data={root}: neither a VOC layout (JPEGImages/, SegmentationClass/, "
        "ImageSets/Segmentation/) nor a CamVid layout (train/, trainannot/, train.txt)"
    )


def _sample_image(dataset: str, data_dir: str, path: pathlib.Path) -> list[str]:
    """Write the first val image as PNG; return its ground-truth tag names."""
    info = get_dataset_info(dataset)
    ds = input_pipeline.make_dataset(info, data_dir, "val", crop_size=None, batch_size=1,
                                     is_training=False)
    images, targets = next(iter(ds))
    cv2.imwrite(str(path), images[0].numpy().astype(np.uint8)[..., ::-1])
    tags = targets["tags"][0].numpy()
    return [info.tag_names[i] for i in np.flatnonzero(tags > 0.5)]


def _tuning_tables(tuning: dict | None) -> list[tuple]:
    """The report's tables of the refit settings chosen and of the search behind them."""
    if tuning is None:
        return []
    return [(f"Refit settings chosen for this model on {tuning['tune_split']!r} "
             f"({tuning['num_images']} images)", ["kind", "refit", "settings"],
             _chosen_rows(tuning)),
            ("The tuning search (mIoU on the tuning split)",
             ["kind", "candidate", "mIoU (%)", "vs no refit"],
             [[r["kind"], r["candidate"], f"{100 * r['miou']:.2f}",
               f"{100 * r['vs_no_refit']:+.2f}"] for r in tuning["table"]])]


def _chosen_rows(tuning: dict) -> list[list[str]]:
    rows = []
    for kind, entry in tuning["kinds"].items():
        settings = describe_settings(kind, entry["evidence"])
        rows.append([kind, "yes" if entry["refit"] else "no (plain inference was as good)",
                     settings])
    return rows


# Refit start point and learning rates when tags are pooled from the segmentation of
# released weights: the rates of BENCHMARKS 19 (a segmentation-tag refit moves the
# segmentation directly, ten times less than a trained head's refit needs).
POOLED_EVIDENCE = EvidenceOptions(learning_rate=0.003, alpha=0.0)
POOLED_LEARNING_RATES = (0.001, 0.003, 0.01)
ALL_MODES = ("none", "prune", "bp_l2", "bp_es", "bp_l2_prune", "bp_es_prune")
POOLED_MODES = ("none", "prune", "bp_l2", "bp_l2_prune")


@dataclasses.dataclass(frozen=True)
class DemoPlan:
    """What this demo does, from its options: train (the built-in job), or import released
    weights and pool their segmentation's tags (nothing trained)."""

    pooled: bool  # --tag_head=segmentation on given weights: import, no training
    variant: str | None
    modes: tuple[str, ...]
    num_tune: int
    tune_candidates: int
    objective: str
    evidence: EvidenceOptions
    learning_rates: tuple[float, ...] | None

    @classmethod
    def of(cls, options: DemoOptions, explicit: Collection[str]) -> DemoPlan:
        pooled = options.tag_head == SEGMENTATION and options.tf_initial_checkpoint is not None
        evidence = options.evidence
        if pooled:  # the pooled start point, but what the user gave on the command line
            evidence = dataclasses.replace(POOLED_EVIDENCE, **{
                f: getattr(options.evidence, f) for f in explicit})
        return cls(pooled=pooled,
                   variant=options.model_variant or (None if pooled else DEMO_VARIANT),
                   modes=tuple(options.evidence_modes or (POOLED_MODES if pooled else ALL_MODES)),
                   num_tune=24 if options.num_tune is None and pooled else
                   (50 if options.num_tune is None else options.num_tune),
                   tune_candidates=options.tune_candidates or (6 if pooled else 8),
                   objective="pruned" if pooled else "plain", evidence=evidence,
                   learning_rates=POOLED_LEARNING_RATES if pooled else None)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(EVIDENCE_MODES[m].kind for m in self.modes
                                   if EVIDENCE_MODES[m].kind is not None))


def run_demo(options: DemoOptions, printer: Callable[[str], None] = print,
             explicit: Collection[str] = ()) -> dict:
    """The main job; ``explicit``: evidence fields given as flags (they beat tuning)."""
    out = pathlib.Path(options.workdir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    plan = DemoPlan.of(options, explicit)
    check_modes(plan.modes)
    stage = _Stage(8, printer)
    t0 = time.time()

    stage("Data")
    dataset, data_dir, tune_split = prepare_data(options, out, printer, plan.num_tune)
    builtin = options.data is None
    logdir = out / "train"
    if plan.pooled:
        stage("Import the weights; tags pooled from their segmentation (nothing to train)")
        import_weights(ImportOptions(
            source=options.tf_initial_checkpoint, model_variant=plan.variant,
            output_dir=str(logdir), dataset=dataset, tag_head=SEGMENTATION), printer=printer)
    else:
        stage(f"Train {plan.variant} with uncertainty weighting")
        train(train_options(options, plan.variant, dataset, data_dir, logdir, builtin),
              printer=printer)

    stage(f"Tune the refit settings of this model on the {tune_split!r} split (never val)")
    tuning = tune(options, plan, logdir, data_dir, tune_split, builtin, printer)

    stage("Evaluate: the evidence table (tags from the ground truth)")
    crop = options.crop_size if builtin else max(options.crop_size, 129)
    eval_dir = out / "eval"
    results = evaluate(EvalOptions(
        checkpoint_dir=str(logdir), dataset_dir=data_dir, eval_logdir=str(eval_dir),
        eval_split="val", eval_crop_size=(crop, crop) if builtin else None,
        evidence_modes=plan.modes, evidence=plan.evidence,
        max_examples=options.max_eval_images, num_vis_examples=6,
    ), printer=printer, explicit=explicit)

    stage("Export the SavedModel")
    export_dir = export_checkpoint(ExportOptions(
        checkpoint_dir=str(logdir), export_path=str(out / "export"), evidence=plan.evidence),
        explicit=explicit, printer=printer)
    printer(f"SavedModel in {export_dir}")

    stage("Serve: tools.predict through the SavedModel on a sample image with its tags")
    served = serve_sample(dataset, data_dir, export_dir, out, printer)

    stage("Report")
    report = write_report(out, results, tuning, served, logdir, dataset, t0)

    stage("Done")
    if tuning is not None:
        printer(tuning["report"])
    printer(results["table"])
    printer("\nWhere things are:")
    printer(f"  report       {report}")
    printer(f"  checkpoints  {logdir}")
    printer(f"  eval results {eval_dir / 'eval_results.json'}")
    printer(f"  SavedModel   {export_dir}")
    if not plan.pooled:
        printer(f"  TensorBoard  tensorboard --logdir {logdir}")
    printer(f"Total {time.time() - t0:.0f}s")
    return {"results": results, "report": str(report), "export": str(export_dir),
            "train_logdir": str(logdir), "predict": served["report"]}


def train_options(options: DemoOptions, variant: str, dataset: str, data_dir: str,
                  logdir: pathlib.Path, builtin: bool) -> TrainOptions:
    """The demo's training run: Adam, uncertainty weighting, the built-in dataset's crop."""
    crop = options.crop_size if builtin else max(options.crop_size, 129)
    return TrainOptions(
        train_logdir=str(logdir), dataset_dir=data_dir, dataset=dataset,
        model_variant=variant, train_crop_size=(crop, crop),
        train_batch_size=options.train_batch_size, optimizer="adam",
        base_learning_rate=options.base_learning_rate,
        training_number_of_steps=options.train_steps,
        save_interval_steps=max(100, options.train_steps // 4), save_summaries_steps=25,
        log_every_n_steps=max(25, options.train_steps // 20),
        min_scale_factor=0.75 if builtin else 0.5, max_scale_factor=1.25 if builtin else 2.0,
        tf_initial_checkpoint=options.tf_initial_checkpoint, train_groups=options.train_groups,
        tag_head=options.tag_head,
        # Pretrained BatchNorm stays as it is: batches of 8 cannot estimate its statistics
        # (the original's advice), and a TFLite import's is folded.
        fine_tune_batch_norm=options.tf_initial_checkpoint is None,
        loss_weighting="uncertainty",
        seed=options.seed if options.train_seed is None else options.train_seed)


def tune(options: DemoOptions, plan: DemoPlan, logdir: pathlib.Path, data_dir: str,
         tune_split: str, builtin: bool, printer: Callable[[str], None]) -> dict | None:
    """tools.tune_evidence on the tuning split, for the refit kinds of the table's rows."""
    if not plan.num_tune or not plan.kinds:
        printer("no tuning (--num_tune=0 or no refit rows): the refit settings are the start "
                "point's")
        return None
    if not builtin:
        printer("(a user folder has no split of its own for tuning: its training images "
                f"stand in{', which the model has seen' if not plan.pooled else ''})")
    extra = {"learning_rates": plan.learning_rates} if plan.learning_rates else {}
    return tune_evidence(TuneOptions(
        checkpoint_dir=str(logdir), dataset_dir=data_dir, tune_split=tune_split,
        max_examples=plan.num_tune, max_candidates=plan.tune_candidates, kinds=plan.kinds,
        objective=plan.objective, evidence=plan.evidence, **extra), printer=printer)


def serve_sample(dataset: str, data_dir: str, export_dir: pathlib.Path, out: pathlib.Path,
                 printer: Callable[[str], None]) -> dict:
    """tools.predict through the export on the first val image with its tags, as a user
    runs it: with what the export serves (its tuned refit steps, its pruning)."""
    sample = out / "sample.png"
    tags = _sample_image(dataset, data_dir, sample)
    pred_png = out / "sample_prediction.png"
    cmd = [sys.executable, "-m", "tools.predict", f"--saved_model={export_dir}",
           f"--image={sample}", f"--output={pred_png}"]
    if tags:
        cmd.append(f"--tags={','.join(tags)}")
    printer("$ " + " ".join(cmd[1:]))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"tools.predict failed:\n{proc.stderr[-2000:]}")
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    printer(proc.stdout.strip())
    return {"report": report, "sample": sample, "prediction": pred_png, "tags": tags}


def write_report(out: pathlib.Path, results: dict, tuning: dict | None, served: dict,
                 logdir: pathlib.Path, dataset: str, t0: float) -> pathlib.Path:
    """demo_out/report.html: the tables, per-class IoU, curves and pictures."""
    baselines = bootstrap_baselines(results)
    table_rows = [[row["name"], f"{100 * row['miou']:.2f}", mode, f"{row['seconds']:.1f}"]
                  + [vs_cell(row, b) for b in baselines]
                  for mode, row in results["modes"].items()]
    table_header = ["method", "mIoU (%)", "mode", "seconds"] + [
        f"vs {EVIDENCE_MODES[b].row} (95% CI over images)" for b in baselines]
    best_mode = max(results["modes"], key=lambda m: results["modes"][m]["miou"])
    tag_rows = [[k, f"{v:.4f}"] for k, v in results.get("tags", {}).items()]
    predicted, tags = served["report"], served["tags"]
    pred_rows = [[n, f"{predicted.get('tag_probabilities_before', {}).get(n, float('nan')):.3f}",
                  f"{predicted.get('tag_probabilities_after', {}).get(n, float('nan')):.3f}",
                  "yes" if n in tags else ""]
                 for n in get_dataset_info(dataset).tag_names]
    scalars = tbevents.read_scalars(logdir / "train") if (logdir / "train").is_dir() else {}
    groups = {
        "Task losses (each step's own)": [k for k in scalars
                                          if k.endswith("_loss") or k == "train/loss"],
        "Uncertainty weighting: sigma and effective weight": [
            k for k in scalars if k.endswith("_sigma") or k.endswith("_weight")],
        # Streaming metrics: running values over each checkpoint interval (they restart at
        # every save_interval_steps).
        "Training mIoU and tag F1 (running over each checkpoint interval)": [
            k for k in scalars if k.endswith(("miou", "f1"))],
        "Learning rate": [k for k in scalars if k.endswith("learning_rate")],
    }
    groups = {k: v for k, v in groups.items() if v}
    images = []
    if results.get("comparison_png"):
        images.append(("Input | ground truth | one column per evidence mode",
                       results["comparison_png"]))
    images.append(("Sample image", str(served["sample"])))
    how = (f"{predicted.get('steps_taken', 0)} refit steps"
           f"{', pruned' if predicted.get('pruned') else ''}") if tags else "no tags"
    images.append((f"Served prediction with evidence {tags} ({how}: what the export serves)",
                   str(served["prediction"])))
    report = out / "report.html"
    write_html_report(
        report, title=f"DeepLab multi-task demo: {results['model']} on {results['dataset']}",
        tables=[
            ("Evidence at prediction time (val mIoU, tags from ground truth)",
             table_header, table_rows),
            ("Tag head on val", ["metric", "value"], tag_rows),
            ("tools.predict through the SavedModel: tag probabilities",
             ["tag", "before", "after refit", "in evidence"], pred_rows),
            *_tuning_tables(tuning),
        ],
        per_class_iou={k: v for k, v in results["modes"][best_mode]["per_class_iou"].items()
                       if v is not None},
        scalars={k: scalars[k] for keys in groups.values() for k in keys},
        scalar_groups=groups,
        images=images,
        notes=[f"Per-class IoU shown for the best row ({results['modes'][best_mode]['name']}).",
               f"Total demo time {time.time() - t0:.0f}s."],
    )
    return report
