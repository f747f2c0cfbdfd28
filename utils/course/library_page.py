"""The book page "The course library" (``book/library.md``), generated from the code.

The page shows how the package ``utils`` is laid out and what each part offers, so that
a reader can find the code behind any chapter: for every module its docstring's first
sentence, its size, the chapters that import it, and its public names (``__all__`` when
the module defines it, else the functions and classes it defines without a leading
underscore) with the first sentence of their docstrings; and, chapter by chapter, the
modules each one imports.

Everything is read from the source with :mod:`ast` - no module is imported - so the
page does not depend on torch or a model being installed, nothing runs, and it follows
whatever subpackages exist. Chapters are those of ``_toc.yml``; a chapter imports a
module when one of its code cells has an ``import`` of it (or a ``from`` import of a
name from it).

Run ``python -m utils.course.library_page`` after changing ``utils``;
``tests/test_library_page.py`` fails while the committed page is stale.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from utils.course.chapters import REPO_ROOT, Chapter, chapters

__all__ = [
    "PAGE_PATH",
    "PublicName",
    "ModuleInfo",
    "library_modules",
    "chapter_imports",
    "render_library_markdown",
    "write_library_page",
    "main",
]

#: The page this module writes.
PAGE_PATH: Path = REPO_ROOT / "book" / "library.md"

COURSE_PACKAGE = "utils.course"


@dataclass(frozen=True)
class PublicName:
    """One public name of a module: ``kind`` is ``"function"``, ``"class"``,
    ``"constant"`` or ``"imported"`` (re-exported from ``summary``'s module)."""

    name: str
    kind: str
    summary: str


@dataclass(frozen=True)
class ModuleInfo:
    """What the page says about one module (``path`` relative to the repository root)."""

    name: str
    path: str
    summary: str
    lines: int
    public: tuple[PublicName, ...]

    @property
    def package(self) -> str:
        """The package the module belongs to (a package's ``__init__`` belongs to itself)."""
        return self.name if self.path.endswith("__init__.py") else self.name.rsplit(".", 1)[0]


def _first_sentence(docstring: str | None) -> str:
    """The first sentence of a docstring's first paragraph, on one line."""
    if not docstring:
        return ""
    paragraph = " ".join(docstring.strip().split("\n\n", 1)[0].split())
    return re.split(r"(?<=[.!?])\s+(?=[A-Z])", paragraph, maxsplit=1)[0]


def _comment_above(lines: list[str], lineno: int) -> str:
    """The ``#:`` comment block just above line ``lineno`` (1-based), Sphinx's way of
    documenting a constant."""
    found: list[str] = []
    index = lineno - 2
    while index >= 0 and lines[index].lstrip().startswith("#:"):
        found.insert(0, lines[index].lstrip()[2:].strip())
        index -= 1
    return " ".join(found)


def _public_names(tree: ast.Module, source: str) -> tuple[PublicName, ...]:
    lines = source.splitlines()
    defined: dict[str, PublicName] = {}
    exported: list[str] | None = None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            kind = "class" if isinstance(node, ast.ClassDef) else "function"
            summary = _first_sentence(ast.get_docstring(node))
            defined[node.name] = PublicName(node.name, kind, summary)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if not isinstance(target, ast.Name):
                    continue
                if target.id == "__all__" and isinstance(node.value, (ast.List, ast.Tuple)):
                    exported = [
                        element.value
                        for element in node.value.elts
                        if isinstance(element, ast.Constant) and isinstance(element.value, str)
                    ]
                else:
                    comment = _comment_above(lines, node.lineno)
                    defined[target.id] = PublicName(target.id, "constant", comment)
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                name = alias.asname or alias.name
                defined.setdefault(name, PublicName(name, "imported", node.module))
    if exported is None:
        return tuple(
            item
            for name, item in defined.items()
            if not name.startswith("_") and item.kind in {"function", "class"}
        )
    return tuple(defined.get(name, PublicName(name, "constant", "")) for name in exported)


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def library_modules(root: Path = REPO_ROOT) -> list[ModuleInfo]:
    """Every module of the package ``utils`` under ``root``: the library's packages in
    alphabetical order, then the course machinery's; in each, the package first."""
    found = []
    for path in (Path(root) / "utils").rglob("*.py"):
        if "__pycache__" in path.parts:
            continue
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source, filename=str(path))
        found.append(
            ModuleInfo(
                name=_module_name(path, Path(root)),
                path=path.relative_to(root).as_posix(),
                summary=_first_sentence(ast.get_docstring(tree)),
                lines=len(source.splitlines()),
                public=_public_names(tree, source),
            )
        )

    def order(module: ModuleInfo) -> tuple[bool, str, bool, str]:
        package = module.package
        in_course = package == COURSE_PACKAGE or package.startswith(COURSE_PACKAGE + ".")
        return (in_course, module.package, module.name != module.package, module.name)

    return sorted(found, key=order)


