"""Released weights by name (``deeplab_ext.weights``): the table, the shipped files, the
cache and the download, against a real HTTP server on 127.0.0.1 serving the shipped files
under the table's URL paths (``$DEEPLAB_MTL_WEIGHTS_MIRROR``)."""

from __future__ import annotations

import dataclasses
import io
import json
import pathlib
import tarfile
import urllib.parse

import pytest

from deeplab_ext import weights
from deeplab_ext.data.datasets import get_dataset_info
from deeplab_ext.data.fetch import DownloadError, sha256_file
from deeplab_ext.models import variant_names
from deeplab_ext.run.options import EvidenceOptions
from tests.conftest import DM05, MNV2_DR, REAL_DATA, assert_user_error, run_tool
from tests.http_server import serving

DM05_NAME = "mobilenetv2_dm05_coco_voc_trainaug"
TARBALL_NAME = "mobilenetv2_dm05_coco_voc_trainval"  # a TF1 tarball only


@pytest.fixture(scope="module")
def server():
    with serving() as srv:
        yield srv


@pytest.fixture
def home(tmp_path, monkeypatch, server):
    """An empty cache, every URL fetched from the local server."""
    server.reset()
    server.files.clear()
    monkeypatch.setenv(weights.ENV_HOME, str(tmp_path / "home"))
    monkeypatch.setenv(weights.ENV_MIRROR, server.url(""))
    return tmp_path / "home"


def _path_of(file: weights.WeightsFile) -> str:
    """The request path the mirror gets for a URL: its host, then its path and query."""
    parts = urllib.parse.urlsplit(file.url)
    return f"/{parts.netloc}{parts.path}" + (f"?{parts.query}" if parts.query else "")


def test_table_is_consistent():
    """Every entry names a real variant and dataset; every shipped file is the one the
    table describes (size, sha256); tuned settings are valid and were not tuned on val."""
    known = set(variant_names())
    for entry in weights.entries().values():
        assert entry.variant is None or entry.variant in known, entry.name
        if entry.dataset is not None:
            get_dataset_info(entry.dataset)
        assert entry.files and all(f.url.startswith(("http://", "https://"))
                                   for f in entry.files), entry.name
        for file in entry.files:
            if file.shipped:
                path = weights.shipped_weights(file.filename)
                assert path.stat().st_size == file.size and sha256_file(path) == file.sha256
            if file.evidence:
                assert file.evidence["tuned_on"]["split"] != "val"
                for settings in file.evidence["kinds"].values():
                    EvidenceOptions(**settings)
    shipped = {f.filename for e in weights.entries().values() for f in e.files if f.shipped}
    assert shipped == {DM05.name, MNV2_DR.name}


def test_a_name_resolves_to_the_shipped_file_without_the_network(home, server):
    found = weights.resolve(DM05_NAME, printer=lambda line: None)
    assert (found.where, found.path) == ("shipped", DM05)
    assert not server.requests and not home.exists()
    assert not weights.is_weights_name(str(DM05))  # a path is a path
    with pytest.raises(ValueError, match="neither a file nor a released model's name; names: "):
        weights.get_entry("mobilenetv2_coco_voc_trainaugg")
    with pytest.raises(ValueError, match="not in this zoo"):
        weights.resolve("mobilenetv3_large_cityscapes_trainfine")


def test_download_resumes_verifies_and_is_then_cached(home, server):
    entry = weights.get_entry(DM05_NAME)
    file = entry.files[0]
    server.files[_path_of(file)] = DM05.read_bytes()
    server.cut_after = [1 << 20]  # the first transfer stops after 1 MB
    lines = []
    found = weights.resolve(DM05_NAME, shipped=False, printer=lines.append)
    assert found.where == "download" and found.path == weights.cache_path(entry, file)
    assert found.path.read_bytes() == DM05.read_bytes()
    ranges = [r["range"] for r in server.requests]
    assert ranges == [None, f"bytes={1 << 20}-"], server.requests  # resumed, not restarted
    assert not list(found.path.parent.glob("*.part"))
    server.reset()
    again = weights.resolve(DM05_NAME, shipped=False)
    assert again.where == "cache" and not server.requests


