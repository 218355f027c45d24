"""The main job: a model with tags -> the evidence table on held-out photos -> export ->
a served prediction -> a report a person reads.

``make demo`` runs it on real photos from the clone alone: the shipped release
(``mobilenetv2_dm05_coco_voc_trainaug``) imported with tags pooled from its segmentation,
the refit settings the released-weights table records for it (tuned on coco128-voc's train
photos), scored on the shipped val photos. ``--data=FOLDER`` scores a VOC- or CamVid-layout
folder instead, ``--weights=NAME|FILE`` another release, and ``--builtin`` is the training
demo (a tiny multi-task network trained on the built-in dataset). Every stage prints
progress and its wall time.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from deeplab_ext.assets import COCO128_VOC
from deeplab_ext.data import download, input_pipeline, pictures, synthetic
from deeplab_ext.data.datasets import DatasetInfo, get_dataset_info
from deeplab_ext.models.registry import family_of
from deeplab_ext.models.tag_heads import ENCODER, SEGMENTATION
from deeplab_ext.run.evaluation import PREDICTIONS, evaluate
from deeplab_ext.run.evidence import load_tuned
from deeplab_ext.run.export import export_checkpoint, predict_image
from deeplab_ext.run.importing import import_weights
from deeplab_ext.run.modes import bootstrap_baselines, check_modes, vs_cell
from deeplab_ext.run.options import (
    DEMO_VARIANT,
    DEMO_WEIGHTS,
    DemoOptions,
    EvalOptions,
    EvidenceOptions,
    ExportOptions,
    ImportOptions,
    PredictOptions,
    TrainOptions,
    TuneOptions,
    evidence_given,
)
from deeplab_ext.run.refit_kinds import (
    DEFAULT_KIND,
    EVIDENCE_MODES,
    default_kinds,
    mode_of,
    table_modes,
)
from deeplab_ext.run.rundir import MODEL_CONFIG_FILE, load_run_config, restore_network
from deeplab_ext.run.trainer import train
from deeplab_ext.run.tuning import describe_settings, tune_evidence
from tf_mtl import tbevents
from tf_mtl.report import write_html_report


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
    generated tuning split ("test"), or a converted folder (tuned on "train"): the user's,
    else the shipped coco128-voc photos."""
    if options.builtin and options.data is None:
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
    root = pathlib.Path(options.data) if options.data else COCO128_VOC
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
            printer(f"Converted {root.name} {split}: "
                    f"{rep.summary() if hasattr(rep, 'summary') else rep}")
        return dataset, str(data_dir), "train"
    raise ValueError(
        f"--data={root}: neither a VOC layout (JPEGImages/, SegmentationClass/, "
        "ImageSets/Segmentation/) nor a CamVid layout (train/, trainannot/, train.txt)"
    )


