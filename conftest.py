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

A chapter runs on the second model, Gemma 3 270M, once Gemma's findings registry holds
its findings (:func:`gemma_skip_reason`); the other Gemma items are skipped, saying why.
A chapter due to run on Gemma whose model is not installed fails: a model is never
lost silently.

Items are ordered so that the quick tests come first and the book last: unit tests,
the student checks, the chapters on the embedded model, the chapters on Gemma, the
book (which reuses the chapters' executed copies). Everything that executes notebook
cells is marked ``notebooks``: ``pytest -m "not notebooks"`` is the fast tier. The
chapter items are also marked ``chapters``: ``make test`` runs everything else (unit tests,
student checks, chapter 00 on Gemma as an unknown model) first on two workers of one
thread each (pytest-xdist), then the chapters and the book in one process, so each
chapter is timed alone on the whole machine.
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

#: Why a chapter does not run on Gemma 3 270M, or ``None`` when it does. The findings
#: registry decides (one source of truth): a chapter runs on Gemma once Gemma's registry
#: file holds its findings; a chapter whose findings are all on models it trains itself
#: (``toy.yaml``) loads no pretrained model and runs once.
def gemma_skip_reason(chapter: str) -> str | None:
    from utils.course.findings import load_registries

    number = chapter[:2]
    registries = load_registries()
    if registries[GEMMA].chapter(number):
        return None
    if any(registries[key].chapter(number) for key in registries if key not in MODELS):
        return f"{chapter} trains its own models and loads no pretrained one: it runs once"
    return (
        f"{chapter} has no findings in {GEMMA}'s registry yet: it runs on {GEMMA} once they are "
        "recorded (tests/test_findings.py names the chapters still awaiting them)"
    )


#: The chapter that runs once more on Gemma with ``COURSE_FINDINGS_UNKNOWN=1``: the
#: registry treats the model as one it does not know, so every finding is reported, not
#: asserted, and the run must reach every one of the chapter's findings (the path a
#: learner's own model on Colab takes).
UNKNOWN_MODEL_CHAPTER = "00_background"
UNKNOWN_MODEL_ITEM = f"nbmake[{GEMMA}, as an unknown model]"
FINDING_LINE = re.compile(r"(?P<verdict>✓|✗|reported) (?P<id>\d\d\.[A-Za-z0-9_.]+)  .*")


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
    with pytest.MonkeyPatch.context() as patch:
        for name, value in values.items():
            if value is None:
                patch.delenv(name, raising=False)
            else:
                patch.setenv(name, value)
        yield


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
            item.add_marker(pytest.mark.chapters)
            reason = gemma_skip_reason(self.path.stem) if model == GEMMA else None
            if reason is not None:
                item.add_marker(pytest.mark.skip(reason=reason))
            yield item
        if self.path.stem == UNKNOWN_MODEL_CHAPTER:
            # Not marked ``chapters``: this run tests the registry's reporting path, not the
            # chapter's time (the run above is the timed one), so make test runs it with the
            # unit tests, on one of the two workers.
            item = ChapterRun.from_parent(self, name=UNKNOWN_MODEL_ITEM, model=GEMMA, unknown=True)
            item.add_marker(pytest.mark.notebooks)
            yield item


def _nbmake_item_class():
    from nbmake.pytest_items import NotebookItem

    return NotebookItem


class ChapterRun(_nbmake_item_class()):
    """One chapter executed by nbmake on one model."""

    def __init__(self, *, name: str, parent: pytest.Collector, model: str, unknown: bool = False, **kwargs):
        pytest.Item.__init__(self, name, parent, **kwargs)
        self.filename = str(self.path)
        self.model = model
        self.unknown = unknown

    def runtest(self) -> None:
        from nbmake.nb_run import NotebookRun
        from nbmake.pytest_items import NotebookFailedException

        from utils.core.models import MODEL_ENV_VAR
        from utils.course.book_assets import BUNDLE_URL
        from utils.course.executed import executed_path, write_executed_copy
        from utils.viz.plots import BUNDLE_ENV_VAR

        from utils.course.findings import UNKNOWN_ENV_VAR

        embedded = self.model == EMBEDDED and not self.unknown
        if not embedded:
            problem = model_problem(self.model)
            if problem is not None:
                pytest.fail(
                    f"{self.model} is not installed, so {self.path.name} cannot run on it "
                    f"(its findings are in the registry for this model): {problem}. "
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
        variables = {
            MODEL_ENV_VAR: None if self.model == EMBEDDED else self.model,
            BUNDLE_ENV_VAR: BUNDLE_URL,
            UNKNOWN_ENV_VAR: "1" if self.unknown else None,
        }
        with _environment(**variables):
            result = run.execute()
        if result.error is not None:
            raise NotebookFailedException(result)
        if self.unknown:
            self._check_every_finding_was_reported(result.nb)
        if embedded:
            target = write_executed_copy(result.nb, self.path, model=EMBEDDED)
            self.config.stash[EXECUTED_CHAPTERS].append(target)

    def _check_every_finding_was_reported(self, executed) -> None:
        """On a model the registry treats as unknown, every finding of the chapter is
        reported (none asserted) and the run reached each of them."""
        from utils.course.findings import EMBEDDED_KEY, UNKNOWN_ENV_VAR, load_registries

        text = "\n".join(
            output.get("text", "")
            for cell in executed.cells
            if cell.cell_type == "code"
            for output in cell.get("outputs", [])
            if output.get("output_type") == "stream"
        )
        # The line each finding() call prints starts with its verdict and its id.
        calls = [FINDING_LINE.match(line) for line in text.splitlines()]
        calls = [match for match in calls if match is not None]
        asserted = [match.group(0) for match in calls if match.group("verdict") != "reported"]
        reported = {match.group("id") for match in calls if match.group("verdict") == "reported"}
        expected = {entry.id for entry in load_registries()[EMBEDDED_KEY].chapter(self.path.stem[:2])}
        problems = []
        if asserted:
            problems.append(f"{len(asserted)} finding(s) asserted, not reported, e.g. {asserted[0]!r}")
        if expected - reported:
            problems.append(f"never reported: {sorted(expected - reported)}")
        if problems:
            pytest.fail(
                f"{self.path.name} on {self.model} as an unknown model ({UNKNOWN_ENV_VAR}=1): " + "; ".join(problems),
                pytrace=False,
            )

    def repr_failure(self, excinfo, style=None):
        if excinfo.errisinstance(pytest.fail.Exception):  # our own message (a model missing)
            return pytest.Item.repr_failure(self, excinfo, style)
        return super().repr_failure(excinfo, style)  # nbmake's report of the failing cell

    def reportinfo(self):
        unknown = " as an unknown model" if self.unknown else ""
        return self.path, 0, f"{self.path.name} on {self.model}{unknown}"


#: The executed copies written in this session (see the ``executed_chapters`` fixture).
EXECUTED_CHAPTERS = pytest.StashKey[list]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[EXECUTED_CHAPTERS] = []


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
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # On parallel workers (make test's first stage), the long items (the student checks,
        # chapter 00 as an unknown model) go first, so that no worker is left with one of
        # them at the end while the other idles.
        items.sort(key=lambda item: 0 if item.get_closest_marker("notebooks") else 1)
    else:
        items.sort(key=_order)  # stable: the order within each group is pytest's
