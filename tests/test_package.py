"""`pip install .`: the wheel holds the weights and NIQE models, and the README's example runs
from any folder with the installed package (not the checkout)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from conftest import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement.strip(), maxsplit=1)[0].lower()


def readme_example() -> str:
    """The Python block under "## The model package in five lines"."""
    section = (ROOT / "README.md").read_text().split("## The model package in five lines", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_dependencies_are_requirements_runtime_packages() -> None:
    lines = [line for line in (ROOT / "requirements.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    required = {_name(line) for line in lines}
    runtime = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    tests = {_name(r) for r in PYPROJECT["project"]["optional-dependencies"]["test"]}
    assert runtime | tests == required and not runtime & tests
    assert tests == {"pytest", "playwright"}


def copy_of_the_project(folder: Path) -> Path:
    """What pyproject.toml names, copied: setuptools writes build/ and *.egg-info where it builds,
    and the checkout must stay clean; nothing else of the checkout can leak into the package."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in PYPROJECT["tool"]["setuptools"]["packages"]:
        if "." not in package:  # a subpackage comes with its parent's folder
            shutil.copytree(ROOT / package, folder / package, ignore=ignore)
    for name in ("pyproject.toml", "README.md", *(f"{m}.py" for m in PYPROJECT["tool"]["setuptools"]["py-modules"])):
        shutil.copy2(ROOT / name, folder / name)
    return folder


def new_venv(folder: Path) -> Path:
    """A venv that sees this interpreter's packages (torch, gradio, pip, ...) but not the checkout;
    its python. The system pip installs into the venv it runs in: no registry, no ensurepip."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(folder)], check=True)
    return folder / "bin" / "python"


def outside_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SRGAN_WEIGHTS_DIR", "SRGAN_APP_DIR")}


@pytest.mark.e2e
def test_wheel_installs_and_runs_the_readme_example_from_elsewhere(tmp_path: Path) -> None:
    source = copy_of_the_project(tmp_path / "source")
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", "-w", str(wheels), str(source)], check=True, capture_output=True, text=True)
    (wheel,) = wheels.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for data in ("srgan/weights/srresnet_x4.pt", "srgan/weights/srgan_x4.pt", "srgan/niqe_models/NOTICE.md",
                 "srgan/niqe_models/niqe_pris_params.npz", "srgan/niqe_models/project.npz", "app.py",
                 "demo/ui.py", "survey/__main__.py", "survey/ratings.py", "survey/study/db.py",
                 "survey/analysis/report.py"):
        assert data in names, data
    assert not any(name.startswith("tools/") for name in names)  # the load test runs from a checkout

    venv = tmp_path / "venv"
    python = new_venv(venv)
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
                   check=True, capture_output=True, text=True)

    work = tmp_path / "elsewhere"
    work.mkdir()
    Image.new("RGB", (20, 12), (90, 30, 200)).save(work / "photo.jpg")
    check = ("\nimport app, demo, srgan, survey\n"
             "print('\\n'.join(m.__file__ for m in (srgan, demo, survey, app)))\n"
             "print(app.parse_args([]).app_dir)\n")
    env = outside_env()
    run = subprocess.run([str(python), "-c", readme_example() + check], cwd=work, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    site = venv.resolve()
    *module_files, app_dir = run.stdout.split()
    for module_file in module_files:
        assert Path(module_file).resolve().is_relative_to(site), module_file
    assert Path(app_dir) == work.resolve() / "var"  # the app's state: never inside site-packages
    assert Image.open(work / "photo_x4.png").size == (80, 48)
    app_help = subprocess.run([str(venv / "bin" / "srgan-app"), "--help"], cwd=work, env=env,
                              capture_output=True, text=True, timeout=300)
    assert app_help.returncode == 0 and "--app-dir" in app_help.stdout, app_help.stderr


@pytest.mark.e2e
def test_editable_install_imports_the_source_folder(tmp_path: Path) -> None:
    source = copy_of_the_project(tmp_path / "source")
    python = new_venv(tmp_path / "venv")
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-e", str(source)], check=True, capture_output=True, text=True)
    run = subprocess.run([str(python), "-c", "import app, srgan.niqe; print(app.__file__, srgan.niqe.MODELS_DIR)"],
                         cwd=tmp_path, env=outside_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    app_file, models = (Path(p) for p in run.stdout.split())
    assert app_file == source / "app.py" and (models / "niqe_pris_params.npz").is_file()
