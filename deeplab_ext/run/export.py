"""Serving: the SavedModel export (the original's export_model.py, plus evidence), and
one client interface over an export or a checkpoint.

Signatures (usable from `tf.saved_model.load` without importing this project):
  * `serving_default(images float32 [B,H,W,3] in 0..255)` ->
    `semantic_predictions` int32 [B,H,W], `semantic_probabilities` float32 [B,H,W,C],
    `tag_probabilities` float32 [B,T] (models with a tag head), and any other network
    output under its own name (float32).
  * `segment_with_evidence(images, tags float32 [B,T] in [0, 1], steps int32 [])` -> the
    same after refitting trunk + tag branch to the tags, each a probability (the refit's
    target; 0/1 for hard tags; NaN or a value outside [0, 1] fails) (plus
    `tag_probabilities_before`,
    `steps_taken`, `fell_back`: the images that kept the plain prediction because the
    refit did not help their evidence).
Only the network is exported: training-only heads and loss terms live in the
MultiTaskModel and never reach it. `assets/deeplab_export.json` holds class names, tag
class ids, the colormap and the model family so clients can decode outputs. The export
is written to a temporary directory and renamed into place, so an interrupted export
never replaces a good one. What is written is a list of ``--format``s, each a plug-in of
``deeplab_ext.run.formats`` (the SavedModel one of them); the served outputs are
``deeplab_ext.run.serving``'s.

:class:`LoadedSegmenter` (an export) and :class:`CheckpointSegmenter` (a run directory)
answer the same two calls through the same :class:`SegmenterServing` functions, and
validate inputs before any graph runs (a loaded signature fed a wrong-rank tensor can
abort the whole process).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import sys
import tempfile
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import cv2
import keras
import numpy as np
import tensorflow as tf

from deeplab_ext.data.colormap import label_to_color_image
from deeplab_ext.data.datasets import DatasetInfo, info_from_dict, info_to_dict
from deeplab_ext.data.fetch import sha256_file
from deeplab_ext.data.input_pipeline import tags_from_names
from deeplab_ext.models.registry import family_of
from deeplab_ext.paths import check_distinct, check_outputs
from deeplab_ext.run.deploy import FileSegmenter, calibration_images
from deeplab_ext.run.evidence import evidence_by_kind, load_tuned
from deeplab_ext.run.formats import FORMATS, METADATA_FILE, ExportJob
from deeplab_ext.run.importing import checkpoint_dir_or_name
from deeplab_ext.run.locking import directory_lock
from deeplab_ext.run.options import (
    EvidenceOptions,
    ExportOptions,
    PredictOptions,
    evidence_given,
)
from deeplab_ext.run.refit_kinds import DEFAULT_KIND, REFIT_KINDS
from deeplab_ext.run.rundir import input_alignment, restore_network
from deeplab_ext.run.serving import SegmenterServing, serving_module, serving_network
from tf_mtl.evidence import prune_probabilities, validate_evidence
from tf_mtl.inference import InputAlignment, validate_scales

__all__ = [
    "CheckpointSegmenter",
    "LoadedSegmenter",
    "SegmenterServing",
    "export_checkpoint",
    "export_saved_model",
    "predict_image",
    "read_export_metadata",
]

def serving_evidence(checkpoint_dir: str | os.PathLike, evidence: EvidenceOptions,
                     explicit: Collection[str] = (), use_tuned: bool = True,
                     printer: Callable[[str], None] = print
                     ) -> tuple[str, EvidenceOptions, bool]:
    """(kind, settings, prune) the run is served with: the kind tuning found best, with its
    tuned settings (flags given win) and whether they were tuned for pruned rows, hard or
    soft (then clients prune after the refit, with the settings' strength); or the L2 refit
    with ``evidence``, unpruned."""
    tuned = load_tuned(checkpoint_dir) if use_tuned else None
    kind = tuned["serving_kind"] if tuned else DEFAULT_KIND
    prune = bool(tuned) and tuned.get("objective") in ("pruned", "soft")
    return kind, evidence_by_kind(checkpoint_dir, evidence, explicit, use_tuned=use_tuned,
                                  printer=printer)[kind], prune


def export_saved_model(network: keras.Model, info: DatasetInfo, export_path: str | os.PathLike,
                       *, evidence: EvidenceOptions | None = None,
                       inference_scales: Sequence[float] = (1.0,),
                       add_flipped_images: bool = False, model_config: dict | None = None,
                       alignment: InputAlignment | None = None, kind: str = DEFAULT_KIND,
                       prune: bool = False, printer: Callable[[str], None] = print,
                       input_range: dict | None = None,
                       formats: Sequence[str] = ("saved_model",),
                       file_size: Sequence[int] | None = None,
                       format_settings: Mapping[str, dict] | None = None,
                       metadata: dict | None = None) -> pathlib.Path:
    """Write the export atomically (temp dir + rename); returns the export path. ``formats``:
    names of ``deeplab_ext.run.formats.FORMATS`` (the fixed-size ones at ``file_size``),
    written with ``format_settings[name]`` (their converter's settings, e.g. LiteRT's
    quantisation); ``metadata``: more keys for ``assets/deeplab_export.json`` (where the
    refit settings were tuned, say).

    The path must be absent, empty, or an earlier export (its ``assets`` marker and only
    the files a SavedModel has): anything else is refused before anything is written, so
    an export never deletes what it did not write. One export per path at a time (a
    lock beside it); leftovers of a killed export of this path are removed first.
    """
    export_path = pathlib.Path(export_path)
    check_export_path(export_path)
    export_path.parent.mkdir(parents=True, exist_ok=True)
    with directory_lock(export_path.parent, "--export_path",
                        lock_name=f".{export_path.name}.lock", printer=printer):
        check_export_path(export_path)  # again, now that no other export can write it
        for stale in export_path.parent.glob(f".{export_path.name}.*-*"):
            if stale.is_dir() and stale.name.split(".")[-1].startswith(("tmp-", "old-")):
                printer(f"note: removing {stale}, left by an export that did not finish")
                shutil.rmtree(stale, ignore_errors=True)
        return _write_export(network, info, export_path, evidence=evidence,
                             inference_scales=inference_scales,
                             add_flipped_images=add_flipped_images, model_config=model_config,
                             alignment=alignment, kind=kind, prune=prune,
                             input_range=input_range, formats=formats, file_size=file_size,
                             format_settings=format_settings, metadata=metadata)


def export_entries() -> frozenset[str]:
    """What the registered formats write, and ``assets``: an earlier export holds these and
    nothing else."""
    return frozenset({"assets", *(n for f in FORMATS.values() for n in f.written_names())})


def input_range(meta: dict) -> dict:
    """The sizes a run trained on (its crop, its resize range): what prediction resizes
    a much larger image into."""
    return {k: meta.get(k) for k in ("train_crop_size", "min_resize_value", "max_resize_value")}


def predict_size(height: int, width: int, trained: dict, requested: int | None
                 ) -> tuple[int, int] | None:
    """The size to predict an image at, or None for its own. A photo far larger than what
    the model was trained on costs memory and time quadratically and is seen at a scale the
    model never saw: the run's ``max_resize_value``, else twice its training crop's longer
    side, bounds the longer side (``requested``: the flag; 0 = full size)."""
    if requested == 0:
        return None
    limit = requested or trained.get("max_resize_value")
    if not limit and trained.get("train_crop_size"):
        limit = 2 * max(int(c) for c in trained["train_crop_size"])
    if not limit or max(height, width) <= limit:
        return None
    scale = limit / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def check_export_path(export_path: pathlib.Path) -> None:
    """Refuse an ``--export_path`` that holds anything but an earlier export."""
    if not export_path.exists() and not export_path.is_symlink():
        return
    if not export_path.is_dir():
        raise ValueError(f"--export_path={export_path} is a file, not a directory; nothing "
                         "was written. Choose a new or empty directory.")
    names = sorted(p.name for p in export_path.iterdir())
    if not names:
        return
    marker = export_path / "assets" / METADATA_FILE
    entries = export_entries()
    foreign = [n for n in names if n not in entries]
    if marker.is_file() and not foreign:
        return
    what = (f"files an export does not write ({', '.join(foreign[:5])}"
            f"{', ...' if len(foreign) > 5 else ''})" if foreign
            else f"no export marker (assets/{METADATA_FILE})")
    raise ValueError(f"--export_path={export_path} is not empty and not an earlier export of "
                     f"tools.export_model: it holds {what}; nothing was written or removed. "
                     "Choose a new or empty directory (e.g. a subdirectory of the run "
                     "directory).")


def _write_export(network: keras.Model, info: DatasetInfo, export_path: pathlib.Path, *,
                  evidence: EvidenceOptions | None, inference_scales: Sequence[float],
                  add_flipped_images: bool, model_config: dict | None,
                  alignment: InputAlignment | None, kind: str, prune: bool,
                  input_range: dict | None, formats: Sequence[str] = ("saved_model",),
                  file_size: Sequence[int] | None = None,
                  format_settings: Mapping[str, dict] | None = None,
                  metadata: dict | None = None) -> pathlib.Path:
    """Each format into a private temporary directory, then the metadata, then the
    directory renamed into place (:func:`_publish`); on any failure the temporary
    directory is removed and what was at ``export_path`` is left as it was."""
    evidence = evidence or EvidenceOptions()
    formats = checked_formats(formats, file_size)
    module = serving_module(network, info, evidence, inference_scales, add_flipped_images,
                            alignment, kind)
    tmp = _private_directory(export_path)
    try:
        job = ExportJob(network, module, tmp, tuple(file_size) if file_size else None,
                        serving_network, metadata={"signatures": []})
        written = {}
        for name in formats:
            file = FORMATS[name].write(job, dict((format_settings or {}).get(name) or {}))
            if file is not None:
                written[name] = file
        meta = {"dataset": info_to_dict(info), "family": family_of(network).name,
                "model": model_config or {},
                "inference_scales": list(inference_scales),
                "add_flipped_images": add_flipped_images,
                "input_alignment": dataclasses.asdict(module.alignment),
                **_served_evidence(module, evidence, kind, prune),
                "input_range": input_range or {}, **job.metadata,
                "files": written, "file_input_size": list(file_size) if written else None,
                # Each file's fingerprint: a file is read with this metadata only if it is
                # the one this export wrote.
                "file_sha256": {name: sha256_file(tmp / name) for name in written.values()},
                **(metadata or {})}
        (tmp / "assets").mkdir(exist_ok=True)
        (tmp / "assets" / METADATA_FILE).write_text(json.dumps(meta, indent=2, default=list))
        _publish(tmp, export_path)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise OSError(
                f"Export to {export_path} failed ({e}); nothing already at {export_path} was "
                "changed. Free disk space or choose another --export_path."
            ) from e
        raise
    return export_path


def known_formats(formats: Sequence[str]) -> list[str]:
    """``formats`` without repeats, each a registered one (``--format``)."""
    formats = list(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"--format={','.join(formats)}: unknown {unknown}; choose from "
                         f"{', '.join(FORMATS.names())}")
    return formats


def checked_formats(formats: Sequence[str], file_size: Sequence[int] | None) -> list[str]:
    """:func:`known_formats`, with a size given if one of them needs it."""
    formats = known_formats(formats)
    fixed = [f for f in formats if FORMATS[f].fixed_size]
    if fixed and not file_size:
        raise ValueError(f"--format={','.join(fixed)}: the files have a fixed input size; "
                         "give --export_input_size=h,w")
    return formats


def _served_evidence(module: SegmenterServing, evidence: EvidenceOptions, kind: str,
                     prune: bool) -> dict[str, Any]:
    """The metadata of the refit the export serves."""
    return {"evidence": dataclasses.asdict(module.refitter.config) if module.refitter else None,
            "evidence_kind": kind, "evidence_steps": REFIT_KINDS[kind].steps(evidence),
            # Tuned for pruned rows: clients prune after the refit unless told not to,
            # with this strength, the tags given times this confidence (soft evidence).
            "evidence_prune": bool(prune),
            "evidence_prune_strength": evidence.prune_strength,
            "evidence_tag_confidence": evidence.tag_confidence}


def _private_directory(export_path: pathlib.Path) -> pathlib.Path:
    """A new temporary directory beside the export, with the permissions any new folder of
    the user's would have (their umask; mkdtemp's 0700 would hide it from a server
    account)."""
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{export_path.name}.tmp-",
                                        dir=export_path.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)
    return tmp


def _publish(tmp: pathlib.Path, export_path: pathlib.Path) -> None:
    """``tmp`` renamed to ``export_path``; an earlier export there is moved aside first
    and removed only once the new one is in place."""
    old = None
    if export_path.exists():
        old = export_path.with_name(f".{export_path.name}.old-{os.getpid()}")
        os.replace(export_path, old)
    os.replace(tmp, export_path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_checkpoint(options: ExportOptions,
                      printer: Callable[[str], None] = print) -> pathlib.Path:
    """``tools.export_model``: restore a run's network and export it, refitting with the
    run's tuned settings when it has them (the evidence flags given win)."""
    validate_scales(options.inference_scales, "--inference_scales")
    known_formats(options.format)
    _check_quantize(options)
    options = dataclasses.replace(options, checkpoint_dir=checkpoint_dir_or_name(
        options.checkpoint_dir, printer=printer))
    network, info, meta = restore_network(options.checkpoint_dir, options.checkpoint_path)
    alignment = input_alignment(network, meta) if options.align_inputs else None
    kind, evidence, prune = serving_evidence(options.checkpoint_dir, options.evidence,
                                             evidence_given(options),
                                             options.use_tuned_evidence, printer)
    size = options.export_input_size or tuple(meta.get("train_crop_size") or ()) or None
    if (size and alignment is not None and any(FORMATS[f].fixed_size for f in options.format)
            and not alignment.is_aligned(*size)):
        on_grid = alignment.aligned_size(*size)
        raise ValueError(
            f"--export_input_size={size[0]},{size[1]} is off the size grid the model was "
            f"trained on (stride {alignment.stride}, training crop "
            f"{'x'.join(map(str, meta.get('train_crop_size') or []))}): every image would "
            f"reach the file shifted against that grid, which costs accuracy without a word. "
            f"Use {on_grid[0]},{on_grid[1]}, or pass --noalign_inputs to export at this size "
            "anyway")
    calibration = None
    if options.calibration_dataset_dir:
        def calibration() -> Any:
            return calibration_images(info, options.calibration_dataset_dir,
                                      options.calibration_split, options.calibration_examples,
                                      size)
    settings = {name: FORMATS[name].settings(
        options.quantize if options.quantize in FORMATS[name].quantize else "none",
        calibration) for name in options.format}
    tuned = load_tuned(options.checkpoint_dir) if options.use_tuned_evidence else None
    # Where the served refit settings come from, kept with the model they serve.
    tuned_on = None if tuned is None else {
        k: tuned.get(k) for k in ("dataset_dir", "tune_split", "num_images", "objective",
                                  "source")}
    return export_saved_model(network, info, options.export_path, evidence=evidence,
                              inference_scales=options.inference_scales,
                              add_flipped_images=options.add_flipped_images,
                              model_config=meta["model"], alignment=alignment, kind=kind,
                              prune=prune, printer=printer,
                              input_range=input_range(meta), formats=options.format,
                              file_size=size, format_settings=settings,
                              metadata={"evidence_tuned_on": tuned_on})


