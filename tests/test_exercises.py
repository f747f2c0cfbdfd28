"""Exercises: the student-version generator, the shape of every exercise, and that the
committed student notebooks match their chapters."""

import ast
import re
from pathlib import Path

import nbformat
import pytest

from utils.course.exercises import (
    CHAPTER_DIR,
    SOLUTION_TAG,
    make_student_notebook,
    solution_cells,
    stale_student_notebooks,
    student_source,
)

CHAPTERS = sorted(CHAPTER_DIR.glob("[0-9][0-9]_*.ipynb"))


def test_student_source_replaces_each_block_at_its_indentation():
    source = (
        "def score(pattern):\n"
        "    \"\"\"Doc.\"\"\"\n"
        "    # BEGIN SOLUTION\n"
        "    total = pattern.sum()\n"
        "    return total\n"
        "    # END SOLUTION\n"
        "\n"
        "def other():\n"
        "    # BEGIN SOLUTION\n"
        "    return 1\n"
        "    # END SOLUTION"
    )
    student = student_source(source)
    assert "pattern.sum" not in student and "return 1" not in student
    assert student.count("    raise NotImplementedError(") == 2
    assert '"""Doc."""' in student and "def other():" in student
    compile(student, "<student>", "exec")


@pytest.mark.parametrize(
    "source, message",
    [
        ("x = 1", "no '# BEGIN SOLUTION'"),
        ("# BEGIN SOLUTION\nx = 1", "never closed"),
        ("x = 1\n# END SOLUTION", "without"),
        ("# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION", "inside another"),
    ],
)
def test_student_source_rejects_broken_markers(source, message):
    with pytest.raises(ValueError, match=message):
        student_source(source)


def test_make_student_notebook_removes_solutions_and_outputs():
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# 99 · Title"),
        nbformat.v4.new_code_cell(
            "def f():\n    # BEGIN SOLUTION\n    return 42\n    # END SOLUTION",
            metadata={"tags": [SOLUTION_TAG, "hide-input"]},
        ),
        nbformat.v4.new_code_cell("check(f)", outputs=[nbformat.v4.new_output("stream", text="x")]),
    ]
    student = make_student_notebook(notebook, "99_title.ipynb")
    assert "Student version" in student.cells[1].source
    exercise = student.cells[2]
    assert "return 42" not in exercise.source and "NotImplementedError" in exercise.source
    assert exercise.metadata["tags"] == ["exercise"]
    assert student.cells[3].outputs == []
    assert "return 42" in notebook.cells[1].source  # the instructor version is untouched


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda path: path.stem)
def test_every_chapter_has_two_to_six_well_formed_exercises(chapter):
    notebook = nbformat.read(chapter, as_version=4)
    indices = solution_cells(notebook)
    assert 2 <= len(indices) <= 6, f"{chapter.name} has {len(indices)} exercises"
    for index in indices:
        cell = notebook.cells[index]
        statement = notebook.cells[index - 1]
        check = notebook.cells[index + 1]
        where = f"{chapter.name}, exercise cell {index}"
        assert statement.cell_type == "markdown", where
        assert re.search(r"^#+ .*Exercise", statement.source, flags=re.M), where
        assert "Difficulty" in statement.source and "min" in statement.source, where
        assert "<details>" in statement.source and "Hint" in statement.source, where
        assert "hide-input" in cell.metadata["tags"], f"{where}: the book should fold it"
        top_level = ast.parse(cell.source).body
        allowed = (ast.FunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)
        assert top_level and all(isinstance(node, allowed) for node in top_level), (
            f"{where}: a solution cell only defines functions, so that the student version "
            "runs every later cell with the stub in place"
        )
        student_source(cell.source)  # markers are well formed
        assert check.cell_type == "code" and "check_" in check.source, where


def test_student_notebooks_are_up_to_date():
    problems = stale_student_notebooks()
    assert not problems, "; ".join(problems) + " - run: .venv/bin/python -m utils.course.exercises"
