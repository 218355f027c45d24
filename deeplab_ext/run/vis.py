"""Visualising predictions on a split: the library behind `tools.vis` (the original's vis.py).

Same output layout as the original, so scripts written for it keep working:
  VIS_LOGDIR/segmentation_results/%06d_image.png       the input image
  VIS_LOGDIR/segmentation_results/%06d_prediction.png  the prediction, colourised
  VIS_LOGDIR/raw_segmentation_results/<image name>.png  class indices (--also_save_raw_predictions)
  VIS_LOGDIR/segmentation_results/%06d_<task>.png      a dense task's output drawn (the scene
                                                       network's instance offsets, depth)
For Cityscapes the raw predictions are written as official labelIds (the trainId ->
labelId map), which is what the benchmark server expects.
Images are predicted at full size, one at a time, so nothing has to be cropped back.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from deeplab_ext.data import colormap as cmap
from deeplab_ext.run.options import COLORMAP_TYPES, VisOptions

SEMANTIC_PREDICTION_SAVE_FOLDER = "segmentation_results"
RAW_SEMANTIC_PREDICTION_SAVE_FOLDER = "raw_segmentation_results"
IMAGE_FORMAT = "%06d_image"
PREDICTION_FORMAT = "%06d_prediction"


def raw_prediction_for_saving(prediction: np.ndarray, dataset_name: str) -> np.ndarray:
    """The raw label map as written to disk: Cityscapes trainIds become labelIds."""
    prediction = np.asarray(prediction)
    if dataset_name == "cityscapes":
        return cmap.cityscapes_train_id_to_eval_id(prediction)
    if prediction.size and (prediction.min() < 0 or prediction.max() > 255):
        raise ValueError("raw predictions must be class ids in 0..255 to be saved as PNG")
    return prediction.astype(np.uint8)


def save_annotation(label: np.ndarray, save_dir: str | os.PathLike, filename: str,
                    add_colormap: bool = True, colormap_type: str = cmap.PASCAL
                    ) -> pathlib.Path:
    """Write `label` as `save_dir/filename.png` (the original's utils/save_annotation).

    With `add_colormap` a 2-D label map is colourised; otherwise it is written as is
    (an RGB image or a uint8 index map).
    """
    label = np.asarray(label)
    if add_colormap:
        data = cmap.label_to_color_image(label.astype(np.int64), colormap_type)
    else:
        data = label.astype(np.uint8)
    path = pathlib.Path(save_dir) / f"{filename}.png"
    pixels = data[..., ::-1] if data.ndim == 3 else data  # cv2 writes BGR
    if not cv2.imwrite(str(path), np.ascontiguousarray(pixels)):
        raise OSError(f"could not write {path}")
    return path


def _examples(dataset_dir: str | os.PathLike, split: str):
    """(uint8 image [H,W,3], filename) in the converter's order, one pass."""
    import tensorflow as tf

    from deeplab_ext.data.input_pipeline import decode_example, list_shards

    ds = tf.data.TFRecordDataset(list_shards(dataset_dir, split))
    for serialized in ds:
        image, _, name = decode_example(serialized)
        yield image.numpy(), name.numpy().decode("utf-8", "replace")


def _raw_name(filename: str, index: int, used: set[str]) -> str:
    """Raw results are named after the image (as the original); unique, no extension."""
    stem = pathlib.Path(os.path.basename(filename)).stem or IMAGE_FORMAT % index
    name = stem if stem not in used else f"{stem}_{index:06d}"
    used.add(name)
    return name


def visualize(options: VisOptions, printer: Callable[[str], None] = print) -> dict[str, Any]:
    """Predict every image of the split and write images, colour and raw predictions."""
    import tensorflow as tf

    from deeplab_ext.data import input_pipeline
    from deeplab_ext.run.importing import checkpoint_dir_or_name
    from deeplab_ext.run.rundir import restore_network
    from tf_mtl.inference import validate_scales

    scales = validate_scales(options.eval_scales)
    if options.max_number_of_images is not None and options.max_number_of_images < 1:
        raise ValueError(
            f"--max_number_of_images must be >= 1, got {options.max_number_of_images}")
    checkpoint_dir = checkpoint_dir_or_name(options.checkpoint_dir, printer=printer)
    network, info, meta = restore_network(checkpoint_dir, options.checkpoint_path)
    colormap_type = _checked_colormap(options.colormap_type or info.colormap, info)
    # Shards of another dataset (or without a record of theirs) are refused before
    # anything is drawn with the wrong classes.
    input_pipeline.check_shards_match(info, options.dataset_dir, options.vis_split,
                                      num_examples=0, whose="the checkpoint's dataset",
                                      named=options.dataset, require_record=True)
    save_dir, raw_dir = _output_dirs(options, info.name, printer)
    predict, pictures = _predictor(network, meta, options, scales)

    printer(f"Visualising {meta['model']['name']} on {info.name}:{options.vis_split} "
            f"-> {save_dir}")
    written: list[dict[str, str]] = []
    used: set[str] = set()
    for index, (image, filename) in enumerate(_examples(options.dataset_dir, options.vis_split)):
        if options.max_number_of_images is not None and index >= options.max_number_of_images:
            break
        out = predict(tf.constant(image[None], tf.float32))
        written.append(_save_entry(out, image, filename, index, pictures, save_dir, colormap_type,
                                   raw_dir if options.also_save_raw_predictions else None,
                                   info.name, used))
    if not written:
        raise ValueError(f"split {options.vis_split!r} in {options.dataset_dir} is empty")
    printer(f"Wrote {len(written)} images to {save_dir}"
            + (f" and raw predictions to {raw_dir}" if options.also_save_raw_predictions else ""))
    return {"save_dir": str(save_dir), "raw_save_dir": str(raw_dir),
            "colormap_type": colormap_type, "dataset": info.name, "images": written}


def _checked_colormap(colormap_type: str, info: Any) -> str:
    """The colormap, refused before anything is drawn if it is unknown or has fewer colours
    than the dataset has classes."""
    if colormap_type not in COLORMAP_TYPES:
        raise ValueError(
            f"--colormap_type={colormap_type!r}; valid: {', '.join(COLORMAP_TYPES)}")
    num_colours = len(cmap.create_label_colormap(colormap_type))
    if info.num_classes > num_colours:
        raise ValueError(
            f"--colormap_type={colormap_type} has {num_colours} colours, dataset {info.name} "
            f"has {info.num_classes} classes: choose a larger colormap")
    return colormap_type


def _output_dirs(options: VisOptions, dataset_name: str, printer: Callable[[str], None]
                 ) -> tuple[pathlib.Path, pathlib.Path]:
    """(colour results folder, raw results folder), made as the options ask."""
    root = pathlib.Path(options.vis_logdir)
    save_dir = root / SEMANTIC_PREDICTION_SAVE_FOLDER
    raw_dir = root / RAW_SEMANTIC_PREDICTION_SAVE_FOLDER
    save_dir.mkdir(parents=True, exist_ok=True)
    if options.also_save_raw_predictions:
        raw_dir.mkdir(parents=True, exist_ok=True)
    if dataset_name == "cityscapes" and options.also_save_raw_predictions:
        printer("Cityscapes: raw predictions are written as labelIds (trainId -> labelId).")
    return save_dir, raw_dir


def _predictor(network: Any, meta: dict, options: VisOptions, scales: Any
               ) -> tuple[Callable, dict]:
    """(the traced prediction of one image batch, the dense tasks it also draws)."""
    import tensorflow as tf

    from deeplab_ext.models.registry import family_of
    from deeplab_ext.run.rundir import input_alignment
    from deeplab_ext.tasks import task_pictures
    from tf_mtl.inference import InputAlignment, predict_segmentation

    pictures = task_pictures(network, family_of(network))

    def plain(images):
        out = predict_segmentation(network, images, scales, options.add_flipped_images,
                                   key=family_of(network).semantic_output)
        if pictures:
            raw = network(images, training=False)
            out.update({f"picture_{task}": draw(raw[key], None)
                        for task, (key, _, draw) in pictures.items()})
        return out

    alignment = input_alignment(network, meta) if options.align_inputs else InputAlignment()
    return tf.function(alignment.wrap(plain), reduce_retracing=True), pictures


def _save_entry(out: dict, image: np.ndarray, filename: str, index: int, pictures: dict,
                save_dir: pathlib.Path, colormap_type: str, raw_dir: pathlib.Path | None,
                dataset_name: str, used: set[str]) -> dict[str, str]:
    """Writes one image's files (input, colour prediction, task pictures, raw prediction
    where ``raw_dir`` is given) and returns their paths."""
    pred = out["predictions"][0].numpy()
    entry = {
        "image": str(save_annotation(image, save_dir, IMAGE_FORMAT % index,
                                     add_colormap=False)),
        "prediction": str(save_annotation(pred, save_dir, PREDICTION_FORMAT % index,
                                          colormap_type=colormap_type)),
        "filename": filename,
    }
    for task in pictures:
        entry[task] = str(save_annotation(out[f"picture_{task}"][0].numpy(), save_dir,
                                          f"{index:06d}_{task}", add_colormap=False))
    if raw_dir is not None:
        raw = raw_prediction_for_saving(pred, dataset_name)
        entry["raw"] = str(save_annotation(raw, raw_dir, _raw_name(filename, index, used),
                                           add_colormap=False))
    return entry


__all__ = [
    "VisOptions", "visualize", "save_annotation", "raw_prediction_for_saving",
    "SEMANTIC_PREDICTION_SAVE_FOLDER", "RAW_SEMANTIC_PREDICTION_SAVE_FOLDER",
    "IMAGE_FORMAT", "PREDICTION_FORMAT", "COLORMAP_TYPES",
]
