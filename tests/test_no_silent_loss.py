"""Issue 40's principles, one test each beside the bad-input table of test_reliability.py:
nothing a tool did not write is replaced, a requested behaviour happens or is refused,
non-finite training stops, every tool reads images one way, OS errors are one line,
and the files a tool leaves look like a user's own."""

from __future__ import annotations

import os
import shutil
import stat

import numpy as np
import pytest

from tests.conftest import DM05, REAL_DATA, assert_user_error, run_tool
from tests.test_reliability import train_args, tree_digest

PHOTO = REAL_DATA / "coco128-voc" / "JPEGImages" / "000000000036.jpg"


# ------------------------------------------------ 1. nothing is replaced that a tool did not write
def test_outputs_never_replace_inputs_or_each_other(tmp_path):
    from deeplab_ext.paths import check_distinct, check_outputs, new_directory

    photo = tmp_path / "a.png"
    photo.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"--output=.*a.png is also --image"):
        check_outputs({"--image": photo}, {"--output": tmp_path / "sub" / ".." / "a.png"})
    with pytest.raises(ValueError, match="is also --output"):
        check_outputs({"--image": photo}, {"--output": tmp_path / "o.png",
                                           "--raw_output": tmp_path / "o.png"})
    check_outputs({"--image": photo}, {"--output": tmp_path / "o.png", "--raw_output": None})
    with pytest.raises(ValueError, match="a.jpg and .*a.png would both be written"):
        check_distinct([(tmp_path / "a.jpg", tmp_path / "out/a.png"),
                        (tmp_path / "a.png", tmp_path / "out/a.png")], "--image")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "ckpt-4.index").write_bytes(b"")
    with pytest.raises(ValueError, match="is not empty .*ckpt-4.index"):
        new_directory(tmp_path / "full", "--output_dir", "imported run directory")
    (tmp_path / "empty").mkdir()
    assert new_directory(tmp_path / "empty", "--output_dir", "x") == tmp_path / "empty"


