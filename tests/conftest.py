"""Shared test setup: quiet TF, fixed seeds, paths to the shared real data."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real test data not found at {SHARED_DATA} (expected ../shared/data)")
    return SHARED_DATA


def tool_env() -> dict[str, str]:
    """Environment for running the tools as subprocesses from the repo root."""
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}


def run_tool(module: str, *args: str, timeout: float = 240):
    """`python -m tools.<module> args...` from the repo root; output captured as text."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", f"tools.{module}", *args], cwd=REPO, env=tool_env(),
        capture_output=True, text=True, timeout=timeout,
    )
