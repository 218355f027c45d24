"""One writer per directory: a lock file holding the writer's PID, host and command.

Why: two ``tools.train`` processes on one ``--train_logdir`` both exited 0, overwrote each
other's checkpoints and wrote conflicting event files; nothing said the directory now
mixed two trainings. Train and tune lock the run directory, export locks its export path.
A lock whose process is gone (same host, PID no longer alive: a killed run) is stale and
taken over with a note; a live one, or one from another host, refuses the second writer
with one error naming the holder and the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import socket
import sys
import time
from collections.abc import Callable, Iterator

__all__ = ["LOCK_FILE", "DirectoryInUse", "directory_lock"]

LOCK_FILE = ".deeplab.lock"


class DirectoryInUse(ValueError):
    """Another live process writes this directory (a user error: exit status 2)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@contextlib.contextmanager
def directory_lock(path: str | os.PathLike, what: str, *, lock_name: str = LOCK_FILE,
                   printer: Callable[[str], None] = print) -> Iterator[pathlib.Path]:
    """Hold ``path/lock_name`` while the body runs; ``what`` names the writer in errors
    (e.g. ``--train_logdir``)."""
    lock = pathlib.Path(path) / lock_name
    lock.parent.mkdir(parents=True, exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
          "command": " ".join([pathlib.Path(sys.argv[0]).name, *sys.argv[1:]])[:300]}
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(lock.read_text())
                pid, host = int(holder["pid"]), str(holder["host"])
            except (OSError, ValueError, KeyError, TypeError):
                holder, pid, host = {}, -1, ""
            if holder and host == me["host"] and (pid == me["pid"] or _alive(pid)):
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["since"]))
                raise DirectoryInUse(
                    f"{what}={path} is in use by another process ({holder.get('command')!r}, "
                    f"pid {pid} on {host}, since {when}); wait for it to finish or use "
                    f"another directory (its lock: {lock})") from None
            if holder and host != me["host"]:
                raise DirectoryInUse(
                    f"{what}={path} is locked by pid {pid} on host {host}, which this "
                    f"machine cannot check; if that process is gone, remove {lock}") from None
            printer(f"note: {lock} was left by a process that is gone "
                    f"(pid {pid if pid > 0 else '?'}); taking it over")
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:  # pragma: no cover - three races in a row
        raise DirectoryInUse(f"{what}={path}: could not take its lock {lock}")
    try:
        yield lock
    finally:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(lock.read_text()).get("pid") == me["pid"]:
                lock.unlink()
