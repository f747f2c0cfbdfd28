"""The chapters under pytest: every chapter executed once per model, by nbmake.

Each chapter ``notebooks/NN_slug.ipynb`` is collected as one item per model of
:data:`MODELS`, e.g.::

    notebooks/10_activation_patching.ipynb::nbmake[SmolLM2-135M-Instruct]
    notebooks/10_activation_patching.ipynb::nbmake[gemma-3-270m]

and each item executes the notebook with nbmake's runner (``nbmake.nb_run.NotebookRun``,
honouring ``--nbmake-timeout`` and ``--nbmake-kernel``), the model chosen through
``$COURSE_MODEL``, so ``pytest --durations`` reports every chapter on every model. The
run on the embedded model writes its executed copy to ``_build/executed/`` (see
:mod:`utils.course.executed`; the committed notebook stays stripped), and the book build
of the same session (``tests/test_book_in_browser.py``) renders those copies instead of
executing the chapters a second time.

A chapter runs on the second model, Gemma 3 270M, only once it is listed in
:data:`GEMMA_CHAPTERS`; the other Gemma items are skipped, saying so. A listed chapter
whose Gemma model is not installed fails: a model is never lost silently.

Items are ordered so that the quick tests come first and the book last: unit tests,
the student checks, the chapters on the embedded model, the chapters on Gemma, the
book (which reuses the chapters' executed copies). Everything that executes notebook
cells is marked ``notebooks``: ``pytest -m "not notebooks"`` is the fast tier.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import pytest

from utils.core.models import EMBEDDED_MODEL_NAME

ROOT = Path(__file__).resolve().parent
CHAPTER_DIR = ROOT / "notebooks"
CHAPTER_NAME = re.compile(r"\d\d_[a-z0-9_]+")

#: The embedded default model: every chapter runs on it.
EMBEDDED = EMBEDDED_MODEL_NAME
#: The second model, chosen with ``COURSE_MODEL=gemma-3-270m``.
GEMMA = "gemma-3-270m"
MODELS = (EMBEDDED, GEMMA)

#: The chapters that also run on Gemma 3 270M in ``make test``: file names without
#: ``.ipynb``, e.g. ``"10_activation_patching"``. A chapter is added here once it runs
#: on both models - its findings read from the findings registry rather than asserted
#: with SmolLM2's numbers - and Gemma is installed by ``make setup``. This is the one
#: place that says which chapters run on Gemma.
GEMMA_CHAPTERS: tuple[str, ...] = ()


def _is_chapter(path: Path) -> bool:
    return path.suffix == ".ipynb" and path.parent == CHAPTER_DIR and CHAPTER_NAME.fullmatch(path.stem) is not None


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    if _is_chapter(file_path):
        return ChapterFile.from_parent(parent, path=file_path)
    return None


@contextlib.contextmanager
def _environment(**values: str | None):
    """Set (a string) or unset (``None``) environment variables for the block; the
    kernel nbmake starts inherits them."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


_MODEL_PROBLEMS: dict[str, str | None] = {}


