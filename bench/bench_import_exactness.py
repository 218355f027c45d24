"""The released TFLite models vs their imports on all 97 coco128-voc photos.

Each photo stretched to the export's input (257 for dm05, 513 for the width-1.0 model),
the LiteRT interpreter's logits and the imported Keras model's (at the export's output
stride 8, the same tensor: the stride-8 logits for the width-1.0 export, the upsampled
ones for dm05) resized bilinearly to the label, argmax, mIoU over all photos; the pixel
agreement of the two argmaxes and the largest logit difference.

    .venv/bin/python -m bench.bench_import_exactness
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from deeplab_ext.assets import COCO128_VOC, WEIGHTS  # noqa: E402
from deeplab_ext.data.build_data import read_label_indices  # noqa: E402
from deeplab_ext.models import build_network  # noqa: E402
from deeplab_ext.run.importing import import_original  # noqa: E402
from tf_mtl.metrics import image_iou_counts, miou_from_counts  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
MODELS = {  # file, variant, input size, the Keras tensor the export outputs
    "dm05": ("deeplabv3_mnv2_dm05_pascal_257.tflite", "deeplabv3_mobilenetv2_dm05", 257,
             "semantic"),
    "width_1.0": ("deeplabv3_mnv2_pascal_513_dr.tflite", "deeplabv3_mobilenetv2", 513,
                  "logits"),
}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--max_images", type=int, default=None)
    args = p.parse_args(argv)
    from ai_edge_litert.interpreter import Interpreter

    voc = COCO128_VOC
    names = (voc / "ImageSets/Segmentation/trainval.txt").read_text().split()[:args.max_images]
    out = {}
    for key in args.models.split(","):
        file, variant, size, tensor = MODELS[key]
        network = build_network(variant, output_stride=8, input_shape=(size, size, 3))
        report, _ = import_original(network, WEIGHTS / file)
        keras_fn = tf.function(keras.Model(
            network.input, network.output["semantic"] if tensor == "semantic"
            else network.get_layer(tensor).output))
        interpreter = Interpreter(model_path=str(WEIGHTS / file))
        interpreter.allocate_tensors()
        inp = interpreter.get_input_details()[0]["index"]
        outp = interpreter.get_output_details()[0]["index"]
        counts = {"litert": [], "keras": []}
        agree = total = 0
        max_diff = 0.0
        for name in names:
            image = cv2.imread(str(voc / "JPEGImages" / f"{name}.jpg"))[..., ::-1]
            label = read_label_indices(voc / "SegmentationClass" / f"{name}.png")[0]
            x = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR).astype(np.float32)
            interpreter.set_tensor(inp, (x / 127.5 - 1.0)[None])
            interpreter.invoke()
            logits = {"litert": np.array(interpreter.get_tensor(outp)),
                      "keras": keras_fn(x[None]).numpy()}
            max_diff = max(max_diff, float(np.abs(logits["litert"] - logits["keras"]).max()))
            preds = {}
            for side, lg in logits.items():
                up = tf.image.resize(lg, label.shape, method="bilinear")[0].numpy()
                preds[side] = up.argmax(-1)
                counts[side].append(image_iou_counts(label, preds[side], 21, 255))
            agree += int((preds["litert"] == preds["keras"]).sum())
            total += label.size
        row = {"images": len(names), "format": report.format,
               "miou_litert": float(miou_from_counts(np.sum(counts["litert"], 0))),
               "miou_keras": float(miou_from_counts(np.sum(counts["keras"], 0))),
               "argmax_agreement": agree / total, "max_logit_difference": max_diff}
        row["miou_difference_points"] = 100 * (row["miou_keras"] - row["miou_litert"])
        out[key] = row
        print(f"{key}: {json.dumps(row)}", flush=True)
    return out


if __name__ == "__main__":
    main()
