"""The student notebooks break only at their stubs, checked without re-running the chapters.

A student version (``utils.course.exercises``) is its chapter with each exercise's
solution replaced by a stub that raises ``NotImplementedError``. It must never break for
another reason: a later cell that used a learner's function, or a check that crashes
on the stub instead of stopping at it. Every cell the generator leaves alone is the
instructor's (``tests/test_exercises.py`` keeps ``student/`` up to date) and runs under
nbmake with the chapter, so two checks cover the rest:

1. statically, for every chapter (no kernel): the names a solution cell defines, and
   the names its check cell binds once it has called the learner's function, are read
   by no later cell but that check cell - so every cell the generator leaves intact
   runs in the student version as in the chapter; and each check cell reads the
   exercise's function;
2. by executing, for every student notebook, only its exercise and check cells, with the
   stubs in place, after the setup cell and the few cells they need (the cells binding
   the names they read, found statically and transitively; on the embedded model when a
   check needs the model): each check cell must stop at its own stub's
   ``NotImplementedError`` (its traceback goes through the exercise's function), and
   every other cell must run cleanly.
"""

from __future__ import annotations

import ast
import copy
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from notebook_names import CellNames, backward_slice, binder, cell_names, notebook_names
from utils.course.exercises import (
    CHAPTER_DIR,
    STUB,
    STUDENT_DIR,
    solution_cells,
    student_source,
)

STUDENT_NOTEBOOKS = sorted(STUDENT_DIR.glob("*.ipynb"))
CHAPTERS = [
    path
    for path in sorted(CHAPTER_DIR.glob("[0-9][0-9]_*.ipynb"))
    if solution_cells(nbformat.read(path, as_version=4))
]
STUB_MESSAGE = ast.parse(STUB).body[0].exc.args[0].value
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _bindings(source: str) -> dict[str, str]:
    """Each name a cell binds at top level -> the (last) statement binding it, dumped."""
    found = {}
    for statement in ast.parse(source).body:
        for name in cell_names(ast.unparse(statement)).binds:
            found[name] = ast.dump(statement)
    return found


def changed_names(solution_source: str) -> set[str]:
    """The names whose value differs in the student version of a solution cell: bound by
    a statement the generator rewrites or removes."""
    instructor, student = _bindings(solution_source), _bindings(student_source(solution_source))
    return {name for name, statement in instructor.items() if student.get(name) != statement}


def _bound_after_call(check: CellNames, exercise_names: set[str]) -> set[str]:
    """Names a check cell binds from the statement that first reads the exercise's names
    on: in the student version that statement raises, so they are never bound."""
    bound, calling = set(), False
    for binds, reads in check.statements:
        calling = calling or bool(reads & exercise_names)
        if calling:
            bound |= binds
    return bound


def breakages(notebook: nbformat.NotebookNode) -> list[str]:
    """How the student version of a chapter would break outside its check cells (part 1
    of the module's docstring); empty when it would not."""
    names = notebook_names(notebook)
    problems = []
    for solution in solution_cells(notebook):
        check = solution + 1
        if check not in names:
            problems.append(f"cell {solution} (solution): the next cell is not a code cell (its check)")
            continue
        defined = changed_names(notebook.cells[solution].source)
        if not defined & names[check].needs:
            problems.append(f"cell {check} (check) reads none of {sorted(defined)}, defined by solution cell {solution}")
        unbound = _bound_after_call(names[check], defined)
        for later in (index for index in names if index > solution and index != check):
            for name in sorted(names[later].needs):
                source = binder(names, later, name)
                if source == solution and name in defined:
                    problems.append(f"cell {later} reads {name!r}, which solution cell {solution} defines")
                elif source == check and name in unbound:
                    problems.append(
                        f"cell {later} reads {name!r}, which check cell {check} binds only after the stub raises"
                    )
    return problems


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda path: path.stem)
def test_only_its_check_cell_uses_what_a_solution_defines(chapter: Path):
    problems = breakages(nbformat.read(chapter, as_version=4))
    assert not problems, f"{chapter.name}: the student version would break outside the checks:\n" + "\n".join(problems)


