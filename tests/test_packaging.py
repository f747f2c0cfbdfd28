"""What a non-editable install (Colab's `pip install git+...`) gets: every package under
utils/ and the course's data files.

pyproject.toml finds the packages (`[tool.setuptools.packages.find]`) instead of listing
them, so a new subpackage cannot work locally (editable install) and be missing on Colab.
The test builds the wheel for real - offline, with the installed setuptools, from a copy
of pyproject.toml and utils/ so that no build folder lands in the repository - and reads
what is inside.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Files that are not Python but that the package reads at run time: the taxonomy and the
#: findings registry, one file per model.
DATA_FILES = [
    "utils/course/taxonomy.yaml",
    *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "utils" / "course" / "findings").glob("*.yaml")),
]


def packages_on_disk() -> list[str]:
    """Every folder under utils/ (itself included) that is a package."""
    return sorted(
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "utils").rglob("__init__.py")
        if "__pycache__" not in init.parts
    )


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory) -> set[str]:
    source = tmp_path_factory.mktemp("source")
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copytree(ROOT / "utils", source / "utils", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    command = [
        sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
        "--no-index", "--wheel-dir", str(out), str(source),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (wheel,) = out.glob("attention_heads_course-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_pyproject_finds_the_packages_rather_than_listing_them():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "packages" not in config or "find" in config["packages"], "list no packages by hand"
    assert config["packages"]["find"]["include"] == ["utils", "utils.*"]


def test_the_wheel_holds_every_package_under_utils(wheel_files):
    packages = packages_on_disk()
    assert "utils.course" in packages and "utils.course.checks" in packages
    missing = [p for p in packages if f"{p.replace('.', '/')}/__init__.py" not in wheel_files]
    assert not missing, f"packages missing from the wheel: {missing} (see pyproject.toml)"


def test_the_wheel_holds_every_module_and_the_data_files(wheel_files):
    on_disk = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "utils").rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert on_disk - wheel_files == set()
    for data in DATA_FILES:
        assert (ROOT / data).is_file(), data
        assert data in wheel_files, f"{data} is missing from the wheel: add it to package-data"


def test_the_registry_of_both_models_is_package_data():
    assert "utils/course/findings/SmolLM2-135M-Instruct.yaml" in DATA_FILES
    assert "utils/course/findings/gemma-3-270m.yaml" in DATA_FILES


def test_the_data_files_are_all_that_is_not_python():
    """A new data file under utils/ must be added to DATA_FILES (and so be checked)."""
    others = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "utils").rglob("*")
        if path.is_file() and path.suffix not in {".py", ".pyc"} and "__pycache__" not in path.parts
    }
    assert others == set(DATA_FILES)
