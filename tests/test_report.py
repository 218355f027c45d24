"""TensorBoard event reading and the static HTML report."""

from __future__ import annotations

import html.parser
import io
import pathlib

import numpy as np
import pytest

from tf_mtl import report, tbevents

PNG = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- event files


@pytest.fixture(scope="module")
def logdir(tmp_path_factory) -> pathlib.Path:
    """A run with TF2 tensor scalars (train/), TF1 simple values and images (eval/)."""
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    root = tmp_path_factory.mktemp("run")
    scalars_md = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
    )
    images_md = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="images")
    )
    writer = tf.summary.create_file_writer(str(root / "train"))
    with writer.as_default():
        for step in range(5):
            tf.summary.write(
                "loss/total", tf.constant(2.0 - 0.25 * step), step=step, metadata=scalars_md
            )
            tf.summary.write(
                "sigma/semantic",
                tf.constant(1.0 + 0.1 * step, tf.float64),
                step=step,
                metadata=scalars_md,
            )
            tf.summary.write("sigma/tags", tf.constant(0.5 * step), step=step, metadata=scalars_md)
        # A histogram-like non-scalar tensor must not be read as a scalar.
        tf.summary.write("weights", tf.zeros([3, 2]), step=0)
    writer.close()

    writer = tf.summary.create_file_writer(str(root / "eval"))
    png = tf.io.encode_png(tf.fill([4, 6, 3], tf.constant(200, tf.uint8)))
    with writer.as_default():
        for step in (10, 20):
            summary = tf.compat.v1.Summary(
                value=[tf.compat.v1.Summary.Value(tag="miou", simple_value=0.1 * step / 10)]
            )
            tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=step)
            tf.summary.write(
                "prediction",
                tf.stack([tf.constant(b"6"), tf.constant(b"4"), png]),
                step=step,
                metadata=images_md,
            )
        # Restart from a checkpoint: step 20 logged again, the later value wins.
        summary = tf.compat.v1.Summary(
            value=[tf.compat.v1.Summary.Value(tag="miou", simple_value=0.5)]
        )
        tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=20)
    writer.close()
    return root


def test_read_scalars_tensor_and_simple_values(logdir):
    scalars = tbevents.read_scalars(logdir)
    assert set(scalars) == {
        "train/loss/total",
        "train/sigma/semantic",
        "train/sigma/tags",
        "eval/miou",
    }
    assert scalars["train/loss/total"] == [(s, pytest.approx(2.0 - 0.25 * s)) for s in range(5)]
    assert scalars["train/sigma/semantic"][-1] == (4, pytest.approx(1.4))
    assert scalars["eval/miou"] == [(10, pytest.approx(0.1)), (20, pytest.approx(0.5))]
    # One sub-folder as the log dir: tags without prefix; filtering by tag.
    assert tbevents.read_scalars(logdir / "train", tags=["sigma/tags"]) == {
        "sigma/tags": [(s, pytest.approx(0.5 * s)) for s in range(5)]
    }


def test_list_and_read_images(logdir):
    assert tbevents.list_images(logdir) == {"eval/prediction": [10, 20]}
    (step, pngs), _ = tbevents.read_images(logdir)["eval/prediction"]
    assert step == 10 and len(pngs) == 1 and pngs[0].startswith(PNG)


def test_missing_logdir_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        tbevents.read_scalars(tmp_path / "nope")


def test_truncated_event_file_keeps_earlier_records(logdir, tmp_path):
    src = tbevents.event_files(logdir / "train")[0]
    data = src.read_bytes()
    (tmp_path / src.name).write_bytes(data[: len(data) - 7])  # cut mid-record
    scalars = tbevents.read_scalars(tmp_path)
    assert scalars["loss/total"][:4] == [(s, pytest.approx(2.0 - 0.25 * s)) for s in range(4)]


# --------------------------------------------------------------------------- HTML report


class _Collector(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.cells: list[str] = []
        self.text: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])
        self._in_cell = tag in ("td", "th")

    def handle_endtag(self, tag):
        self._in_cell = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_cell:
            self.cells.append(data.strip())


