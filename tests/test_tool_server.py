"""The warm tool runner (``tests/tool_server.py``) gives what a real ``python -m tools.X``
subprocess gives: the same stdout, exit status and error line, and flags parsed afresh on
every run (a flag given to one run never reaches the next)."""

from __future__ import annotations

import os

import pytest

from tests.conftest import run_tool

CASES = [
    ("model_info", "--model_variant=deeplabv3plus_mobilenetv2_tiny_mt", "--crop_size=33"),
    ("model_info", "--model_variant=no_such_variant"),
    ("eval", "--no_such_flag=1"),
]


@pytest.mark.parametrize("case", CASES, ids=["ok", "bad_value", "unknown_flag"])
def test_the_warm_runner_gives_what_a_subprocess_gives(case, monkeypatch):
    warm = run_tool(*case)
    monkeypatch.setenv("DEEPLAB_TEST_SUBPROCESS", "1")
    cold = run_tool(*case)
    assert warm.returncode == cold.returncode
    assert warm.stdout == cold.stdout
    # stderr differs by TensorFlow's import-time log lines only (the server imported it).
    errors = [[line for line in proc.stderr.splitlines() if line.startswith("error: ")]
              for proc in (warm, cold)]
    assert errors[0] == errors[1]
    assert bool(errors[0]) == (cold.returncode == 2)


def test_a_flag_given_to_one_run_never_reaches_the_next(monkeypatch):
    first = run_tool("model_info", "--model_variant=segnet_tiny", "--crop_size=33")
    assert first.returncode == 0, first.stderr[-2000:]
    warm = run_tool("model_info", "--crop_size=33")
    monkeypatch.setenv("DEEPLAB_TEST_SUBPROCESS", "1")
    cold = run_tool("model_info", "--crop_size=33")
    assert (warm.returncode, warm.stdout) == (cold.returncode, cold.stdout)
    assert warm.stdout != first.stdout


def test_the_environment_of_a_run_is_its_own(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "2"}
    (tmp_path / "shout.py").write_text("import os\nprint('MARK_IS', os.environ['MARK'])\n")
    proc = run_tool("model_info", "--extra_modules=shout", "--list_weights",
                    env={**env, "MARK": "one"})
    assert "MARK_IS one" in proc.stdout, proc.stderr[-2000:]
    proc = run_tool("model_info", "--extra_modules=shout", "--list_weights",
                    env={**env, "MARK": "two"})
    assert "MARK_IS two" in proc.stdout, proc.stderr[-2000:]
