"""Released weights of the original implementation into a run directory (``tools.import_weights``).

The source is read under the original's TF1 variable names (``tf_mtl.released``) and
copied through the family's name map (``ModelFamily.original_names``); what was loaded,
skipped, missing (e.g. a new tag head) and unused is reported. The run directory it
writes is like one ``tools.train`` writes: every tool restores it, ``tools.train
--tf_initial_checkpoint`` starts from it.

A TFLite export has its BatchNorm folded into the convolutions: the import writes the
folded kernel and bias into conv + BatchNorm (gamma 1, mean 0, a variance that divides
by 1), so the Keras model computes the same function. Those BatchNorm statistics are not
statistics of any data: fine-tuning from such an import must keep BatchNorm frozen
(``--fine_tune_batch_norm=false``, which the original also asks for at small batches);
``tools.train`` refuses otherwise.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from deeplab_ext.data.datasets import get_dataset_info, info_from_dict
from deeplab_ext.models.registry import (
    all_families,
    build_network,
    family_of,
    get_variant,
    group_variables,
)
from deeplab_ext.models.tag_heads import SEGMENTATION
from deeplab_ext.paths import new_directory
from deeplab_ext.run.evidence import TUNED_FILE, save_tuned
from deeplab_ext.run.options import EvidenceOptions, ImportOptions
from deeplab_ext.run.rundir import MODEL_CONFIG_FILE, load_run_config, run_family, save_run_config
from deeplab_ext.weights import Resolved, cache_home, get_entry, is_weights_name, resolve
from tf_mtl.checkpoint import LoadReport, checkpoint_format, load_initial_checkpoint
from tf_mtl.released import (
    expected_scopes,
    load_named_weights,
    structural_entries,
    tf1_checkpoint_entries,
    tflite_entries,
    tflite_weight_ops,
)

__all__ = [
    "check_coverage",
    "checkpoint_dir_or_name",
    "import_original",
    "import_weights",
    "initial_weights",
    "is_original_checkpoint",
    "local_source",
    "source_format",
]

TFLITE, TF1, KERAS_APPLICATIONS = "tflite", "tf1_checkpoint", "keras_applications_h5"
TFLITE_STRUCTURE = "tflite, matched by graph structure"


def source_format(path: str | os.PathLike, flag: str = "--source") -> str:
    """``tflite`` or ``tf1_checkpoint``; a clear error naming the flag otherwise."""
    path = os.fspath(path)
    if path.endswith(".tflite") and os.path.isfile(path):
        return TFLITE
    if path.endswith(".h5") and os.path.isfile(path):
        return KERAS_APPLICATIONS
    if is_original_checkpoint(path):
        return TF1
    raise FileNotFoundError(
        f"{flag}={path}: not a TFLite file (*.tflite), a TF1 checkpoint of the original "
        "(a model.ckpt-N prefix, or a folder with a 'checkpoint' file) nor a Keras "
        "Applications ImageNet backbone (*.h5)")


def is_original_checkpoint(path: str | os.PathLike) -> bool:
    """A TF1 checkpoint (variables by name), not one of this zoo (an object graph)."""
    path = os.fspath(path)
    prefix = tf.train.latest_checkpoint(path) if os.path.isdir(path) else path
    if not prefix or not os.path.exists(prefix + ".index"):
        return False
    try:
        keys = tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
    except Exception:  # noqa: BLE001 - TF raises several types for unreadable files
        return False
    return "_CHECKPOINTABLE_OBJECT_GRAPH" not in keys


def import_original(network: keras.Model, source: str | os.PathLike, *,
                    initialize_last_layer: bool = True, flag: str = "--source"
                    ) -> tuple[LoadReport, bool]:
    """Load released weights into ``network``: (report, whether BatchNorm came folded)."""
    family = family_of(network)
    if family.original_names is None:
        raise ValueError(f"model family {family.name!r} names no original weights to import")
    fmt = source_format(source, flag)
    if fmt == KERAS_APPLICATIONS:
        if family.pretrained_backbone is None:
            raise ValueError(f"model family {family.name!r} takes no ImageNet backbone file")
        entries = family.pretrained_backbone(network, os.fspath(source))
    elif fmt == TFLITE:
        entries = tflite_entries(source, require_names=False, flag=flag)
        expected = expected_scopes(network, family.original_names(network),
                                   family.original_pooled_scopes)
        kernels = [f"{scope}/{'depthwise_weights' if kind == 'depthwise' else 'weights'}"
                   for scope, kind, _, _ in expected]
        if not all(k in entries for k in kernels):
            # Tensor names stripped (or another converter's): match by graph structure.
            entries = structural_entries(tflite_weight_ops(source, flag), expected)
            fmt = TFLITE_STRUCTURE
    else:
        entries = tf1_checkpoint_entries(source, flag)

    def skip(path: str) -> str | None:
        if not initialize_last_layer and path.split("/", 1)[0] == "logits":
            return "last layer (initialize_last_layer=False)"
        return None

    report = load_named_weights(network, entries, family.original_names(network),
                                source=os.fspath(source), fmt=fmt, skip=skip)
    if not report.loaded:
        raise ValueError(
            f"{flag}={source}: no variable of {network.name} found in it (missing "
            f"{len(report.missing)}, unused {len(report.unused)}): is it the original's "
            "model with this backbone?")
    return report, fmt in (TFLITE, TFLITE_STRUCTURE)


def initial_weights(network: keras.Model, path: str | os.PathLike, *,
                    initialize_last_layer: bool = True, flag: str = "--tf_initial_checkpoint"
                    ) -> tuple[LoadReport, bool]:
    """``--tf_initial_checkpoint``: the original's released weights (TFLite, TF1) by name, or
    a checkpoint of this zoo (a run directory, ``.weights.h5``, ``.keras``) by layer.

    Returns (report, whether the weights carry folded BatchNorm: a TFLite file, or a run
    directory imported from one).
    """
    path = os.fspath(path)
    if (path.endswith(".tflite") and os.path.isfile(path)) or is_original_checkpoint(path):
        return import_original(network, path, initialize_last_layer=initialize_last_layer,
                               flag=flag)
    # .h5 here is a zoo checkpoint (model.save_weights); a Keras Applications ImageNet
    # backbone goes through tools.import_weights first.
    report = load_initial_checkpoint(network, path, initialize_last_layer=initialize_last_layer,
                                     flag=flag)
    run = pathlib.Path(path) if os.path.isdir(path) else pathlib.Path(path).parent
    meta = run / MODEL_CONFIG_FILE
    folded = meta.is_file() and json.loads(meta.read_text()).get("imported", {}).get(
        "batch_norm_folded", False)
    return report, bool(folded)


MIN_COVERAGE = 0.9  # of the backbone's (and the frozen groups') values a source must load


def check_coverage(network: keras.Model, report: LoadReport, flag: str, *,
                   frozen: tuple[str, ...] = (), allow_partial: bool = False,
                   printer: Callable[[str], None] = print) -> float:
    """Refuse weights that cover less than :data:`MIN_COVERAGE` of the network's backbone
    and of the groups that will not train (``frozen``: outside ``--train_groups``): they
    were written for another variant, and training or evaluating on would go on silently
    from random weights. Returns the share loaded."""
    family = family_of(network)
    groups = tuple(dict.fromkeys((*family.backbone_groups, *frozen)))
    variables = group_variables(network, groups, flag="--train_groups") if groups else []
    total = sum(int(np.prod(v.shape)) for v in variables)
    if not total:
        return 1.0
    loaded = set(report.loaded)
    got = sum(int(np.prod(v.shape)) for v in variables if v.path in loaded)
    share = got / total
    if share < MIN_COVERAGE:
        message = (f"{flag}={report.path} covers {100 * share:.1f}% of {network.name}'s "
                   f"{', '.join(groups)} ({got:,} of {total:,} values; {len(report.loaded)} "
                   f"variables loaded, {len(report.skipped)} skipped, {len(report.missing)} "
                   f"missing): it was written for another model. Choose the --model_variant "
                   f"it was trained as, or pass --allow_partial_init to start from it anyway")
        if not allow_partial:
            raise ValueError(message)
        printer(f"warning: {message} (--allow_partial_init: going on)")
    return share


def _source_record(source: str | os.PathLike) -> dict | None:
    """The run record of a zoo checkpoint source (a run directory, or a checkpoint prefix
    in one), or None (a released file, or a bare weights file)."""
    path = pathlib.Path(source)
    run = path if path.is_dir() else path.parent
    if is_original_checkpoint(source) or not (run / MODEL_CONFIG_FILE).is_file():
        return None
    return load_run_config(run)


def released_candidates() -> list[str]:
    """Every family's variants with the layout of released weights, smallest first."""
    return [v for family in all_families() for v in family.released_variants]


