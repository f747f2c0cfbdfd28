"""The library never imports the course machinery (utils/course).

The course's own code - setup cell, exercises and checks, taxonomy, published heads, the
book's extension - may use the library; the library must work without it, so that it
can be read, tested and reused on its own. Every module under utils/ outside
utils/course is parsed (not imported) and its imports resolved, relative ones included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "utils"
COURSE = "utils.course"


def module_name(path: Path, root: Path = ROOT) -> str:
    """``utils/core/models.py`` -> ``utils.core.models`` (a package is its __init__)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """Every module ``path`` imports, as ``(line, dotted name)``; ``from a import b`` gives
    both ``a`` and ``a.b`` (``b`` may be a submodule), relative imports are resolved, and
    ``importlib.import_module("...")`` / ``__import__("...")`` with a literal count too."""
    name = module_name(path, root)
    is_package = path.name == "__init__.py"
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                # The package a relative import starts from: the module's own package
                # (its parent, unless it is a package's __init__), then one up per dot.
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in {"import_module", "__import__"} and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    found.append((node.lineno, first.value))
    return found


def course_imports(path: Path, root: Path = ROOT) -> list[str]:
    """The imports of ``path`` that reach the course machinery, as ``"line: module"``."""
    return [
        f"{line}: {target}"
        for line, target in imported_modules(path, root)
        if target == COURSE or target.startswith(COURSE + ".")
    ]


LIBRARY_MODULES = sorted(
    path
    for path in PACKAGE.rglob("*.py")
    if not path.relative_to(PACKAGE).parts[0] == "course" and "__pycache__" not in path.parts
)


def test_there_is_a_library_and_a_course_part():
    assert (PACKAGE / "course" / "__init__.py").is_file()
    assert len(LIBRARY_MODULES) > 5


@pytest.mark.parametrize("path", LIBRARY_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_library_never_imports_the_course_machinery(path):
    found = course_imports(path)
    assert not found, (
        f"{path.relative_to(ROOT)} imports the course machinery ({'; '.join(found)}): the "
        "library must not depend on utils.course - move what it needs into the library"
    )


def test_the_scan_sees_every_form_of_import(tmp_path):
    """The scanner itself: absolute, from-, relative and dynamic imports are caught."""
    package = tmp_path / "utils" / "viz"
    package.mkdir(parents=True)
    (tmp_path / "utils" / "__init__.py").write_text("from . import course\n")
    cases = {
        "a.py": "import utils.course.taxonomy\n",
        "b.py": "from utils.course import taxonomy\n",
        "c.py": "from utils import course\n",
        "d.py": "from ..course.checks import Case\n",
        "e.py": "import importlib\nimportlib.import_module('utils.course.published')\n",
        "f.py": "def late():\n    from utils.course.environment import SETUP_CELL\n",
    }
    for name, source in cases.items():
        (package / name).write_text(source)
        assert course_imports(package / name, tmp_path), name
    assert course_imports(tmp_path / "utils" / "__init__.py", tmp_path)
    (package / "clean.py").write_text("from utils.coursework import x\nfrom . import course_like\n")
    assert course_imports(package / "clean.py", tmp_path) == []