def test_wrong_bytes_are_refused_and_never_trusted_later(home, server):
    entry = weights.get_entry(DM05_NAME)
    file = entry.files[0]
    server.files[_path_of(file)] = MNV2_DR.read_bytes()  # another file under its URL
    with pytest.raises(DownloadError, match="checksum mismatch") as err:
        weights.resolve(DM05_NAME, shipped=False)
    target = weights.cache_path(entry, file)
    assert str(target) in str(err.value)  # where to put a good copy by hand
    assert not target.exists() and not list(target.parent.glob("*.part"))
    assert target.with_name(target.name + ".corrupt").is_file()
    # A wrong file placed under the final name is not trusted either: it is moved aside
    # and fetched again (and verified).
    target.write_bytes(MNV2_DR.read_bytes())
    server.files[_path_of(file)] = DM05.read_bytes()
    found = weights.resolve(DM05_NAME, shipped=False)
    assert found.where == "download" and sha256_file(found.path) == file.sha256


def test_offline_error_names_the_url_and_the_file_to_place(home, monkeypatch):
    monkeypatch.setenv(weights.ENV_MIRROR, "http://127.0.0.1:9")  # nothing listens there
    entry = weights.get_entry(DM05_NAME)
    with pytest.raises(DownloadError) as err:
        weights.resolve(DM05_NAME, shipped=False)
    message = str(err.value)
    assert entry.files[0].url in message and str(weights.cache_path(entry, entry.files[0])) \
        in message and entry.files[0].sha256 in message
    with pytest.raises(FileNotFoundError, match="not shipped and not in the cache"):
        weights.resolve(DM05_NAME, shipped=False, download=False)


def _tarball(tmp_path: pathlib.Path) -> bytes:
    """The original's tarball layout: a folder with model.ckpt-N and a frozen graph, the
    checkpoint written from the shipped dm05 release's own tensors."""
    from tests.test_import import _tf1_from_tflite

    folder = tmp_path / "deeplabv3_mnv2_dm05_pascal_trainval"
    folder.mkdir()
    _tf1_from_tflite(folder / "model.ckpt-30000", head_eps=1e-5, backbone_eps=1e-3)
    (folder / "frozen_inference_graph.pb").write_bytes(b"not read")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return buf.getvalue()


def test_a_tarball_downloads_unpacks_records_its_checksum_and_imports(home, server, tmp_path):
    from deeplab_ext.run.importing import import_weights
    from deeplab_ext.run.options import ImportOptions

    entry = weights.get_entry(TARBALL_NAME)
    file = entry.files[0]
    assert file.format == "tf1_tarball" and file.sha256 is None
    data = _tarball(tmp_path)
    server.files[_path_of(file)] = data
    found = weights.resolve(TARBALL_NAME, printer=lambda line: None)
    assert found.where == "download" and found.path.name == "model.ckpt-30000"
    record = weights.cache_path(entry, file).with_name(file.filename + ".sha256")
    assert record.read_text().split()[0] == sha256_file(weights.cache_path(entry, file))
    server.reset()
    run = tmp_path / "run"
    lines = []
    report = import_weights(ImportOptions(source=TARBALL_NAME, output_dir=str(run)),
                            printer=lines.append)
    assert len(report.loaded) == 272 and not report.missing and not server.requests
    meta = json.loads((run / "model_config.json").read_text())
    assert meta["model"]["name"] == entry.variant and meta["dataset"]["name"] == entry.dataset
    assert meta["imported"]["released_name"] == TARBALL_NAME
    assert meta["model"]["output_stride"] == file.output_stride
    # The upstream file changed since it was recorded: refused, not trusted.
    weights.cache_path(entry, file).write_bytes(data[:-10] + b"0123456789")
    server.files[_path_of(file)] = data[:-10] + b"0123456789"
    with pytest.raises(DownloadError, match="checksum mismatch"):
        weights.resolve(TARBALL_NAME)


