"""Execute every student notebook: the only errors allowed are the exercise stubs'.

A student version must never break for another reason (a later cell that used a
learner's function, a check that crashes on the stub). Each exercise's check cell must
stop at its stub with ``NotImplementedError``; every other cell must run cleanly.
"""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from utils.course.exercises import STUDENT_DIR

STUDENT_NOTEBOOKS = sorted(STUDENT_DIR.glob("*.ipynb"))


def _errors(notebook: nbformat.NotebookNode) -> list[tuple[int, str, str]]:
    return [
        (index, output.ename, output.evalue)
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.output_type == "error"
    ]


@pytest.mark.parametrize("path", STUDENT_NOTEBOOKS, ids=lambda path: path.stem)
def test_student_notebook_runs_with_only_stub_errors(path: Path):
    notebook = nbformat.read(path, as_version=4)
    exercises = [
        index
        for index, cell in enumerate(notebook.cells)
        if "exercise" in cell.get("metadata", {}).get("tags", [])
    ]
    assert exercises, f"{path.name} has no exercise cells"
    client = NotebookClient(
        notebook,
        timeout=900,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    errors = _errors(notebook)
    unexpected = [error for error in errors if error[1] != "NotImplementedError"]
    assert not unexpected, f"{path.name}: errors other than the stubs: {unexpected}"
    # Each exercise's check cell (the cell after the stub) stops at the stub.
    stopped = {index for index, _, _ in errors}
    assert stopped == {index + 1 for index in exercises}, (
        f"{path.name}: NotImplementedError in cells {sorted(stopped)}, expected exactly the "
        f"check cells {[index + 1 for index in exercises]}"
    )