def test_a_later_cell_that_uses_a_solution_is_caught():
    code, markdown = nbformat.v4.new_code_cell, nbformat.v4.new_markdown_cell
    solution = code(
        "from typing import Any\n\n\ndef my_double(x: Any) -> Any:\n"
        "    # BEGIN SOLUTION\n    return 2 * x\n    # END SOLUTION",
        metadata={"tags": ["solution", "hide-input"]},
    )
    cells = [
        markdown("# 99 · Test"),
        code("import math"),
        markdown("### Exercise"),
        solution,
        code("twice = my_double\ncheck(my_double)\nafter = 1"),
        code("print(math.pi, Any)"),  # fine: the import stays in the student version
    ]
    notebook = nbformat.v4.new_notebook(cells=cells)
    assert breakages(notebook) == []
    notebook.cells.append(code("for x in range(3):\n    print(my_double(x))"))
    notebook.cells.append(code("def later():\n    return after + twice(1)"))
    assert breakages(notebook) == [
        "cell 6 reads 'my_double', which solution cell 3 defines",
        "cell 7 reads 'after', which check cell 4 binds only after the stub raises",
        "cell 7 reads 'twice', which check cell 4 binds only after the stub raises",
    ]
    notebook.cells[4] = code("check(lambda x: x)")
    assert "cell 4 (check) reads none of ['my_double'], defined by solution cell 3" in breakages(notebook)


def _exercise_functions(source: str) -> set[str]:
    """The functions of a student exercise cell whose body raises the stub."""
    return {
        node.name
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and any(isinstance(inner, ast.Raise) and STUB_MESSAGE in ast.unparse(inner) for inner in ast.walk(node))
    }


def check_slice(notebook: nbformat.NotebookNode) -> tuple[dict[int, int], list[int]]:
    """The exercise -> check cell pairs of a student notebook, and the cells to run for
    its checks (the setup cell, the pairs and the cells they need), in order."""
    names = notebook_names(notebook)
    exercises = [
        index for index, cell in enumerate(notebook.cells) if "exercise" in cell.get("metadata", {}).get("tags", [])
    ]
    pairs = {index: index + 1 for index in exercises}
    setup = min(names)
    cells, unresolved = backward_slice(names, {setup, *pairs, *pairs.values()})
    assert not unresolved, f"names that no earlier cell binds, by cell: {unresolved}"
    return pairs, cells


@pytest.mark.parametrize("path", STUDENT_NOTEBOOKS, ids=lambda path: path.stem)
def test_the_checks_need_no_cell_they_cannot_find(path: Path):
    """Static part of the test below: every name the check cells read is bound by an
    earlier cell, and every check cell is a code cell."""
    notebook = nbformat.read(path, as_version=4)
    pairs, cells = check_slice(notebook)
    assert pairs, f"{path.name} has no exercise cells"
    for exercise, check in pairs.items():
        assert notebook.cells[check].cell_type == "code", f"{path.name}: cell {check} after exercise {exercise} is not code"


@pytest.mark.notebooks
@pytest.mark.parametrize("path", STUDENT_NOTEBOOKS, ids=lambda path: path.stem)
def test_each_check_stops_at_its_stub(path: Path, monkeypatch):
    notebook = nbformat.read(path, as_version=4)
    pairs, cells = check_slice(notebook)
    subset = copy.deepcopy(notebook)
    subset.cells = [subset.cells[index] for index in cells]
    monkeypatch.delenv("COURSE_MODEL", raising=False)  # the checks run on the embedded model
    client = NotebookClient(
        subset,
        timeout=900,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    errors = {
        original: [output for output in cell.get("outputs", []) if output.output_type == "error"]
        for original, cell in zip(cells, subset.cells)
    }
    ran = f"(ran cells {cells} of {len(notebook.cells)})"
    checks = {check: exercise for exercise, check in pairs.items()}
    unexpected = {
        index: [(e.ename, e.evalue) for e in found] for index, found in errors.items() if found and index not in checks
    }
    assert not unexpected, f"{path.name}: errors outside the check cells {ran}: {unexpected}"
    for check, exercise in checks.items():
        found = errors[check]
        functions = _exercise_functions(notebook.cells[exercise].source)
        assert len(found) == 1 and found[0].ename == "NotImplementedError" and found[0].evalue == STUB_MESSAGE, (
            f"{path.name}: check cell {check} should stop at the stub of exercise cell {exercise} "
            f"with NotImplementedError({STUB_MESSAGE!r}); got {[(e.ename, e.evalue) for e in found]} {ran}"
        )
        traceback = ANSI.sub("", "\n".join(found[0].traceback))
        assert any(re.search(rf"\bin {re.escape(name)}\b", traceback) for name in functions), (
            f"{path.name}: check cell {check} raised a stub's NotImplementedError, but not in "
            f"{sorted(functions)} (exercise cell {exercise}):\n{traceback}"
        )
