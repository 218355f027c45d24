"""What every tool shares (the original's common.py): flags made from the options
dataclasses of ``deeplab_ext.run.options``, and one way to run and to fail.

* :func:`define_flags` defines one absl flag per dataclass field (type, default, help
  and choices from the field), :func:`options_from_flags` builds the dataclass back, so
  a default is stated once, in the dataclass.
* :func:`run` is every tool's ``app.run``: ``--extra_modules`` are imported first (they
  may register model families, datasets, targets or tasks), and any user error, a bad
  flag included, ends in one ``error: ...`` line and exit status 2 (set
  ``DEEPLAB_TRACEBACK=1`` to see the traceback instead).
"""

from __future__ import annotations

import dataclasses
import errno
import importlib
import os
import sys
import types
import typing
from collections.abc import Callable
from typing import Any

from absl import app, flags

from tf_mtl.registry import Registry

FLAGS = flags.FLAGS
EXIT_USER_ERROR = 2

flags.DEFINE_list("extra_modules", [], "Python modules to import first, e.g. a package that "
                  "registers its own model family, dataset, targets or tasks.")


# ------------------------------------------------------------------ flags <-> options
def _unwrap_optional(tp: Any) -> Any:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _fields(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    """The fields of ``cls`` that are flags (not those filled when resolving, ``given``)."""
    hints = typing.get_type_hints(cls)
    return [(f, _unwrap_optional(hints[f.name])) for f in dataclasses.fields(cls)
            if not f.metadata.get("resolved")]


def _default(f: dataclasses.Field, defaults: Any) -> Any:
    if defaults is not None:
        return getattr(defaults, f.name)
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


def _caller_module(depth: int = 2) -> str:
    """The module calling define_flags, as absl names it (the script path for __main__)."""
    name = sys._getframe(depth).f_globals.get("__name__", "")
    return sys.argv[0] if name == "__main__" else name


def define_flags(cls: type, prefix: str = "", *, defaults: Any = None,
                 module: str | None = None) -> None:
    """Define ``--<prefix><field>`` for every field of the options dataclass ``cls``.

    Nested option groups (``metadata["prefix"]``) get their own prefix; their defaults
    come from the enclosing field's default (so ``DemoOptions`` sets its own evidence
    defaults). ``defaults``: an instance whose values become the flag defaults. The flags
    are key flags of the calling tool (``--helpshort`` lists them).
    """
    module = module or _caller_module()
    for f, tp in _fields(cls):
        meta = f.metadata
        default = _default(f, defaults)
        if "prefix" in meta:
            define_flags(tp, prefix + meta["prefix"], defaults=default, module=module)
            continue
        name = prefix + meta.get("flag", f.name)
        helptext = meta.get("help") or f.name
        if name in FLAGS:  # a tool reusing a group already defined (same field, same flag)
            continue
        origin = typing.get_origin(tp)
        if meta.get("multi"):
            flags.DEFINE_multi_integer(name, None if default is None else list(default), helptext)
        elif origin is tuple:
            flags.DEFINE_list(name, None if default is None else [str(v) for v in default],
                              helptext)
        elif isinstance(meta.get("choices"), Registry):
            # A plug-in axis: its names are checked when the options are resolved, after
            # --extra_modules, so a user's plug-in is a valid choice.
            flags.DEFINE_string(name, default, f"{helptext} One of: "
                                f"{', '.join(meta['choices'].names())}, or one a module of "
                                "--extra_modules registers.")
        elif "choices" in meta:
            flags.DEFINE_enum(name, default, list(meta["choices"]), helptext)
        elif tp is bool:
            flags.DEFINE_bool(name, default, helptext)
        elif tp is int:
            flags.DEFINE_integer(name, default, helptext)
        elif tp is float:
            flags.DEFINE_float(name, default, helptext)
        elif tp is str:
            flags.DEFINE_string(name, default, helptext)
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: no flag type for {tp}")
        if meta.get("required"):
            flags.mark_flag_as_required(name)
        FLAGS.register_key_flag_for_module(module, FLAGS[name])


def _convert_tuple(values: list, tp: Any, flag: str, positive: bool = False) -> tuple:
    args = typing.get_args(tp)
    elem = args[0] if args else str
    fixed = len(args) if args and args[-1] is not Ellipsis else None
    try:
        out = tuple(elem(v) for v in values)
    except ValueError as e:
        raise ValueError(f"--{flag}={','.join(map(str, values))}: expected "
                         f"{elem.__name__} values ({e})") from e
    if fixed is not None:
        if len(out) == 1:
            out = out * fixed  # --train_crop_size=513 means 513,513
        if len(out) != fixed:
            raise ValueError(f"--{flag} takes {fixed} values, got {','.join(map(str, values))}")
    if positive and any(v <= 0 for v in out):
        raise ValueError(f"--{flag} takes positive values, got {','.join(map(str, values))}")
    return out


def options_from_flags(cls: type, prefix: str = "") -> Any:
    """The options dataclass ``cls`` from the parsed flags."""
    kwargs = {}
    for f, tp in _fields(cls):
        meta = f.metadata
        if "prefix" in meta:
            kwargs[f.name] = options_from_flags(tp, prefix + meta["prefix"])
            continue
        name = prefix + meta.get("flag", f.name)
        value = FLAGS[name].value
        if isinstance(meta.get("choices"), Registry) and value is not None:
            meta["choices"].get(value, f"--{name}")  # unknown: an error listing the names
        if value is not None and (meta.get("multi") or typing.get_origin(tp) is tuple):
            value = _convert_tuple(list(value), tp, name, meta.get("positive", False))
        kwargs[f.name] = value
    if not prefix and any(f.name == "given" for f in dataclasses.fields(cls)):
        kwargs["given"] = frozenset(n for n in FLAGS if FLAGS[n].present)
    options = cls(**kwargs)
    if not prefix and hasattr(options, "unused_flags"):
        # A flag the chosen mode does not read is refused, not silently ignored (the
        # options class says which flags each of its modes reads).
        problems = options.unused_flags(frozenset(n for n in FLAGS if FLAGS[n].present))
        if problems:
            raise ValueError(problems[0])
    return options


# ------------------------------------------------------------------------ running
def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "fix your input", reported without a traceback."""
    errors: list[type[BaseException]] = [ValueError, OSError, RuntimeError, ImportError,
                                         flags.Error, app.UsageError]
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        errors.append(tf.errors.OpError)  # e.g. a corrupt image met inside tf.data
    return tuple(errors)


# What the OS said, in a user's words, and what to do: (errno, words in TF's messages).
_OS_PROBLEMS = (
    (errno.EROFS, "Read-only file system", "is on a read-only file system",
     "choose a folder you can write to"),
    (errno.ENOSPC, "No space left on device", "has no space left on its disk",
     "free some space, or choose a folder on another disk"),
    (errno.ENOTDIR, "Not a directory", "goes through a file as if it were a folder",
     "choose a path whose parents are folders"),
    (errno.EEXIST, "File exists", "is a file where a folder is needed (the path goes "
     "through it as if it were a folder)", "choose a path whose parents are folders"),
    (errno.EACCES, "Permission denied", "cannot be written (permission denied)",
     "choose a folder you may write to, or change its permissions"),
)


def _flag_of(path: str | None, text: str) -> str:
    """The flag the user gave whose path the failing one is (or lies under), else ''."""
    for name in FLAGS:
        flag = FLAGS[name]
        value = flag.value if flag.present else None
        if not isinstance(value, str) or not value or "/" not in value and "." not in value:
            continue
        full = os.path.abspath(value)
        failing = os.path.abspath(path) if path else None
        if (failing and (failing.startswith(full) or full.startswith(failing + os.sep))
                or value in text):
            return f"--{name}={value}"
    return ""


def os_error_line(error: BaseException) -> str | None:
    """One line for a read-only, full, not-a-folder or forbidden path, naming the flag it
    came from and a fix (not the OS's raw words), or None for other errors."""
    text = getattr(error, "message", None) or str(error)
    code = getattr(error, "errno", None)
    for number, words, what, fix in _OS_PROBLEMS:
        if code == number or words in text:
            path = getattr(error, "filename", None)
            flag = _flag_of(path, text)
            where = f"{flag}: {path or 'the path'}" if flag else (path or "a path it writes")
            return error_line(f"{where} {what}; nothing more was written. To fix: {fix}")
    return None


def error_line(message: Any) -> str:
    """The one ``error: ...`` line a tool prints for a user error (an exception or text)."""
    text = getattr(message, "message", None) or str(message)
    return f"error: {' '.join(text.split())}"


def fail(message: Any) -> int:
    """Print the one ``error: ...`` line; the tool's exit status."""
    print(error_line(message), file=sys.stderr, flush=True)
    return EXIT_USER_ERROR


def _quiet_teardown() -> None:
    """After the error line, nothing more: objects torn down at exit (a half-restored
    checkpoint, say) would otherwise log hundreds of warning lines below it."""
    import logging

    from absl import logging as absl_logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    absl_logging.set_verbosity(absl_logging.ERROR)


def printer(line: str) -> None:
    print(line, flush=True)


def _parse(argv: list[str]) -> list[str]:
    try:
        return FLAGS(argv)
    except flags.Error as e:
        sys.exit(fail(e))


def run(main: Callable[[], Any]) -> None:
    """``app.run`` for a tool whose ``main()`` takes no arguments (flags are parsed)."""
    # --helpshort lists the key flags of the module named by argv[0]: a console script's
    # path, not the tool's module, when run as ``deeplab-<tool>``.
    for flag in FLAGS.get_key_flags_for_module(main.__module__):
        FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    script = sys.modules["__main__"]
    if not script.__doc__:  # the console script's wrapper: --help shows the tool's own text
        script.__doc__ = sys.modules[main.__module__].__doc__

    def _main(argv: list[str]) -> int:
        if len(argv) > 1:
            return fail(f"unexpected arguments {argv[1:]}: every option is a --flag=value")
        from absl import logging as absl_logging

        if not FLAGS["verbosity"].present:
            # INFO lines of TensorFlow's Python side (a 15 kB one from SavedModel signature
            # serialisation, checkpoint sharding timings) drown the tool's own output;
            # warnings stay. --verbosity=0 brings them back.
            absl_logging.set_verbosity(absl_logging.WARNING)
        try:
            for module in FLAGS.extra_modules:
                importlib.import_module(module)
            result = main()
        except user_errors() as e:
            if os.environ.get("DEEPLAB_TRACEBACK"):
                raise
            described = os_error_line(e)
            if described is not None:
                print(described, file=sys.stderr, flush=True)
                status = EXIT_USER_ERROR
            else:
                status = fail(e)
            _quiet_teardown()
            return status
        return int(result or 0)

    app.run(_main, flags_parser=_parse)
