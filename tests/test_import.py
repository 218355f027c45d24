"""Importing the original DeepLab's released weights (tools.import_weights).

The reference is real: the original's own TFLite export of `mobilenetv2_dm05_coco_voc_
trainaug` (shipped in deeplab_ext/assets), run by the LiteRT interpreter on real photos of
coco128-voc. TF1 checkpoints of the other released backbones are generated here under
the names the original's code gives its variables, written independently of the
importer's name map (from the original's scope structure, see each generator).
"""

from __future__ import annotations

import json
import pathlib

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_ext.models import build_network
from tests.conftest import DM05
from tf_mtl.metrics import image_iou_counts, miou_from_counts

TFLITE = DM05
SIZE = 257  # the export's fixed input size
LOGIT_ATOL = 1e-3  # measured: at most 8e-5 on logits of magnitude ~30


@pytest.fixture(scope="module")
def photos(real_data) -> list[tuple[np.ndarray, np.ndarray]]:
    """Six real photos and their VOC labels, resized to the export's 257x257 (bilinear /
    nearest): the preprocessing both sides share."""
    from deeplab_ext.data.build_data import read_label_indices

    voc = real_data / "coco128-voc"
    names = (voc / "ImageSets/Segmentation/val.txt").read_text().split()[:6]
    out = []
    for name in names:
        image = cv2.imread(str(voc / "JPEGImages" / f"{name}.jpg"))[..., ::-1]
        label = read_label_indices(voc / "SegmentationClass" / f"{name}.png")[0]  # palette
        out.append((cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
                    .astype(np.float32),
                    cv2.resize(label, (SIZE, SIZE), interpolation=cv2.INTER_NEAREST)))
    return out


@pytest.fixture(scope="module")
def reference(photos) -> list[np.ndarray]:
    """The TFLite export's logits: input rgb / 127.5 - 1, output [257, 257, 21]."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(TFLITE))
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]
    logits = []
    for image, _ in photos:
        interpreter.set_tensor(inp, (image / 127.5 - 1.0)[None])
        interpreter.invoke()
        logits.append(np.array(interpreter.get_tensor(out)[0]))
    return logits


def _miou(predictions, photos) -> float:
    counts = [image_iou_counts(label, pred, 21, 255)
              for pred, (_, label) in zip(predictions, photos, strict=True)]
    return float(miou_from_counts(np.sum(counts, axis=0)))


def _compare(network, photos, reference) -> None:
    agree = total = 0
    for (image, _), ref in zip(photos, reference, strict=True):
        got = network(image[None], training=False)["semantic"].numpy()[0]
        np.testing.assert_allclose(got, ref, rtol=0, atol=LOGIT_ATOL)
        agree += int((got.argmax(-1) == ref.argmax(-1)).sum())
        total += ref.shape[0] * ref.shape[1]
    assert agree / total >= 0.999, agree / total
    ours = _miou([network(i[None], training=False)["semantic"].numpy()[0].argmax(-1)
                  for i, _ in photos], photos)
    theirs = _miou([r.argmax(-1) for r in reference], photos)
    assert ours == pytest.approx(theirs, abs=1e-4)  # the same mIoU, same preprocessing
    assert theirs > 0.3  # the released model sees these photos (not a blank prediction)


def test_tflite_import_computes_the_released_model(photos, reference):
    from deeplab_ext.run.importing import import_original

    network = build_network("deeplabv3_mobilenetv2_dm05", output_stride=8,
                            input_shape=(SIZE, SIZE, 3))
    report, folded = import_original(network, TFLITE)
    assert folded and report.format == "tflite"
    assert len(report.loaded) == len(network.weights) == 272
    assert not report.missing and not report.skipped and not report.unused
    _compare(network, photos, reference)


def _tf1_from_tflite(prefix: pathlib.Path, head_eps: float, backbone_eps: float) -> None:
    """A TF1 checkpoint of the released model written from the TFLite file's own tensors
    (names as the file has them; kernels to [h, w, in, out]; each folded bias turned into
    an unfolded BatchNorm that computes the same: gamma 1, beta bias, mean 0, var 1 - eps)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(TFLITE))
    interpreter.allocate_tensors()
    arrays = {}
    for d in interpreter.get_tensor_details():
        name = d["name"]
        if not name.endswith(("weights", "Conv2D_bias", "depthwise_bias")):
            continue  # activations: no data before a run
        value = np.array(interpreter.get_tensor(d["index"]))
        if name.endswith("weights"):
            arrays[name] = np.transpose(value, (1, 2, 3, 0))
        else:
            scope = name.rsplit("/", 1)[0]
            if scope == "logits/semantic":
                arrays["logits/semantic/biases"] = value
                continue
            eps = backbone_eps if scope.startswith("MobilenetV2") else head_eps
            arrays[f"{scope}/BatchNorm/gamma"] = np.ones_like(value)
            arrays[f"{scope}/BatchNorm/beta"] = value
            arrays[f"{scope}/BatchNorm/moving_mean"] = np.zeros_like(value)
            arrays[f"{scope}/BatchNorm/moving_variance"] = np.full_like(value, 1.0 - eps)
    _write_tf1(prefix, arrays)


