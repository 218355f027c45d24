"""A warm process that runs the tools for the tests: ``python -m tools.<name>`` without
paying TensorFlow's import (~5 s on 2 cores) once per run.

The server imports TensorFlow, Keras and the project's packages, but no tool and no
TensorFlow op, so no flag is defined and no runtime (thread pools, devices) exists yet.
Each request forks it: the child sets argv, the working directory and the environment,
sends its stdout and stderr to files, and runs the tool as ``__main__`` (``runpy``, what
``python -m`` does), so its flags are parsed from nothing and its exit status is its own.
What the test sees is what a subprocess gives: ``returncode``, ``stdout``, ``stderr``.

Protocol (stdin / stdout of the server, one JSON object per line): request ``{"module",
"args", "cwd", "env", "timeout"}``, reply ``{"returncode", "stdout", "stderr"}`` or
``{"timeout": true}``.
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import shutil
import signal
import sys
import tempfile
import time
import traceback

WARM_MODULES = ("tensorflow", "keras", "numpy", "absl.app", "absl.flags", "tf_mtl",
                "deeplab_ext.models", "deeplab_ext.data", "deeplab_ext.run.options")


_SERVER_PYTHONPATH = os.environ.get("PYTHONPATH", "")  # the server's, replaced per request


def _exit_status(code: object) -> int:
    """The status ``SystemExit(code)`` gives a Python process (a message: printed, 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _python_path(cwd: str, pythonpath: str) -> None:
    """``sys.path`` as ``python -m`` would set it in ``cwd`` with this ``PYTHONPATH``
    (the server's own entries replaced)."""
    own = [p for p in _SERVER_PYTHONPATH.split(os.pathsep) if p]
    rest = [p for p in sys.path[1:] if p not in own]
    sys.path[:] = [cwd, *[p for p in pythonpath.split(os.pathsep) if p], *rest]


def _child(request: dict, out: str, err: str) -> None:
    """Run one tool in this (forked) process and exit with its status; never returns."""
    status = 1
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        _python_path(request["cwd"], request["env"].get("PYTHONPATH", ""))
        for fd, path in ((1, out), (2, err)):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(target, fd)
            os.close(target)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.argv = [request["module"], *request["args"]]
        try:
            runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
            status = 0
        except SystemExit as e:
            status = _exit_status(e.code)
        except BaseException:  # what the interpreter prints for an uncaught exception
            traceback.print_exc()
            status = 1
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001, S110 - exiting anyway
                pass
        os._exit(status)


def _serve_one(request: dict) -> dict:
    # Not a TemporaryDirectory: the child runs the exit handlers, which would delete it.
    tmp = tempfile.mkdtemp(prefix="tool_server_")
    out, err = os.path.join(tmp, "stdout"), os.path.join(tmp, "stderr")
    try:
        pid = os.fork()
        if pid == 0:
            _child(request, out, err)
        deadline = time.monotonic() + float(request.get("timeout", 600))
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return {"timeout": True}
            time.sleep(0.05)
        with open(out, errors="replace") as f_out, open(err, errors="replace") as f_err:
            return {"returncode": os.waitstatus_to_exitcode(status), "stdout": f_out.read(),
                    "stderr": f_err.read()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    import importlib

    for name in WARM_MODULES:
        importlib.import_module(name)
    channel = sys.stdout
    sys.stdout = sys.stderr  # nothing but replies on the channel
    channel.write("ready\n")
    channel.flush()
    for line in sys.stdin:
        channel.write(json.dumps(_serve_one(json.loads(line))) + "\n")
        channel.flush()


if __name__ == "__main__":
    main()