def _assert_valid_png(path: pathlib.Path) -> tuple[int, int]:
    from PIL import Image

    data = path.read_bytes()
    assert data.startswith(PNG), path
    with Image.open(io.BytesIO(data)) as im:
        im.load()  # decodes fully: a truncated PNG raises here
        return im.size


@pytest.fixture(scope="module")
def written(tmp_path_factory, logdir):
    out = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    array = rng.integers(0, 255, size=(12, 16, 3), dtype=np.uint8)
    png_file = out.parent / "given.png"
    from PIL import Image

    Image.fromarray(np.zeros((5, 7, 3), np.uint8)).save(png_file)
    files = report.write_html_report(
        out / "index.html",
        title="mobilenet_v2 on coco128-voc <run 1>",
        tables=[
            ("Evaluation", ["split", "mIoU", "steps"], [["val", 0.61234567, 300]]),
            ("Speed", ["device", "img/s"], [["cpu", 12.5]]),
        ],
        per_class_iou={"background": 0.9, "aeroplane": 0.55, "cow": float("nan")},
        scalars=tbevents.read_scalars(logdir),
        images=[("random <pixels>", array), ("from file", png_file)],
        notes=["first note & more", "second"],
    )
    return out, files, array


def test_report_files_and_links(written):
    out, files, array = written
    html_path = out / "index.html"
    assert files[-1] == html_path and all(f.parent == out for f in files)
    assert sorted(p.name for p in out.iterdir()) == sorted(f.name for f in files)  # no temp files
    parser = _Collector()
    parser.feed(html_path.read_text(encoding="utf-8"))
    assert parser.imgs and len(parser.imgs) == len(files) - 1
    for src in parser.imgs:
        assert "/" not in src and not src.startswith("http")  # relative, same folder
        _assert_valid_png(out / src)
    # plots: per-class IoU + groups train/loss, train/sigma, eval (miou); images keep pixels
    plots = [s for s in parser.imgs if "_plot_" in s]
    assert len(plots) == 4, plots
    assert any("sigma" in s for s in plots) and any("per_class_iou" in s for s in plots)
    from PIL import Image

    img_src = next(s for s in parser.imgs if "random" in s)
    assert np.array_equal(np.asarray(Image.open(out / img_src).convert("RGB")), array)
    assert _assert_valid_png(out / next(s for s in parser.imgs if "from_file" in s)) == (7, 5)


def test_report_values_and_escaping(written):
    out, _, _ = written
    text = (out / "index.html").read_text(encoding="utf-8")
    parser = _Collector()
    parser.feed(text)
    for value in ["val", "0.612346", "300", "cpu", "12.5", "background", "0.9", "0.55", "nan"]:
        assert value in parser.cells, value
    joined = "".join(parser.text)
    assert "mobilenet_v2 on coco128-voc <run 1>" in joined  # shown as text...
    assert "<run 1>" not in text and "&lt;run 1&gt;" in text  # ...because it is escaped
    assert "first note & more" in joined
    assert "mean over classes with data: 0.725" in joined  # nan class left out of the mean
    assert "train/sigma/semantic = 1.4 @ 4" in joined  # last value of each curve


def test_report_rejects_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="'bad'.*HxWx3 uint8"):
        report.write_html_report(
            tmp_path / "r.html", title="t", images=[("bad", np.zeros((4, 4, 3), np.float32))]
        )
    with pytest.raises(ValueError, match="row .* 1 cells, the header has 2"):
        report.write_html_report(tmp_path / "r.html", title="t", tables=[("T", ["a", "b"], [[1]])])
    (tmp_path / "x.jpg").write_bytes(b"\xff\xd8\xff")
    with pytest.raises(ValueError, match="x.jpg is not a PNG"):
        report.write_html_report(tmp_path / "r.html", title="t", images=[("j", tmp_path / "x.jpg")])
    assert not (tmp_path / "r.html").exists()  # no page from a failed call
