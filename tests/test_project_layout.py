"""The book's table of contents, the README's two commands and CI agree with the files."""

import re
from pathlib import Path

from utils.course.chapters import toc_files

ROOT = Path(__file__).resolve().parents[1]


def test_every_toc_entry_exists():
    for entry in toc_files():
        candidates = [ROOT / f"{entry}{suffix}" for suffix in (".md", ".ipynb")]
        assert any(path.is_file() for path in candidates), f"_toc.yml lists missing file {entry}"


def test_every_chapter_is_in_the_toc():
    listed = set(toc_files())
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert f"notebooks/{notebook.stem}" in listed, f"{notebook.name} is not in _toc.yml"


def test_chapter_file_names_follow_the_plan():
    for notebook in (ROOT / "notebooks").glob("*.ipynb"):
        assert re.fullmatch(r"\d\d_[a-z0-9_]+", notebook.stem), notebook.name


def test_readme_gives_the_two_commands_and_ci_runs_the_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make book" in readme and "make test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, flags=re.MULTILINE), ".ci/run must call the README's test command"
