"""Read scalars and images back from TensorBoard event files, without TensorBoard.

The HTML report and the tests need the loss / sigma curves a run logged, but
`tensorboard` is not a dependency (and TF's own `tf.summary.scalar` needs it).
Event files are TFRecord files of `Event` protos; TF can iterate them itself.

Handles both encodings of a scalar:
- TF2 `tf.summary.scalar` / `tf.summary.write`: a rank-0 `tensor` value with
  plugin "scalars" (or no plugin);
- TF1 / raw protos: `simple_value`.
Images: TF2 plugin "images" string tensors `[width, height, png...]` and TF1
`image.encoded_image_string`.

Tags of event files in sub-folders of `logdir` are prefixed with the folder
(`train/loss`, `eval/miou`), so runs that log the same tag apart stay apart.
"""

from __future__ import annotations

import logging
import os
import pathlib
from collections.abc import Iterable, Iterator
from typing import Any

log = logging.getLogger(__name__)

_EVENT_GLOB = "*tfevents*"


def event_files(logdir: str | os.PathLike) -> list[pathlib.Path]:
    """All event files under `logdir` (recursively), in folder then name (= time) order."""
    logdir = pathlib.Path(logdir)
    if not logdir.exists():
        raise FileNotFoundError(
            f"log dir {logdir} does not exist; pass the --train_logdir / --eval_logdir of the run."
        )
    if logdir.is_file():
        return [logdir]
    return sorted(p for p in logdir.rglob(_EVENT_GLOB) if p.is_file())


def _prefix(logdir: pathlib.Path, path: pathlib.Path) -> str:
    if logdir.is_file():
        return ""
    rel = path.parent.relative_to(logdir).as_posix()
    return "" if rel == "." else rel + "/"


def _events(path: pathlib.Path) -> Iterator[Any]:
    """Events of one file; a truncated tail (file still being written) ends the file quietly."""
    import tensorflow as tf  # late: callers that only list files need no TF
    from tensorflow.core.util import event_pb2

    try:
        for record in tf.data.TFRecordDataset(str(path)):
            yield event_pb2.Event.FromString(record.numpy())
    except tf.errors.DataLossError as e:
        log.warning("event file %s is truncated (%s); using the records before it", path, e)


def _iter_values(logdir: str | os.PathLike) -> Iterator[tuple[str, int, Any]]:
    root = pathlib.Path(logdir)
    for path in event_files(root):
        prefix = _prefix(root, path)
        for event in _events(path):
            if not event.HasField("summary"):
                continue
            for value in event.summary.value:
                yield prefix + value.tag, int(event.step), value


def _scalar_of(value: Any) -> float | None:
    """The float of a summary value if it is a scalar summary, else None."""
    kind = value.WhichOneof("value")
    if kind == "simple_value":
        return float(value.simple_value)
    if kind != "tensor":
        return None
    plugin = value.metadata.plugin_data.plugin_name
    if plugin not in ("", "scalars"):
        return None
    import tensorflow as tf

    try:
        array = tf.make_ndarray(value.tensor)
    except Exception:  # unsupported dtype (e.g. variant): not a scalar summary
        return None
    if array.size != 1 or array.dtype.kind not in "fiub":
        return None
    return float(array.reshape(()))


def read_scalars(
    logdir: str | os.PathLike, tags: Iterable[str] | None = None
) -> dict[str, list[tuple[int, float]]]:
    """`{tag: [(step, value), ...]}` sorted by step, for all (or the given) scalar tags.

    A step logged twice (a run restarted from a checkpoint) keeps the value
    written last, as TensorBoard shows it.
    """
    wanted = set(tags) if tags is not None else None
    by_tag: dict[str, dict[int, float]] = {}
    for tag, step, value in _iter_values(logdir):
        if wanted is not None and tag not in wanted:
            continue
        scalar = _scalar_of(value)
        if scalar is not None:
            by_tag.setdefault(tag, {})[step] = scalar
    return {tag: sorted(steps.items()) for tag, steps in sorted(by_tag.items())}


def _images_of(value: Any) -> list[bytes] | None:
    kind = value.WhichOneof("value")
    if kind == "image":
        return [bytes(value.image.encoded_image_string)]
    if kind == "tensor" and value.metadata.plugin_data.plugin_name == "images":
        strings = list(value.tensor.string_val)
        return [bytes(s) for s in strings[2:]]  # [width, height, png, png, ...]
    return None


def read_images(
    logdir: str | os.PathLike, tags: Iterable[str] | None = None
) -> dict[str, list[tuple[int, list[bytes]]]]:
    """`{tag: [(step, [encoded PNG bytes, ...]), ...]}` for the image summaries."""
    wanted = set(tags) if tags is not None else None
    by_tag: dict[str, dict[int, list[bytes]]] = {}
    for tag, step, value in _iter_values(logdir):
        if wanted is not None and tag not in wanted:
            continue
        images = _images_of(value)
        if images is not None:
            by_tag.setdefault(tag, {})[step] = images
    return {tag: sorted(steps.items()) for tag, steps in sorted(by_tag.items())}


def list_images(logdir: str | os.PathLike) -> dict[str, list[int]]:
    """`{tag: [step, ...]}` of the image summaries (what `read_images` would return)."""
    return {tag: [step for step, _ in entries] for tag, entries in read_images(logdir).items()}