def _code_cells(notebook: Path) -> list[str]:
    cells = json.loads(notebook.read_text(encoding="utf-8")).get("cells", [])
    sources = [cell.get("source", "") for cell in cells if cell.get("cell_type") == "code"]
    return ["".join(source) if isinstance(source, list) else source for source in sources]


def _as_python(cell: str) -> str:
    """A cell's source with IPython's ``%magic`` and ``!shell`` lines made into ``pass``."""
    out = []
    for line in cell.splitlines():
        stripped = line.lstrip()
        indent = line[: len(line) - len(stripped)]
        out.append(indent + "pass" if stripped.startswith(("%", "!")) else line)
    return "\n".join(out)


def chapter_imports(root: Path = REPO_ROOT) -> dict[Chapter, set[str]]:
    """For each chapter of ``_toc.yml``, the modules of ``utils`` its code cells import."""
    known = {module.name for module in library_modules(root)}
    result: dict[Chapter, set[str]] = {}
    for chapter in chapters(root):
        modules: set[str] = set()
        for cell in _code_cells(Path(root) / f"{chapter.slug}.ipynb"):
            try:
                tree = ast.parse(_as_python(cell))
            except SyntaxError as error:
                raise ValueError(f"{chapter.name}: a code cell does not parse: {error}") from error
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    modules.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    modules.add(node.module)
                    # `from utils import models` imports the module utils.models.
                    modules.update(f"{node.module}.{alias.name}" for alias in node.names)
        result[chapter] = modules & known
    return result


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------

_CODE_SPAN = re.compile(r"(``.+?``|`[^`]+`)")
_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def _markdown(text: str) -> str:
    """Docstring text (reStructuredText) as safe MyST for a table cell or a line."""
    text = _ROLE.sub(lambda m: f"``{m.group(1)}``", text)
    parts = []
    for index, part in enumerate(_CODE_SPAN.split(text)):
        if index % 2:  # a code span: ``x`` becomes `x`
            parts.append("`" + part.strip("`") + "`")
        else:  # prose: nothing MyST would read as math, HTML or a role
            for char, escaped in (("\\", "\\\\"), ("$", "\\$"), ("<", "&lt;"), ("{", "\\{")):
                part = part.replace(char, escaped)
            parts.append(part)
    return "".join(parts).replace("|", "\\|")


def _lines(count: int) -> str:
    return f"{count} line" if count == 1 else f"{count} lines"


def _label(module: str) -> str:
    return "library-" + module.replace(".", "-").replace("_", "-")


def _ref(module: str) -> str:
    return f"{{ref}}`{module} <{_label(module)}>`"


def _repository(root: Path) -> str | None:
    """The source's web address, from ``_config.yml`` (``repository: url, branch``)."""
    config_path = Path(root) / "_config.yml"
    if not config_path.is_file():
        return None
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    repository = config.get("repository") or {}
    url = repository.get("url")
    return f"{url.rstrip('/')}/blob/{repository.get('branch', 'main')}" if url else None


def _chapter_link(chapter: Chapter) -> str:
    return f"[{chapter.number}](../{chapter.slug}.ipynb)"