def local_source(source: str, flag: str, printer: Callable[[str], None] = print
                 ) -> tuple[str, Resolved | None]:
    """A released model's name resolved to its local file (shipped, cached or downloaded:
    ``deeplab_ext.weights``), or ``source`` as given (a path always wins over a name)."""
    if not is_weights_name(source):
        if not os.path.exists(source) and os.sep not in source and "." not in source:
            get_entry(source, flag)  # looks like a name, is none: the error lists them
        return source, None
    found = resolve(source, flag=flag, printer=printer)
    printer(f"{flag}={source}: {found.entry.description}; {found.file.format} "
            f"({found.where}) {found.path}")
    return str(found.path), found


RUNS = "runs"  # cache_home()/runs/<name>: a released model imported once for --checkpoint_dir


def checkpoint_dir_or_name(value: str, flag: str = "--checkpoint_dir",
                           printer: Callable[[str], None] = print) -> str:
    """A run directory as given, or a released model's name: its import in the cache
    (``$DEEPLAB_MTL_HOME/runs/<name>``, made once: tags pooled from its segmentation and the
    table's tuned refit settings), so ``tools.predict --checkpoint_dir=NAME`` needs no
    import step of the user's."""
    if not is_weights_name(value):
        return value
    run = cache_home() / RUNS / value
    fingerprint = get_entry(value, flag).fingerprint
    meta = run / MODEL_CONFIG_FILE
    if meta.is_file():
        made_from = json.loads(meta.read_text()).get("imported", {}).get("released_entry")
        if made_from == fingerprint:
            printer(f"{flag}={value}: the import in {run}")
            return str(run)
        printer(f"{flag}={value}: the table's entry changed since {run} was imported; "
                "importing again")
    # Imported beside its final place and renamed in whole: a killed import is never
    # taken for a finished one, and leftovers of one are removed here.
    run.parent.mkdir(parents=True, exist_ok=True)
    for stale in run.parent.glob(f".{value}.*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = run.with_name(f".{value}.tmp-{os.getpid()}")
    import_weights(ImportOptions(source=value, output_dir=str(tmp), tag_head=SEGMENTATION),
                   printer)
    if run.exists():  # stale (made from another entry): moved aside, then removed
        old = run.with_name(f".{value}.old-{os.getpid()}")
        os.replace(run, old)
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.replace(tmp, run)
    except OSError:  # another process finished the same import first
        shutil.rmtree(tmp, ignore_errors=True)
    printer(f"{flag}={value}: imported into {run} (tags pooled from its segmentation)")
    return str(run)


def import_weights(options: ImportOptions, printer: Callable[[str], None] = print
                   ) -> LoadReport:
    """Build the variant, load the weights, write the run directory.

    The source is a released model's name (its table entry gives the variant, classes,
    crop and output stride, and refit settings tuned for it where measured), the original's
    released file (``--model_variant`` names the layout; without it, each family's released
    layouts are tried, smallest first), or a run of this zoo, whose own record gives the
    model and dataset: ``--tag_head=segmentation`` then makes the segmentation-tag twin of a
    trained model, nothing trained.
    """
    # Checked before anything is read or downloaded: an import never replaces a run.
    out = new_directory(options.output_dir, "--output_dir", "imported run directory")
    source, released = local_source(options.source, "--source", printer)
    _check_source(source)
    if released is not None:
        file = released.file
        options = dataclasses.replace(
            options, source=source, model_variant=options.model_variant or released.entry.variant,
            dataset=options.dataset or released.entry.dataset,
            output_stride=options.output_stride or file.output_stride,
            train_crop_size=options.train_crop_size or file.crop)
    candidates, info, extra = _candidates(options)
    family, cfg, network, report, folded = _load_first(candidates, options, printer)
    printer(report.summary())
    imported = {"source": os.path.abspath(options.source), "format": report.format,
                "batch_norm_folded": folded, "loaded": len(report.loaded),
                "missing": report.missing, "skipped": report.skipped, "unused": report.unused}
    if released is not None:
        imported.update(released_name=released.entry.name, released_file=released.file.url,
                        released_entry=released.entry.fingerprint)
    _write_run(out, network, family, cfg, info, {**extra, "imported": imported}, released,
               printer)
    pooled = getattr(cfg, "tag_head", "") == "segmentation"
    printer(f"Wrote run directory {out} ({cfg.name}, {info.name}"
            f"{', tags pooled from the segmentation' if pooled else ''}); BatchNorm "
            f"{'folded (fine-tune with --fine_tune_batch_norm=false)' if folded else 'as trained'}")
    return report


def _candidates(options: ImportOptions) -> tuple[list[tuple[Any, Any]], Any, dict]:
    """The (family, config) layouts the source may have, its classes, and the run record's
    extra fields: a run's own record, or the variant named, or every released layout."""
    overrides = dict(output_stride=options.output_stride, tag_head=options.tag_head,
                     seg_tag_pooling=options.seg_tag_pooling,
                     seg_tag_temperature=options.seg_tag_temperature)
    record = _source_record(options.source)
    extra: dict = {"train_crop_size": list(options.train_crop_size or (513, 513))}
    if record is not None and not options.model_variant:
        family = run_family(record)
        info = info_from_dict(record["dataset"])
        cfg = family.config_class.from_dict(record["model"]).replace(**overrides)
        extra.update({k: record[k] for k in ("train_crop_size", "min_resize_value",
                                             "max_resize_value") if record.get(k)})
        return [(family, cfg.for_dataset(info.num_classes, info.num_tags,
                                         info.tag_class_ids))], info, extra
    info = get_dataset_info(options.dataset or "pascal_voc_seg")
    names = [options.model_variant] if options.model_variant else released_candidates()
    candidates = []
    for name in names:
        family, cfg = get_variant(name, **overrides)
        candidates.append((family, cfg.for_dataset(info.num_classes, info.num_tags,
                                                   info.tag_class_ids)))
    return candidates, info, extra


def _load_first(candidates: list[tuple[Any, Any]], options: ImportOptions,
                printer: Callable[[str], None]) -> tuple[Any, Any, keras.Model, LoadReport, bool]:
    """The first layout the source's weights fit: (family, config, network, report,
    folded); none fitting is an error asking for --model_variant."""
    last_error = None
    for i, (family, cfg) in enumerate(candidates):
        network = build_network(cfg)
        try:
            report, folded = initial_weights(network, options.source, flag="--source")
            check_coverage(network, report, "--source", allow_partial=(
                options.allow_partial_init and len(candidates) == 1), printer=printer)
        except ValueError as e:
            last_error = e
            if len(candidates) == 1:
                raise
            continue
        if len(candidates) > 1:
            printer(f"--source={options.source} is the layout of --model_variant={cfg.name} "
                    f"(tried {i + 1} of {len(candidates)} released layouts)")
        return family, cfg, network, report, folded
    raise ValueError(f"--source={options.source}: none of the released layouts "
                     f"{[c.name for _, c in candidates]} matches it (last: {last_error}); "
                     "give --model_variant") from last_error


def _write_run(out: pathlib.Path, network: keras.Model, family: Any, cfg: Any, info: Any,
               record: dict, released: Resolved | None, printer: Callable[[str], None]) -> None:
    """The run directory, written beside its place and renamed in whole: a killed import
    leaves no half run directory (its leftovers are removed by the next import there)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tf.train.CheckpointManager(tf.train.Checkpoint(network=network), str(tmp), 1).save(0)
    save_run_config(tmp, family, cfg, info, record)
    if released is not None:
        _write_released_evidence(tmp, released, cfg, printer)
    new_directory(out, "--output_dir", "imported run directory")  # still new
    os.replace(tmp, out)


SOURCES = ("a released model's name (python -m tools.model_info --list_weights), the "
           "original's .tflite file or TF1 checkpoint (model.ckpt-N), a Keras Applications "
           ".h5, or a run directory or checkpoint of this zoo")


def _check_source(source: str) -> None:
    """Refuse a --source that is not there, or is no kind of weights this tool reads, with
    what it takes: before the released layouts are tried one by one."""
    if not os.path.exists(source) and not os.path.exists(source + ".index"):
        raise FileNotFoundError(f"--source={source}: no such file or folder. Give {SOURCES}")
    if _source_record(source) is not None:
        return
    try:
        fmt = source_format(source)
    except FileNotFoundError:
        try:
            checkpoint_format(source, "--source")  # a checkpoint of this zoo
        except FileNotFoundError:
            raise FileNotFoundError(f"--source={source}: not weights this tool reads. Give "
                                    f"{SOURCES}") from None
        return
    if fmt == TFLITE:
        tflite_entries(source, require_names=False)  # unreadable: one error, not one per layout


def _write_released_evidence(out: pathlib.Path, released: Resolved, cfg,
                             printer: Callable[[str], None]) -> None:
    """The refit settings the table records for this file, as ``evidence_tuned.json``
    (what ``tools.tune_evidence`` writes), when the import has the tag head they were
    tuned for: evaluation, export and predict then refit with them."""
    tuned = released.file.evidence
    if not tuned or getattr(cfg, "tag_head", None) != tuned["tag_head"]:
        return
    where = tuned["tuned_on"]
    kinds = {kind: {"evidence": dataclasses.asdict(EvidenceOptions(**settings)), "refit": True}
             for kind, settings in tuned["kinds"].items()}
    save_tuned(out, {
        "tune_split": where["split"], "dataset_dir": where["data"],
        "num_images": where["images"], "model": cfg.name, "kinds": kinds,
        "serving_kind": tuned["serving_kind"], "objective": tuned["objective"],
        "table": [], "source": f"`{tuned['command']}`, recorded for {released.entry.name} "
                               "in the released-weights table"})
    printer(f"Refit settings from the released-weights table: tuned for the "
            f"{tuned['objective']} row on {where['data']}:{where['split']} "
            f"({where['images']} images), recorded as the run directory's {TUNED_FILE}")
