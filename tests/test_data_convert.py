"""Converters: byte-identical images, exact label indices, tags, atomic output, bad inputs."""

from __future__ import annotations

import os
import pathlib
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from deeplab_ext.data import build_data, tfrecord
from deeplab_ext.data.datasets import get_dataset_info
from deeplab_ext.data.targets import tags_from_label
from tests.conftest import assert_user_error, run_tool

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run_tool(module: str, *args: str) -> str:
    proc = run_tool(module.removeprefix("tools."), *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _shards(d: pathlib.Path, split: str) -> list[str]:
    return sorted(str(p) for p in d.glob(f"{split}-*-of-*.tfrecord"))


def _all_files(d: pathlib.Path) -> list[str]:
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


@pytest.fixture(scope="module")
def voc_out(real_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("voc_tfrecord")
    voc = real_data / "coco128-voc"
    _run_tool(
        "tools.build_voc2012_data",
        f"--image_folder={voc / 'JPEGImages'}",
        f"--semantic_segmentation_folder={voc / 'SegmentationClass'}",
        f"--list_folder={voc / 'ImageSets' / 'Segmentation'}",
        "--dataset=coco128_voc",
        f"--output_dir={out}",
    )
    return out


def test_voc_cli_writes_four_shards_per_split(voc_out):
    for split, n in (("train", 65), ("val", 32), ("trainval", 97)):
        shards = _shards(voc_out, split)
        assert [os.path.basename(s) for s in shards] == [
            f"{split}-{i:05d}-of-00004.tfrecord" for i in range(4)
        ]
        assert len(tfrecord.read_examples(shards)) == n
    assert not [f for f in _all_files(voc_out) if f.startswith(".")], "temp files left behind"


def test_voc_roundtrip_bytes_labels_tags(voc_out, real_data):
    voc = real_data / "coco128-voc"
    info = get_dataset_info("coco128_voc")
    examples = tfrecord.read_examples(_shards(voc_out, "val"))
    names = (voc / "ImageSets/Segmentation/val.txt").read_text().split()
    assert [e["image/filename"].decode() for e in examples] == names  # original order
    for ex in examples:
        name = ex["image/filename"].decode()
        assert set(tfrecord.KEYS) <= set(ex)
        assert ex["image/encoded"] == (voc / "JPEGImages" / f"{name}.jpg").read_bytes()
        assert ex["image/format"] == b"jpeg" and ex["image/channels"] == 3
        label = tf.io.decode_png(ex["image/segmentation/class/encoded"], channels=1)[..., 0]
        source = np.array(Image.open(voc / "SegmentationClass" / f"{name}.png"))
        np.testing.assert_array_equal(label.numpy(), source)
        assert (ex["image/height"], ex["image/width"]) == source.shape
        present = set(np.unique(source).tolist()) - {0, 255}
        tags = tags_from_label(label, info).numpy()
        assert {info.tag_class_ids[i] for i in np.flatnonzero(tags)} == present


@pytest.fixture(scope="module")
def camvid_subset(real_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("camvid_subset")
    lines = (real_data / "camvid-sample" / "train.txt").read_text().splitlines()
    (tmp / "train_small.txt").write_text("\n".join(lines[:3]) + "\n")
    (tmp / "held.txt").write_text("\n".join(lines[3:4]) + "\n")
    out = tmp / "out"
    # Two splits given as two flags: both must be written (a repeated DEFINE_list kept
    # only the last one).
    _run_tool(
        "tools.build_camvid_data",
        f"--camvid_dir={real_data / 'camvid-sample'}",
        f"--list_files=train={tmp / 'train_small.txt'}",
        f"--list_files=held={tmp / 'held.txt'}",
        "--num_shards=2",
        f"--output_dir={out}",
    )
    return out, lines[:3]


def test_camvid_cli_subset_roundtrip(camvid_subset, real_data):
    out, lines = camvid_subset
    camvid = real_data / "camvid-sample"
    info = get_dataset_info("camvid")
    shards = _shards(out, "train")
    assert [os.path.basename(s) for s in shards] == [
        "train-00000-of-00002.tfrecord",
        "train-00001-of-00002.tfrecord",
    ]
    examples = tfrecord.read_examples(shards)
    assert len(examples) == 3
    assert len(tfrecord.read_examples(_shards(out, "held"))) == 1
    for ex, line in zip(examples, lines, strict=True):
        image_rel, label_rel = line.split()
        assert ex["image/encoded"] == (camvid / image_rel).read_bytes()
        assert ex["image/format"] == b"png"
        label = tf.io.decode_png(ex["image/segmentation/class/encoded"], channels=1)[..., 0]
        source = np.array(Image.open(camvid / label_rel))
        np.testing.assert_array_equal(label.numpy(), source)
        assert (ex["image/height"], ex["image/width"]) == (360, 480)
        present = set(np.unique(source).tolist()) - {11}
        tags = tags_from_label(label, info).numpy()
        assert {info.tag_class_ids[i] for i in np.flatnonzero(tags)} == present


def test_camvid_whole_folder_with_its_own_lists(real_data, tmp_path):
    """Without --list_files the folder's train.txt / val.txt name the splits."""
    reports = build_data.build_camvid_dataset(real_data / "camvid-sample", tmp_path)
    assert {s: r.num_written for s, r in reports.items()} == {"train": 4, "val": 2}
    assert sum(len(tfrecord.read_examples([s])) for s in _shards(tmp_path, "val")) == 2


# ----------------------------------------------------------------------------- bad inputs


@pytest.fixture
def small_voc(real_data, tmp_path):
    """A 3-image VOC-layout folder in tmp (copies of shared files) that tests may break."""
    src = real_data / "coco128-voc"
    names = (src / "ImageSets/Segmentation/train.txt").read_text().split()[:3]
    root = tmp_path / "voc"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    for n in names:
        shutil.copy(src / "JPEGImages" / f"{n}.jpg", root / "JPEGImages")
        shutil.copy(src / "SegmentationClass" / f"{n}.png", root / "SegmentationClass")
    (root / "ImageSets/Segmentation/train.txt").write_text("\n".join(names) + "\n")
    return root, names


def _build(root: pathlib.Path, out: pathlib.Path, **kw):
    return build_data.build_voc_dataset(
        root / "JPEGImages",
        root / "SegmentationClass",
        root / "ImageSets/Segmentation",
        out,
        dataset="pascal_voc_seg",
        **kw,
    )


def _assert_fails_naming(root, out, path, *, match=None):
    with pytest.raises(build_data.BadExampleError) as err:
        _build(root, out)
    assert str(path) in str(err.value)
    if match:
        assert match in str(err.value)
    assert _all_files(out) == [], f"partial output left: {_all_files(out)}"
    return err.value


def test_corrupt_image_names_file(small_voc, tmp_path):
    root, names = small_voc
    bad = root / "JPEGImages" / f"{names[1]}.jpg"
    bad.write_bytes(bad.read_bytes()[:5000])  # truncated JPEG
    _assert_fails_naming(root, tmp_path / "out", bad, match="corrupt")
    bad.write_bytes(b"not an image at all")
    _assert_fails_naming(root, tmp_path / "out", bad)


def test_corrupt_image_through_the_tool_is_one_error_line(small_voc, tmp_path):
    """As a new user meets it: the file named on one `error:` line, exit 2, no traceback."""
    root, names = small_voc
    bad = root / "JPEGImages" / f"{names[1]}.jpg"
    bad.write_bytes(bad.read_bytes()[:5000])
    proc = run_tool("build_voc2012_data", f"--image_folder={root / 'JPEGImages'}",
                    f"--semantic_segmentation_folder={root / 'SegmentationClass'}",
                    f"--list_folder={root / 'ImageSets/Segmentation'}",
                    f"--output_dir={tmp_path / 'out'}")
    assert_user_error(proc, str(bad), "corrupt")
    assert _all_files(tmp_path / "out") == []


def test_label_size_mismatch_names_file(small_voc, tmp_path):
    root, names = small_voc
    bad = root / "SegmentationClass" / f"{names[2]}.png"
    im = Image.open(bad)
    im.resize((im.width // 2, im.height // 2), Image.NEAREST).save(bad)
    err = _assert_fails_naming(root, tmp_path / "out", bad, match="size")
    assert f"{names[2]}.jpg" in str(err)  # also names the image


def test_label_values_out_of_range_names_file(small_voc, tmp_path):
    root, names = small_voc
    bad = root / "SegmentationClass" / f"{names[0]}.png"
    arr = np.array(Image.open(bad))
    arr[:5, :5] = 42  # neither 0..20 nor 255
    Image.fromarray(arr, mode="L").save(bad)
    err = _assert_fails_naming(root, tmp_path / "out", bad)
    assert "42" in str(err) and "255" in str(err)


def test_colour_label_is_rejected(small_voc, tmp_path):
    root, names = small_voc
    bad = root / "SegmentationClass" / f"{names[0]}.png"
    Image.open(bad).convert("RGB").save(bad)
    _assert_fails_naming(root, tmp_path / "out", bad, match="remove_gt_colormap")


def test_list_naming_missing_image(small_voc, tmp_path):
    root, names = small_voc
    lst = root / "ImageSets/Segmentation/train.txt"
    lst.write_text("\n".join([*names, "does_not_exist"]) + "\n")
    err = _assert_fails_naming(root, tmp_path / "out", root / "JPEGImages/does_not_exist.jpg")
    assert str(lst) in str(err)


def test_empty_split_names_list_file(small_voc, tmp_path):
    root, _ = small_voc
    lst = root / "ImageSets/Segmentation/train.txt"
    lst.write_text("\n")
    _assert_fails_naming(root, tmp_path / "out", lst, match="empty")


def test_skip_bad_examples_counts_and_writes_rest(small_voc, tmp_path):
    root, names = small_voc
    (root / "JPEGImages" / f"{names[1]}.jpg").write_bytes(b"\xff\xd8\xffgarbage")
    lst = root / "ImageSets/Segmentation/train.txt"
    lst.write_text("\n".join([*names, "missing_one"]) + "\n")
    out = tmp_path / "out"
    report = _build(root, out, skip_bad_examples=True)["train"]
    assert report.num_written == 2 and report.num_skipped == 2
    assert any(names[1] in p for p, _ in report.skipped)
    assert any("missing_one" in p for p, _ in report.skipped)
    assert "skipped 2" in report.summary()
    got = [e["image/filename"].decode() for e in tfrecord.read_examples(_shards(out, "train"))]
    assert got == [names[0], names[2]]


def test_failure_keeps_previous_shards(small_voc, tmp_path):
    root, names = small_voc
    out = tmp_path / "out"
    _build(root, out)
    before = {p: pathlib.Path(p).read_bytes() for p in _shards(out, "train")}
    assert len(before) == 4
    bad = root / "JPEGImages" / f"{names[2]}.jpg"
    bad.write_bytes(bad.read_bytes()[:3000])
    with pytest.raises(build_data.BadExampleError, match=names[2]):
        _build(root, out)
    after = {p: pathlib.Path(p).read_bytes() for p in _shards(out, "train")}
    assert after == before
    assert not [f for f in _all_files(out) if f.startswith(".")]


def test_camvid_bad_list_line_names_file(real_data, tmp_path):
    lst = tmp_path / "train.txt"
    lst.write_text("train/0001TP_006690.png\n")
    with pytest.raises(build_data.BadExampleError, match="line 1") as err:
        build_data.build_camvid_dataset(
            real_data / "camvid-sample", tmp_path / "out", list_files={"train": lst}
        )
    assert str(lst) in str(err.value)


def test_camvid_label_value_check_uses_dataset(real_data, tmp_path):
    # A VOC label (values up to 20 and 255) is invalid for CamVid (0..10, ignore 11).
    voc = real_data / "coco128-voc"
    name = (voc / "ImageSets/Segmentation/train.txt").read_text().split()[0]
    lst = tmp_path / "train.txt"
    lst.write_text(f"{voc}/JPEGImages/{name}.jpg {voc}/SegmentationClass/{name}.png\n")
    with pytest.raises(build_data.BadExampleError, match="ignore label 11"):
        build_data.build_camvid_dataset(
            real_data / "camvid-sample", tmp_path / "out", list_files={"train": lst}
        )
    assert _all_files(tmp_path / "out") == []


# ------------------------------------------------------------------ palette / colormap tools


def test_remove_gt_colormap_cli(real_data, tmp_path):
    src = tmp_path / "gt"
    src.mkdir()
    files = sorted((real_data / "coco128-voc/SegmentationClass").glob("*.png"))[:4]
    for f in files:
        shutil.copy(f, src)
    _run_tool(
        "tools.remove_gt_colormap",
        f"--original_gt_folder={src}",
        f"--output_dir={tmp_path / 'raw'}",
    )
    for f in files:
        out = Image.open(tmp_path / "raw" / f.name)
        assert out.mode == "L"
        np.testing.assert_array_equal(np.array(out), np.array(Image.open(f)))


def test_palette_reader_without_pillow_matches(real_data, monkeypatch):
    files = sorted((real_data / "coco128-voc/SegmentationClass").glob("*.png"))[:5]
    with_pil = [build_data.read_label_indices(f)[0] for f in files]
    monkeypatch.setattr(build_data, "_PILImage", None)
    for f, ref in zip(files, with_pil, strict=True):
        got, _, plain = build_data.read_label_indices(f)
        assert not plain
        np.testing.assert_array_equal(got, ref)
        assert set(np.unique(got).tolist()) <= set(range(21)) | {255}