def _tree(modules: list[ModuleInfo]) -> list[str]:
    """The package as a text tree, each module with its line count."""
    lines = ["utils/"]
    by_package: dict[str, list[ModuleInfo]] = {}
    for module in modules:
        by_package.setdefault(module.package, []).append(module)

    def walk(package: str, prefix: str) -> None:
        entries: list[tuple[str, str | None]] = []
        for module in by_package.get(package, []):
            entries.append((f"{Path(module.path).name}  ({_lines(module.lines)})", None))
        children = sorted(p for p in by_package if p.rsplit(".", 1)[0] == package and p != package)
        entries += [(child.rsplit(".", 1)[-1] + "/", child) for child in children]
        for index, (text, child) in enumerate(entries):
            last = index == len(entries) - 1
            lines.append(prefix + ("└── " if last else "├── ") + text)
            if child is not None:
                walk(child, prefix + ("    " if last else "│   "))

    walk("utils", "")
    return lines


def _name_row(item: PublicName) -> str:
    """One row of a module's table of public names."""
    if item.kind == "function":
        return f"| `{item.name}()` | {_markdown(item.summary)} |"
    if item.kind == "imported":
        return f"| `{item.name}` | from `{item.summary}` |"
    what = _markdown(item.summary)
    if item.kind == "class":
        what = f"class. {what}" if what else "class"
    return f"| `{item.name}` | {what} |"


def render_library_markdown(root: Path = REPO_ROOT) -> str:
    """The page ``book/library.md`` for the repository at ``root``, ending in a newline."""
    modules = library_modules(root)
    imports = chapter_imports(root)
    source = _repository(root)
    importers = {
        module.name: [chapter for chapter, names in imports.items() if module.name in names]
        for module in modules
    }
    out: list[str] = []
    add = out.append
    add("% This page is generated from the source of utils by utils/course/library_page.py.")
    add("% Do not edit it by hand: run `python -m utils.course.library_page`.")
    add("")
    add("(library)=")
    add("# The course library")
    add("")
    add(
        "Every chapter imports its tools from the package `utils`, so that a notebook can "
        "show the ideas rather than the plumbing. This page shows how the package is laid "
        "out and what each part offers. The library is everything outside `utils.course`; "
        "`utils.course` is the course's own machinery (the setup cell, the exercises' "
        "checks, the taxonomy, the book's extension), which uses the library and is never "
        "used by it. For each module: what it is for, its size, the chapters that import "
        "it, and its public functions, classes and constants."
    )
    add("")
    add("```text")
    out.extend(_tree(modules))
    add("```")
    add("")
    add("(library-by-chapter)=")
    add("## By chapter")
    add("")
    add("| Chapter | Modules it imports |")
    add("|---|---|")
    for chapter, names in imports.items():
        used = ", ".join(_ref(name) for name in sorted(names)) or "none"
        add(f"| {_chapter_link(chapter)} {_markdown(chapter.title)} | {used} |")
    add("")
    for module in modules:
        # A package's own module (its __init__) opens the package's section.
        is_package = module.name == module.package
        add(f"({_label(module.name)})=")
        add(f"{'##' if is_package else '###'} `{module.name}`")
        add("")
        if module.summary:
            add(_markdown(module.summary))
            add("")
        where = f"[{module.path}]({source}/{module.path})" if source else f"`{module.path}`"
        users = ", ".join(_chapter_link(c) for c in importers[module.name]) or "none"
        add(f"{_lines(module.lines)} · {where} · imported by chapters: {users}")
        add("")
        if module.public:
            add("| Name | What it is |")
            add("|---|---|")
            out.extend(_name_row(item) for item in module.public)
            add("")
    return "\n".join(out).rstrip("\n") + "\n"


def write_library_page(path: Path = PAGE_PATH, root: Path = REPO_ROOT) -> None:
    """Write :func:`render_library_markdown` to ``path`` (UTF-8)."""
    Path(path).write_text(render_library_markdown(root), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Write ``book/library.md``; with ``--check``, only say whether it is stale."""
    parser = argparse.ArgumentParser(description="Generate the book page on the library.")
    parser.add_argument("--check", action="store_true", help="only report a stale page")
    options = parser.parse_args(argv)
    if options.check:
        page = render_library_markdown()
        fresh = PAGE_PATH.is_file() and PAGE_PATH.read_text(encoding="utf-8") == page
        advice = "up to date" if fresh else "stale: run python -m utils.course.library_page"
        print(f"{PAGE_PATH} is {advice}")
        return 0 if fresh else 1
    write_library_page()
    print(f"wrote {PAGE_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