def _write_tf1(prefix: pathlib.Path, arrays: dict[str, np.ndarray]) -> None:
    """A name-based (TF1) checkpoint, as the original's tf.train.Saver wrote them."""
    names = sorted(arrays)
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=names,
                      shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(arrays[n]) for n in names])


def test_tf1_checkpoint_of_the_released_model_imports(photos, reference, tmp_path):
    from deeplab_ext.run.importing import import_original, source_format

    network = build_network("deeplabv3_mobilenetv2_dm05", output_stride=8,
                            input_shape=(SIZE, SIZE, 3))
    prefix = tmp_path / "model.ckpt-30000"
    _tf1_from_tflite(prefix, head_eps=network.model_config.bn_epsilon, backbone_eps=1e-3)
    assert source_format(prefix) == "tf1_checkpoint"
    report, folded = import_original(network, prefix)
    assert not folded and len(report.loaded) == 272
    assert not report.missing and not report.skipped and not report.unused
    _compare(network, photos, reference)  # the released model's function, unfolded


# The original's scopes (tensorflow/models research/deeplab: xception.py, resnet_v1_beta.py,
# model.py, utils.split_separable_conv2d), spelled out here, not taken from the importer.
def _bn(scope: str) -> list[str]:
    return [f"{scope}/BatchNorm/{v}" for v in ("gamma", "beta", "moving_mean", "moving_variance")]


def _conv(scope: str) -> list[str]:
    return [f"{scope}/weights", *_bn(scope)]


def _separable(scope: str) -> list[str]:
    return [f"{scope}_depthwise/depthwise_weights", *_bn(f"{scope}_depthwise"),
            *_conv(f"{scope}_pointwise")]


def _heads(rates: int) -> list[str]:
    names = _conv("image_pooling") + _conv("aspp0") + _conv("concat_projection")
    for i in range(1, rates + 1):
        names += _separable(f"aspp{i}")
    names += _conv("decoder/feature_projection0") + _separable("decoder/decoder_conv0")
    names += _separable("decoder/decoder_conv1")
    return names + ["logits/semantic/weights", "logits/semantic/biases"]


def _xception_65_names() -> list[str]:
    top = "xception_65"
    names = _conv(f"{top}/entry_flow/conv1_1") + _conv(f"{top}/entry_flow/conv1_2")
    blocks = [("entry_flow", 1, 1, True), ("entry_flow", 2, 1, True), ("entry_flow", 3, 1, True),
              ("middle_flow", 1, 16, False), ("exit_flow", 1, 1, True), ("exit_flow", 2, 1, False)]
    for flow, block, units, shortcut in blocks:
        for unit in range(1, units + 1):
            module = f"{top}/{flow}/block{block}/unit_{unit}/xception_module"
            for k in (1, 2, 3):
                names += _separable(f"{module}/separable_conv{k}")
            if shortcut:
                names += _conv(f"{module}/shortcut")
    return names


def _resnet_names(depth: int, units: tuple[int, ...]) -> list[str]:
    top = f"resnet_v1_{depth}"
    names = _conv(f"{top}/conv1_1") + _conv(f"{top}/conv1_2") + _conv(f"{top}/conv1_3")
    for block, n in enumerate(units, start=1):
        for unit in range(1, n + 1):
            scope = f"{top}/block{block}/unit_{unit}/bottleneck_v1"
            for part in ("conv1", "conv2", "conv3"):
                names += _conv(f"{scope}/{part}")
            if unit == 1:
                names += _conv(f"{scope}/shortcut")
    return names


