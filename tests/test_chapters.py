"""The chapter list comes from _toc.yml (utils.course.chapters); the README's chapter
table agrees with it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from utils.course.chapters import REPO_ROOT, chapter_slugs, chapters, notebook_heading, toc_files


def write_notebook(path: Path, first_cell: str, cell_type: str = "markdown") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cell = {"cell_type": cell_type, "metadata": {}, "source": first_cell.splitlines(keepends=True)}
    path.write_text(json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))


def test_the_chapters_are_the_notebooks_of_the_toc_in_its_order():
    found = chapters()
    notebooks = [entry for entry in toc_files() if entry.startswith("notebooks/")]
    assert [chapter.slug for chapter in found] == notebooks
    assert found[0].slug == "notebooks/00_background" and found[0].number == "00"
    assert found[0].title == "Background and tools" and found[0].name == "00_background.ipynb"
    assert chapter_slugs() == set(notebooks)
    for chapter in found:
        assert (REPO_ROOT / chapter.slug).with_suffix(".ipynb").is_file()
        assert chapter.slug.split("/")[1].startswith(chapter.number + "_")


def test_nested_sections_of_the_toc_count(tmp_path):
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nparts:\n  - caption: A\n    chapters:\n"
        "      - file: notebooks/07_parent\n        sections:\n          - file: notebooks/08_child\n"
        "      - file: book/glossary\n"
    )
    write_notebook(tmp_path / "notebooks" / "07_parent.ipynb", "# 07 · Parent\n\ntext")
    write_notebook(tmp_path / "notebooks" / "08_child.ipynb", "# 08 · A child, with a comma")
    assert [(c.number, c.title) for c in chapters(tmp_path)] == [
        ("07", "Parent"),
        ("08", "A child, with a comma"),
    ]


def test_bad_inputs_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="not in an installed copy"):
        chapters(tmp_path)
    (tmp_path / "_toc.yml").write_text("root: book/intro\nchapters:\n  - file: notebooks/03_x\n")
    with pytest.raises(FileNotFoundError, match="03_x.ipynb does not exist"):
        chapters(tmp_path)
    write_notebook(tmp_path / "notebooks" / "03_x.ipynb", "# Latent reasoning")
    with pytest.raises(ValueError, match="'# NN · Title'"):
        chapters(tmp_path)
    write_notebook(tmp_path / "notebooks" / "03_x.ipynb", "# 04 · Latent reasoning")
    with pytest.raises(ValueError, match="expected 03"):
        chapters(tmp_path)
    write_notebook(tmp_path / "notebooks" / "03_x.ipynb", "# 03 · Code first", cell_type="code")
    with pytest.raises(ValueError, match="Markdown"):
        notebook_heading(tmp_path / "notebooks" / "03_x.ipynb")
    (tmp_path / "_toc.yml").write_text("chapters: []\n")
    with pytest.raises(ValueError, match="no 'root'"):
        toc_files(tmp_path)


# --- the README's chapter table ---------------------------------------------------


def readme_chapter_rows() -> list[dict[str, str]]:
    """The rows of the table under the README's "## Chapters" heading."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Chapters\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == ["#", "chapter", "survey", "status"], header
    return [
        dict(zip(header, (cell.strip() for cell in line.strip("|").split("|"))))
        for line in lines[2:]
    ]


def numbers(cell: str) -> list[str]:
    """``"03"`` -> ``["03"]``, ``"13–16"`` -> ``["13", ..., "16"]``."""
    match = re.fullmatch(r"(\d\d)(?:\s*[–-]\s*(\d\d))?", cell)
    assert match, f"README chapter number {cell!r} is not NN or NN–NN"
    first, last = int(match.group(1)), int(match.group(2) or match.group(1))
    return [f"{n:02d}" for n in range(first, last + 1)]


def test_the_readme_chapter_table_lists_the_books_chapters():
    rows = readme_chapter_rows()
    done = [row for row in rows if row["status"] == "done"]
    book = chapters()
    assert [row["#"] for row in done] == [chapter.number for chapter in book], (
        "the README's 'done' rows must be the chapters of _toc.yml, in order"
    )
    for row, chapter in zip(done, book):
        assert row["chapter"].startswith(chapter.title), (
            f"README row {row['#']}: {row['chapter']!r} should start with the notebook's "
            f"title {chapter.title!r}"
        )
    written = {chapter.number for chapter in book}
    for row in rows:
        assert row["status"] in {"done", "planned"}, row
        if row["status"] == "planned":
            overlap = written & set(numbers(row["#"]))
            assert not overlap, f"README says {row['#']} is planned, but {sorted(overlap)} is in the book"
