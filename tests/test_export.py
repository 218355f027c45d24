"""Integration tests of tools.export_model and tools.predict.

The SavedModel written by tools.export_model is loaded in a fresh process that imports
only tensorflow + numpy; both signatures must reproduce the library (predict_segmentation,
EvidenceRefitter with the export's config) within 1e-5. tools.predict runs on the export.
A failed export over an existing one must leave the old one intact.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest
import tensorflow as tf

from deeplab_ext.data import colormap as cmap
from deeplab_ext.data import input_pipeline
from deeplab_ext.data.datasets import get_dataset_info
from deeplab_ext.models import group_variables
from deeplab_ext.run.export import export_saved_model, read_export_metadata
from deeplab_ext.run.options import EvidenceOptions
from deeplab_ext.run.rundir import input_alignment, restore_network
from tests.conftest import TEST_VARIANT, assert_same_argmax, assert_user_error, run_tool, tool_env
from tf_mtl.evidence import EvidenceRefitter
from tf_mtl.inference import predict_segmentation

VARIANT = TEST_VARIANT
INFO = get_dataset_info("shapes_evidence")
SIZE = 48
EVIDENCE_STEPS = 3
ATOL = 1e-5




@pytest.fixture(scope="module")
def data_dir(shapes_data) -> pathlib.Path:
    return shapes_data


@pytest.fixture(scope="module")
def run_dir(tiny_run) -> pathlib.Path:
    """A real (very short) training run: the checkpoint format tools.train writes."""
    return tiny_run


@pytest.fixture(scope="module")
def library(run_dir):
    """The restored network and the library's evidence refitter with the export's config,
    both on inputs padded onto the training grid (trained at 33 = 2 * 16 + 1, so the
    48x48 images are served at 49x49 and cropped back)."""
    network, info, meta = restore_network(run_dir)
    ev = EvidenceOptions()  # tools.export_model's defaults
    refitter = EvidenceRefitter(
        network, ev.config("l2", prune=False, scales=(1.0,), flip=False),
        variables=group_variables(network, ev.refit), tag_class_ids=list(info.tag_class_ids),
    )
    alignment = input_alignment(network, meta)
    assert alignment.aligned_size(SIZE, SIZE) == (49, 49)
    return {"network": network, "info": info,
            "refit": alignment.wrap(lambda x, t, s: refitter(x, t, s)),
            "plain": alignment.wrap(lambda x: predict_segmentation(network, x)),
            "tags": alignment.wrap(lambda x: {"tags": tf.sigmoid(network(x)["tags"])})}


@pytest.fixture(scope="module")
def val_batch(data_dir):
    """Two validation images (raw pixels) and their ground-truth tags."""
    ds = input_pipeline.make_dataset(INFO, data_dir, "val", crop_size=None, batch_size=1,
                                     is_training=False)
    items = list(ds.take(2))
    images = np.concatenate([x.numpy() for x, _ in items]).astype(np.float32)
    tags = np.concatenate([y["tags"].numpy() for _, y in items]).astype(np.float32)
    labels = np.concatenate([y["semantic"].numpy() for _, y in items])
    assert images.shape == (2, SIZE, SIZE, 3) and tags.sum() > 0
    return images, tags, labels


@pytest.fixture(scope="module")
def export_dir(run_dir, tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("export") / "saved_model"
    proc = run_tool("export_model", f"--checkpoint_dir={run_dir}", f"--export_path={path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Exported SavedModel to {path}" in proc.stdout
    return path


FRESH_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf

    # The project is installed in this environment (pip install -e .): block its packages,
    # so that loading the export can only use TensorFlow.
    for name in ("deeplab_ext", "tf_mtl", "tools", "deeplab_tools"):
        sys.modules[name] = None
    try:
        import deeplab_ext  # noqa: F401
    except ImportError:
        pass
    else:
        raise AssertionError("project importable")
    inputs = np.load(sys.argv[1])
    module = tf.saved_model.load(sys.argv[2])
    images = tf.constant(inputs["images"])
    out = {}
    serve = module.signatures["serving_default"](images=images)
    out.update({"serving__" + k: v.numpy() for k, v in serve.items()})
    ev = module.signatures["segment_with_evidence"](
        images=images, tags=tf.constant(inputs["tags"]),
        steps=tf.constant(int(inputs["steps"]), tf.int32))
    out.update({"evidence__" + k: v.numpy() for k, v in ev.items()})
    out["signatures"] = np.array(sorted(module.signatures))
    out["reads_variables"] = np.array([  # serving from constants, the refit from variables
        any(t.dtype == tf.resource for t in module.signatures[k].captured_inputs)
        for k in ("serving_default", "segment_with_evidence")])
    out["project_modules"] = np.array(  # the blocked names are None: nothing was loaded
        [m for m, mod in sys.modules.items()
         if mod is not None and m.split(".")[0] in ("deeplab_ext", "tf_mtl", "tools")], str)
    np.savez(sys.argv[3], **out)
""")


