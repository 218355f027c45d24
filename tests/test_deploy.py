"""LiteRT and ONNX exports (issue 32): the released dm05 model, imported, exported to both
files, run by their runtimes on real photos (coco128-voc) against the Keras model; bad
files and flags are one clear error."""

from __future__ import annotations

import json
import pathlib
import shutil

import cv2
import numpy as np
import pytest

from tests.conftest import DM05, REAL_DATA, run_tool

PHOTOS = sorted((REAL_DATA / "coco128-voc" / "JPEGImages").glob("*.jpg"))[:3]
SIZE = (257, 257)

@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from deeplab_ext.run.export import export_checkpoint
    from deeplab_ext.run.importing import import_weights
    from deeplab_ext.run.options import ExportOptions, ImportOptions

    root = tmp_path_factory.mktemp("deploy")
    import_weights(ImportOptions(source=str(DM05), model_variant="deeplabv3_mobilenetv2_dm05",
                                 output_dir=str(root / "run")), printer=lambda s: None)
    export_checkpoint(ExportOptions(checkpoint_dir=str(root / "run"),
                                    export_path=str(root / "export"),
                                    format=("litert", "onnx"), export_input_size=SIZE),
                      printer=lambda s: None)
    return root


def _photo(path: pathlib.Path) -> np.ndarray:
    image = cv2.imread(str(path))[..., ::-1].astype(np.float32)
    return cv2.resize(image, (SIZE[1], SIZE[0]), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("name", ["model.tflite", "model.onnx"])
def test_file_matches_the_keras_model_on_real_photos(exported, name):
    """Probabilities within 1e-4 of the Keras network's softmax (the same weights through
    another runtime's kernels), argmax equal on at least 99.9 % of pixels."""
    import tensorflow as tf

    from deeplab_ext.run.deploy import FileSegmenter
    from deeplab_ext.run.rundir import restore_network

    network, _, _ = restore_network(exported / "run")
    seg = FileSegmenter(exported / "export" / name)
    assert seg.size == SIZE and seg.info.name == "pascal_voc_seg"
    agree, worst = [], 0.0
    for path in PHOTOS:
        x = _photo(path)
        want = tf.nn.softmax(network(x[None], training=False)["semantic"]).numpy()
        got = seg.predict(x)["semantic_probabilities"]
        worst = max(worst, float(np.abs(got - want).max()))
        agree.append(np.mean(got.argmax(-1) == want.argmax(-1)))
    assert worst < 1e-4, worst
    assert min(agree) >= 0.999, agree


def test_predict_with_a_file_and_with_a_broken_one(exported, tmp_path):
    out = tmp_path / "pred.png"
    proc = run_tool("predict", f"--model={exported / 'export' / 'model.tflite'}",
                    f"--image={PHOTOS[0]}", f"--output={out}", f"--raw_output={tmp_path / 'r.png'}",
                    "--tags=person")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert cv2.imread(str(out)).shape[:2] == cv2.imread(str(PHOTOS[0])).shape[:2]
    assert '"pruned": true' in proc.stdout
    raw = cv2.imread(str(tmp_path / "r.png"), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(raw)) <= {0, 15}  # pruned to background and person
    # A truncated file in a copy of the export directory: one error line naming it.
    broken = tmp_path / "broken"
    shutil.copytree(exported / "export", broken)
    data = (broken / "model.onnx").read_bytes()
    (broken / "model.onnx").write_bytes(data[: len(data) // 3])
    proc = run_tool("predict", f"--model={broken / 'model.onnx'}", f"--image={PHOTOS[0]}",
                    f"--output={tmp_path / 'x.png'}")
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "model.onnx" in lines[0] and "damaged" in lines[0], proc.stderr
    # Its fingerprint caught it; without one (an export from before fingerprints) the
    # runtime's own failure is the error line.
    meta_path = broken / "assets" / "deeplab_export.json"
    meta = json.loads(meta_path.read_text())
    meta.pop("file_sha256")
    meta_path.write_text(json.dumps(meta))
    proc = run_tool("predict", f"--model={broken / 'model.onnx'}", f"--image={PHOTOS[0]}",
                    f"--output={tmp_path / 'x.png'}")
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "model.onnx" in lines[0] and "corrupt" in lines[0], proc.stderr


def test_unknown_format_is_refused_before_anything_is_written(exported, tmp_path):
    from deeplab_ext.run.export import export_checkpoint
    from deeplab_ext.run.options import ExportOptions

    with pytest.raises(ValueError, match="--format=coreml.*unknown"):
        export_checkpoint(ExportOptions(checkpoint_dir=str(exported / "run"),
                                        export_path=str(tmp_path / "e"), format=("coreml",)),
                          printer=lambda s: None)
    assert not (tmp_path / "e").exists()


def test_quantize_flags_are_checked_before_anything_is_written(exported, tmp_path):
    from deeplab_ext.run.export import export_checkpoint
    from deeplab_ext.run.formats.litert import litert_quantization
    from deeplab_ext.run.options import ExportOptions

    with pytest.raises(ValueError, match="add litert to --format"):
        export_checkpoint(ExportOptions(checkpoint_dir=str(exported / "run"),
                                        export_path=str(tmp_path / "e"), format=("onnx",),
                                        quantize="int8"), printer=lambda s: None)
    with pytest.raises(ValueError, match="--calibration_dataset_dir"):
        litert_quantization("int8", None)
    with pytest.raises(ValueError, match="--quantize=int4"):
        litert_quantization("int4", None)
    assert not (tmp_path / "e").exists()
    assert litert_quantization("none", None) == {}


def test_eval_scores_the_shipped_files(exported, tmp_path):
    """tools.eval --model: the two float files score the same on real photos (plain and
    pruned to the true tags); refit modes are refused."""
    from deeplab_ext.data import build_data
    from deeplab_ext.run.evaluation import evaluate
    from deeplab_ext.run.options import EvalOptions

    voc = REAL_DATA / "coco128-voc"
    build_data.build_voc_dataset(voc / "JPEGImages", voc / "SegmentationClass",
                                 voc / "ImageSets" / "Segmentation", tmp_path / "tf",
                                 dataset="coco128_voc", splits=("val",))
    got = {}
    for name in ("model.tflite", "model.onnx"):
        res = evaluate(EvalOptions(model=str(exported / "export" / name),
                                   dataset_dir=str(tmp_path / "tf"), eval_split="val",
                                   evidence_modes=("none", "prune"), max_examples=6),
                       printer=lambda s: None)
        assert res["num_images"] == 6
        got[name] = [res["modes"][m]["miou"] for m in ("none", "prune")]
    assert 0.05 < got["model.tflite"][0] < 1
    np.testing.assert_allclose(got["model.tflite"], got["model.onnx"], atol=1e-3)
    with pytest.raises(ValueError, match="no refit"):
        evaluate(EvalOptions(model=str(exported / "export" / "model.onnx"),
                             dataset_dir=str(tmp_path / "tf"), evidence_modes=("bp_l2",)),
                 printer=lambda s: None)
    with pytest.raises(ValueError, match="exactly one of --checkpoint_dir or --model"):
        evaluate(EvalOptions(dataset_dir=str(tmp_path / "tf")), printer=lambda s: None)


def test_predict_a_folder_with_a_file(exported, tmp_path):
    """--image=FOLDER: a colour and a raw PNG per photo at the photo's size, a progress
    bar; a second run into the same folder is refused (nothing overwritten)."""
    from deeplab_ext.run.export import predict_image
    from deeplab_ext.run.options import PredictOptions

    photos = tmp_path / "photos"
    photos.mkdir()
    for p in PHOTOS[:2]:
        shutil.copy(p, photos / p.name)
    options = PredictOptions(image=str(photos), model=str(exported / "export" / "model.onnx"),
                             output=str(tmp_path / "out"))
    report = predict_image(options, printer=lambda s: None)
    assert report["images"] == 2
    for p in PHOTOS[:2]:
        raw = cv2.imread(str(tmp_path / "out" / "raw" / f"{p.stem}.png"), cv2.IMREAD_UNCHANGED)
        assert raw.shape == cv2.imread(str(p)).shape[:2] and raw.max() < 21
        assert (tmp_path / "out" / f"{p.stem}.png").is_file()
    with pytest.raises(ValueError, match="nothing was overwritten"):
        predict_image(options, printer=lambda s: None)