def _example(info: DatasetInfo, data_dir: str, split: str, index: int
             ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One evaluation example: the photo (uint8 RGB), its label map and its tag names."""
    ds = input_pipeline.make_dataset(info, data_dir, split, crop_size=None, batch_size=1,
                                     is_training=False).skip(index).take(1)
    images, targets = next(iter(ds))
    tags = targets["tags"][0].numpy()
    return (images[0].numpy().astype(np.uint8), targets["semantic"][0].numpy(),
            [info.tag_names[i] for i in np.flatnonzero(tags > 0.5)])


# Refit start point and learning rates when tags are pooled from the segmentation of
# released weights the table has no settings for: the rates of BENCHMARKS 19 (a
# segmentation-tag refit moves the segmentation directly, ten times less than a trained
# head's refit needs).
POOLED_EVIDENCE = EvidenceOptions(learning_rate=0.003, alpha=0.0)
POOLED_LEARNING_RATES = (0.001, 0.003, 0.01)
ALL_MODES = table_modes(default_kinds())  # the seed's table
POOLED_MODES = table_modes((DEFAULT_KIND,))


@dataclasses.dataclass(frozen=True)
class DemoPlan:
    """What this demo does, from its options: import released weights and pool their
    segmentation's tags (nothing trained: the default, on the shipped photos), or train
    (``--builtin``; ``--data=FOLDER``: from scratch, or fine-tuned from ``--weights``, new
    classes allowed; ``--tag_head=encoder`` or ``--train_groups`` on weights)."""

    pooled: bool
    weights: str | None
    variant: str | None
    modes: tuple[str, ...]
    num_tune: int
    tune_candidates: int
    objective: str
    evidence: EvidenceOptions
    learning_rates: tuple[float, ...] | None
    train_steps: int
    crop: int
    learning_rate: float

    @classmethod
    def of(cls, options: DemoOptions) -> DemoPlan:
        trains = (options.builtin or options.tag_head == ENCODER or bool(options.train_groups)
                  or options.data is not None) and options.train_steps != 0
        pooled = not trains
        fine_tune = trains and options.weights is not None
        evidence = options.evidence
        if pooled or fine_tune:  # the pooled start point, but what was given as flags
            evidence = dataclasses.replace(POOLED_EVIDENCE, **{
                f: getattr(options.evidence, f) for f in evidence_given(options)})
        pooled_tags = pooled or (fine_tune and options.tag_head != ENCODER
                                 and not (options.model_variant or "").endswith("_mt"))
        # Budgets: the built-in job's, a folder from scratch (a tiny network), or a
        # released network fine-tuned (fewer steps, a larger crop, a smaller rate).
        steps, crop, rate = ((1000, 321, 1e-3) if fine_tune else
                             (10000, 65 if options.builtin else 129, 5e-3))
        return cls(pooled=pooled,
                   weights=options.weights or (DEMO_WEIGHTS if pooled else None),
                   variant=options.model_variant or (
                       None if pooled or fine_tune else DEMO_VARIANT),
                   modes=tuple(options.evidence_modes or (
                       POOLED_MODES if pooled_tags else ALL_MODES)),
                   num_tune=24 if options.num_tune is None and pooled_tags else
                   (50 if options.num_tune is None else options.num_tune),
                   tune_candidates=options.tune_candidates or (6 if pooled_tags else 8),
                   objective="pruned" if pooled_tags else "plain", evidence=evidence,
                   learning_rates=POOLED_LEARNING_RATES if pooled_tags else None,
                   train_steps=options.train_steps or steps,
                   crop=options.crop_size or crop,
                   learning_rate=options.base_learning_rate or rate)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(EVIDENCE_MODES[m].kind for m in self.modes
                                   if EVIDENCE_MODES[m].kind is not None))


def run_demo(options: DemoOptions, printer: Callable[[str], None] = print) -> dict:
    """The main job; the evidence flags given (``options.given``) beat tuning."""
    out = pathlib.Path(options.workdir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    plan = DemoPlan.of(options)
    check_modes(plan.modes)
    if options.report_photos < 0:
        raise ValueError(f"--report_photos must be >= 0, got {options.report_photos}")
    stage = _Stage(8, printer)
    t0 = time.time()

    stage("Data")
    dataset, data_dir, tune_split = prepare_data(options, out, printer, plan.num_tune)
    logdir = out / "train"  # a training run, when there is one
    model = _make_model(options, plan, out, dataset, data_dir, logdir, stage, printer)

    tuning = _refit_settings(options, plan, model, data_dir, tune_split, stage, printer)

    stage("Evaluate: the evidence table (tags from the ground truth)")
    eval_dir = out / "eval"
    results = evaluate(EvalOptions(
        checkpoint_dir=str(model), dataset_dir=data_dir, eval_logdir=str(eval_dir),
        eval_split="val", eval_crop_size=(plan.crop, plan.crop) if options.builtin else None,
        evidence_modes=plan.modes, evidence=plan.evidence,
        max_examples=options.max_eval_images, num_vis_examples=0, save_predictions=True,
        given=options.given), printer=printer)
    info = get_dataset_info(dataset)
    served_mode = _served_mode(plan, tuning)
    shown = changed_most(results, eval_dir, served_mode, options.report_photos)

    stage("Export the SavedModel")
    export_dir = export_checkpoint(ExportOptions(
        checkpoint_dir=str(model), export_path=str(out / "export"), evidence=plan.evidence,
        given=options.given), printer=printer)
    printer(f"SavedModel in {export_dir}")

    stage("Serve: tools.predict through the SavedModel on the photo the evidence changed most")
    served = serve_sample(info, data_dir, shown[0]["index"] if shown else 0, export_dir, out,
                          printer)

    stage("Report")
    photos = (pathlib.Path(options.data).name if options.data else
              "the built-in dataset" if options.builtin else "coco128-voc (shipped)")
    report = write_report(out, results, tuning, served, logdir, info, data_dir, shown,
                          served_mode, plan, photos, t0)

    stage("Done")
    printer(results["table"])
    _print_where(printer, report, model, eval_dir, export_dir, plan, out, served)
    printer(f"Total {time.time() - t0:.0f}s")
    return {"results": results, "report": str(report), "export": str(export_dir),
            "train_logdir": str(logdir), "model": str(model), "predict": served["report"]}


def _refit_settings(options: DemoOptions, plan: DemoPlan, model: pathlib.Path, data_dir: str,
                    tune_split: str, stage: _Stage, printer: Callable[[str], None]) -> Any:
    """The refit settings: the released-weights table's for a pooled release, else tuned
    on the tune split (never val)."""
    tuning = load_tuned(model) if plan.pooled else None
    if tuning is not None:
        stage("Refit settings: the released-weights table's, tuned on other photos")
        printer("Refit settings " + _provenance(tuning))
    else:
        stage(f"Tune the refit settings of this model on the {tune_split!r} split (never val)")
        tuning = tune(options, plan, model, data_dir, tune_split, printer)
    return tuning


def _print_where(printer: Callable[[str], None], report: Any, model: pathlib.Path,
                 eval_dir: pathlib.Path, export_dir: Any, plan: DemoPlan, out: pathlib.Path,
                 served: dict) -> None:
    """The closing summary: where the outputs are and the commands to go on with."""
    printer("\nWhere things are:")
    printer(f"  report       {report}")
    printer(f"  model        {model}")
    printer(f"  eval results {eval_dir / 'eval_results.json'}")
    printer(f"  SavedModel   {export_dir}")
    printer("\nTo go on:")
    for line in next_commands(plan, out, model, export_dir, served):
        printer(f"  {line}")


def _make_model(options: DemoOptions, plan: DemoPlan, out: pathlib.Path, dataset: str,
                data_dir: str, logdir: pathlib.Path, stage: _Stage,
                printer: Callable[[str], None]) -> pathlib.Path:
    """The run directory the evidence table is made with: the release imported with its
    tags pooled (nothing trained), or a network trained (from scratch or from the release)
    and, when it has no tag head, its twin with tags pooled from its segmentation."""
    if plan.pooled:
        stage(f"Import {plan.weights}; tags pooled from its segmentation (nothing to train)")
        return _import_once(plan.weights, out / "model", dataset, plan.variant, printer)
    start = None
    if plan.weights is not None:  # the release in its own layout, then trained on
        start = _import_once(plan.weights, out / "release", None, None, printer)
    variant = plan.variant or (load_run_config(start)["model"]["name"] if start else None)
    stage(f"Train {variant}" + (f" from {plan.weights}" if start else "") + f" on {dataset}")
    train(train_options(options, plan, variant, dataset, data_dir, logdir, start),
          printer=printer)
    if _has_tags(logdir):
        return logdir
    printer("The trained network has no tag head: its tags are pooled from its segmentation "
            "for the evidence table")
    return _import_once(str(logdir), out / "model", None, None, printer, replace=True)


def _has_tags(run: pathlib.Path) -> bool:
    """Whether the network of a run has a tags output (a tag head, trained or pooled)."""
    network, _, _ = restore_network(run)
    return family_of(network).tags_output in network.output


def _import_once(source: str, folder: pathlib.Path, dataset: str | None,
                 variant: str | None, printer: Callable[[str], None],
                 replace: bool = False) -> pathlib.Path:
    """The demo's import of ``source`` into its workdir (tags pooled from the segmentation
    when ``dataset`` is given or ``source`` is a run; the release's own layout otherwise):
    made once, reused on a rerun with the same source. ``replace``: an earlier import of
    the demo's own (the twin of a run it trained again) is made anew."""
    meta = folder / MODEL_CONFIG_FILE
    wanted = os.path.abspath(source) if os.path.exists(source) else source
    if meta.is_file():
        imported = json.loads(meta.read_text()).get("imported", {})
        same = wanted in (imported.get("source"), imported.get("released_name"))
        if same and not replace:
            printer(f"Using the import of {source} already in {folder}")
            return folder
        if not imported:
            raise ValueError(f"--workdir: {folder} holds a run this demo did not import; "
                             "choose another --workdir")
        old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
        os.replace(folder, old)
        shutil.rmtree(old, ignore_errors=True)
    pooled = dataset is not None or _is_run(source)
    import_weights(ImportOptions(source=source, model_variant=variant, output_dir=str(folder),
                                 dataset=dataset, tag_head=SEGMENTATION if pooled else None),
                   printer=printer)
    return folder


def _is_run(source: str) -> bool:
    return (pathlib.Path(source) / MODEL_CONFIG_FILE).is_file()


def _provenance(tuning: dict) -> str:
    """Where a run's refit settings come from, in a sentence."""
    kind = tuning["serving_kind"]
    return (f"tuned for the {tuning.get('objective', 'plain')} row on "
            f"{tuning['dataset_dir']}:{tuning['tune_split']} ({tuning['num_images']} images, "
            f"none of those scored here; by {tuning.get('source', 'tools.tune_evidence')}): "
            f"{kind} with {describe_settings(kind, tuning['kinds'][kind]['evidence'])}")


def _served_mode(plan: DemoPlan, tuning: dict | None) -> str:
    """The row the export serves (its kind, pruned when tuned for pruned rows), or the
    first refit row evaluated when that one was not."""
    kind = (tuning or {}).get("serving_kind", DEFAULT_KIND)
    pruned = (tuning or {}).get("objective", plan.objective) == "pruned"
    mode = mode_of(kind, pruned)
    if mode in plan.modes:
        return mode
    return next((m for m in plan.modes if EVIDENCE_MODES[m].kind is not None), plan.modes[-1])


def changed_most(results: dict, eval_dir: pathlib.Path, served_mode: str, count: int
                 ) -> list[dict]:
    """The photos whose served prediction differs most from the pruned (else plain) one,
    with their per-photo IoU in each row: what the refit changed, gains and losses alike."""
    base = "prune" if "prune" in results["modes"] else "none"
    rows = []
    for index, entry in enumerate(results["per_image"]):
        name = entry["name"]
        served = cv2.imread(str(eval_dir / PREDICTIONS / served_mode / f"{name}.png"),
                            cv2.IMREAD_GRAYSCALE)
        other = cv2.imread(str(eval_dir / PREDICTIONS / base / f"{name}.png"),
                           cv2.IMREAD_GRAYSCALE)
        rows.append({"index": index, "name": name, "miou": entry["miou"],
                     "changed": float(np.mean(served != other))})
    rows.sort(key=lambda r: -r["changed"])
    return rows[:count]


def train_options(options: DemoOptions, plan: DemoPlan, variant: str, dataset: str,
                  data_dir: str, logdir: pathlib.Path, start: pathlib.Path | None
                  ) -> TrainOptions:
    """The demo's training run: Adam, uncertainty weighting, the plan's budget; from
    ``start`` (an import of released weights: BatchNorm stays frozen, a classifier for new
    classes starts afresh) or from scratch."""
    builtin = options.builtin and options.data is None
    steps = plan.train_steps
    return TrainOptions(
        train_logdir=str(logdir), dataset_dir=data_dir, dataset=dataset,
        model_variant=variant, train_crop_size=(plan.crop, plan.crop),
        train_batch_size=options.train_batch_size, optimizer="adam",
        base_learning_rate=plan.learning_rate, training_number_of_steps=steps,
        save_interval_steps=max(100, steps // 4), save_summaries_steps=25,
        log_every_n_steps=max(25, steps // 20),
        min_scale_factor=0.75 if builtin else 0.5, max_scale_factor=1.25 if builtin else 2.0,
        tf_initial_checkpoint=None if start is None else str(start),
        train_groups=options.train_groups, tag_head=options.tag_head,
        # Pretrained BatchNorm stays as it is: batches of 8 cannot estimate its statistics
        # (the original's advice), and a TFLite import's is folded.
        fine_tune_batch_norm=start is None,
        loss_weighting="uncertainty",
        seed=options.seed if options.train_seed is None else options.train_seed)


def tune(options: DemoOptions, plan: DemoPlan, logdir: pathlib.Path, data_dir: str,
         tune_split: str, printer: Callable[[str], None]) -> dict | None:
    """tools.tune_evidence on the tuning split, for the refit kinds of the table's rows."""
    if not plan.num_tune or not plan.kinds:
        printer("no tuning (--num_tune=0 or no refit rows): the refit settings are the start "
                "point's")
        return None
    if not (options.builtin and options.data is None):
        printer("(a folder has no split of its own for tuning: its training images stand in"
                f"{', which the model has seen' if not plan.pooled else ''})")
    extra = {"learning_rates": plan.learning_rates} if plan.learning_rates else {}
    return tune_evidence(TuneOptions(
        checkpoint_dir=str(logdir), dataset_dir=data_dir, tune_split=tune_split,
        max_examples=plan.num_tune, max_candidates=plan.tune_candidates, kinds=plan.kinds,
        objective=plan.objective, evidence=plan.evidence, **extra), printer=printer)


def serve_sample(info: DatasetInfo, data_dir: str, index: int, export_dir: pathlib.Path,
                 out: pathlib.Path, printer: Callable[[str], None]) -> dict:
    """tools.predict through the export on one val photo with its tags, as a user runs
    it: with what the export serves (its tuned refit steps, its pruning)."""
    photo, _, tags = _example(info, data_dir, "val", index)
    sample = out / "sample.png"
    cv2.imwrite(str(sample), photo[..., ::-1])
    pred_png = out / "sample_prediction.png"
    args = [f"--saved_model={export_dir}", f"--image={sample}", f"--output={pred_png}"]
    if tags:
        args.append(f"--tags={','.join(tags)}")
    printer("$ python -m tools.predict " + " ".join(args))
    report = predict_image(PredictOptions(saved_model=str(export_dir), image=str(sample),
                                          output=str(pred_png), tags=tuple(tags) or None),
                           printer=printer)
    printer(json.dumps({k: v for k, v in report.items() if not k.startswith("tag_prob")},
                       indent=1))  # as tools.predict prints it
    return {"report": report, "sample": sample, "prediction": pred_png, "tags": tags,
            "command": "python -m tools.predict " + " ".join(args)}


def next_commands(plan: DemoPlan, out: pathlib.Path, model: pathlib.Path,
                  export_dir: pathlib.Path, served: dict) -> list[str]:
    """The commands a user runs next: TensorBoard, a prediction of their own photo."""
    source = (f"--checkpoint_dir={plan.weights}" if plan.pooled and plan.weights
              and not pathlib.Path(plan.weights).exists() else f"--checkpoint_dir={model}")
    return [f"tensorboard --logdir {out}   # the evaluation's numbers"
            + ("" if plan.pooled else " and the training curves"),
            f"python -m tools.predict {source} --image=YOUR_PHOTO.jpg --tags=person,dog "
            "--output=out.png",
            f"python -m tools.predict --saved_model={export_dir} --image={served['sample']} "
            f"--tags={','.join(served['tags']) or 'TAGS'} --output=out.png   # the export",
            "make demo DEMO_ARGS=\"--data=YOUR_VOC_OR_CAMVID_FOLDER\"   # your photos"]


def _tuning_tables(tuning: dict | None) -> list[tuple]:
    """The report's tables of the refit settings chosen and of the search behind them."""
    if tuning is None:
        return []
    rows = [[kind, "yes" if entry["refit"] else "no (plain inference was as good)",
             describe_settings(kind, entry["evidence"])]
            for kind, entry in tuning["kinds"].items()]
    tables = [(f"Refit settings of this model, tuned for the {tuning.get('objective', 'plain')} "
               f"row on {tuning['dataset_dir']}:{tuning['tune_split']} "
               f"({tuning['num_images']} images)", ["kind", "refit", "settings"], rows)]
    if tuning.get("table"):
        tables.append(("The tuning search (mIoU on the tuning split)",
                       ["kind", "candidate", "mIoU (%)", "vs no refit"],
                       [[r["kind"], r["candidate"], f"{100 * r['miou']:.2f}",
                         f"{100 * r['vs_no_refit']:+.2f}"] for r in tuning["table"]]))
    return tables


def _photo_picture(info: DatasetInfo, data_dir: str, eval_dir: pathlib.Path, row: dict,
                   served_mode: str) -> tuple[np.ndarray, list[str]]:
    """One photo as the report shows it: plain | pruned / refitted | truth, each overlaid
    on the photo, a legend of every class drawn below."""
    photo, label, tags = _example(info, data_dir, "val", row["index"])
    what = {"none": "plain", "prune": "pruned to the tags",
            served_mode: "refitted" + (" + pruned" if EVIDENCE_MODES[served_mode].prune
                                       else "") + " (served)"}
    columns = [(m, f"{EVIDENCE_MODES[m].row}: {what[m]}") for m in ("none", "prune", served_mode)
               if (eval_dir / PREDICTIONS / m).is_dir()]
    maps = [(f"{name}", cv2.imread(str(eval_dir / PREDICTIONS / m / f"{row['name']}.png"),
                                   cv2.IMREAD_GRAYSCALE)) for m, name in columns]
    maps.append(("ground truth", label))
    # A prediction made at an --eval_crop_size larger than the photo was padded
    # bottom/right: its photo's part.
    height, width = photo.shape[:2]
    maps = [(title, m[:height, :width]) for title, m in maps]
    panels = [(title, pictures.overlay(photo, m, info.colormap, ignore_label=info.ignore_label,
                                       background=info.background_class))
              for title, m in maps]
    shown_h = (420 if height > width else 300) if max(height, width) > 200 else 240
    lines = [pictures.panel_row(panels[i:i + 2], height=shown_h)
             for i in range(0, len(panels), 2)]
    widest = max(x.shape[1] for x in lines)
    lines = [np.pad(x, ((0, 8), (0, widest - x.shape[1]), (0, 0)), constant_values=255)
             for x in lines]
    classes = set().union(*(np.unique(m).tolist() for _, m in maps))
    picture = pictures.with_legend(np.concatenate(lines, 0), classes, info.class_names,
                                   info.colormap,
                                   unpainted=(info.background_class, info.ignore_label))
    return picture, tags


def _gallery(results: dict, out: pathlib.Path, info: DatasetInfo, data_dir: str,
             shown: list[dict], served_mode: str) -> list[tuple[str, np.ndarray]]:
    """Each shown photo's picture and its caption: tags and per-photo mIoU per row."""
    gallery = []
    for row in shown:
        picture, tags = _photo_picture(info, data_dir, out / "eval", row, served_mode)
        iou = row["miou"]
        steps = " -> ".join(f"{EVIDENCE_MODES[m].row} {100 * iou[m]:.1f}"
                            for m in ("none", "prune", served_mode) if m in iou)
        change = (f"; the refit moved {100 * row['changed']:.1f}% of the pixels, "
                  f"{100 * (iou[served_mode] - iou['prune']):+.1f} points over pruning"
                  if "prune" in iou and served_mode in iou else "")
        gallery.append((f"{row['name'].split('_', 1)[-1]}: tags {', '.join(tags) or 'none'}; "
                        f"per-photo mIoU {steps}{change}", picture))
    return gallery


def _training_curves(logdir: pathlib.Path) -> tuple[dict, dict]:
    """The training run's scalars (none without one) and their plot groups."""
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
    return {k: scalars[k] for keys in groups.values() for k in keys}, groups


def write_report(out: pathlib.Path, results: dict, tuning: dict | None, served: dict,
                 logdir: pathlib.Path, info: DatasetInfo, data_dir: str, shown: list[dict],
                 served_mode: str, plan: DemoPlan, photos: str, t0: float) -> pathlib.Path:
    """demo_out/report.html: first the photos the evidence changed most (large, overlaid,
    with a legend, their tags and per-photo IoU), then the tables, per-class IoU, curves."""
    modes = results["modes"]
    baselines = bootstrap_baselines(results)
    table_rows = [[row["name"], f"{100 * row['miou']:.2f}", mode, f"{row['seconds']:.1f}"]
                  + [vs_cell(row, b) for b in baselines] for mode, row in modes.items()]
    table_header = ["method", "mIoU (%)", "mode", "seconds"] + [
        f"vs {EVIDENCE_MODES[b].row} (95% CI over images)" for b in baselines]
    served_row = EVIDENCE_MODES[served_mode].row
    predicted, tags = served["report"], served["tags"]
    before = predicted.get("tag_probabilities_before", {})
    after = predicted.get("tag_probabilities_after", {})
    pred_rows = [[n, f"{before[n]:.3f}", f"{after.get(n, before[n]):.3f}",
                  "yes" if n in tags else ""]
                 for n in before if n in tags or before[n] >= 0.05 or after.get(n, 0) >= 0.05]
    scalars, groups = _training_curves(logdir)
    report = out / "report.html"
    write_html_report(
        report,
        title=f"Evidence at prediction time: {plan.weights if plan.pooled else results['model']}"
              f" on {photos} {results['split']} ({results['num_images']} images)",
        notes=_summary(results, tuning, served_mode, plan),
        gallery=_gallery(results, out, info, data_dir, shown, served_mode),
        gallery_title=(f"The photos the evidence changed most: {EVIDENCE_MODES['none'].row} "
                       f"(plain), {EVIDENCE_MODES['prune'].row} (pruned), {served_row} "
                       "(refitted, what the export serves) and the ground truth"),
        tables=[
            ("Evidence at prediction time (val mIoU, tags from the ground truth)",
             table_header, table_rows),
            (f"Served: {served['command']}", ["tag", "before", "after the refit", "given"],
             pred_rows),
            ("Tags on val (pooled from the segmentation)" if plan.pooled else "Tag head on val",
             ["metric", "value"], [[k, f"{v:.4f}"] for k, v in results.get("tags", {}).items()]),
            *_tuning_tables(tuning),
        ],
        per_class_iou={k: v for k, v in modes[served_mode]["per_class_iou"].items()
                       if v is not None},
        scalars=scalars, scalar_groups=groups,
        images=[(f"The served prediction ({served['command']})", str(served["prediction"]))],
        notes_after=[f"Per-class IoU shown for {served_row}.",
                     f"Total demo time {time.time() - t0:.0f}s."],
    )
    return report


def _summary(results: dict, tuning: dict | None, served_mode: str, plan: DemoPlan
             ) -> list[str]:
    """The report's first lines: what the evidence did, with its interval, and where its
    settings came from."""
    modes = results["modes"]
    lines = []
    if {"none", "prune", served_mode} <= set(modes):
        plain, pruned, refit = modes["none"], modes["prune"], modes[served_mode]
        versus = vs_cell(refit, "prune")
        lines.append(
            f"Without the tags the model scores {100 * plain['miou']:.2f} mIoU "
            f"({plain['name']}). Given each image's tags, pruning the untagged classes gives "
            f"{100 * pruned['miou']:.2f} ({pruned['name']}); refitting to the tags first gives "
            f"{100 * refit['miou']:.2f} ({refit['name']})"
            + (f": {versus} points over pruning alone (95% paired bootstrap interval over "
               f"the {results['num_images']} images; an interval above 0 is a gain the "
               "images support)." if versus else "."))
    if tuning is not None:
        lines.append("Held out: the refit settings were " + _provenance(tuning) + ".")
    if plan.pooled:
        lines.append("Nothing was trained: the tags come from the released model's own "
                     "segmentation (each class's probability pooled over the image).")
    return lines
