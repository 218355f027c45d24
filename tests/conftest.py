"""Shared test setup: quiet TF, fixed seeds, paths to the real photos and released weights
shipped with the package (``deeplab_ext.assets``: a clone alone runs the suite)."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Released weights imported or downloaded by name go to a cache of this test process, never
# the user's ($DEEPLAB_MTL_HOME; the tools run as subprocesses inherit it).
import tempfile  # noqa: E402

os.environ["DEEPLAB_MTL_HOME"] = tempfile.mkdtemp(prefix="deeplab_mtl_home_")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# In the test processes only, graphs run without Grappler's rewrites: tiny graphs are
# traced and run a few times, so the rewrites cost more than they save (the refit graph of
# the tiny DeepLab: first call 13.9 s -> 8.6 s; the in-process evidence and gradient-method
# files 87 s -> 73 s, measured alternately). Every tool run as a subprocess (the CLI,
# README, demo and fresh-process export tests) keeps TF's defaults, so the shipped
# configuration is still what those tests exercise.
tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})

from deeplab_ext.assets import ASSETS, WEIGHTS  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
REAL_DATA = ASSETS / "real-data"  # coco128-voc (97 photos) and camvid-sample (6 frames)
DM05 = WEIGHTS / "deeplabv3_mnv2_dm05_pascal_257.tflite"  # mobilenetv2_dm05_coco_voc_trainaug
MNV2_DR = WEIGHTS / "deeplabv3_mnv2_pascal_513_dr.tflite"  # mobilenetv2_coco_voc_trainaug


# `make test` runs files whole on two workers (`-n auto --dist loadfile
# --no-loadscope-reorder`), in collection order. Started last, a long file runs alone for
# minutes, so the longest files go first (longest-first scheduling). xdist's default
# reorders files by their number of tests, which put the one-test demo file last: hence
# `--no-loadscope-reorder`. Their order: `pytest --junitxml` times summed per file, the
# tools run by the warm tool server, fresh clones idle (2026-12-07; the flag-path
# test measured 2026-12-08). Other files keep their order.
LONGEST_FILES = ("test_demo_voc.py", "test_readme.py", "test_tuning.py", "test_export.py",
                 "test_segnet.py", "test_readme_data.py", "test_multi_worker.py",
                 "test_no_silent_loss.py", "test_demo.py", "test_tools.py",
                 "test_reliability.py", "test_noisy_evidence.py", "test_scene_network.py",
                 "test_evidence.py", "test_refit_kind_plugin.py", "test_gpu_checks.py",
                 "test_house.py", "test_label_structure.py", "test_segmentation_tags.py",
                 "test_import.py", "test_packaging.py", "test_deploy.py", "test_vis.py",
                 "test_zoo.py", "test_mtl_distributed.py", "test_tool_server.py",
                 "test_import_structure.py")


def pytest_collection_modifyitems(config, items) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable


TEST_VARIANT = "deeplabv3plus_mobilenetv2_micro_mt"  # the tiny network with 7 blocks (docs/models.md)


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    """Factory of built-in (shapes_evidence) datasets: ``synthetic_data(num_train=6,
    num_val=2, size=48, num_test=0, seed=0)`` -> the TFRecord folder, written once per
    worker for each distinct set of arguments. Read it; never write into it."""
    from deeplab_ext.data import synthetic

    made: dict[tuple, pathlib.Path] = {}

    def make(num_train: int = 6, num_val: int = 2, size: int = 48, num_test: int = 0,
             seed: int = 0) -> pathlib.Path:
        key = (num_train, num_val, size, num_test, seed)
        if key not in made:
            out = tmp_path_factory.mktemp("shapes")
            splits = ("train", "val", "test") if num_test else ("train", "val")
            synthetic.write_tfrecords(out, num_train, num_val, size=size, seed=seed,
                                      splits=splits, num_test=num_test)
            made[key] = out
        return made[key]

    return make


@pytest.fixture(scope="session")
def shapes_data(synthetic_data) -> pathlib.Path:
    """The suite's tiny dataset: 6 train, 2 val and 3 test images of 48x48."""
    return synthetic_data(6, 2, 48, num_test=3)


def tiny_train_options(logdir, data_dir, steps: int = 4, **changes):
    """The suite's tiny training run (``tiny_run``), as TrainOptions."""
    from deeplab_ext.run.options import TrainOptions

    base = dict(train_logdir=str(logdir), dataset_dir=str(data_dir), model_variant=TEST_VARIANT,
                dataset="shapes_evidence", train_crop_size=(33, 33), train_batch_size=2,
                training_number_of_steps=steps, save_interval_steps=2,
                save_summaries_images=False, seed=0, optimizer="adam", base_learning_rate=1e-3)
    return TrainOptions(**{**base, **changes})


@pytest.fixture(scope="session")
def tiny_run(shapes_data, tmp_path_factory):
    """A real (4-step) tools.train run directory on ``shapes_data``, trained once per
    worker. Read it; a test that writes into a run directory copies it (``copy_run``)."""
    from deeplab_ext.run.trainer import train

    logdir = tmp_path_factory.mktemp("tiny_run") / "run"
    train(tiny_train_options(logdir, shapes_data), printer=lambda line: None)
    before = _snapshot(logdir)
    yield logdir
    assert _snapshot(logdir) == before, "a test wrote into the shared tiny_run: copy_run it"