def test_an_import_never_touches_a_trained_run(tiny_run, tmp_path):
    """The probe that deleted a run's checkpoints: the run is left byte for byte."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = tree_digest(run)
    proc = run_tool("import_weights", f"--source={DM05}", f"--output_dir={run}")
    assert_user_error(proc, f"--output_dir={run}", "is not empty", "Choose a new folder")
    proc = run_tool("import_weights", f"--source={run}", "--tag_head=segmentation",
                    f"--output_dir={run}")
    assert_user_error(proc, "is not empty")
    assert tree_digest(run) == before
    # An empty folder is a new run directory; a killed import's leftovers are removed.
    out = tmp_path / "new"
    out.mkdir()
    (tmp_path / ".new.tmp-99999").mkdir()
    proc = run_tool("import_weights", f"--source={DM05}", f"--output_dir={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "model_config.json").is_file() and not (tmp_path / ".new.tmp-99999").exists()


def test_a_folder_of_photos_never_maps_two_to_one_output(tiny_run, tmp_path):
    from deeplab_ext.run.export import predict_image
    from deeplab_ext.run.options import PredictOptions

    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(PHOTO, photos / "a.jpg")
    import cv2

    cv2.imwrite(str(photos / "a.png"), cv2.imread(str(PHOTO)))
    with pytest.raises(ValueError, match="would both be written to"):
        predict_image(PredictOptions(image=str(photos), checkpoint_dir=str(tiny_run),
                                     output=str(tmp_path / "out")), printer=lambda line: None)
    assert not (tmp_path / "out").exists()


# ------------------------------------------- 2. what is asked happens, or the tool refuses
def test_onnx_alone_from_a_release_and_from_a_trained_run_runs_in_onnxruntime(tiny_run,
                                                                             tmp_path):
    """`--format=onnx` alone (and after saved_model): the file exists, loads in
    onnxruntime, and computes the network (checked at export against the Keras model)."""
    imported = tmp_path / "dm05"
    proc = run_tool("import_weights", "--source=mobilenetv2_dm05_coco_voc_trainaug",
                    "--tag_head=segmentation", f"--output_dir={imported}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    for run, size, formats in ((imported, "257,257", "onnx"),
                               (tiny_run, "33,33", "saved_model,onnx")):
        export = tmp_path / f"export_{run.name}"
        proc = run_tool("export_model", f"--checkpoint_dir={run}", f"--export_path={export}",
                        f"--format={formats}", f"--export_input_size={size}")
        assert proc.returncode == 0, proc.stderr[-2000:]
        proc = run_tool("predict", f"--model={export / 'model.onnx'}", f"--image={PHOTO}",
                        f"--output={tmp_path / f'{run.name}.png'}")
        assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_file_is_read_only_with_the_metadata_of_the_export_that_wrote_it(tiny_run,
                                                                          tmp_path):
    """A model file copied into another export's folder would be scored with that export's
    classes: refused by its fingerprint, before anything is written."""
    first, second = tmp_path / "first", tmp_path / "second"
    for export, size in ((first, "33,33"), (second, "49,49")):
        proc = run_tool("export_model", f"--checkpoint_dir={tiny_run}",
                        f"--export_path={export}", "--format=litert",
                        f"--export_input_size={size}")
        assert proc.returncode == 0, proc.stderr[-2000:]
    shutil.copy(first / "model.tflite", second / "model.tflite")
    out = tmp_path / "pred.png"
    proc = run_tool("predict", f"--model={second / 'model.tflite'}", f"--image={PHOTO}",
                    f"--output={out}")
    assert_user_error(proc, "is not the file the export in its folder wrote",
                      "copied there from another export")
    assert not out.exists()


def test_a_quantisation_that_did_not_happen_is_refused(tmp_path):
    """The converter's file is checked: a float file where int8 was asked is removed and
    refused (here a float file stands in for the converter's silent fall-back)."""
    from deeplab_ext.models import build_network
    from deeplab_ext.run.formats import FORMATS
    from deeplab_ext.run.serving import serving_network

    litert = FORMATS["litert"]

    network = build_network("deeplabv3_mobilenetv2_tiny", num_classes=3)
    model = serving_network(network, (33, 33))
    model(np.zeros((1, 33, 33, 3), np.float32))
    path = tmp_path / "model.tflite"
    model.export(str(path), format="litert", verbose=False)
    litert.check(path, model, {})  # a float file where float was asked: kept
    assert path.is_file()
    asked = litert.settings("int8", lambda: iter([np.zeros((33, 33, 3), np.float32)]))
    with pytest.raises(ValueError, match="no int8 tensor"):
        litert.check(path, model, asked)
    assert not path.exists()


# ------------------------------------------------------ 3. non-finite training stops
def test_a_diverging_run_stops_naming_the_step_and_keeps_only_finite_checkpoints(
        shapes_data, tmp_path):
    logdir = tmp_path / "run"
    proc = run_tool("train", *train_args(logdir, shapes_data, 8, "--base_learning_rate=1e30",
                                         "--optimizer=momentum"))
    line = assert_user_error(proc, "training diverged at step")
    step = int(line.split("training diverged at step ")[1].split()[0])
    assert "Done at step" not in proc.stdout
    from deeplab_ext.run.rundir import non_finite_weights, restore_network

    kept = sorted(logdir.glob("ckpt-*.index"))
    for index in kept:
        assert int(index.name.split("-")[1].split(".")[0]) < step
        network, _, _ = restore_network(logdir, str(index).removesuffix(".index"))
        assert not non_finite_weights(network)


# ------------------------------------------------------- 4. one way to read inputs
def test_predict_and_the_converters_refuse_the_same_truncated_photo(tiny_run, tmp_path):
    from deeplab_ext.data.build_data import BadExampleError, read_image

    cut = tmp_path / "cut.jpg"
    data = PHOTO.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    import cv2

    assert cv2.imread(str(cut)) is not None  # OpenCV alone would have taken it
    with pytest.raises(BadExampleError, match="corrupt or truncated jpeg"):
        read_image(cut)
    proc = run_tool("predict", f"--checkpoint_dir={tiny_run}", f"--image={cut}",
                    f"--output={tmp_path / 'o.png'}")
    assert_user_error(proc, f"--image={cut}", "corrupt or truncated jpeg")


def test_shards_without_a_record_need_their_dataset_named(tiny_run, shapes_data, tmp_path):
    from deeplab_ext.run.evaluation import evaluate
    from deeplab_ext.run.options import EvalOptions

    bare = tmp_path / "bare"
    shutil.copytree(shapes_data, bare)
    for record in bare.glob("*.dataset.json"):
        record.unlink()
    with pytest.raises(ValueError, match="no record of its dataset.*--dataset=NAME"):
        evaluate(EvalOptions(checkpoint_dir=str(tiny_run), dataset_dir=str(bare)),
                 printer=lambda line: None)
    with pytest.raises(ValueError, match=r"--dataset=camvid: \d+ classes"):
        evaluate(EvalOptions(checkpoint_dir=str(tiny_run), dataset_dir=str(bare),
                             dataset="camvid"), printer=lambda line: None)
    named = evaluate(EvalOptions(checkpoint_dir=str(tiny_run), dataset_dir=str(bare),
                                 dataset="shapes_evidence", bootstrap_samples=0),
                     printer=lambda line: None)
    plain = evaluate(EvalOptions(checkpoint_dir=str(tiny_run), dataset_dir=str(shapes_data),
                                 bootstrap_samples=0), printer=lambda line: None)
    assert named["modes"]["none"]["miou"] == plain["modes"]["none"]["miou"]


# ------------------------------------------------------------ 5. OS errors, one line
def test_os_errors_are_one_line_naming_the_flag(tiny_run, tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    proc = run_tool("export_model", f"--checkpoint_dir={tiny_run}",
                    f"--export_path={a_file}/export")
    assert_user_error(proc, f"--export_path={a_file}/export", str(a_file),
                      "as if it were a folder", "To fix:")


# -------------------------------------------------- 6. files that look like the user's
def test_exports_get_the_users_permissions(tiny_run, tmp_path):
    proc = run_tool("export_model", f"--checkpoint_dir={tiny_run}",
                    f"--export_path={tmp_path / 'export'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    umask = os.umask(0)
    os.umask(umask)
    mode = stat.S_IMODE((tmp_path / "export").stat().st_mode)
    assert mode == 0o777 & ~umask, oct(mode)


def test_a_killed_conversion_leaves_nothing_the_next_one_keeps(tmp_path):
    from deeplab_ext.data import synthetic

    out = tmp_path / "shards"
    out.mkdir()
    stale = [out / ".train-00000-of-00002.tfrecord.tmp-deadbeef",
             out / "train.dataset.json.tmp-deadbeef"]
    for path in stale:
        path.write_bytes(b"half written")
    keep = out / ".val-notes"
    keep.write_text("not a conversion's")
    synthetic.write_tfrecords(out, 2, 1, size=32, num_shards=2)
    assert not any(p.exists() for p in stale) and keep.exists()


def test_progress_in_a_redirected_log_has_no_terminal_escapes(tiny_run, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        shutil.copy(PHOTO, photos / f"{i}.jpg")
    proc = run_tool("predict", f"--checkpoint_dir={tiny_run}", f"--image={photos}",
                    f"--output={tmp_path / 'out'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "\x1b[" not in proc.stdout and "\r" not in proc.stdout
    assert "3/3 images" in proc.stdout
