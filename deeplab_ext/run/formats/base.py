"""The export-format plug-in: :class:`ExportFormat` (write into an export directory, check
what was written against the network, load it back), the registry of formats, and the
names every format shares (the metadata file beside them).

Imports nothing heavy at module level: ``deeplab_ext.run.options`` reads the registry for
``--format``'s help, and the network, TensorFlow and the runtimes are only needed when a
format writes or loads.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import pathlib
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import numpy as np

from deeplab_ext.run.outputs import SEMANTIC_PROBABILITIES
from tf_mtl.registry import Registry, discover

__all__ = ["FORMATS", "METADATA_FILE", "ExportFormat", "ExportJob", "Runtime", "file_formats",
           "format_for_file", "format_help", "model_files_help", "open_runtime",
           "register_format"]

# What an export directory holds beside its formats: classes, tag ids, colormap, family,
# the refit settings and each file's fingerprint (``assets/deeplab_export.json``).
METADATA_FILE = "deeplab_export.json"

# A written file must compute the model: its probabilities on a probe image within this of
# the Keras model's (float files), or the same class on this share of pixels (quantised).
FILE_ATOL, QUANTISED_AGREEMENT = 1e-3, 0.9


class Runtime(NamedTuple):
    """A loaded model: ``run(images [1, h, w, 3]) -> {output: array}``, its input size
    ``(h, w)`` (None: any size) and the dtypes of its tensors (what a quantised file is
    checked by)."""

    run: Callable[[np.ndarray], dict[str, np.ndarray]]
    size: tuple[int, int] | None
    dtypes: list[str]


@dataclasses.dataclass
class ExportJob:
    """What the formats of one export write from, built once and shared by them.

    ``module``: the TF serving functions (``serving.SegmenterServing``); ``size``: the
    fixed input size of the file formats; ``make_serving_network``: ``(network, size) ->``
    the fixed-size Keras serving model (``serving.serving_network``, given by the export:
    the formats sit below the serving code and do not import it); ``metadata``: keys a
    format adds to the export's metadata file (the SavedModel its signatures)."""

    network: Any  # keras.Model
    module: Any  # deeplab_ext.run.serving.SegmenterServing
    directory: pathlib.Path
    size: tuple[int, int] | None
    make_serving_network: Callable[[Any, tuple[int, int]], Any]
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    @functools.cached_property
    def serving_model(self) -> Any:
        """The fixed-size Keras serving network, called once: Keras' ONNX exporter refuses
        a model that was never called (the LiteRT one calls it itself), so each format
        works alone, in any order."""
        if not self.size:
            raise ValueError("a fixed-size format needs --export_input_size=h,w")
        model = self.make_serving_network(self.network, self.size)
        model(np.zeros((1, int(self.size[0]), int(self.size[1]), 3), np.float32),
              training=False)
        return model


