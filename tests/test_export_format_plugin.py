"""Export formats are plug-ins (issue 42): a format defined here, outside the tree, is
registered, written by the export tool in-process, checked against the network by the
export, loaded back by the ``--model`` client and ``tools.predict``, and agrees with the
Keras network; a broken one is refused before anything is published; a name already taken
is refused unless overridden."""

from __future__ import annotations

import json
import pathlib
import tempfile
import zipfile

import cv2
import numpy as np
import pytest
import tensorflow as tf

from deeplab_ext.run.formats import FORMATS, ExportFormat, Runtime, format_help, register_format
from tests.conftest import assert_same_argmax

NAME, SIZE = "test_zipped_saved_model", (33, 33)  # the tiny run's training crop: on its grid
# The file runs the same ops as the Keras network, through another graph (Keras' SavedModel
# export): probabilities agree to float rounding.
ATOL = 1e-5


class ZippedSavedModel(ExportFormat):
    """One file a client can be pointed at: Keras' ``tf_saved_model`` export of the
    serving network, zipped, with its input size."""

    name = NAME
    description = "model.smzip, a zipped Keras SavedModel (a test's plug-in)"
    suffix = ".smzip"

    def convert(self, model, path: pathlib.Path, settings: dict) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            model.export(f"{tmp}/sm", format="tf_saved_model", verbose=False)
            with zipfile.ZipFile(path, "w") as z:
                for f in pathlib.Path(tmp, "sm").rglob("*"):
                    z.write(f, f.relative_to(tmp))
                z.writestr("size.json", json.dumps(list(model.inputs[0].shape[1:3])))

    def load(self, path: pathlib.Path) -> Runtime:
        tmp = tempfile.mkdtemp()
        with zipfile.ZipFile(path) as z:
            z.extractall(tmp)
            size = tuple(json.loads(z.read("size.json")))
        loaded = tf.saved_model.load(f"{tmp}/sm")
        return Runtime(lambda x: {k: v.numpy() for k, v in loaded.serve(tf.constant(x)).items()},
                       size, [])


class Broken(ZippedSavedModel):
    """Writes a file whose runtime answers the right names and types, wrong values."""

    name = f"{NAME}_broken"
    suffix = ".broken"

    def convert(self, model, path: pathlib.Path, settings: dict) -> None:
        path.write_bytes(b"not a model")

    def load(self, path: pathlib.Path) -> Runtime:
        def run(x):
            return {"semantic_probabilities": np.full((1, *SIZE, 9), 1 / 9, np.float32),
                    "semantic_predictions": np.zeros((1, *SIZE), np.int32),
                    "tag_probabilities": np.zeros((1, 8), np.float32)}

        return Runtime(run, SIZE, [])


@pytest.fixture()
def plugins():
    for fmt in (ZippedSavedModel(), Broken()):
        register_format(fmt)
    yield
    for name in (NAME, Broken.name):
        FORMATS.unregister(name)


def _export(run_dir: pathlib.Path, path: pathlib.Path, fmt: str) -> pathlib.Path:
    from deeplab_ext.run.export import export_checkpoint
    from deeplab_ext.run.options import ExportOptions

    return export_checkpoint(ExportOptions(checkpoint_dir=str(run_dir), export_path=str(path),
                                           format=(fmt,), export_input_size=SIZE),
                             printer=lambda s: None)


def test_a_format_from_outside_the_tree_exports_loads_and_predicts(plugins, tiny_run,
                                                                     tmp_path):
    from deeplab_ext.run.deploy import FileSegmenter
    from deeplab_ext.run.export import check_export_path, predict_image
    from deeplab_ext.run.options import PredictOptions
    from deeplab_ext.run.rundir import restore_network
    from deeplab_ext.run.serving import output_schema

    assert NAME in format_help() and "a test's plug-in" in format_help()
    export = _export(tiny_run, tmp_path / "export", NAME)
    meta = json.loads((export / "assets" / "deeplab_export.json").read_text())
    assert meta["files"] == {NAME: "model.smzip"} and meta["file_input_size"] == list(SIZE)
    assert set(meta["file_sha256"]) == {"model.smzip"} and meta["signatures"] == []
    assert sorted(p.name for p in export.iterdir()) == ["assets", "model.smzip"]

    network, _, _ = restore_network(tiny_run)
    image = np.random.default_rng(1).integers(0, 256, (*SIZE, 3)).astype(np.uint8)
    logits = network(image[None].astype(np.float32), training=False)
    want = tf.nn.softmax(logits["semantic"]).numpy()
    seg = FileSegmenter(export / "model.smzip")  # found by its suffix, fingerprint checked
    assert seg.size == SIZE
    assert seg.output_names == sorted(output_schema(network))
    got = seg.predict(image.astype(np.float32))
    np.testing.assert_allclose(got["semantic_probabilities"], want, atol=ATOL)
    np.testing.assert_allclose(got["tag_probabilities"],
                               tf.sigmoid(logits["tags"]).numpy(), atol=ATOL)

    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), image[..., ::-1])
    report = predict_image(PredictOptions(image=str(photo), model=str(export / "model.smzip"),
                                          output=str(tmp_path / "pred.png"),
                                          raw_output=str(tmp_path / "raw.png"),
                                          side_by_side="none"), printer=lambda s: None)
    assert report["pruned"] is False
    assert_same_argmax(cv2.imread(str(tmp_path / "raw.png"), cv2.IMREAD_UNCHANGED), want[0])

    check_export_path(export)  # its file is one an export writes: replaceable ...
    FORMATS.unregister(NAME)
    with pytest.raises(ValueError, match="files an export does not write"):
        check_export_path(export)  # ... which it is not once no format writes it


def test_a_format_that_does_not_compute_the_network_is_refused(plugins, tiny_run, tmp_path):
    with pytest.raises(ValueError, match=f"--format={Broken.name}: model.broken does not "
                                         "compute the network"):
        _export(tiny_run, tmp_path / "export", Broken.name)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing published or left


def test_a_format_name_already_taken_is_refused_unless_overridden(plugins):
    first = FORMATS[NAME]
    with pytest.raises(ValueError, match=f"export format named '{NAME}' is already registered"):
        register_format(ZippedSavedModel())
    with pytest.raises(ValueError, match="'litert' is already registered"):
        register_format(type("Mine", (ZippedSavedModel,), {"name": "litert"})())
    assert FORMATS[NAME] is first and FORMATS["litert"].suffix == ".tflite"
    second = register_format(ZippedSavedModel(), override=True)
    assert FORMATS[NAME] is second is not first
    with pytest.raises(ValueError, match="unknown export format 'nope'.*litert"):
        FORMATS.get("nope")