def test_import_by_name_takes_the_tables_settings(home, tmp_path):
    """--source=NAME: the variant, classes, crop and stride of the entry, and its tuned
    refit settings when the import has the tag head they were tuned for."""
    from deeplab_ext.run.evidence import load_tuned
    from deeplab_ext.run.importing import import_weights
    from deeplab_ext.run.options import ImportOptions

    entry = weights.get_entry(DM05_NAME)
    file = entry.files[0]
    plain, pooled = tmp_path / "plain", tmp_path / "pooled"
    import_weights(ImportOptions(source=DM05_NAME, output_dir=str(plain)), printer=print)
    import_weights(ImportOptions(source=DM05_NAME, output_dir=str(pooled),
                                 tag_head="segmentation"), printer=print)
    meta = json.loads((plain / "model_config.json").read_text())
    assert meta["train_crop_size"] == list(file.crop)
    assert load_tuned(plain) is None  # no tags: nothing to refit
    tuned = load_tuned(pooled)
    assert tuned["objective"] == file.evidence["objective"]
    assert tuned["num_images"] == file.evidence["tuned_on"]["images"]
    want = dataclasses.asdict(EvidenceOptions(**file.evidence["kinds"]["l2"]))
    assert tuned["kinds"]["l2"]["evidence"] == want


def test_model_info_lists_the_names_and_what_is_here(tmp_path):
    proc = run_tool("model_info", "--list_weights")
    assert proc.returncode == 0, proc.stderr[-2000:]
    for entry in weights.entries().values():
        assert f"| {entry.name} |" in proc.stdout
    dm05 = next(line for line in proc.stdout.splitlines() if f"| {DM05_NAME} |" in line)
    assert "tflite: shipped" in dm05 and "70.19 val (OS16)" in dm05


def test_unknown_name_is_one_error_line_with_the_names(tmp_path):
    proc = run_tool("import_weights", "--source=mobilenetv2_dm5", f"--output_dir={tmp_path}/r")
    assert_user_error(proc, "--source=mobilenetv2_dm5", "neither a file nor a released "
                      "model's name", DM05_NAME)


def test_predict_a_photo_by_name_in_one_line(tmp_path):
    """`tools.predict --checkpoint_dir=NAME --image=my.jpg --tags=person --output=out.png`:
    imported once into the cache, refitted with the table's settings and pruned (they were
    tuned for pruned rows), a side-by-side picture, the tags before and after printed."""
    import cv2

    photo = REAL_DATA / "coco128-voc" / "JPEGImages" / "000000000036.jpg"
    out = tmp_path / "out.png"
    proc = run_tool("predict", f"--checkpoint_dir={DM05_NAME}", f"--image={photo}",
                    "--tags=person", f"--output={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert report["pruned"] and report["steps_taken"] == report["refit_steps"] > 0
    assert report["classes_predicted"] == ["background", "person"]
    assert "tag probabilities before -> after the refit:" in proc.stdout
    assert any(line.split()[0] == "person" and line.endswith("(given)")
               for line in proc.stdout.splitlines() if line.startswith("  "))
    side = cv2.imread(str(tmp_path / "out_side_by_side.png"))
    height, width = cv2.imread(str(photo)).shape[:2]
    assert side.shape[1] > 3 * 360 * width / height  # photo | plain | with the tags
    # Tag names are checked against the model's classes, and the list is given.
    proc = run_tool("predict", f"--checkpoint_dir={DM05_NAME}", f"--image={photo}",
                    "--tags=persn", f"--output={out}")
    assert_user_error(proc, "'persn'", "valid tag names", "'person'")
    # A photo is never overwritten by its own prediction, nor one output by another.
    mine = tmp_path / "mine.png"
    cv2.imwrite(str(mine), cv2.imread(str(photo)))
    before = mine.read_bytes()
    for flags, needle in ((["--output=" + str(mine)], "--output"),
                          ([f"--output={out}", f"--raw_output={out}"], "--raw_output"),
                          ([f"--output={out}", f"--side_by_side={mine}"], "--side_by_side")):
        proc = run_tool("predict", f"--checkpoint_dir={DM05_NAME}", f"--image={mine}", *flags)
        assert_user_error(proc, needle)
    assert mine.read_bytes() == before
