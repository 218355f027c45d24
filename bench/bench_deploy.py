"""Deployed files against the Keras model (issue 32): mIoU on a split, pixel agreement
with the Keras model, size on disk and latency per image, side by side in one run.

For a run directory (e.g. a released model imported with ``tools.import_weights``), the
files of ``tools.export_model --format=litert,onnx`` (float) and the LiteRT file under each
``--quantize`` (int8 calibrated on ``--calibration_split``) are written once into
``--workdir``; then every image of the split is letterboxed into the files' fixed size
(``deeplab_ext.run.deploy.letterbox``; the Keras model gets the same input) and predicted
by each (and by the SavedModel's serving function reading variables instead of its constant
weights, ``saved_model_variables``, and on constants without BatchNorm folded,
``saved_model_constants_unfolded``: what each step of ``tf_mtl.serving_graph`` buys), the probabilities resized back to the image (bilinear) and
scored as
``tools.eval`` scores (ignore label masked). Latency: interleaved rounds over the same
images, median per image::

    .venv/bin/python -m bench.bench_deploy --checkpoint_dir=RUN --dataset_dir=SHARDS \\
        --split=val --workdir=/tmp/deploy [--size=257,257] [--calibration_split=train] \\
        [--released=deeplab_ext/assets/released-weights/deeplabv3_mnv2_dm05_pascal_257.tflite] \\
        [--profile_dir=/tmp/deploy_profile]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def _export(run: str, out: pathlib.Path, formats: str, size: str, quantize: str,
            shards: str, calibration_split: str) -> pathlib.Path:
    from deeplab_ext.run.export import export_checkpoint
    from deeplab_ext.run.options import ExportOptions

    if not (out / "assets").is_dir():
        export_checkpoint(ExportOptions(
            checkpoint_dir=run, export_path=str(out), format=tuple(formats.split(",")),
            export_input_size=tuple(int(v) for v in size.split(",")), quantize=quantize,
            calibration_dataset_dir=shards, calibration_split=calibration_split),
            printer=lambda s: None)
    return out


def _released_runner(path: str):
    """The released file under the LiteRT interpreter: letterboxed input scaled to
    [-1, 1], its logits softmaxed, resized to the input if smaller, then back."""
    from ai_edge_litert.interpreter import Interpreter

    from deeplab_ext.run.deploy import letterbox, unletterbox

    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    size = tuple(int(d) for d in inp["shape"][1:3])

    def run(image: np.ndarray) -> np.ndarray:
        x, region = letterbox(image, size)
        interpreter.set_tensor(inp["index"], (x / 127.5 - 1.0)[None].astype(np.float32))
        interpreter.invoke()
        logits = interpreter.get_tensor(out["index"])[0]
        if logits.shape[:2] != size:
            import cv2

            logits = cv2.resize(logits, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        e = np.exp(logits - logits.max(-1, keepdims=True))
        return unletterbox(e / e.sum(-1, keepdims=True), region, image.shape[:2])

    return run


def main(argv: list[str] | None = None) -> dict:
    import tensorflow as tf

    from deeplab_ext.data import input_pipeline
    from deeplab_ext.run.deploy import FileSegmenter, letterbox, unletterbox
    from deeplab_ext.run.export import LoadedSegmenter
    from deeplab_ext.run.rundir import restore_network
    from tf_mtl.metrics import image_iou_counts, miou_from_counts

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint_dir", required=True)
    p.add_argument("--dataset_dir", required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--calibration_split", default="train")
    p.add_argument("--workdir", required=True)
    p.add_argument("--size", default="257,257")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--profile_dir", default=None,
                   help="also trace the SavedModel on 8 photos with the TF profiler and print "
                        "its op table (where the serving time goes)")
    p.add_argument("--released", default=None,
                   help="the released TFLite file the run was imported from (its input "
                        "rgb / 127.5 - 1, output logits), run by the same interpreter")
    args = p.parse_args(argv)
    work = pathlib.Path(args.workdir)
    export = _export(args.checkpoint_dir, work / "float", "saved_model,litert,onnx", args.size,
                     "none", args.dataset_dir, args.calibration_split)
    files = {"litert_float32": export / "model.tflite", "onnx_float32": export / "model.onnx"}
    for q in ("dynamic_range", "float16", "int8"):
        files[f"litert_{q}"] = _export(args.checkpoint_dir, work / q, "litert", args.size, q,
                                       args.dataset_dir, args.calibration_split) / "model.tflite"
    network, info, meta = restore_network(args.checkpoint_dir)
    size = tuple(int(v) for v in args.size.split(","))
    keras_fn = tf.function(lambda x: tf.nn.softmax(network(x, training=False)["semantic"]))

    def letterboxed(probabilities: Callable[[np.ndarray], Any]) -> Callable[[np.ndarray], Any]:
        """A runner: the image letterboxed (as the file client feeds its files), the batch's
        probabilities ``probabilities(x[None])`` of its region resized back."""
        def run(image: np.ndarray) -> np.ndarray:
            x, region = letterbox(image, size)
            probs = np.asarray(probabilities(x[None]))[0]
            return unletterbox(probs, region, image.shape[:2])
        return run

    saved = LoadedSegmenter(export)
    # The same serving function reading the variables (as exports were before
    # tf_mtl.serving_graph), and on constants without BatchNorm folded: what each step buys.
    from deeplab_ext.run.export import serving_module
    from deeplab_ext.run.options import EvidenceOptions
    from deeplab_ext.run.rundir import input_alignment
    from tf_mtl.serving_graph import with_constant_weights

    module = serving_module(network, info, EvidenceOptions(),
                            alignment=input_alignment(network, meta))
    unfolded = with_constant_weights(module.serve, fold=False)
    runners = {
        "keras": letterboxed(lambda x: keras_fn(tf.constant(x))),
        "saved_model": letterboxed(lambda x: saved.predict(x[0])["semantic_probabilities"]),
        "saved_model_variables": letterboxed(
            lambda x: module.serve(tf.constant(x))["semantic_probabilities"]),
        "saved_model_constants_unfolded": letterboxed(
            lambda x: unfolded(tf.constant(x))["semantic_probabilities"]),
    }
    if args.released:
        runners["released_tflite"] = _released_runner(args.released)
        files["released_tflite"] = pathlib.Path(args.released)
    for name, path in files.items():
        if name == "released_tflite":
            continue
        seg = FileSegmenter(path)
        runners[name] = lambda image, seg=seg: seg.predict(image)["semantic_probabilities"][0]
    ds = input_pipeline.make_dataset(info, args.dataset_dir, args.split, crop_size=None,
                                     batch_size=1, is_training=False)
    examples = [(x[0].numpy(), t["semantic"][0].numpy()) for x, t in ds]
    counts = {k: [] for k in runners}
    agree = {k: [] for k in runners}
    for image, label in examples:
        ref = runners["keras"](image).argmax(-1)
        for name, run in runners.items():
            pred = run(image).argmax(-1)
            counts[name].append(image_iou_counts(label, pred, info.num_classes,
                                                 info.ignore_label))
            agree[name].append(float(np.mean(pred == ref)))
    times = {k: [] for k in runners}
    for _ in range(args.rounds):  # interleaved: every runner sees the same load
        for name, run in runners.items():
            for image, _ in examples[:8]:
                t0 = time.perf_counter()
                run(image)
                times[name].append(time.perf_counter() - t0)
    profile = None
    if args.profile_dir:
        from bench.bench_flops import op_table

        tf.profiler.experimental.start(args.profile_dir)
        for image, _ in examples[:8]:
            runners["saved_model"](image)
        tf.profiler.experimental.stop()
        profile = [{"op": op, "ms": round(ms, 1), "percent": round(pc, 1)}
                   for op, ms, pc in op_table(args.profile_dir, top=12)]
    rows = {}
    for name in runners:
        miou = float(miou_from_counts(np.sum(counts[name], axis=0)))
        rows[name] = {
            "miou": round(100 * miou, 2),
            "pixel_agreement_with_keras": round(100 * float(np.mean(agree[name])), 3),
            "ms_per_image": round(1e3 * statistics.median(times[name]), 1),
            "bytes": files[name].stat().st_size if name in files else None}
    rows["saved_model"]["bytes"] = sum(  # saved_model.pb (constant weights) + variables
        f.stat().st_size for f in export.rglob("*") if f.is_file()
        and f.name not in ("model.tflite", "model.onnx") and "assets" not in f.parts)
    base = rows["litert_float32"]["miou"]
    for row in rows.values():
        row["miou_minus_litert_float32"] = round(row["miou"] - base, 2)
    result = {"checkpoint_dir": args.checkpoint_dir, "split": args.split,
              "images": len(examples), "size": list(size), "rows": rows}
    if profile:
        result["saved_model_op_table_8_photos"] = profile
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
