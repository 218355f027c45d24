"""Inference latency of an imported released model: Keras vs the LiteRT (TFLite) interpreter.

The original's TFLite export of `mobilenetv2_dm05_coco_voc_trainaug` (fixed 257x257 input,
output stride 8) and the same weights imported into the zoo (`tools.import_weights`), on
the same real photo, timed interleaved in one process (`interleaved_times`: every round
runs each side once in a fresh random order); median per image and their ratio.
The Keras side is the compiled forward pass (a `tf.function`), as the SavedModel serves.

    .venv/bin/python -m bench.bench_import_latency --rounds 50
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench.bench_weighting import interleaved_times, median_ratio  # noqa: E402
from deeplab_ext.assets import COCO128_VOC, WEIGHTS  # noqa: E402
from deeplab_ext.models import build_network  # noqa: E402
from deeplab_ext.run.importing import import_original  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
TFLITE = WEIGHTS / "deeplabv3_mnv2_dm05_pascal_257.tflite"
PHOTO = COCO128_VOC / "JPEGImages" / "000000000036.jpg"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--threads", type=int, default=None,
                   help="LiteRT interpreter threads (default: its own choice)")
    args = p.parse_args(argv)
    from ai_edge_litert.interpreter import Interpreter

    image = cv2.resize(cv2.imread(str(PHOTO))[..., ::-1], (257, 257)).astype(np.float32)
    interpreter = Interpreter(model_path=str(TFLITE), num_threads=args.threads)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]

    def litert() -> np.ndarray:
        interpreter.set_tensor(inp, (image / 127.5 - 1.0)[None])
        interpreter.invoke()
        return interpreter.get_tensor(out)

    network = build_network("deeplabv3_mobilenetv2_dm05", output_stride=8,
                            input_shape=(257, 257, 3))
    import_original(network, TFLITE)
    forward = tf.function(lambda x: network(x, training=False)["semantic"])
    x = tf.constant(image[None])

    def keras_fn() -> np.ndarray:
        return forward(x).numpy()

    diff = float(np.abs(litert()[0] - keras_fn()[0]).max())
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    times = interleaved_times({"keras": keras_fn, "litert": litert}, args.rounds, warmup=3)
    med = {k: statistics.median(v) for k, v in times.items()}
    res = {"rounds": args.rounds, "input": [257, 257],
           "median_ms_keras": round(1e3 * med["keras"], 2),
           "median_ms_litert": round(1e3 * med["litert"], 2),
           "ratio_keras_to_litert": round(med["keras"] / med["litert"], 3),
           "median_per_round_ratio": round(median_ratio(times["keras"], times["litert"]), 3),
           "max_abs_logit_diff": diff, "cpu_cores": os.cpu_count(),
           "load_avg_1min_before_after": [round(load0, 2), round(os.getloadavg()[0], 2)],
           "bench_wall_s": round(time.perf_counter() - t0, 1)}
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