def model_problem(model: str) -> str | None:
    """Why ``model`` cannot be loaded offline, or ``None`` when it can (checked once
    per session: the name resolves to a local folder, or to a hub id whose files are
    in the local Hugging Face cache)."""
    if model not in _MODEL_PROBLEMS:
        problem = None
        try:
            from utils.core.models import resolve_model_name

            source = resolve_model_name(model)
            if not Path(source).is_dir():
                from transformers import AutoConfig

                with _environment(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1"):
                    AutoConfig.from_pretrained(source)
        except Exception as error:  # noqa: BLE001 - any failure means "not installed"
            problem = f"{type(error).__name__}: {error}"
        _MODEL_PROBLEMS[model] = problem
    return _MODEL_PROBLEMS[model]


class ChapterFile(pytest.File):
    """A chapter notebook: one :class:`ChapterRun` per model."""

    def collect(self):
        for model in MODELS:
            item = ChapterRun.from_parent(self, name=f"nbmake[{model}]", model=model)
            item.add_marker(pytest.mark.notebooks)
            if model == GEMMA and self.path.stem not in GEMMA_CHAPTERS:
                item.add_marker(
                    pytest.mark.skip(
                        reason=f"{self.path.stem} does not run on {GEMMA} yet: add it to "
                        "GEMMA_CHAPTERS in conftest.py once its findings hold on both models"
                    )
                )
            yield item


def _nbmake_item_class():
    from nbmake.pytest_items import NotebookItem

    return NotebookItem


class ChapterRun(_nbmake_item_class()):
    """One chapter executed by nbmake on one model."""

    def __init__(self, *, name: str, parent: pytest.Collector, model: str, **kwargs):
        pytest.Item.__init__(self, name, parent, **kwargs)
        self.filename = str(self.path)
        self.model = model

    def runtest(self) -> None:
        from nbmake.nb_run import NotebookRun
        from nbmake.pytest_items import NotebookFailedException

        from utils.core.models import MODEL_ENV_VAR
        from utils.course.book_assets import BUNDLE_URL
        from utils.course.executed import executed_path, write_executed_copy
        from utils.viz.plots import BUNDLE_ENV_VAR

        embedded = self.model == EMBEDDED
        if not embedded:
            problem = model_problem(self.model)
            if problem is not None:
                pytest.fail(
                    f"{self.model} is not installed, so {self.path.name} cannot run on it "
                    f"(it is listed in GEMMA_CHAPTERS in conftest.py): {problem}. "
                    "Install it with `make setup`.",
                    pytrace=False,
                )
        if embedded:
            # A failed run must not leave an older executed copy for the book to show.
            executed_path(self.path).unlink(missing_ok=True)
        option = self.config.option
        run = NotebookRun(
            self.path,
            option.nbmake_timeout,
            verbose=bool(option.verbose),
            kernel=option.nbmake_kernel,
            find_import_errors=option.nbmake_find_import_errors,
        )
        # The embedded model is the default (no $COURSE_MODEL). The circuitsvis views
        # point at the book's shared bundle, as they do when the book build executes a
        # chapter (utils.course.book_assets), so the executed copy is the book's.
        with _environment(**{MODEL_ENV_VAR: None if embedded else self.model, BUNDLE_ENV_VAR: BUNDLE_URL}):
            result = run.execute()
        if result.error is not None:
            raise NotebookFailedException(result)
        if embedded:
            target = write_executed_copy(result.nb, self.path, model=EMBEDDED)
            self.config.stash[EXECUTED_CHAPTERS].append(target)

    def repr_failure(self, excinfo, style=None):
        if excinfo.errisinstance(pytest.fail.Exception):  # our own message (a model missing)
            return pytest.Item.repr_failure(self, excinfo, style)
        return super().repr_failure(excinfo, style)  # nbmake's report of the failing cell

    def reportinfo(self):
        return self.path, 0, f"{self.path.name} on {self.model}"


#: The executed copies written in this session (see the ``executed_chapters`` fixture).
EXECUTED_CHAPTERS = pytest.StashKey[list]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[EXECUTED_CHAPTERS] = []
    unknown = sorted(set(GEMMA_CHAPTERS) - {path.stem for path in CHAPTER_DIR.glob("*.ipynb")})
    if unknown:
        raise pytest.UsageError(f"GEMMA_CHAPTERS in conftest.py names no chapter in notebooks/: {unknown}")


@pytest.fixture(scope="session")
def executed_chapters(request) -> list[Path]:
    """Executed copies of the chapters that ran on the embedded model earlier in this
    session (the book test, ordered last, expects the build to reuse each of them)."""
    return request.config.stash[EXECUTED_CHAPTERS]


def _order(item: pytest.Item) -> int:
    if item.get_closest_marker("book"):
        return 4
    if isinstance(item, ChapterRun):
        return 2 if item.model == EMBEDDED else 3
    if item.get_closest_marker("notebooks"):
        return 1
    return 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # With an explicit --nbmake, nbmake collects the chapters too: keep ours only.
    nbmake_item = _nbmake_item_class()
    items[:] = [
        item
        for item in items
        if isinstance(item, ChapterRun) or not (type(item) is nbmake_item and _is_chapter(Path(item.path)))
    ]
    items.sort(key=_order)  # stable: the order within each group is pytest's