class ExportFormat:
    """One ``--format``. A file format (the default) converts the fixed-size serving
    network (:attr:`ExportJob.serving_model`) into ``model<suffix>`` (:meth:`convert`),
    which :meth:`check` runs through :meth:`load` against the network before the export is
    published; a format that writes something else overrides :meth:`write`.

    ``quantize``: the ``--quantize`` modes it takes (:meth:`settings` turns one into its
    converter's settings); ``entries``: the names it writes into the export directory
    (default: its file), what an earlier export may hold when it is replaced.
    """

    name: str = ""
    description: str = ""  # its part of --format's help
    suffix: str = ""  # the file's suffix (what --model=FILE is recognised by); "": none
    fixed_size: bool = True  # converts the serving network at --export_input_size
    quantize: tuple[str, ...] = ("none",)
    entries: tuple[str, ...] = ()

    @property
    def file_name(self) -> str:
        return f"model{self.suffix}"

    def written_names(self) -> tuple[str, ...]:
        return self.entries or (self.file_name,)

    def settings(self, quantize: str, calibration: Callable[[], Iterable[np.ndarray]] | None
                 ) -> dict[str, Any]:
        """The converter's settings for ``--quantize`` (one of :attr:`quantize`)."""
        return {}

    def write(self, job: ExportJob, settings: dict[str, Any]) -> str | None:
        """Write into ``job.directory``, checked; the name of the file written (listed and
        fingerprinted in the metadata), or None for a format that is not one file."""
        path = job.directory / self.file_name
        self.convert(job.serving_model, path, settings)
        self.check(path, job.serving_model, settings)
        return path.name

    def convert(self, model: Any, path: pathlib.Path, settings: dict[str, Any]) -> None:
        raise NotImplementedError(f"the {self.name} format writes no file")

    def load(self, path: pathlib.Path) -> Runtime:
        """The written file in its runtime (what ``tools.predict --model`` runs)."""
        raise NotImplementedError(f"the {self.name} format has no loader")

    def quantised_dtype(self, settings: dict[str, Any]) -> str | None:
        """The tensor type a file written with ``settings`` must hold (None: a float file)."""
        return None

    def check(self, path: pathlib.Path, model: Any, settings: dict[str, Any]) -> None:
        """Refuse a file its converter wrote wrong: one that its runtime cannot load (an op
        the format lacks), whose outputs are not the network's, that computes something
        else than ``model``, or that is not quantised as ``settings`` asked. The file is
        removed; the error says why."""
        size = tuple(int(d) for d in model.inputs[0].shape[1:3])
        probe = np.random.default_rng(0).uniform(0, 255, (1, *size, 3)).astype(np.float32)
        expected = model(probe, training=False)
        want = np.asarray(expected[SEMANTIC_PROBABILITIES])
        try:
            run, _, dtypes = self.load(path)
            outputs = run(probe)
            got = np.asarray(outputs[SEMANTIC_PROBABILITIES])
        except Exception as e:  # noqa: BLE001 - each runtime raises its own types
            self._refuse(path, f"the converter wrote {path.name}, but its runtime cannot run "
                         f"it ({_first_line(e)}); nothing was exported. The network has an op "
                         "the format lacks: export --format=saved_model, or report it")
        types = {k: np.asarray(v).dtype.name for k, v in outputs.items()}
        served = {k: np.asarray(v).dtype.name for k, v in expected.items()}
        if types != served:
            self._refuse(path, f"{path.name} answers {types}, the network serves {served}; "
                         "nothing was exported")
        asked = self.quantised_dtype(settings)
        if asked is not None:
            if not any(d == asked for d in dtypes):
                path.unlink(missing_ok=True)
                raise ValueError(f"--quantize: the converter wrote a file with no {asked} "
                                 f"tensor (a float file) for {path.name}; nothing was "
                                 "exported. Try another --quantize, or more "
                                 "--calibration_examples")
            agree = float(np.mean(got.argmax(-1) == want.argmax(-1)))
            ok, detail = agree >= QUANTISED_AGREEMENT, f"{100 * agree:.1f}% of the pixels agree"
        else:
            diff = float(np.max(np.abs(got - want)))
            ok, detail = diff <= FILE_ATOL, f"probabilities differ by up to {diff:.2g}"
        if not ok:
            self._refuse(path, f"{path.name} does not compute the network ({detail} on a "
                         "probe image); nothing was exported")

    def _refuse(self, path: pathlib.Path, why: str) -> None:
        path.unlink(missing_ok=True)
        raise ValueError(f"--format={self.name}: {why}") from None


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__


def _discover() -> None:
    """Every module of this package is a format (adding a format is adding a file); the
    SavedModel first, as the default is first in --format's help."""
    importlib.import_module("deeplab_ext.run.formats.saved_model")
    discover("deeplab_ext.run.formats", skip=("base",))


FORMATS: Registry[ExportFormat] = Registry("export format", "--format", discover=_discover)


def register_format(fmt: ExportFormat, *, override: bool = False) -> ExportFormat:
    """``--format=fmt.name`` writes ``fmt``; a name already taken is refused unless
    ``override`` (a user's format cannot silently replace a built-in one)."""
    if not isinstance(fmt, ExportFormat):
        raise TypeError(f"register_format takes an ExportFormat, got {type(fmt).__name__}")
    return FORMATS.register(fmt.name, fmt, override=override)


def file_formats() -> list[ExportFormat]:
    """The formats that write one file a client can be pointed at (``--model=FILE``)."""
    return [f for f in FORMATS.values() if f.suffix]


def format_for_file(path: str | pathlib.Path) -> ExportFormat:
    """The format that wrote ``path``, by its suffix."""
    suffix = pathlib.Path(path).suffix.lower()
    for fmt in file_formats():
        if fmt.suffix == suffix:
            return fmt
    raise ValueError(f"not a {' or '.join(f.suffix for f in file_formats())} file")


def open_runtime(path: str | pathlib.Path) -> Runtime:
    """A written file in the runtime of the format its suffix names."""
    return format_for_file(path).load(pathlib.Path(path))


def model_files_help() -> str:
    """What ``--model`` takes: a file of a registered file format."""
    formats = file_formats()
    return (f"a {' / '.join(f.file_name for f in formats)} of tools.export_model "
            f"--format={','.join(f.name for f in formats)}")


def format_help() -> str:
    """``--format``'s help: every registered format with its description."""
    return ("What to write into --export_path: "
            + "; ".join(f"{f.name} ({f.description})" for f in FORMATS.values())
            + "; several comma-separated.")