def _check_quantize(options: ExportOptions) -> None:
    """``--quantize`` is a mode some format takes, and one of ``--format`` takes it."""
    takers = [name for name, fmt in FORMATS.items() if options.quantize in fmt.quantize]
    if not takers:
        modes = dict.fromkeys(m for fmt in FORMATS.values() for m in fmt.quantize)
        raise ValueError(f"--quantize={options.quantize}: choose one of {', '.join(modes)}")
    if not set(takers) & set(options.format):
        raise ValueError(f"--quantize={options.quantize} applies to the {' / '.join(takers)} "
                         f"file: add {' or '.join(takers)} to --format")


def read_export_metadata(export_path: str | os.PathLike) -> dict:
    path = pathlib.Path(export_path) / "assets" / METADATA_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: --saved_model must be a directory written by tools.export_model"
        )
    return json.loads(path.read_text())


# ----------------------------------------------------------------------- clients
class _Segmenter:
    """Input validation and the two calls; subclasses provide ``_call(signature, **kw)``."""

    info: DatasetInfo
    num_tags: int
    default_steps: int  # the refit steps (or early-stopping cap) it was set up with
    prune: bool = False  # its refit settings were tuned for pruned predictions
    prune_strength: float = 1.0  # ... with this strength (soft evidence: < 1 is a prior)
    tag_confidence: float = 1.0  # the tags given are taken this probable
    input_range: dict = {}  # the sizes the model was trained on (train_crop_size, ...)

    def _call(self, name: str, **inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        raise NotImplementedError

    def has(self, name: str) -> bool:
        raise NotImplementedError

    @staticmethod
    def _images(images: Any) -> tf.Tensor:
        arr = np.asarray(images, np.float32)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise ValueError(f"images: expected [B, H, W, 3] or [H, W, 3], got {list(arr.shape)}")
        return tf.constant(arr)

    def predict(self, images: Any) -> dict[str, np.ndarray]:
        out = self._call("serving_default", images=self._images(images))
        return {k: v.numpy() for k, v in out.items()}

    def predict_with_evidence(self, images: Any, tags: Any, steps: int | None = None,
                              steps_name: str = "steps") -> dict[str, np.ndarray]:
        if not self.has("segment_with_evidence"):
            raise ValueError("this model has no tag head, so no segment_with_evidence")
        steps = self.default_steps if steps is None else steps
        x = self._images(images)
        t = validate_evidence(tags, self.num_tags, batch_size=int(x.shape[0]), steps=steps,
                              steps_name=steps_name)
        out = self._call("segment_with_evidence", images=x, tags=tf.constant(t),
                         steps=tf.constant(int(steps), tf.int32))
        return {k: v.numpy() for k, v in out.items()}


class LoadedSegmenter(_Segmenter):
    """Client of an exported SavedModel (``tools.export_model``)."""

    def __init__(self, export_path: str | os.PathLike):
        self.meta = read_export_metadata(export_path)
        self.module = tf.saved_model.load(str(export_path))
        self.info = info_from_dict(self.meta["dataset"])
        self.num_tags = len(self.meta["dataset"]["tag_class_ids"])
        ev = self.meta.get("evidence") or {}
        self.default_steps = int(self.meta.get("evidence_steps", ev.get("steps", 0)))
        self.prune = bool(self.meta.get("evidence_prune", False))
        self.prune_strength = float(self.meta.get("evidence_prune_strength", 1.0))
        self.tag_confidence = float(self.meta.get("evidence_tag_confidence", 1.0))
        self.input_range = dict(self.meta.get("input_range") or {})

    def has(self, name: str) -> bool:
        return name in self.module.signatures

    def _call(self, name: str, **inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return self.module.signatures[name](**inputs)


class CheckpointSegmenter(_Segmenter):
    """A run directory served in-process through the export's serving functions."""

    def __init__(self, checkpoint_dir: str | os.PathLike, evidence: EvidenceOptions | None = None,
                 checkpoint_path: str | None = None, align_inputs: bool = True,
                 explicit: Collection[str] = (), use_tuned: bool = True,
                 printer: Callable[[str], None] = print):
        network, self.info, self.meta = restore_network(checkpoint_dir, checkpoint_path)
        alignment = input_alignment(network, self.meta) if align_inputs else None
        kind, evidence, self.prune = serving_evidence(
            checkpoint_dir, evidence or EvidenceOptions(), explicit, use_tuned, printer)
        self.module = serving_module(network, self.info, evidence, alignment=alignment,
                                     kind=kind)
        self.default_steps = REFIT_KINDS[kind].steps(evidence)
        self.prune_strength, self.tag_confidence = evidence.prune_strength, evidence.tag_confidence
        self.num_tags = self.module.refitter.num_tags if self.module.refitter else 0
        self.input_range = input_range(self.meta)

    def has(self, name: str) -> bool:
        return name in self.module.signatures

    def _call(self, name: str, **inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return self.module.signatures[name](**inputs)


def read_image(path: str | os.PathLike, flag: str = "--image") -> np.ndarray:
    """RGB float32 [H, W, 3] in 0..255, read as the converters read images (a truncated
    JPEG is refused by both); a clear error naming the flag otherwise."""
    from deeplab_ext.data.build_data import BadExampleError, decode_image_file

    try:
        return decode_image_file(path)[0].astype(np.float32)
    except BadExampleError as e:
        raise ValueError(f"{flag}={path}: {e.reason}") from None


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def _check_source(options: PredictOptions) -> None:
    if sum(bool(v) for v in (options.saved_model, options.checkpoint_dir, options.model)) != 1:
        raise ValueError("give exactly one of --saved_model, --checkpoint_dir or --model")


def _open_segmenter(options: PredictOptions, printer: Callable[[str], None]) -> Any:
    """The model ``tools.predict`` was pointed at: a LiteRT / ONNX file, an export or a run."""
    _check_source(options)
    if options.model:
        return FileSegmenter(options.model)
    if options.saved_model:
        return LoadedSegmenter(options.saved_model)
    return CheckpointSegmenter(checkpoint_dir_or_name(options.checkpoint_dir, printer=printer),
                               options.evidence,
                               align_inputs=options.align_inputs,
                               explicit=evidence_given(options),
                               use_tuned=options.use_tuned_evidence, printer=printer)


class _LineProgress:
    """``Progbar.add`` as a line per tenth of the work, for output that is not a terminal."""

    def __init__(self, total: int, printer: Callable[[str], None]):
        self.total, self.done, self.printer = total, 0, printer
        self.every = max(1, total // 10)

    def add(self, n: int) -> None:
        self.done += n
        if self.done % self.every == 0 or self.done == self.total:
            self.printer(f"  {self.done}/{self.total} images")


def predict_folder(options: PredictOptions,
                   printer: Callable[[str], None] = print) -> dict[str, Any]:
    """``tools.predict --image=FOLDER --output=OUT_DIR``: every image of the folder (jpg,
    png, bmp; sorted), plain predictions (the evidence is per image: use one image at a
    time for it), with a progress bar; ``OUT_DIR/<name>.png`` in colour and
    ``OUT_DIR/raw/<name>.png`` as class ids. Nothing already in OUT_DIR is overwritten."""
    folder, out = pathlib.Path(options.image), pathlib.Path(options.output)
    if options.tags:
        raise ValueError("--tags with --image=FOLDER: the evidence is per image; predict "
                         "one image at a time to give its tags")
    if out.suffix.lower() == ".png":
        raise ValueError(f"--output={out}: with --image=FOLDER, --output is the folder to "
                         "write the predictions into")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise ValueError(f"--image={folder}: no {', '.join(IMAGE_SUFFIXES)} images in it")
    targets = [(out / f"{p.stem}.png", out / "raw" / f"{p.stem}.png") for p in images]
    check_distinct(zip(images, (colour for colour, _ in targets), strict=True), "--image")
    existing = [str(t) for pair in targets for t in pair if t.exists()]
    if existing:
        raise ValueError(f"--output={out} already holds {existing[0]}"
                         f"{f' and {len(existing) - 1} more' if len(existing) > 1 else ''}: "
                         "nothing was overwritten; choose a new --output folder")
    seg = _open_segmenter(options, printer)
    (out / "raw").mkdir(parents=True, exist_ok=True)
    # A progress bar on a terminal; redirected output gets plain lines (no escapes).
    bar = (keras.utils.Progbar(len(images), unit_name="image") if sys.stdout.isatty()
           else _LineProgress(len(images), printer))
    classes: set[int] = set()
    for path, (colour, raw) in zip(images, targets, strict=True):
        image = read_image(path)
        full = image.shape[:2]
        size = predict_size(*full, seg.input_range, options.max_resize_value)
        if size is not None:
            image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        pred = _class_map(seg.predict(image)["semantic_probabilities"], full)
        cv2.imwrite(str(colour), label_to_color_image(pred, seg.info.colormap)[..., ::-1])
        cv2.imwrite(str(raw), pred)
        classes.update(int(c) for c in np.unique(pred))
        bar.add(1)
    return {"output": str(out), "images": len(images),
            "classes_predicted": [seg.info.class_names[c] for c in sorted(classes)]}


def predict_image(options: PredictOptions,
                  printer: Callable[[str], None] = print) -> dict[str, Any]:
    """``tools.predict``: segment one image (with its tags as evidence, if given), write
    the colour (and raw) PNG and the side-by-side picture; print the tags before and after
    the refit; return the report printed as JSON. The refit steps are the export's or run's
    own unless --evidence_steps was given (``options.given``). A folder of images
    goes to :func:`predict_folder`."""
    if pathlib.Path(options.image).is_dir():
        return predict_folder(options, printer)
    _check_source(options)
    outputs = _output_paths(options)
    image = read_image(options.image)
    full_size = image.shape[:2]
    steps = options.evidence.steps if "steps" in evidence_given(options) else None
    if steps is not None and steps < 0:
        raise ValueError(f"--evidence_steps must be >= 0, got {steps}")
    seg = _open_segmenter(options, printer)
    image = _resized_for_model(image, options, seg, printer)
    ev = _prediction_evidence(options, seg, printer)
    plain = seg.predict(image)
    out = (seg.predict_with_evidence(image, ev.tags, steps, steps_name="--evidence_steps")
           if ev.refit else plain)
    probs = out["semantic_probabilities"]
    if ev.prune:
        probs = prune_probabilities(probs, ev.tags[None], list(seg.info.tag_class_ids),
                                    seg.info.keep_classes, strength=ev.strength).numpy()
    pred = _class_map(probs, full_size)
    outputs["output"].parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(outputs["output"]), label_to_color_image(pred, seg.info.colormap)[..., ::-1])
    if options.raw_output:
        cv2.imwrite(options.raw_output, pred)
    return _prediction_report(options, outputs, seg, ev, plain, out, pred, steps, printer)


@dataclasses.dataclass(frozen=True)
class _Evidence:
    """What one prediction does with the tags given: refit to them, prune by them (as a
    prior of this strength), or neither."""

    tags: np.ndarray | None
    refit: bool
    prune: bool
    strength: float


def _resized_for_model(image: np.ndarray, options: PredictOptions, seg: Any,
                       printer: Callable[[str], None]) -> np.ndarray:
    """``image`` at the size to predict it at (:func:`predict_size`), saying so."""
    full_size = image.shape[:2]
    size = predict_size(*full_size, seg.input_range, options.max_resize_value)
    if size is None:
        return image
    printer(f"Resizing {options.image} from {full_size[1]}x{full_size[0]} to "
            f"{size[1]}x{size[0]} to predict (the model was trained on "
            f"{'x'.join(map(str, seg.input_range.get('train_crop_size') or []))} crops; "
            "the class map is resized back; --max_resize_value=0 keeps the full size)")
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def _prediction_evidence(options: PredictOptions, seg: Any,
                         printer: Callable[[str], None]) -> _Evidence:
    """The tags given (soft: flags given win over what the export or run was set up with)
    and what to do with them; contradicting flags are refused."""
    explicit = evidence_given(options)
    soft = dataclasses.replace(options.evidence, **{
        f: getattr(options.evidence, f) if f in explicit else getattr(seg, f, 1.0)
        for f in ("prune_strength", "tag_confidence")})
    tags = soft.soft_tags(tags_from_names(options.tags, seg.info)) if options.tags else None
    if options.prune and tags is None:
        raise ValueError("--prune needs --tags")
    if "prune_strength" in explicit and (tags is None or options.prune is False):
        raise ValueError("--evidence_prune_strength sets how far --tags prune: give --tags "
                         "(and drop --noprune)")
    refit = tags is not None and not options.model  # the files carry no refit
    if tags is not None and options.model and options.prune is False:
        raise ValueError("--tags with --model: a LiteRT / ONNX file has no refit, so the "
                         "tags can only prune; drop --noprune, or use --saved_model")
    prune = (options.prune if options.prune is not None
             else tags is not None and (bool(options.model) or seg.prune
                                        or "prune_strength" in explicit))
    if prune and options.prune is None and not options.model and seg.prune:
        printer("Pruning classes absent from --tags after the refit: the refit settings "
                "were tuned for pruned predictions (--noprune turns it off)")
    return _Evidence(tags, refit, prune, soft.prune_strength)


def _class_map(probs: np.ndarray, full_size: Sequence[int]) -> np.ndarray:
    """The class ids of the first image's ``probs``, at the photo's ``full_size``."""
    pred = probs[0].argmax(-1).astype(np.uint8)
    if pred.shape != tuple(full_size):
        pred = cv2.resize(pred, (full_size[1], full_size[0]), interpolation=cv2.INTER_NEAREST)
    return pred


def _prediction_report(options: PredictOptions, outputs: dict[str, pathlib.Path], seg: Any,
                       ev: _Evidence, plain: dict, out: dict, pred: np.ndarray,
                       steps: int | None, printer: Callable[[str], None]) -> dict[str, Any]:
    """``tools.predict``'s report (and its side-by-side picture, its printed tags)."""
    info, tags, strength = seg.info, ev.tags, ev.strength
    report: dict[str, Any] = {"output": str(outputs["output"]), "pruned": bool(ev.prune),
                              "classes_predicted": [info.class_names[c] for c in np.unique(pred)]}
    if tags is not None:
        report["tags_given"] = {info.tag_names[i]: round(float(tags[i]), 4)
                                for i in np.flatnonzero(tags)}
    if ev.prune:
        report["prune_strength"] = strength
    if "side_by_side" in outputs:
        how = ("refitted" if ev.refit else "") + (
            (" + pruned" + (f" (strength {strength:g})" if strength < 1 else "")) if ev.prune
            else "")
        _side_by_side(outputs["side_by_side"], read_image(options.image), info,
                      _class_map(plain["semantic_probabilities"], pred.shape), pred,
                      f"with the tags: {how.strip(' +')}" if tags is not None else None)
        report["side_by_side"] = str(outputs["side_by_side"])
    if ev.refit:
        report["refit_steps"] = seg.default_steps if steps is None else steps
        report["steps_taken"] = int(out["steps_taken"][0])
        report["fell_back"] = bool(out["fell_back"][0]) if "fell_back" in out else False
    if "tag_probabilities" in plain:
        names = list(info.tag_names)
        report["tag_probabilities_before"] = dict(
            zip(names, [round(float(v), 4) for v in plain["tag_probabilities"][0]], strict=True))
        report["tag_probabilities_after"] = dict(
            zip(names, [round(float(v), 4) for v in out["tag_probabilities"][0]], strict=True))
        _print_tags(report, tags, names, ev.refit, printer)
    return report


def _output_paths(options: PredictOptions) -> dict[str, pathlib.Path]:
    """The files one prediction writes, checked: PNG names, none of them the input image
    and no two the same (a photo is never overwritten by its own prediction)."""
    out = {"output": pathlib.Path(options.output)}
    if options.raw_output:
        out["raw_output"] = pathlib.Path(options.raw_output)
    if options.side_by_side != "none":
        out["side_by_side"] = pathlib.Path(
            options.side_by_side or out["output"].with_name(
                f"{out['output'].stem}_side_by_side.png"))
    for flag, path in out.items():
        if path.suffix.lower() != ".png":
            raise ValueError(f"--{flag}={path}: predictions are written as PNG images (class "
                             "ids and colours stay exact); give a file name ending in .png")
    check_outputs({"--image": options.image}, {f"--{k}": v for k, v in out.items()})
    return out


def _side_by_side(path: pathlib.Path, photo: np.ndarray, info: DatasetInfo,
                  plain: np.ndarray, final: np.ndarray, final_title: str | None) -> None:
    """photo | plain prediction | prediction with the evidence, overlaid, with a legend."""
    from deeplab_ext.data import pictures

    photo = photo.astype(np.uint8)
    panels = [("photo", photo),
              ("plain prediction", pictures.overlay(photo, plain, info.colormap,
                                                    ignore_label=info.ignore_label,
                                                    background=info.background_class))]
    if final_title is not None:
        panels.append((final_title, pictures.overlay(photo, final, info.colormap,
                                                     ignore_label=info.ignore_label,
                                                     background=info.background_class)))
    picture = pictures.with_legend(
        pictures.panel_row(panels), {*np.unique(plain), *np.unique(final)}, info.class_names,
        info.colormap, unpainted=(info.background_class, info.ignore_label))
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), picture[..., ::-1])


def _print_tags(report: dict, tags: np.ndarray | None, names: list[str], refit: bool,
                printer: Callable[[str], None]) -> None:
    """The tags a person wants to see: those given, and those the model believes (>= 5%)."""
    before, after = report["tag_probabilities_before"], report["tag_probabilities_after"]
    given = {} if tags is None else {n: float(t) for n, t in zip(names, tags, strict=True) if t > 0}
    shown = [n for n in names if n in given or before[n] >= 0.05 or after[n] >= 0.05]
    printer("tag probabilities" + (" before -> after the refit" if refit else "") + ":")
    for n in shown:
        change = f" -> {after[n]:.2f}" if refit else ""
        note = "" if n not in given else (
            "   (given)" if given[n] == 1 else f"   (given, p={given[n]:.2f})")
        printer(f"  {n:<14} {before[n]:.2f}{change}{note}")