def test_export_signatures_match_library_in_fresh_process(export_dir, library, val_batch,
                                                          tmp_path):
    images, tags, _ = val_batch
    inputs, outputs = tmp_path / "inputs.npz", tmp_path / "outputs.npz"
    np.savez(inputs, images=images, tags=tags, steps=np.int32(EVIDENCE_STEPS))
    env = tool_env()
    env.pop("PYTHONPATH")
    proc = subprocess.run([sys.executable, "-c", FRESH_SCRIPT, str(inputs), str(export_dir),
                           str(outputs)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = dict(np.load(outputs))
    assert sorted(got["signatures"]) == ["segment_with_evidence", "serving_default"]
    assert got["project_modules"].size == 0
    assert got["reads_variables"].tolist() == [False, True]

    plain = library["plain"](tf.constant(images))
    tag_probs = library["tags"](images)["tags"].numpy()
    # Unaligned, the network's answers differ: the export really serves the aligned ones.
    unaligned = predict_segmentation(library["network"], tf.constant(images))["probabilities"]
    assert np.abs(unaligned.numpy() - plain["probabilities"].numpy()).max() > 10 * ATOL
    np.testing.assert_allclose(got["serving__semantic_probabilities"],
                               plain["probabilities"].numpy(), atol=ATOL)
    assert_same_argmax(got["serving__semantic_predictions"], plain["probabilities"].numpy())
    np.testing.assert_allclose(got["serving__tag_probabilities"], tag_probs, atol=ATOL)
    assert got["serving__semantic_probabilities"].shape == (2, SIZE, SIZE, INFO.num_classes)

    ref = library["refit"](images, tags, EVIDENCE_STEPS)
    np.testing.assert_allclose(got["evidence__semantic_probabilities"],
                               ref["probabilities"].numpy(), atol=ATOL)
    assert_same_argmax(got["evidence__semantic_predictions"], ref["probabilities"].numpy())
    np.testing.assert_allclose(got["evidence__tag_probabilities"],
                               ref["tag_probabilities_after"].numpy(), atol=ATOL)
    np.testing.assert_allclose(got["evidence__tag_probabilities_before"], tag_probs, atol=ATOL)
    np.testing.assert_array_equal(got["evidence__steps_taken"], ref["steps_taken"].numpy())
    assert np.all(got["evidence__steps_taken"] == EVIDENCE_STEPS)
    # The refit moved the tag probabilities (it did something), towards the evidence.
    before, after = got["evidence__tag_probabilities_before"], got["evidence__tag_probabilities"]
    assert np.abs(after - before).max() > 1e-6
    assert np.abs(after - tags).mean() < np.abs(before - tags).mean()

    meta = read_export_metadata(export_dir)
    assert meta["dataset"]["class_names"] == list(INFO.class_names)
    assert meta["evidence"]["steps"] == EvidenceOptions().steps
    assert meta["model"]["name"] == VARIANT


# ---------------------------------------------------------------- tools.predict
@pytest.fixture(scope="module")
def image_png(val_batch, tmp_path_factory) -> tuple[pathlib.Path, list[str]]:
    images, tags, _ = val_batch
    path = tmp_path_factory.mktemp("img") / "example.png"
    cv2.imwrite(str(path), images[0].astype(np.uint8)[..., ::-1])
    names = [INFO.tag_names[i] for i in np.flatnonzero(tags[0])]
    return path, names


def _json_of(stdout: str) -> dict:
    return json.loads(stdout[stdout.index("{"):])


def test_predict_with_saved_model_and_tags(export_dir, image_png, library, tmp_path):
    image_path, names = image_png
    out_png, raw_png = tmp_path / "pred" / "seg.png", tmp_path / "raw.png"
    proc = run_tool("predict", f"--saved_model={export_dir}", f"--image={image_path}",
                    f"--tags={','.join(names)}", "--evidence_steps=2",
                    f"--output={out_png}", f"--raw_output={raw_png}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = _json_of(proc.stdout)
    before, after = report["tag_probabilities_before"], report["tag_probabilities_after"]
    assert list(before) == list(INFO.tag_names) == list(after)

    image = cv2.imread(str(image_path))[..., ::-1].astype(np.float32)[None]
    want_before = library["tags"](image)["tags"].numpy()[0]
    tags = input_pipeline.tags_from_names(names, INFO)[None]
    ref = library["refit"](image, tags, 2)
    want_after = ref["tag_probabilities_after"].numpy()[0]
    np.testing.assert_allclose(list(before.values()), want_before, atol=1e-4)
    np.testing.assert_allclose(list(after.values()), want_after, atol=1e-4)

    raw = cv2.imread(str(raw_png), cv2.IMREAD_UNCHANGED)
    assert raw.shape == (SIZE, SIZE)
    assert_same_argmax(raw, ref["probabilities"].numpy()[0])
    colour = cv2.imread(str(out_png))[..., ::-1]
    np.testing.assert_array_equal(colour, cmap.label_to_color_image(raw, INFO.colormap))
    assert report["classes_predicted"] == [INFO.class_names[c] for c in np.unique(raw)]


def test_soft_tags_through_predict_and_the_signature(export_dir, image_png, library, tmp_path):
    """Soft evidence (issue 43): a tag's probability is the refit's target in the exported
    signature as in the library; tools.predict takes name:p and prunes as a prior with
    --evidence_prune_strength; the client and the graph refuse NaN and values outside
    [0, 1]."""
    from deeplab_ext.run.export import LoadedSegmenter
    from tf_mtl.evidence import prune_probabilities

    image_path, names = image_png
    soft_names = [f"{names[0]}:0.7", *names[1:]]
    raw_png = tmp_path / "raw.png"
    proc = run_tool("predict", f"--saved_model={export_dir}", f"--image={image_path}",
                    f"--tags={','.join(soft_names)}", "--evidence_steps=2",
                    "--evidence_prune_strength=0.5", f"--output={tmp_path / 'seg.png'}",
                    f"--raw_output={raw_png}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = _json_of(proc.stdout)
    assert report["tags_given"][names[0]] == 0.7 and report["pruned"]
    assert report["prune_strength"] == 0.5 and "(given, p=0.70)" in proc.stdout
    image = cv2.imread(str(image_path))[..., ::-1].astype(np.float32)[None]
    tags = input_pipeline.tags_from_names(soft_names, INFO)[None]
    ref = library["refit"](image, tags, 2)
    np.testing.assert_allclose(list(report["tag_probabilities_after"].values()),
                               ref["tag_probabilities_after"].numpy()[0], atol=1e-4)
    pruned = prune_probabilities(ref["probabilities"], tags, list(INFO.tag_class_ids), (0,),
                                 strength=0.5).numpy()
    assert_same_argmax(cv2.imread(str(raw_png), cv2.IMREAD_UNCHANGED), pruned[0])

    signature = tf.saved_model.load(str(export_dir)).signatures["segment_with_evidence"]
    out = signature(images=tf.constant(image), tags=tf.constant(tags), steps=tf.constant(2))
    np.testing.assert_allclose(out["tag_probabilities"].numpy(),
                               ref["tag_probabilities_after"].numpy(), atol=ATOL)
    seg = LoadedSegmenter(export_dir)
    for bad in (1.5, -0.1, np.nan):
        wrong = np.where(tags > 0, bad, 0).astype(np.float32)
        with pytest.raises(tf.errors.InvalidArgumentError, match="tags must be probabilities"):
            signature(images=tf.constant(image), tags=tf.constant(wrong), steps=tf.constant(2))
        with pytest.raises(ValueError, match=r"tags: tag values must be probabilities in "
                                             r"\[0, 1\]"):
            seg.predict_with_evidence(image, wrong, 2)


@pytest.mark.parametrize("case", ["unknown_tag", "negative_steps", "missing_image",
                                  "tag_above_one", "tag_nan", "strength_without_tags",
                                  "strength_above_one"])
def test_predict_errors(case, export_dir, image_png, tmp_path):
    image_path, _ = image_png
    args = [f"--saved_model={export_dir}", f"--image={image_path}",
            f"--output={tmp_path / 'out.png'}"]
    extra = {"unknown_tag": ["--tags=disk_h,unicorn"],
             "negative_steps": ["--tags=disk_h", "--evidence_steps=-1"],
             "tag_above_one": ["--tags=disk_h:1.5"], "tag_nan": ["--tags=disk_h:nan"],
             "strength_without_tags": ["--evidence_prune_strength=0.5"],
             "strength_above_one": ["--tags=disk_h", "--evidence_prune_strength=2"]}
    args += extra.get(case, [])
    if case == "missing_image":
        args[1] = f"--image={tmp_path / 'nope.jpg'}"
    proc = run_tool("predict", *args)
    assert not (tmp_path / "out.png").exists()
    expect = {"unknown_tag": ["'unicorn'", *INFO.tag_names],
              "negative_steps": ["--evidence_steps must be >= 0, got -1"],
              "missing_image": [f"--image={tmp_path / 'nope.jpg'}"],
              "tag_above_one": ["--tags: 'disk_h:1.5'", "must be a number in [0, 1]"],
              "tag_nan": ["--tags: 'disk_h:nan'", "must be a number in [0, 1]"],
              "strength_without_tags": ["--evidence_prune_strength sets how far --tags prune"],
              "strength_above_one": ["--evidence_prune_strength=2.0: must be in [0, 1]"]}
    assert_user_error(proc, *expect[case])


# --------------------------------------------------------- atomic replacement
def test_export_replaces_atomically_and_keeps_old_on_failure(export_dir, library, val_batch,
                                                            tmp_path, monkeypatch):
    images, _, _ = val_batch
    path = tmp_path / "saved_model"
    shutil.copytree(export_dir, path)
    network, info = library["network"], library["info"]
    plain = library["plain"](tf.constant(images))["probabilities"].numpy()
    kwargs = dict(evidence=EvidenceOptions())

    def disk_full(*args, **kw):
        raise OSError(28, "No space left on device (simulated)")

    with monkeypatch.context() as m:
        m.setattr(tf.saved_model, "save", disk_full)
        with pytest.raises(OSError, match="nothing already at .* was changed"):
            export_saved_model(network, info, path, inference_scales=(0.75, 1.0), **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved_model"]  # no temp leftovers
    old = tf.saved_model.load(str(path))
    np.testing.assert_allclose(
        old.signatures["serving_default"](images=tf.constant(images))["semantic_probabilities"],
        plain, atol=ATOL)
    assert read_export_metadata(path)["inference_scales"] == [1.0]

    # A successful export over it replaces it: multi-scale + flip now.
    export_saved_model(network, info, path, inference_scales=(0.75, 1.0),
                       add_flipped_images=True, **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved_model"]
    meta = read_export_metadata(path)
    assert meta["inference_scales"] == [0.75, 1.0] and meta["add_flipped_images"] is True
    new = tf.saved_model.load(str(path))
    got = new.signatures["serving_default"](images=tf.constant(images))["semantic_probabilities"]
    want = predict_segmentation(network, tf.constant(images), (0.75, 1.0), True)["probabilities"]
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=ATOL)
    assert np.abs(want.numpy() - plain).max() > 1e-4  # the replacement is visibly different
