"""``bench/gpu_checks.sh --tiny``: the GPU machine's one-go script runs on CPU (issue 19),
so it is known to work before a GPU is lent."""

from __future__ import annotations

import json
import subprocess

from tests.conftest import REPO, tool_env


def test_gpu_checks_tiny_runs_every_check_on_cpu():
    env = {**tool_env(), "PY": str(REPO / ".venv" / "bin" / "python")}
    proc = subprocess.run(["bash", "bench/gpu_checks.sh", "--tiny"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert res["tiny"] is True and res["device"] == "CPU"
    assert set(res["train"]) == {"float32", "mixed_float16", "mixed_bfloat16"}
    for prec, r in res["train"].items():
        assert r["batch"] == 2 and r["images_per_s"] > 0, prec  # the batch search ran
        assert res["refit_step_per_image_s"][prec] is not None
    assert set(res["peak_memory_gib_b1"]) == {"os16", "os8"}  # None on CPU
    assert isinstance(res["pretrained_inference_ms"], float)
