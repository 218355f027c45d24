"""Two worker processes on loopback (``TF_CONFIG``, MultiWorkerMirroredStrategy) run
``tools.train`` (issue 19): the same parameters as one process on the same global batch,
files from the chief only, and a resume after a killed worker.

BatchNorm is frozen (``--fine_tune_batch_norm=false``) in the equality check: with
trained BatchNorm each replica normalises with its own half-batch statistics unless
``--sync_batch_norm`` (which all-reduces them; equal to one process up to the rounding of
the all-reduced sums). The synthetic images carry no void pixels, so each replica's loss
is normalised by the same pixel count as one process's.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from deeplab_ext.data import synthetic
from tests.conftest import TEST_VARIANT, tool_env

REPO = pathlib.Path(__file__).resolve().parents[1]
TRAIN = ["--dataset=shapes_evidence", f"--model_variant={TEST_VARIANT}",
         "--train_crop_size=32,32", "--train_batch_size=4", "--save_summaries_images=false",
         "--seed=0", "--min_scale_factor=1", "--max_scale_factor=1",
         "--fine_tune_batch_norm=false", "--log_every_n_steps=1"]


def _ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _start_workers(logdir: pathlib.Path, data_dir: pathlib.Path, tmp: pathlib.Path,
                   *flags: str) -> list[subprocess.Popen]:
    ports = _ports(2)
    procs = []
    for i in range(2):
        env = {**tool_env(), "TMPDIR": str(tmp), "TF_CONFIG": json.dumps({
            "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
            "task": {"type": "worker", "index": i}})}
        log = open(logdir.parent / f"{logdir.name}_worker{i}.log", "a")  # noqa: SIM115
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "tools.train", f"--train_logdir={logdir}",
             f"--dataset_dir={data_dir}", "--distribution_strategy=multi_worker_mirrored",
             *TRAIN, *flags], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
    return procs


def _wait(procs: list[subprocess.Popen], timeout: float = 600) -> list[int]:
    return [p.wait(timeout=timeout) for p in procs]


def _log(logdir: pathlib.Path, i: int) -> str:
    return (logdir.parent / f"{logdir.name}_worker{i}.log").read_text()


def _variables(path: str) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(path)
    return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()
            if not n.startswith("_CHECKPOINTABLE") and "save_counter" not in n}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("shapes")
    synthetic.write_tfrecords(out, 8, 2, size=32, seed=0, ignore_band=False)
    return out


def test_two_workers_equal_one_process_and_only_the_chief_writes(tmp_path, data_dir):
    steps = ["--training_number_of_steps=3", "--save_interval_steps=3"]
    single = tmp_path / "single"
    proc = subprocess.run([sys.executable, "-m", "tools.train", f"--train_logdir={single}",
                           f"--dataset_dir={data_dir}", *TRAIN, *steps], cwd=REPO,
                          env=tool_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    multi, tmp = tmp_path / "multi", tmp_path / "worker_tmp"
    tmp.mkdir()
    assert _wait(_start_workers(multi, data_dir, tmp, *steps)) == [0, 0], _log(multi, 0)[-3000:]
    assert "(2 replicas)" in _log(multi, 0)

    a, b = _variables(str(single / "ckpt-3")), _variables(str(multi / "ckpt-3"))
    assert sorted(a) == sorted(b)
    log_vars = [n for n in a if n.startswith("weighting/")]
    assert log_vars  # the learned log-variances of uncertainty weighting
    for name in a:
        if a[name].dtype.kind == "f":  # all-reduced sums round differently: a tolerance
            np.testing.assert_allclose(b[name], a[name], rtol=1e-5, atol=1e-6, err_msg=name)
    moved = [n for n in log_vars if np.abs(a[n]).max() > 0]
    assert moved, "the log-variances should have moved in 3 steps"

    # Only the chief (worker 0) wrote into the run directory; worker 1 saved into a
    # folder of its own and removed it.
    assert sorted(p.name for p in multi.iterdir()) == sorted(p.name for p in single.iterdir())
    assert len(list((multi / "train").iterdir())) == 1  # one events file: the chief's
    assert list(tmp.iterdir()) == []
    assert f"checkpoint {multi}/ckpt-3" in _log(multi, 0)
    assert f"checkpoint {multi}/ckpt-3" not in _log(multi, 1)


def test_killed_worker_then_both_restarted_resume_from_the_last_checkpoint(tmp_path, data_dir):
    # A gradient method with state (GradVac's cosine targets): its per-task gradients are
    # all-reduced across the workers before the method, and its state is resumed.
    steps = ["--training_number_of_steps=10", "--save_interval_steps=2",
             "--loss_weighting=gradvac"]
    run, tmp = tmp_path / "run", tmp_path / "worker_tmp"
    tmp.mkdir()
    procs = _start_workers(run, data_dir, tmp, *steps)
    deadline = time.time() + 240
    while not (run / "ckpt-2.index").exists():
        assert time.time() < deadline and all(p.poll() is None for p in procs), _log(run, 0)
        time.sleep(0.5)
    procs[1].kill()  # worker 1 dies mid-run; the chief then waits on it: stop it too
    procs[1].wait()
    time.sleep(2)
    procs[0].kill()
    procs[0].wait()
    saved = max(int(p.name.split("-")[1].split(".")[0]) for p in run.glob("ckpt-*.index"))
    assert 2 <= saved < 10

    assert _wait(_start_workers(run, data_dir, tmp, *steps)) == [0, 0], _log(run, 0)[-3000:]
    for i in range(2):
        log = _log(run, i)
        assert f"Resuming from {run}/ckpt-{saved} (step {saved})." in log, log[-2000:]
        assert "step 10/10" in log
    assert (run / "ckpt-10.index").exists()
    reader = tf.train.load_checkpoint(str(run / "ckpt-10"))
    assert int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")) == 10
    targets = reader.get_tensor("weighting/rho_target/.ATTRIBUTES/VARIABLE_VALUE")
    assert targets.shape == (2, 2) and np.abs(targets).max() > 0
    assert os.path.exists(run / "model_config.json")
