"""`pip install .` gives a working library away from the checkout: the wheel is built from
a copy of the sources, installed into a fresh virtual environment, and run from a folder
outside the checkout (a console script, and the real-photo prediction from the shipped
weights and photos inside the installed package).

The fresh environment reaches the dependencies through a .pth line to this environment's
site-packages, so nothing is downloaded; that the wheel's declared requirements are what
that environment holds is checked from the wheel's own metadata."""

from __future__ import annotations

import email
import json
import os
import pathlib
import shutil
import site
import subprocess
import sys
import venv
import zipfile

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> pathlib.Path:
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for package in ("tf_mtl", "deeplab_ext", "tools"):
        shutil.copytree(REPO / package, src / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "-q", "-w", str(dist), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (built,) = dist.glob("deeplab_mtl-*.whl")
    return built


def test_the_wheel_holds_every_package_and_every_shipped_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for init in sorted((REPO / "tf_mtl").rglob("__init__.py")) + sorted(
            (REPO / "deeplab_ext").rglob("__init__.py")):
        assert str(init.relative_to(REPO)) in names, init
    assert {f"deeplab_tools/{p.name}" for p in (REPO / "tools").glob("*.py")} <= names
    assets = REPO / "deeplab_ext" / "assets"
    for path in assets.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            assert str(path.relative_to(REPO)) in names, path
    assert "deeplab_ext/weights/released.json" in names


def _requires(wheel: pathlib.Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        message = email.message_from_bytes(z.read(meta))
    return message.get_all("Requires-Dist") or []


def test_the_declared_dependencies_are_the_ones_tested_here(wheel):
    """Every requirement of a plain `pip install .` (no extra) is satisfied, pinned, by the
    environment the suite runs in: the pins in pyproject.toml are what was tested."""
    from importlib.metadata import version

    from packaging.requirements import Requirement

    base = [Requirement(r) for r in _requires(wheel) if "extra ==" not in r]
    assert {r.name for r in base} >= {"tensorflow-cpu", "keras", "numpy", "absl-py"}
    for req in base:
        assert req.specifier.contains(version(req.name)), (str(req), version(req.name))
    extras = [r for r in _requires(wheel) if "extra ==" in r]
    assert any(r.startswith("tensorflow[and-cuda]") and 'extra == "cuda"' in r for r in extras)


def test_installed_away_from_the_checkout_it_runs_the_tools_on_the_shipped_files(
        wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                              "['purelib'])"], capture_output=True, text=True, check=True
                             ).stdout.strip()
    # The dependencies, from this environment (not its editable copy of the project: a .pth
    # line adds a folder, it does not run that folder's own .pth files).
    (pathlib.Path(purelib) / "_deps.pth").write_text(
        "\n".join(site.getsitepackages()) + "\n")
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    clean["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                           str(wheel)], capture_output=True, text=True, timeout=300, env=clean,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    work = tmp_path / "elsewhere"
    work.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run(list(args), capture_output=True, text=True, timeout=600,
                              env=clean, cwd=work)
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    where = run(str(python), "-c", "import deeplab_ext, deeplab_tools; "
                "print(deeplab_ext.__file__); print(deeplab_tools.__file__)").stdout.split()
    assert all(p.startswith(purelib) for p in where), where  # the installed copy
    listed = run(str(env_dir / "bin" / "deeplab-model-info"), "--list_weights").stdout
    assert "| mobilenetv2_dm05_coco_voc_trainaug |" in listed and "tflite: shipped" in listed
    photo = run(str(python), "-c", "from deeplab_ext.assets import COCO128_VOC; "
                "print(COCO128_VOC / 'JPEGImages' / '000000000036.jpg')").stdout.strip()
    assert photo.startswith(purelib) and pathlib.Path(photo).is_file()
    out = run(str(env_dir / "bin" / "deeplab-predict"),
              "--checkpoint_dir=mobilenetv2_dm05_coco_voc_trainaug", f"--image={photo}",
              "--tags=person", "--output=out.png").stdout
    report = json.loads(out[out.index("{"):])
    assert report["classes_predicted"] == ["background", "person"] and report["pruned"]
    assert (work / "out.png").is_file() and (work / "out_side_by_side.png").is_file()
    for command in ([str(env_dir / "bin" / "deeplab-predict")],
                    [str(python), "-m", "deeplab_tools.predict"]):
        helped = subprocess.run([*command, "--helpshort"], capture_output=True, text=True,
                                timeout=600, env=clean, cwd=work).stdout  # absl exits 1
        assert "Segment one image" in helped and "--checkpoint_dir" in helped, command
