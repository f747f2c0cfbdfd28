"""The executed copies of the chapters: written by the test run, reused by the book build
only when up to date (utils/course/executed.py). No kernel runs here."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from utils.course import executed as ex


def _chapter(root: Path, source: str = "print(1)") -> tuple[Path, nbformat.NotebookNode]:
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_markdown_cell("# 99 · Test"), nbformat.v4.new_code_cell(source)]
    )
    path = root / "notebooks" / "99_test.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)
    return path, notebook


def _run(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """What a kernel leaves: outputs, execution counts, timings and language_info."""
    ran = nbformat.reads(nbformat.writes(notebook), as_version=4)
    code = ran.cells[1]
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    code.execution_count = 1
    code.metadata["execution"] = {"iopub.status.busy": "2026-12-01T00:00:00Z"}
    ran.metadata["language_info"] = {"name": "python", "version": "3.11"}
    return ran


def test_a_run_changes_outputs_not_the_source_digest(tmp_path):
    _, notebook = _chapter(tmp_path)
    assert ex.source_digest(_run(notebook)) == ex.source_digest(notebook)
    edited = nbformat.reads(nbformat.writes(notebook), as_version=4)
    edited.cells[1].source = "print(2)"
    assert ex.source_digest(edited) != ex.source_digest(notebook)


def test_an_up_to_date_copy_is_reused_with_its_outputs(tmp_path, monkeypatch):
    monkeypatch.delenv("COURSE_MODEL", raising=False)
    path, notebook = _chapter(tmp_path)
    folder = tmp_path / "executed"
    target = ex.write_executed_copy(_run(notebook), path, folder=folder, root=tmp_path)
    assert target == folder / "notebooks" / "99_test.ipynb"
    copy, reason = ex.executed_copy(notebook, path, folder=folder, root=tmp_path)
    assert copy is not None, reason
    merged = ex.with_outputs_of(notebook, copy)
    assert merged.cells[1].outputs[0].text == "1\n"
    assert merged.metadata["mystnb"]["execution_mode"] == "off"
    assert notebook.cells[1].outputs == []  # the committed chapter is left stripped


@pytest.mark.parametrize("change", ["source", "model", "missing", "garbled"])
def test_a_stale_or_foreign_copy_is_not_reused(tmp_path, monkeypatch, change):
    monkeypatch.delenv("COURSE_MODEL", raising=False)
    path, notebook = _chapter(tmp_path)
    folder = tmp_path / "executed"
    target = ex.write_executed_copy(_run(notebook), path, folder=folder, root=tmp_path)
    if change == "source":
        notebook.cells[1].source = "print(2)"
    elif change == "model":
        monkeypatch.setenv("COURSE_MODEL", "gemma-3-270m")
    elif change == "missing":
        target.unlink()
    else:
        target.write_text("{not json")
    copy, reason = ex.executed_copy(notebook, path, folder=folder, root=tmp_path)
    assert copy is None
    assert {"source": "changed", "model": "gemma-3-270m", "missing": "no executed copy", "garbled": "unreadable"}[
        change
    ] in reason


def test_a_change_to_the_library_makes_the_copy_stale(tmp_path, monkeypatch):
    monkeypatch.delenv("COURSE_MODEL", raising=False)
    path, notebook = _chapter(tmp_path)
    folder = tmp_path / "executed"
    ex.write_executed_copy(_run(notebook), path, folder=folder, root=tmp_path)
    monkeypatch.setattr(ex, "library_digest", lambda: "another library")
    copy, reason = ex.executed_copy(notebook, path, folder=folder, root=tmp_path)
    assert copy is None and "utils/ or the requirements changed" in reason
