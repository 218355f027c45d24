"""What a tool may write, checked in one place before it writes: no output is one of its
inputs, no two outputs (or two inputs mapped to outputs) are the same file, and a new run
directory is new. A user's photo, run or shards are never replaced by a tool's result."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterable, Mapping

__all__ = ["check_distinct", "check_outputs", "new_directory"]

Paths = Mapping[str, "str | os.PathLike | None"]


def _resolved(path: str | os.PathLike) -> pathlib.Path:
    return pathlib.Path(path).expanduser().resolve()


def check_outputs(inputs: Paths, outputs: Paths) -> None:
    """Refuse before anything is written: an output that is an input (or a folder an input
    lies in, for an output file's path), or one output named twice. Keys are the flags
    (``--image``), values the paths (None: not given)."""
    given_inputs = {flag: _resolved(p) for flag, p in inputs.items() if p}
    seen: dict[pathlib.Path, str] = {}
    for flag, path in outputs.items():
        if not path:
            continue
        target = _resolved(path)
        for in_flag, source in given_inputs.items():
            if target == source:
                raise ValueError(f"{flag}={path} is also {in_flag}: it would be overwritten; "
                                 "nothing was written. Choose another path")
        if target in seen:
            raise ValueError(f"{flag}={path} is also {seen[target]}: one would replace the "
                             "other; nothing was written. Give them different paths")
        seen[target] = flag


def check_distinct(names: Iterable[tuple[str, str | os.PathLike]], flag: str) -> None:
    """Refuse two inputs that map to one output (``a.jpg`` and ``a.png`` -> ``a.png``):
    ``names`` are (input, output) pairs."""
    seen: dict[pathlib.Path, str] = {}
    for source, target in names:
        key = _resolved(target)
        if key in seen:
            raise ValueError(f"{flag}: {seen[key]} and {source} would both be written to "
                             f"{target}; rename one of them. Nothing was written")
        seen[key] = str(source)


def new_directory(path: str | os.PathLike, flag: str, what: str) -> pathlib.Path:
    """``path`` for a new ``what`` (a run directory, say): absent or an empty folder, never
    a folder that holds anything (a trained run, a user's files)."""
    out = pathlib.Path(path)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{flag}={path} is a file, not a folder: choose a new folder for "
                         f"the {what}")
    if out.is_dir() and any(out.iterdir()):
        held = sorted(p.name for p in out.iterdir())
        shown = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
        raise ValueError(f"{flag}={path} is not empty (it holds {shown}): the {what} is "
                         "only written into a new or empty folder, so nothing there is "
                         "replaced. Choose a new folder")
    return out
