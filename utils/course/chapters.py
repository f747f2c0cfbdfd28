"""The course's chapters, read from the book's table of contents.

``_toc.yml`` is the one list of chapters: a chapter is a ``notebooks/NN_slug`` entry of
it. Its number is the ``NN`` of the file name and its title comes from the notebook's
first heading, ``# NN · Title``. Everything else that needs the chapter list (the
taxonomy's coverage, the README's chapter table, the library page) derives it from
here, so adding a chapter is one line in ``_toc.yml``.

``_toc.yml`` and the notebooks live in the repository, not in an installed copy of
``utils``; the functions below raise :class:`FileNotFoundError` saying so when they are
missing (chapters on Colab never call them).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml

__all__ = [
    "REPO_ROOT",
    "Chapter",
    "toc_files",
    "notebook_heading",
    "chapters",
    "chapter_slugs",
    "chapter_exists",
    "chapter_label",
    "chapter_link",
]

#: Root of the repository (the Jupyter Book root): the folder holding ``_toc.yml``.
REPO_ROOT: Path = Path(__file__).resolve().parents[2]

_SLUG = re.compile(r"notebooks/(\d\d)_[a-z0-9_]+")
# "# 00 · Background and tools": the number, a middle dot, the title.
_HEADING = re.compile(r"#\s+(\d\d)\s+·\s+(\S.*?)\s*")


@dataclass(frozen=True)
class Chapter:
    """One chapter of the book.

    Attributes:
        slug: path of the notebook relative to the book root, without ``.ipynb``, as in
            ``_toc.yml`` (e.g. ``"notebooks/00_background"``).
        number: the two-digit number, e.g. ``"00"``.
        title: the title of the notebook's first heading, e.g. ``"Background and tools"``.
    """

    slug: str
    number: str
    title: str

    @property
    def name(self) -> str:
        """The notebook's file name, e.g. ``"00_background.ipynb"``."""
        return f"{self.slug.rsplit('/', 1)[-1]}.ipynb"


def _toc_path(root: Path) -> Path:
    path = Path(root) / "_toc.yml"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the chapter list is read from the book's _toc.yml, which is "
            "in the repository, not in an installed copy of utils"
        )
    return path


def _entries(node: Any) -> Iterator[str]:
    """Every ``file`` of a _toc.yml node, depth first (parts, chapters and sections)."""
    if isinstance(node, dict):
        if "file" in node:
            yield str(node["file"])
        for key in ("parts", "chapters", "sections"):
            yield from _entries(node.get(key, []))
    elif isinstance(node, list):
        for item in node:
            yield from _entries(item)


def toc_files(root: Path = REPO_ROOT) -> list[str]:
    """Every file ``_toc.yml`` lists, its root page first, in the book's order.

    Raises:
        FileNotFoundError: there is no ``_toc.yml`` under ``root``.
        ValueError: ``_toc.yml`` has no ``root`` entry.
    """
    toc = yaml.safe_load(_toc_path(root).read_text(encoding="utf-8")) or {}
    if "root" not in toc:
        raise ValueError(f"{_toc_path(root)} has no 'root' entry")
    return [str(toc["root"]), *_entries(toc.get("parts", toc.get("chapters", [])))]


def notebook_heading(path: Path) -> tuple[str, str]:
    """The number and title of a chapter notebook's first heading (``# NN · Title``).

    Raises:
        FileNotFoundError: the notebook does not exist.
        ValueError: its first cell does not start with such a heading.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"chapter notebook {path} does not exist")
    cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    source = cells[0].get("source", "") if cells else ""
    first_line = ("".join(source) if isinstance(source, list) else source).split("\n", 1)[0]
    match = _HEADING.fullmatch(first_line)
    if match is None or cells[0].get("cell_type") != "markdown":
        raise ValueError(
            f"{path.name}: the first cell must be Markdown starting with '# NN · Title', "
            f"not {first_line!r}"
        )
    return match.group(1), match.group(2)


def chapters(root: Path = REPO_ROOT) -> tuple[Chapter, ...]:
    """The book's chapters, in the order of ``_toc.yml``.

    Raises:
        FileNotFoundError: ``_toc.yml`` or a notebook it lists is missing.
        ValueError: a notebook's first heading is not ``# NN · Title`` with its number.
    """
    root = Path(root)
    found = []
    for entry in toc_files(root):
        match = _SLUG.fullmatch(entry)
        if match is None:
            continue  # a page of the book (book/*.md), not a chapter
        number, title = notebook_heading(root / f"{entry}.ipynb")
        if number != match.group(1):
            raise ValueError(
                f"{entry}.ipynb is headed '# {number} · ...': expected {match.group(1)}"
            )
        found.append(Chapter(slug=entry, number=number, title=title))
    return tuple(found)


def chapter_slugs(root: Path = REPO_ROOT) -> frozenset[str]:
    """The slugs of the book's chapters (``"notebooks/00_background"``, ...)."""
    return frozenset(chapter.slug for chapter in chapters(root))


def chapter_exists(slug: str, root: Path = REPO_ROOT) -> bool:
    """Whether the notebook of a chapter slug (``"notebooks/03_latent_reasoning"``) is a
    file under ``root``."""
    return (Path(root) / f"{slug}.ipynb").is_file()


def chapter_label(slug: str) -> str:
    """The short label of a chapter slug, e.g. ``"chapter 03"``.

    Raises:
        ValueError: the slug's file name does not start with a number.
    """
    match = re.match(r"(\d+)_", slug.rsplit("/", 1)[-1])
    if match is None:
        raise ValueError(f"chapter slug {slug!r} has no numeric prefix like '03_'")
    return f"chapter {match.group(1)}"


def chapter_link(slug: str, section: str | None = None, *, from_dir: str = "book") -> str:
    """A MyST Markdown link to a chapter notebook from a page in ``from_dir``.

    Args:
        slug: chapter slug such as ``"notebooks/03_latent_reasoning"``.
        section: optional anchor inside the chapter (appended after ``#``).
        from_dir: folder, relative to the book root, of the page holding the link.

    Returns:
        e.g. ``"[chapter 03](../notebooks/03_latent_reasoning.ipynb)"``.
    """
    depth = len([part for part in from_dir.split("/") if part])
    target = "../" * depth + f"{slug}.ipynb"
    if section:
        target += f"#{section}"
    return f"[{chapter_label(slug)}]({target})"