# The first blocks computed by hand with the reference's facts (REFERENCE.md; the
# original's xception.py, resnet_v1_beta.py, resnet_utils.py): inputs scaled to [-1, 1]
# (xception) or the mean RGB subtracted (resnet); conv2d_same (stride 2: explicit zero
# padding, VALID; stride 1: SAME); BatchNorm with the backbone's eps (1e-3 / 1e-5).
# Xception's entry block 1: three (ReLU, depthwise + BN, pointwise + BN) with stride 2 on
# the third, plus a 1x1 stride-2 conv + BN shortcut, summed. ResNet-beta: three 3x3
# stem convs, a 3x3 stride-2 SAME max pool, then bottleneck unit 1 (stride 1: 1x1, 3x3,
# 1x1 with BN, ReLU after the first two, a 1x1 + BN shortcut, ReLU of the sum).
class _ByHand:
    def __init__(self, arrays: dict, top: str, eps: float):
        self.a, self.top, self.eps = arrays, top, eps

    def bn(self, x, scope):
        g, b, m, v = (self.a[f"{self.top}/{scope}/BatchNorm/{k}"]
                      for k in ("gamma", "beta", "moving_mean", "moving_variance"))
        return g * (x - m) / np.sqrt(v + self.eps) + b

    @staticmethod
    def _same(x, stride, size=3):
        if stride == 1:
            return x, "SAME"
        lo = (size - 1) // 2
        return tf.pad(x, [[0, 0], [lo, size - 1 - lo], [lo, size - 1 - lo], [0, 0]]), "VALID"

    def conv(self, x, scope, stride=1, relu=True):
        w = self.a[f"{self.top}/{scope}/weights"]
        x, pad = self._same(x, stride, w.shape[0])
        x = self.bn(tf.nn.conv2d(x, w, stride, pad), scope)
        return tf.nn.relu(x) if relu else x

    def separable(self, x, scope, stride=1):
        w = self.a[f"{self.top}/{scope}_depthwise/depthwise_weights"]
        x, pad = self._same(tf.nn.relu(x), stride)
        x = self.bn(tf.nn.depthwise_conv2d(x, w, [1, stride, stride, 1], pad),
                    f"{scope}_depthwise")
        return self.conv(x, f"{scope}_pointwise", relu=False)


def _xception_by_hand(image, arrays):
    h = _ByHand(arrays, "xception_65", 1e-3)
    x = tf.constant(image / 127.5 - 1.0, tf.float32)
    x = h.conv(h.conv(x, "entry_flow/conv1_1", 2), "entry_flow/conv1_2")
    unit = "entry_flow/block1/unit_1/xception_module"
    r = h.separable(x, f"{unit}/separable_conv1")
    r = h.separable(r, f"{unit}/separable_conv2")
    r = h.separable(r, f"{unit}/separable_conv3", stride=2)
    return (r + h.conv(x, f"{unit}/shortcut", 2, relu=False)).numpy()


def _resnet_by_hand(image, arrays):
    h = _ByHand(arrays, "resnet_v1_50", 1e-5)
    x = tf.constant(image - np.array([123.15, 115.90, 103.06], np.float32), tf.float32)
    x = h.conv(h.conv(h.conv(x, "conv1_1", 2), "conv1_2"), "conv1_3")
    x = tf.nn.max_pool2d(x, 3, 2, "SAME")
    unit = "block1/unit_1/bottleneck_v1"
    r = h.conv(h.conv(h.conv(x, f"{unit}/conv1"), f"{unit}/conv2"), f"{unit}/conv3",
               relu=False)
    return tf.nn.relu(r + h.conv(x, f"{unit}/shortcut", relu=False)).numpy()


BY_HAND = {"deeplabv3plus_xception65": ("backbone_entry_flow_block1_unit1_add",
                                        _xception_by_hand),
           "deeplabv3plus_resnet50": ("backbone_block1_unit1_relu", _resnet_by_hand)}


