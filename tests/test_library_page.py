"""The generated page on the library (book/library.md, utils.course.library_page)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from utils.course.chapters import REPO_ROOT, chapters
from utils.course.library_page import (
    PAGE_PATH,
    chapter_imports,
    library_modules,
    render_library_markdown,
    write_library_page,
)


def test_library_page_is_up_to_date():
    assert PAGE_PATH.is_file(), "run `python -m utils.course.library_page` to create book/library.md"
    assert PAGE_PATH.read_text(encoding="utf-8") == render_library_markdown(), (
        "book/library.md is stale: run `python -m utils.course.library_page`"
    )


def test_the_page_is_in_the_book():
    toc = (REPO_ROOT / "_toc.yml").read_text(encoding="utf-8")
    assert re.search(r"caption: Reference\n\s+chapters:\n(\s+- file: .+\n)*\s+- file: book/library\n", toc)


def test_every_module_and_chapter_is_on_the_page():
    page = render_library_markdown()
    modules = library_modules()
    assert {m.name for m in modules} >= {"utils", "utils.course", "utils.course.checks"}
    for module in modules:
        label = "library-" + module.name.replace(".", "-").replace("_", "-")
        assert f"({label})=" in page and f"`{module.name}`" in page, module.name
    for chapter in chapters():
        assert f"(../{chapter.slug}.ipynb)" in page, chapter.slug
    # Every {ref} points at a label the page defines (the book build fails otherwise).
    labels = set(re.findall(r"^\(([a-z0-9-]+)\)=$", page, flags=re.M))
    assert set(re.findall(r"\{ref\}`[^<`]+<([^>]+)>`", page)) <= labels


def test_chapters_are_linked_to_the_modules_they_import():
    imports = {chapter.number: names for chapter, names in chapter_imports().items()}
    assert "utils.course.environment" in imports["00"]  # the setup cell
    assert "utils.course.checks.background" in imports["00"]
    assert "utils.course.published" in imports["02"]


def _fake_repository(root: Path) -> None:
    """A repository with another layout of utils: subpackages, __all__ or not, magics."""
    (root / "utils" / "core").mkdir(parents=True)
    (root / "utils" / "viz").mkdir()
    (root / "utils" / "__init__.py").write_text('"""The package. More text.\n\nDetails."""\n')
    (root / "utils" / "core" / "__init__.py").write_text('"""Core things."""\n')
    (root / "utils" / "core" / "models.py").write_text(
        '"""Loading models: the $COURSE_MODEL <name>."""\n'
        "__all__ = ['load_model', 'DEFAULT', 'Head']\n"
        "from utils.core.hooks import Head\n"
        "#: The model used when none is named.\n"
        "DEFAULT = 'x'\n"
        "def load_model(name=None):\n"
        '    """Load a model with :func:`~utils.core.hooks.z_name` | pipes.\n\n    More."""\n'
        "def helper():\n"
        '    """Not exported."""\n'
    )
    (root / "utils" / "core" / "hooks.py").write_text(
        '"""Hooks."""\n'
        "Head = tuple\n"
        "class HookList:\n"
        '    """Hooks, in order."""\n'
        "def z_name(layer):\n"
        '    """A hook name."""\n'
        "def _private():\n"
        "    pass\n"
    )
    (root / "utils" / "viz" / "__init__.py").write_text("")
    (root / "utils" / "viz" / "plots.py").write_text("def heatmap():\n    pass\n")
    (root / "_toc.yml").write_text(
        "root: book/intro\nparts:\n  - chapters:\n      - file: notebooks/00_a\n      - file: book/library\n"
    )
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": ["# 00 · A chapter"]},
        {
            "cell_type": "code",
            "metadata": {},
            "outputs": [],
            "source": [
                "try:\n",
                "    import nothing\n",
                "except ImportError:\n",
                "    %pip install something\n",
                "from utils.core import models\n",
                "from utils.viz.plots import (\n",
                "    heatmap,\n",
                ")\n",
            ],
        },
    ]
    (root / "notebooks").mkdir()
    (root / "notebooks" / "00_a.ipynb").write_text(json.dumps({"cells": cells, "metadata": {}}))


def test_the_page_follows_any_layout_of_the_package(tmp_path):
    _fake_repository(tmp_path)
    modules = {module.name: module for module in library_modules(tmp_path)}
    assert list(modules) == [
        "utils", "utils.core", "utils.core.hooks", "utils.core.models", "utils.viz", "utils.viz.plots",
    ]
    models = modules["utils.core.models"]
    assert [(n.name, n.kind) for n in models.public] == [
        ("load_model", "function"), ("DEFAULT", "constant"), ("Head", "imported"),
    ]
    assert models.public[1].summary == "The model used when none is named."
    assert [n.name for n in modules["utils.core.hooks"].public] == ["HookList", "z_name"]
    assert modules["utils"].summary == "The package."
    (chapter, names), = chapter_imports(tmp_path).items()
    assert names == {"utils.core", "utils.core.models", "utils.viz.plots"}

    page = render_library_markdown(tmp_path)
    assert "## `utils.core`" in page and "### `utils.core.models`" in page
    assert "| `load_model()` | Load a model with `utils.core.hooks.z_name` \\| pipes. |" in page
    assert "the \\$COURSE_MODEL &lt;name>." in page  # no math, no HTML
    assert "| `Head` | from `utils.core.hooks` |" in page
    assert "├── core/" in page and "└── viz/" in page and "models.py  (11 lines)" in page and "(1 line)" in page
    assert "[00](../notebooks/00_a.ipynb)" in page
    assert "`utils/core/models.py`" in page  # no _config.yml: no link to the repository
    target = tmp_path / "book" / "library.md"
    target.parent.mkdir()
    write_library_page(target, tmp_path)
    assert target.read_text(encoding="utf-8") == page
