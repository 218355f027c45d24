"""TFLite exports imported by graph structure: stripped tensor names, dynamic-range and
full-integer quantisation.

References are real: the original's width-1.0 MobileNetV2 VOC export (dynamic-range int8,
tensor names stripped, atrous convolutions as SPACE_TO_BATCH_ND wrappers, shipped in deeplab_ext/assets)
run by the LiteRT interpreter on coco128-voc photos, and a full-integer export made here by
the TF converter from the imported dm05 model with a representative set of real photos.
"""

from __future__ import annotations

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_ext.models import build_network
from tests.conftest import DM05, MNV2_DR
from tf_mtl.metrics import image_iou_counts, miou_from_counts

DR = MNV2_DR
SIZE = 513  # the width-1.0 export's fixed input; its output is the stride-8 logits, 65x65
# Measured on 6 val photos: at most 0.27 on logits of magnitude ~25. The interpreter's
# hybrid kernels quantise activations on the fly; the import computes in float with the
# dequantised weights, so they cannot agree to float precision.
DR_LOGIT_ATOL = 0.5


def _photos(real_data, split: str, count: int, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from deeplab_ext.data.build_data import read_label_indices

    voc = real_data / "coco128-voc"
    names = (voc / f"ImageSets/Segmentation/{split}.txt").read_text().split()[:count]
    out = []
    for name in names:
        image = cv2.imread(str(voc / "JPEGImages" / f"{name}.jpg"))[..., ::-1]
        label = read_label_indices(voc / "SegmentationClass" / f"{name}.png")[0]
        out.append((cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
                    .astype(np.float32),
                    cv2.resize(label, (size, size), interpolation=cv2.INTER_NEAREST)))
    return out


def _interpret(path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]["index"]
    results = []
    for x in inputs:
        interpreter.set_tensor(inp["index"], x[None].astype(inp["dtype"]))
        interpreter.invoke()
        results.append(np.array(interpreter.get_tensor(out)[0]))
    return results


def _miou(logits: list[np.ndarray], labels: list[np.ndarray]) -> float:
    """Logits resized bilinearly to the label size, then argmax (the README's protocol)."""
    counts = []
    for lg, label in zip(logits, labels, strict=True):
        up = tf.image.resize(lg[None], label.shape, method="bilinear")[0].numpy()
        counts.append(image_iou_counts(label, up.argmax(-1), 21, 255))
    return float(miou_from_counts(np.sum(counts, axis=0)))


def test_width_1_export_with_stripped_names_imports_by_structure(real_data):
    from deeplab_ext.run.importing import TFLITE_STRUCTURE, import_original

    network = build_network("deeplabv3_mobilenetv2", output_stride=8,
                            input_shape=(SIZE, SIZE, 3))
    report, folded = import_original(network, DR)
    assert folded and report.format == TFLITE_STRUCTURE
    assert len(report.loaded) == len(network.weights) == 272
    assert not report.missing and not report.skipped and not report.unused
    photos = _photos(real_data, "val", 6, SIZE)
    reference = _interpret(DR, [image / 127.5 - 1.0 for image, _ in photos])
    logits_model = keras.Model(network.input, network.get_layer("logits").output)
    ours = [logits_model(image[None], training=False).numpy()[0] for image, _ in photos]
    agree = total = 0
    for got, ref in zip(ours, reference, strict=True):
        assert got.shape == ref.shape == (65, 65, 21)
        np.testing.assert_allclose(got, ref, rtol=0, atol=DR_LOGIT_ATOL)
        agree += int((got.argmax(-1) == ref.argmax(-1)).sum())
        total += ref.shape[0] * ref.shape[1]
    assert agree / total >= 0.995, agree / total
    labels = [label for _, label in photos]
    theirs = _miou(reference, labels)
    assert theirs > 0.3  # the released model sees these photos
    assert abs(_miou(ours, labels) - theirs) <= 0.003  # within 0.3 points


def test_structure_gives_the_names_weights_on_a_named_export():
    """On the dm05 export, whose tensors keep the original's names, matching by structure
    reads exactly the tensors the names read."""
    from deeplab_ext.models import family_of
    from tf_mtl.released import (
        expected_scopes,
        structural_entries,
        tflite_entries,
        tflite_weight_ops,
    )

    network = build_network("deeplabv3_mobilenetv2_dm05")
    family = family_of(network)
    expected = expected_scopes(network, family.original_names(network),
                               family.original_pooled_scopes)
    assert [s for s, *_ in expected if s in ("image_pooling", "aspp0")] == [
        "image_pooling", "aspp0"] and [p for s, _, _, p in expected if s == "image_pooling"]
    by_name, by_structure = tflite_entries(DM05), structural_entries(tflite_weight_ops(DM05),
                                                                     expected)
    assert not [k for k in by_structure if k.startswith("<unmatched")]
    compared = 0
    for scope, kind, _, _ in expected:
        leaf = "depthwise_weights" if kind == "depthwise" else "weights"
        for name in (f"{scope}/{leaf}", f"{scope}/biases", f"{scope}/BatchNorm/beta"):
            np.testing.assert_array_equal(by_structure[name][1](), by_name[name][1]())
            compared += 1
    assert compared == 3 * len(expected) == 3 * 55


@pytest.fixture(scope="module")
def full_integer(real_data, tmp_path_factory):
    """The imported dm05 model at 129x129, converted by the TF converter to a full-integer
    TFLite file (uint8 input, int8 weights with per-axis scales, int32 biases), calibrated
    on 8 real photos."""
    from deeplab_ext.run.importing import import_original

    size = 129
    network = build_network("deeplabv3_mobilenetv2_dm05", input_shape=(size, size, 3))
    import_original(network, DM05)
    calibration = [image for image, _ in _photos(real_data, "train", 8, size)]
    seg = keras.Model(network.input, network.output["semantic"])
    converter = tf.lite.TFLiteConverter.from_keras_model(seg)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([image[None]] for image in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    path = tmp_path_factory.mktemp("int8") / "dm05_int8.tflite"
    path.write_bytes(converter.convert())
    return path, network, size


def test_full_integer_export_imports_dequantised(full_integer, real_data):
    from deeplab_ext.run.importing import TFLITE_STRUCTURE, import_original
    from tf_mtl.released import tflite_weight_ops

    path, source, size = full_integer
    ops = tflite_weight_ops(path)
    assert len(ops) == 55 and all(op.quantized for op in ops)
    network = build_network("deeplabv3_mobilenetv2_dm05", input_shape=(size, size, 3))
    report, folded = import_original(network, path)
    assert folded and report.format == TFLITE_STRUCTURE and len(report.loaded) == 272
    # Per-axis int8 weights come back within a quantisation step of the float ones.
    got = network.get_layer("logits").kernel.numpy()
    want = source.get_layer("logits").kernel.numpy()
    step = np.abs(want).max(axis=(0, 1, 2)) / 127
    assert np.all(np.abs(got - want) <= step[None, None, None] * 0.51 + 1e-7)
    photos = [image for image, _ in _photos(real_data, "val", 12, size)]
    reference = _interpret(path, photos)  # raw uint8 RGB in, float logits out

    def agreement(net) -> float:
        return float(np.mean([
            (net(image[None], training=False)["semantic"].numpy()[0].argmax(-1)
             == ref.argmax(-1)).mean() for image, ref in zip(photos, reference, strict=True)]))

    imported, original = agreement(network), agreement(source)
    print(f"argmax agreement with the int8 interpreter: import {imported:.4f}, "
          f"float source {original:.4f}")
    # Stated and asserted (measured: import 0.985, float source 0.976 on these 12 photos;
    # 0.698 while the import missed the offset this converter leaves as a bare ADD after
    # an atrous depthwise conv's BATCH_TO_SPACE_ND):
    # what differs is the interpreter's int8 arithmetic, which the dequantised import
    # follows at least as closely as the float model it was converted from.
    assert imported >= 0.95
    assert imported >= original - 0.005