def _snapshot(folder: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def copy_run(run: pathlib.Path, dest: pathlib.Path) -> pathlib.Path:
    """A copy of a shared run directory to write into (tuning, resuming, exports)."""
    import shutil

    shutil.copytree(run, dest)
    return dest


@pytest.fixture(scope="session")
def real_data() -> pathlib.Path:
    """The shipped real data: ``coco128-voc/`` and ``camvid-sample/`` (read only)."""
    return REAL_DATA


def tool_env() -> dict[str, str]:
    """Environment for running the tools as subprocesses from the repo root."""
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}


def run_tool(module: str, *args: str, timeout: float = 600, env: dict[str, str] | None = None):
    """`python -m tools.<module> args...` from the repo root; output captured as text.

    Run by a warm fork of a process that has imported TensorFlow (``tests/tool_server.py``):
    the tool still runs as ``__main__`` in a process of its own, with its own flags, exit
    status and output, but skips the ~5 s import. ``DEEPLAB_TEST_SUBPROCESS=1`` runs real
    subprocesses instead. The timeout only catches a hung tool: on a loaded 2-core machine
    a tool that takes 30 s alone took over 240 s."""
    import json
    import subprocess
    import sys

    command = [sys.executable, "-m", f"tools.{module}", *args]
    env = tool_env() if env is None else env
    if os.environ.get("DEEPLAB_TEST_SUBPROCESS"):
        return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=timeout)
    server = _tool_server()
    server.stdin.write(json.dumps({"module": f"tools.{module}", "args": list(args),
                                   "cwd": str(REPO), "env": env, "timeout": timeout}) + "\n")
    server.stdin.flush()
    line = server.stdout.readline()
    if not line:  # the server itself died: say so, not a JSON error
        _SERVER.clear()
        raise RuntimeError(f"the tool server exited (status {server.wait()}) running "
                           f"tools.{module}; rerun with DEEPLAB_TEST_SUBPROCESS=1 to see why")
    reply = json.loads(line)
    if reply.get("timeout"):
        raise subprocess.TimeoutExpired(command, timeout)
    return subprocess.CompletedProcess(command, reply["returncode"], reply["stdout"],
                                       reply["stderr"])


_SERVER: list = []  # this test process's tool server (tests/tool_server.py), started once


def _tool_server():
    import subprocess
    import sys

    if _SERVER and _SERVER[0].poll() is None:
        return _SERVER[0]
    server = subprocess.Popen([sys.executable, "-m", "tests.tool_server"], cwd=REPO,
                              env=tool_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    ready = server.stdout.readline()
    assert ready == "ready\n", f"the tool server did not start: {ready!r}"
    _SERVER[:] = [server]
    return server


# The same computation through two different graphs (an eager call and a tf.function,
# a SavedModel, stateless_call inside a loop) orders float operations differently; on
# some CPUs probabilities then differ by a few 1e-9 (seen: 7e-9). Exact equality is kept
# for the same graph on the same inputs; across graphs this tolerance applies.
GRAPH_ATOL = 1e-6


def assert_same_argmax(pred, probs_ref, margin: float = 1e-6) -> None:
    """Class maps from two graphs agree wherever the reference's top two classes are not
    within ``margin`` (a near-tie may flip by float rounding alone)."""
    import numpy as np

    pred, probs_ref = np.asarray(pred), np.asarray(probs_ref)
    top2 = np.sort(probs_ref, axis=-1)[..., -2:]
    clear = (top2[..., 1] - top2[..., 0]) > margin
    ref = np.argmax(probs_ref, axis=-1)
    assert np.array_equal(pred[clear], ref[clear]), "class maps differ away from near-ties"
    assert clear.mean() > 0.9, f"only {clear.mean():.3f} of the pixels are clear of ties"


def assert_user_error(proc, *needles: str) -> str:
    """A tool refused bad input the one way every tool does: exit status 2, no traceback,
    and a last line ``error: ...`` that contains every needle. Returns that line."""
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines and lines[-1].startswith("error: "), proc.stderr[-3000:]
    assert sum(line.startswith("error: ") for line in lines) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[-1], (needle, lines[-1])
    return lines[-1]


def predict_from_export_and_run(export, logdir, image, tmp_path, *flags: str) -> list[dict]:
    """``tools.predict`` on the export and on the run directory: the two JSON reports,
    whose tag probabilities before and after refitting must agree (one serving code)."""
    import json

    import numpy as np

    reports = []
    for source in (f"--saved_model={export}", f"--checkpoint_dir={logdir}"):
        proc = run_tool("predict", source, f"--image={image}", *flags,
                        f"--output={tmp_path / 'pred.png'}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        reports.append(json.loads(proc.stdout[proc.stdout.index("{"):]))
    for key in ("tag_probabilities_before", "tag_probabilities_after"):
        np.testing.assert_allclose(list(reports[0][key].values()),
                                   list(reports[1][key].values()), atol=1e-4)
    return reports
