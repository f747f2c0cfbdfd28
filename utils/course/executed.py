"""Executed copies of the chapters: run once by the tests, reused by the book build.

``make test`` executes every chapter once on the embedded model, under nbmake (see the
repository's ``conftest.py``), and writes each executed notebook to
:data:`DEFAULT_EXECUTED_DIR` (``_build/executed/notebooks/NN_slug.ipynb``); the committed
chapters stay stripped. The book build of the same run (``tests/test_book_in_browser.py``)
sets :data:`EXECUTED_DIR_ENV_VAR` to that folder, and the book's Sphinx extension
(:mod:`utils.course.book_assets`) then renders each chapter with the outputs of its
executed copy instead of executing it again - but only when the copy is up to date
(:func:`executed_copy`):

* its cells, stripped of outputs, equal the committed notebook's (sources, cell types
  and metadata: :func:`source_digest`);
* the library ``utils/`` and the pinned requirements are those it ran with
  (:func:`library_digest`), so that a copy left by an older run is never shown after
  a change of code the chapter imports;
* it ran on the model the book is built with (``$COURSE_MODEL``, else the embedded one).

Otherwise the chapter is executed by the build as usual. Without the variable (``make
book``) every chapter is executed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

import nbformat

from utils.core.models import EMBEDDED_MODEL_NAME, MODEL_ENV_VAR, is_embedded_name
from utils.course.chapters import REPO_ROOT

__all__ = [
    "EXECUTED_DIR_ENV_VAR",
    "DEFAULT_EXECUTED_DIR",
    "METADATA_KEY",
    "source_digest",
    "library_digest",
    "model_label",
    "executed_path",
    "write_executed_copy",
    "executed_copy",
    "with_outputs_of",
]

#: Set to a folder of executed copies to make the book build reuse them.
EXECUTED_DIR_ENV_VAR = "COURSE_EXECUTED_DIR"

#: Where the test run writes the executed copies (``_build/`` is not committed).
DEFAULT_EXECUTED_DIR = REPO_ROOT / "_build" / "executed"

#: The notebook-metadata key of an executed copy that records what it was run from.
METADATA_KEY = "course_execution"

# Cell metadata a run adds or a front end changes without changing the chapter.
_VOLATILE_CELL_METADATA = {"execution", "ExecuteTime", "collapsed", "scrolled"}
# Notebook metadata a run writes: the kernel's language_info, and this module's record.
_VOLATILE_NOTEBOOK_METADATA = {"language_info", METADATA_KEY}
# Inputs of a chapter besides its own cells.
_LIBRARY_FILES = ("requirements.txt", "constraints.txt", "requirements-model.txt")


def source_digest(notebook: nbformat.NotebookNode) -> str:
    """SHA-256 of the notebook stripped of its outputs: every cell's type, source and
    metadata (run timings aside) and the notebook's metadata (without what a run writes
    there: the kernel's ``language_info`` and :data:`METADATA_KEY`). Equal for a
    committed chapter and its executed copy."""
    cells = [
        {
            "cell_type": cell.cell_type,
            "source": cell.source,
            "metadata": {k: v for k, v in cell.get("metadata", {}).items() if k not in _VOLATILE_CELL_METADATA},
        }
        for cell in notebook.cells
    ]
    metadata = {k: v for k, v in notebook.metadata.items() if k not in _VOLATILE_NOTEBOOK_METADATA}
    text = json.dumps({"cells": cells, "metadata": metadata}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def library_digest() -> str:
    """SHA-256 of everything a chapter imports from the repository: the files of this
    package ``utils`` (compiled files aside) and the repository's pinned requirements."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    files = sorted(
        path
        for path in package.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    )
    files += [package.parent / name for name in _LIBRARY_FILES if (package.parent / name).is_file()]
    for path in files:
        digest.update(path.relative_to(package.parent).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def model_label(name: str | None = None) -> str:
    """The model a run uses: ``name``, else ``$COURSE_MODEL``, else the embedded model
    (any spelling of the embedded model's name gives :data:`EMBEDDED_MODEL_NAME`)."""
    name = name or os.environ.get(MODEL_ENV_VAR) or None
    return EMBEDDED_MODEL_NAME if is_embedded_name(name) else name.strip()


def executed_path(chapter: Path, folder: Path = DEFAULT_EXECUTED_DIR, root: Path = REPO_ROOT) -> Path:
    """Where the executed copy of ``chapter`` (``notebooks/NN_slug.ipynb``) is kept."""
    return Path(folder) / Path(chapter).absolute().relative_to(Path(root).absolute())


def write_executed_copy(
    executed: nbformat.NotebookNode,
    chapter: Path,
    *,
    model: str | None = None,
    folder: Path = DEFAULT_EXECUTED_DIR,
    root: Path = REPO_ROOT,
) -> Path:
    """Save ``executed`` (``chapter`` run to the end) as its executed copy, recording
    the digests of the committed chapter and of the library, and the model."""
    committed = nbformat.read(chapter, as_version=4)
    executed = copy.deepcopy(executed)
    executed.metadata[METADATA_KEY] = {
        "source": source_digest(committed),
        "library": library_digest(),
        "model": model_label(model),
    }
    target = executed_path(chapter, folder, root)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    nbformat.write(executed, partial)
    partial.replace(target)
    return target


def executed_copy(
    committed: nbformat.NotebookNode,
    chapter: Path,
    *,
    folder: Path = DEFAULT_EXECUTED_DIR,
    root: Path = REPO_ROOT,
    model: str | None = None,
) -> tuple[nbformat.NotebookNode | None, str]:
    """The executed copy of ``chapter`` when it is up to date with ``committed`` (the
    chapter as it is now), the library and ``model``; else ``None``. The second value
    says why, for the build log."""
    target = executed_path(chapter, folder, root)
    if not target.is_file():
        return None, f"no executed copy at {target}"
    try:
        executed = nbformat.read(target, as_version=4)
    except Exception as error:  # a truncated or foreign file is only a cache miss
        return None, f"unreadable executed copy {target}: {error}"
    recorded = executed.metadata.get(METADATA_KEY, {})
    wanted = model_label(model)
    if recorded.get("model") != wanted:
        return None, f"{target} ran on {recorded.get('model')!r}, the book is built on {wanted!r}"
    if recorded.get("source") != source_digest(committed) or source_digest(executed) != source_digest(committed):
        return None, f"{target} is stale: the chapter's cells changed since it ran"
    if recorded.get("library") != library_digest():
        return None, f"{target} is stale: utils/ or the requirements changed since it ran"
    return executed, f"up to date ({target})"


def with_outputs_of(committed: nbformat.NotebookNode, executed: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """``committed`` with the outputs and execution counts of ``executed`` (the same
    cells, see :func:`source_digest`) and the ``language_info`` its kernel reported (as
    executing it in the build would give), marked for myst-nb not to execute it again."""
    merged = copy.deepcopy(committed)
    if "language_info" in executed.metadata:
        merged.metadata["language_info"] = copy.deepcopy(executed.metadata["language_info"])
    for cell, ran in zip(merged.cells, executed.cells, strict=True):
        if cell.cell_type == "code":
            cell.outputs = ran.get("outputs", [])
            cell.execution_count = ran.get("execution_count")
    merged.metadata.setdefault("mystnb", {})["execution_mode"] = "off"
    return merged
