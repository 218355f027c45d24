"""``bench/gpu_checks.sh --tiny``: the GPU machine's one-go script runs on CPU (issue 19),
so it is known to work before a GPU is lent."""

from __future__ import annotations

import json
import math
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
        assert r["batch"] == 1 and r["images_per_s"] > 0, prec  # the batch search ran (one size when tiny)
        assert math.isfinite(r["loss"]), prec  # the (loss-scaled) step trains, finitely
        assert isinstance(res["refit_step_per_image_s"][prec], float), prec
        check = res["refit_check"][prec]
        # Every refit step was applied in every precision (a float16 overflow would skip
        # one), and the refit lowered the tags' loss against the evidence.
        assert check["steps_taken"] == 1, (prec, check)
        assert check["tag_bce_after"] < check["tag_bce_before"], (prec, check)
    assert set(res["peak_memory_gib_b1"]) == {"os16", "os8"}  # None on CPU
    assert all(v is None for v in res["peak_memory_gib_b1"].values())
    assert res["pretrained_inference_ms"] > 0


def test_every_bench_shell_script_parses():
    """`--tiny` stops before the other targets: bash parses a compound command only when it
    reaches it, so a quoting slip in the `finetune` block once ended `all` before `tests`."""
    scripts = sorted((REPO / "bench").glob("*.sh"))
    assert "gpu_checks.sh" in {s.name for s in scripts}
    for script in scripts:
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, (script.name, proc.stderr)


def test_an_unknown_check_is_one_error_line():
    """A typo (`nosiy`) used to run the GPU probe and then nothing, with status 0."""
    proc = subprocess.run(["bash", "bench/gpu_checks.sh", "nosiy"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "error: unknown check 'nosiy'; use bench, tests, all, finetune, noisy or --tiny"]