@pytest.mark.parametrize("variant,names", [
    ("deeplabv3plus_xception65", _xception_65_names() + _heads(3)),
    ("deeplabv3plus_resnet50", _resnet_names(50, (3, 4, 6, 3)) + _heads(3)),
])
def test_tf1_checkpoint_with_the_original_names_imports_into_each_backbone(
        variant, names, tmp_path):
    from deeplab_ext.run.importing import import_original

    network = build_network(variant, num_classes=21, input_shape=(33, 33, 3))
    by_name = {}
    shapes = {v.path: tuple(v.shape) for v in network.weights}
    from deeplab_ext.models.registry import family_of

    expected = family_of(network).original_names(network)
    rng = np.random.default_rng(0)
    assert sorted(n for n in expected.values() if n) == sorted(names)  # the same name set
    for path, name in expected.items():  # distinct arrays of a sane scale: a finite pass
        shape = shapes[path]
        scale = 1.0 / np.sqrt(np.prod(shape[:-1])) if len(shape) > 1 else 0.1
        base = 1.0 if name.endswith(("gamma", "moving_variance")) else 0.0
        by_name[name] = (base + scale * rng.standard_normal(shape)).astype(np.float32)
        if name.endswith("moving_variance"):
            by_name[name] = np.abs(by_name[name])
    _write_tf1(tmp_path / "model.ckpt-1", by_name)
    report, _ = import_original(network, tmp_path / "model.ckpt-1")
    assert not report.missing and not report.unused and not report.skipped
    for v in network.weights:  # every array landed in the variable of its name
        np.testing.assert_array_equal(v.numpy(), by_name[expected[v.path]])
    out = network(np.full((1, 33, 33, 3), 128.0, np.float32), training=False)["semantic"]
    assert np.isfinite(out.numpy()).all()
    # A forward pass computed from the same arrays: the first blocks, by hand (BY_HAND).
    image = rng.uniform(0, 255, (1, 33, 33, 3)).astype(np.float32)
    layer, by_hand = BY_HAND[variant]
    first = keras.Model(network.inputs, network.get_layer(layer).output)
    want = by_hand(image, by_name)
    got = first(image, training=False).numpy()
    assert got.shape == want.shape == (1, 9, 9, want.shape[-1])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_import_tool_writes_a_run_directory_every_tool_accepts(tmp_path, real_data):
    from deeplab_ext.run.importing import import_weights
    from deeplab_ext.run.options import ImportOptions, TrainOptions
    from deeplab_ext.run.rundir import restore_network
    from deeplab_ext.run.trainer import train

    run = tmp_path / "imported"
    report = import_weights(ImportOptions(source=str(TFLITE), output_dir=str(run),
                                          model_variant="deeplabv3_mobilenetv2_dm05_mt"),
                            printer=lambda line: None)
    assert report.missing == ["tag_head/logits/kernel", "tag_head/logits/bias"]  # new head
    meta = json.loads((run / "model_config.json").read_text())
    assert meta["imported"]["batch_norm_folded"] and meta["model"]["output_stride"] == 16
    network, info, _ = restore_network(run)
    assert info.name == "pascal_voc_seg" and "tags" in network.output
    # Fine-tuning from folded BatchNorm must keep it frozen: refused, with the fix.
    from deeplab_ext.data import synthetic

    synthetic.write_tfrecords(tmp_path / "data", 2, 1, size=32)  # classes 0..8: VOC ids too
    (tmp_path / "data" / "train.dataset.json").unlink()  # shards without a dataset record
    with pytest.raises(ValueError, match="--fine_tune_batch_norm=false"):
        train(TrainOptions(train_logdir=str(tmp_path / "ft"), dataset_dir=str(tmp_path / "data"),
                           dataset="pascal_voc_seg", model_variant="deeplabv3_mobilenetv2_dm05_mt",
                           tf_initial_checkpoint=str(run), train_crop_size=(65, 65)),
              printer=lambda line: None)


@pytest.mark.parametrize("legacy", [True, False])
def test_keras_applications_imagenet_backbone_initialises_mobilenet_v2(tmp_path, legacy):
    """keras.applications.MobileNetV2's ImageNet .h5 (the legacy Keras 2 file the
    Applications download, or a Keras 3 one): every backbone variable loaded, the heads
    left to train, its layer_19 (Conv_1, not in DeepLab) unused."""
    import keras

    from deeplab_ext.run.importing import import_original

    keras.utils.set_random_seed(1)
    app = keras.applications.MobileNetV2(weights=None, include_top=False)
    for w in app.weights:  # distinct values everywhere (BatchNorm statistics included)
        w.assign(np.random.default_rng(len(w.path)).uniform(0.1, 1.0, w.shape))
    path = tmp_path / ("imagenet.h5" if legacy else "imagenet.weights.h5")
    if legacy:
        import h5py
        from keras.src.legacy.saving import legacy_h5_format

        with h5py.File(path, "w") as f:
            legacy_h5_format.save_weights_to_hdf5_group(f, app)
    else:
        app.save_weights(path)
    network = build_network("deeplabv3plus_mobilenetv2", num_classes=21,
                            input_shape=(65, 65, 3))
    report, folded = import_original(network, path)
    backbone = [v.path for v in network.weights if v.path.startswith("backbone_")]
    assert not folded and sorted(report.loaded) == sorted(backbone)
    assert all(not m.startswith("backbone_") for m in report.missing) and report.missing
    assert report.unused == sorted(["Conv_1/weights", "Conv_1_bn/gamma", "Conv_1_bn/beta",
                                    "Conv_1_bn/moving_mean", "Conv_1_bn/moving_variance"])
    got = network.get_layer("backbone_layer_4_expand").conv.kernel.numpy()
    np.testing.assert_array_equal(got, app.get_layer("block_2_expand").kernel.numpy())
    got = network.get_layer("backbone_layer_1").bn.moving_variance.numpy()
    np.testing.assert_array_equal(got, app.get_layer("bn_Conv1").moving_variance.numpy())
