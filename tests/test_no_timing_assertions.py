"""Chapters print how long things take; they never assert it.

Wall-clock and CPU times depend on the machine and on what else runs on it, so an
assertion on them makes a chapter fail on a busy machine for no fault of the chapter.
Speed claims are measured in ``tests/benchmarks/`` (``make benchmark``) instead. This
test reads every chapter's code cells (nothing runs) and fails on an ``assert`` that
reads a time: a value computed from ``time.perf_counter()``, ``time.process_time()``
and the like, or from an attribute whose name says seconds (``history.wall_seconds``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

from notebook_names import python_source

CHAPTERS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CLOCKS = {"perf_counter", "perf_counter_ns", "process_time", "process_time_ns", "time", "time_ns", "monotonic",
          "monotonic_ns", "thread_time"}


def _reads_time(node: ast.AST, timed: set[str]) -> bool:
    for inner in ast.walk(node):
        if isinstance(inner, ast.Name) and isinstance(inner.ctx, ast.Load) and inner.id in timed:
            return True
        if isinstance(inner, ast.Attribute) and "seconds" in inner.attr:
            return True
        if isinstance(inner, ast.Call):
            function = inner.func
            name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", None)
            base = function.value if isinstance(function, ast.Attribute) else None
            if name in CLOCKS and (base is None or (isinstance(base, ast.Name) and base.id == "time")):
                return True
    return False


def _targets(node: ast.AST) -> set[str]:
    """Names a target writes to, including the container of ``x[...] = ...``."""
    if isinstance(node, ast.Name):
        return {node.id}
    if isinstance(node, (ast.Tuple, ast.List)):
        return set().union(*(_targets(element) for element in node.elts))
    if isinstance(node, ast.Starred):
        return _targets(node.value)
    if isinstance(node, (ast.Subscript, ast.Attribute)):
        return _targets(node.value)  # the container, not the index
    return set()


def timing_assertions(sources: list[str]) -> list[str]:
    """The ``assert`` statements of ``sources`` (a notebook's code cells) that read a
    time, as ``"cell N: <statement>"``. Cells are read in order, each statement in
    source order: a name holds a time from an assignment computed from one until it is
    assigned something else."""
    timed: set[str] = set()
    found = []
    for index, source in enumerate(sources):
        tree = ast.parse(python_source(source))
        nodes = [
            node
            for node in ast.walk(tree)
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.For, ast.AsyncFor, ast.NamedExpr, ast.Assert))
        ]
        for node in sorted(nodes, key=lambda node: (node.lineno, node.col_offset)):
            if isinstance(node, ast.Assert):
                if _reads_time(node, timed):
                    found.append(f"cell {index}: {ast.unparse(node)}")
                continue
            if isinstance(node, (ast.For, ast.AsyncFor)):
                targets, value = [node.target], node.iter
            elif isinstance(node, ast.Assign):
                targets, value = node.targets, node.value
            else:
                targets, value = [node.target], node.value
            if value is None:
                continue
            names = set().union(*(_targets(target) for target in targets))
            if _reads_time(value, timed) or (isinstance(node, ast.AugAssign) and names & timed):
                timed |= names
            elif all(isinstance(target, ast.Name) for target in targets):
                timed -= names  # rebound to something else
    return found


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda path: path.stem)
def test_the_chapter_asserts_no_timing(chapter: Path):
    notebook = nbformat.read(chapter, as_version=4)
    code = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    found = timing_assertions(code)
    assert not found, (
        f"{chapter.name} asserts on timings (print them; measure speed in tests/benchmarks/): {found}"
    )


def test_timing_assertions_are_found():
    assert timing_assertions(
        [
            "import time\nstart = time.perf_counter()\nrun()\nexact_seconds = time.perf_counter() - start",
            "t0 = time.perf_counter()\nfast()\nattribution_seconds = time.perf_counter() - t0",
            "assert attribution_seconds < exact_seconds / 5\nassert result > 0",
            "TIMES = {}\nTIMES['a'] = (history.cpu_seconds, 1)\nfor name, (cpu, wall) in TIMES.items():\n"
            "    assert wall < 10",
        ]
    ) == ["cell 2: assert attribution_seconds < exact_seconds / 5", "cell 3: assert wall < 10"]
    assert timing_assertions(["seconds_note = 'fast'\nassert len(seconds_note) == 4"]) == []
