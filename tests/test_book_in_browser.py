"""The built book, looked at as a reader would: in headless Chromium, with no network.

The module builds the HTML book once (``jupyter-book build --all -W --keep-going``) into a
temporary directory, serves it on 127.0.0.1, and opens the landing page and every page in
one Chromium session with the cache disabled. The build renders each chapter from the
executed copy that this session's nbmake run wrote to ``_build/executed/`` when that copy
is up to date, and executes the chapter otherwise (``utils.course.executed``; ``make
test`` orders this module after the chapters, see ``conftest.py``). Each page is
inspected once (``tests/browser.py``); the tests below then check, page by page:

- the build has no warnings (so every citation resolves and every page is in the toc);
- every chapter executed earlier in the session was reused, not executed again;
- every ``book/*.md`` page and every ``notebooks/NN_*.ipynb`` chapter is in the sidebar;
- every chapter shows at least one figure, and no image anywhere is broken;
- the browser console has no errors (SEVERE entries);
- the circuitsvis attention views render, with nothing fetched from the network;
- nothing is loaded from outside the local server (MathJax is vendored, see _config.yml)
  and every equation is typeset by MathJax, without TeX errors;
- every citation links to an entry of the bibliography page;
- each page (its HTML plus every file it loads) weighs under 5 MB as stored (the sizes
  gzipped, as a static host would send them, are printed too).

Needs Debian's Chromium (``apt-get install -y chromium chromium-driver``; ``make setup``
installs it); without it the tests fail, they do not skip.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from selenium.webdriver.support.ui import WebDriverWait

from browser import INSPECT_PAGE_JS, chromium, find_chromium, serve
from utils.course.executed import DEFAULT_EXECUTED_DIR, EXECUTED_DIR_ENV_VAR

pytestmark = [pytest.mark.notebooks, pytest.mark.book]

ROOT = Path(__file__).resolve().parents[1]
MAX_PAGE_BYTES = 5_000_000
BUILD_TIMEOUT_S = 3600
CHAPTERS = sorted(p for p in (ROOT / "notebooks").glob("*.ipynb") if re.fullmatch(r"\d\d_\w+", p.stem))
BOOK_PAGES = sorted((ROOT / "book").glob("*.md"))
CITE_ROLE = re.compile(r"\{(?:foot)?cite(?::[a-z]+)?\}`([^`]+)`")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def page_path(source: Path) -> str:
    """``notebooks/00_background.ipynb`` -> ``notebooks/00_background.html``."""
    return source.relative_to(ROOT).with_suffix(".html").as_posix()


def report(config, line: str) -> None:
    """Write to the terminal now, past pytest's output capturing."""
    reporter = config.pluginmanager.getplugin("terminalreporter")
    capture = config.pluginmanager.getplugin("capturemanager")
    if reporter is None:
        return
    if capture is None:
        reporter.write_line(line)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(line)


# --------------------------------------------------------------------------- fixtures


@dataclass
class Build:
    html: Path
    returncode: int
    log: str
    seconds: float

    def execution(self, chapter: Path) -> str:
        """How the build got ``chapter``'s outputs: ``"reused"`` (its executed copy),
        ``"executed"`` (by myst-nb) or ``"unknown"`` (neither is in the log)."""
        docname = chapter.relative_to(ROOT).with_suffix("").as_posix()
        lines = [ANSI.sub("", line) for line in self.log.splitlines()]
        if any(f"{docname}.ipynb: Executing notebook" in line for line in lines):
            return "executed"
        if any(f"[course] {docname}: reusing the executed copy" in line for line in lines):
            return "reused"
        return "unknown"

    @property
    def warnings(self) -> list[str]:
        lines = (ANSI.sub("", line) for line in self.log.splitlines())
        return [
            line
            for line in lines
            if re.search(r"\b(WARNING|ERROR|CRITICAL|SEVERE)\b", line) and not line.startswith("[IPKernelApp]")
        ]


_GZIPPED: dict[Path, int] = {}


def gzipped_size(file: Path) -> int:
    """Size of ``file`` gzip-compressed at level 6 (a web server's default); images and
    fonts, which are compressed already, count as stored."""
    if file not in _GZIPPED:
        data = file.read_bytes()
        if file.suffix.lower() in {".png", ".jpg", ".jpeg", ".gif", ".webp", ".woff", ".woff2"}:
            _GZIPPED[file] = len(data)
        else:
            _GZIPPED[file] = len(gzip.compress(data, compresslevel=6))
    return _GZIPPED[file]


@dataclass
class Page:
    path: str  # relative to the html root, e.g. "notebooks/00_background.html"
    info: dict
    console: list[dict]
    local_files: dict[str, int] = field(default_factory=dict)  # path -> bytes
    missing_files: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.path or f"landing page ({self.info['url']})"

    local_files_gzip: dict[str, int] = field(default_factory=dict)  # path -> gzipped bytes

    @property
    def weight(self) -> int:
        """Bytes as stored on disk."""
        return sum(self.local_files.values())

    @property
    def transfer_weight(self) -> int:
        """Bytes a reader downloads when the host compresses with gzip, as static hosts
        (GitHub Pages, Read the Docs, ...) do for HTML, CSS and JavaScript; images are
        already compressed and count as stored."""
        return sum(self.local_files_gzip.values())


@pytest.fixture(scope="module")
def chromium_paths():
    try:
        return find_chromium()
    except FileNotFoundError as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="module")
def book(request, tmp_path_factory) -> Build:
    """Build the book once, into a temporary directory (the working tree's _build/ is
    left alone), with warnings as errors, as ``make book`` does.

    For working on this test only: ``BOOK_TEST_REUSE_BUILD=<dir>`` reuses the output
    directory of an earlier run of this fixture (printed in the terminal; copy it out of
    pytest's temporary directory, which keeps only the last three runs) instead of
    building again.
    """
    reuse = os.environ.get("BOOK_TEST_REUSE_BUILD")
    if reuse:
        out = Path(reuse)
        saved = json.loads((out / "build.json").read_text())
        report(request.config, f"\n[book] REUSING the build in {out} (BOOK_TEST_REUSE_BUILD), not building")
        return Build(out / "_build" / "html", saved["returncode"], (out / "build.log").read_text(), saved["seconds"])
    if not (ROOT / "node_modules" / "mathjax" / "es5" / "startup.js").is_file():
        pytest.fail("node_modules/mathjax is missing (the book's vendored MathJax): run `npm ci` or `make setup`")
    out = tmp_path_factory.mktemp("book")
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    if not jupyter_book.is_file():
        jupyter_book = Path(shutil.which("jupyter-book") or jupyter_book)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONHASHSEED": "0",
        # Chapters with an up-to-date executed copy are rendered from it, not executed.
        EXECUTED_DIR_ENV_VAR: str(DEFAULT_EXECUTED_DIR),
    }
    command = [str(jupyter_book), "build", "--all", "-W", "--keep-going", "--path-output", str(out), "."]
    started = time.perf_counter()
    try:
        result = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`{' '.join(command)}` did not finish in {BUILD_TIMEOUT_S} s", pytrace=False)
    seconds = time.perf_counter() - started
    log = result.stdout + result.stderr
    (out / "build.log").write_text(log)
    (out / "build.json").write_text(json.dumps({"returncode": result.returncode, "seconds": seconds}))
    report(request.config, f"\n[book] jupyter-book build: {seconds:.0f} s, exit {result.returncode}, in {out}")
    build = Build(out / "_build" / "html", result.returncode, log, seconds)
    for chapter in CHAPTERS:
        report(request.config, f"[book]   {chapter.relative_to(ROOT)}: {build.execution(chapter)}")
    return build


@pytest.fixture(scope="module")
def pages(request, chromium_paths, book, tmp_path_factory) -> dict[str, Page]:
    """Open the landing page, then every page, once each; returns what was seen, keyed
    by page path ("" for the landing page)."""
    if not (book.html / "index.html").is_file():
        pytest.fail(f"the build produced no {book.html / 'index.html'}:\n{book.log[-3000:]}", pytrace=False)
    expected = [page_path(p) for p in BOOK_PAGES + CHAPTERS]
    started = time.perf_counter()
    seen: dict[str, Page] = {}
    with serve(book.html) as base, chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        # Every page is loaded as a first-time reader would: nothing from the cache, so
        # the resource list below is everything the page needs.
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})

        def visit(path: str) -> Page:
            driver.get(base + path)
            # index.html redirects to the root page with <meta http-equiv="refresh">:
            # inspect the page the reader lands on.
            WebDriverWait(driver, 30).until(
                lambda d: d.execute_script(
                    "return document.readyState === 'complete'"
                    " && !document.querySelector('meta[http-equiv=\"refresh\" i]')"
                )
            )
            info = driver.execute_async_script(INSPECT_PAGE_JS)
            console = driver.get_log("browser")
            page = Page(path, info, console)
            for entry in info["loaded"]:
                parts = urlsplit(entry["url"])
                if f"{parts.scheme}://{parts.netloc}/" != base:
                    continue
                local = unquote(parts.path).lstrip("/") or "index.html"
                if local == "favicon.ico":  # Chromium's own request; the book has no icon
                    continue
                file = book.html / local
                if file.is_dir():
                    file = file / "index.html"
                if file.is_file():
                    page.local_files[local] = file.stat().st_size
                    page.local_files_gzip[local] = gzipped_size(file)
                else:
                    page.missing_files.append(local)
            return page

        seen[""] = visit("")
        sidebar = {link[len(base) :].split("#")[0] for link in seen[""].info["navLinks"] if link.startswith(base)}
        for path in sorted(set(expected) | sidebar):
            if (book.html / path).is_file():
                seen[path] = visit(path)
    seconds = time.perf_counter() - started
    report(request.config, f"[book] Chromium visited {len(seen)} pages in {seconds:.1f} s")
    for page in seen.values():
        report(
            request.config,
            f"[book]   {page.transfer_weight / 1e6:5.2f} MB gzipped "
            f"({page.weight / 1e6:5.2f} MB stored)  {page.label}",
        )
    return seen


def chapter_pages(pages: dict[str, Page]) -> dict[Path, Page | None]:
    return {nb: pages.get(page_path(nb)) for nb in CHAPTERS}


def notebook_source(notebook: Path, cell_type: str) -> str:
    cells = json.loads(notebook.read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == cell_type)


# --------------------------------------------------------------------------- tests


def test_chromium_is_installed():
    try:
        find_chromium()
    except FileNotFoundError as error:
        pytest.fail(str(error), pytrace=False)


def test_book_builds_without_warnings(book):
    assert book.returncode == 0, (
        f"`jupyter-book build -W` failed (exit {book.returncode}) after {book.seconds:.0f} s; warnings:\n"
        + "\n".join(book.warnings[:40])
        + f"\n--- end of the log ---\n{ANSI.sub('', book.log[-2000:])}"
    )


def test_the_build_reuses_the_chapters_executed_in_this_session(book, executed_chapters):
    """Each chapter nbmake ran earlier in this session is rendered from its executed copy;
    a chapter is executed twice only when its copy is missing (its run failed) or stale."""
    ran = sorted(ROOT / path.relative_to(DEFAULT_EXECUTED_DIR) for path in executed_chapters)
    how = {chapter.relative_to(ROOT).as_posix(): book.execution(chapter) for chapter in ran}
    executed_again = {name: way for name, way in how.items() if way != "reused"}
    assert not executed_again, (
        f"chapters executed by nbmake in this session but not reused by the book build: {executed_again}; "
        f"the build log says why:\n" + "\n".join(line for line in book.log.splitlines() if "[course]" in line)
    )


def test_every_page_is_in_the_sidebar(book, pages):
    landing = pages[""]
    links = {link.split("#")[0] for link in landing.info["navLinks"]}
    assert links, f"no sidebar navigation found on the landing page {landing.info['url']}"
    not_built = [page_path(p) for p in BOOK_PAGES + CHAPTERS if not (book.html / page_path(p)).is_file()]
    assert not not_built, f"pages not built (missing from _toc.yml?): {not_built}"
    origin = "{0.scheme}://{0.netloc}/".format(urlsplit(landing.info["url"]))
    missing = [page_path(p) for p in BOOK_PAGES + CHAPTERS if origin + page_path(p) not in links]
    assert not missing, f"pages missing from the sidebar of {landing.info['url']}: {missing}; sidebar: {sorted(links)}"


def test_every_chapter_shows_a_figure_and_no_image_is_broken(pages):
    for notebook, page in chapter_pages(pages).items():
        assert page is not None, f"{notebook.name}: no page in the build"
        # In the article: the theme's own images (the Colab logo of the launch button) do
        # not count as a figure.
        drawn = [img for img in page.info["images"] if img["inArticle"] and img["width"] > 0]
        assert drawn, f"{page.label}: no rendered figure in the article (images: {page.info['images']})"
    broken = {p.path: [i["src"] for i in p.info["images"] if i["width"] == 0] for p in pages.values()}
    broken = {path: srcs for path, srcs in broken.items() if srcs}
    assert not broken, f"images that did not load: {broken}"


def test_no_javascript_errors_in_the_console(pages):
    def counts(entry: dict, origin: str) -> bool:
        # Chromium asks every new site for /favicon.ico by itself; the book does not
        # reference one, and the 404 is not something a reader sees.
        return entry["level"] == "SEVERE" and not entry["message"].startswith(origin + "favicon.ico ")

    origin = "{0.scheme}://{0.netloc}/".format(urlsplit(pages[""].info["url"]))
    errors = {
        page.label: [entry["message"][:300] for entry in page.console if counts(entry, origin)]
        for page in pages.values()
    }
    errors = {path: messages for path, messages in errors.items() if messages}
    assert not errors, "SEVERE console entries:\n" + json.dumps(errors, indent=1)


def test_attention_views_render_offline(pages):
    with_views = [nb for nb in CHAPTERS if "attention_heads_view(" in notebook_source(nb, "code")]
    assert with_views, "no chapter calls utils.viz.plots.attention_heads_view: nothing to check"
    for notebook in with_views:
        page = pages.get(page_path(notebook))
        assert page is not None, f"{notebook.name}: no page in the build"
        assert page.info["views"], f"{page.label}: calls attention_heads_view but shows no circuitsvis element"
    for page in pages.values():
        blank = [view for view in page.info["views"] if not view["rendered"]]
        assert not blank, f"{page.label}: circuitsvis elements with no rendered content: {blank}"


def test_nothing_is_loaded_from_the_network_and_equations_are_typeset(pages):
    for page in pages.values():
        assert not page.info["external"], f"{page.label}: references outside the book: {page.info['external']}"
        assert not page.missing_files, f"{page.label}: loads files missing from the build: {page.missing_files}"
        math = page.info["math"]
        if math["total"]:
            assert math["mathjax"] and str(math["mathjaxVersion"]).startswith("3"), (
                f"{page.label}: {math['total']} equations but MathJax 3 did not load"
            )
            assert math["typeset"] == math["total"], (
                f"{page.label}: {math['total'] - math['typeset']} of {math['total']} equations left as raw TeX"
            )
            assert not math["errors"], f"{page.label}: TeX errors in equations: {math['errors']}"
    assert any(page.info["math"]["total"] for page in pages.values()), "no equation anywhere: check the test"


def test_every_citation_resolves(book, pages):
    unresolved = [w for w in book.warnings if "bibtex" in w or "citation" in w.lower()]
    assert not unresolved, "unresolved citations in the build log:\n" + "\n".join(unresolved)

    bib = (ROOT / "book" / "references.bib").read_text()
    keys = set(re.findall(r"@\w+\s*\{\s*([^,\s]+)\s*,", bib))
    for source in BOOK_PAGES + CHAPTERS:
        text = notebook_source(source, "markdown") if source.suffix == ".ipynb" else source.read_text()
        cited = {key.strip() for group in CITE_ROLE.findall(text) for key in group.split(",")}
        assert cited <= keys, f"{source.relative_to(ROOT)} cites keys not in book/references.bib: {sorted(cited - keys)}"

    bibliography = pages.get("book/bibliography.html")
    assert bibliography is not None, "no bibliography page (book/bibliography.html) in the build"
    anchors = set(bibliography.info["ids"])
    for page in pages.values():
        for citation in page.info["citations"]:
            target = citation["href"].split("#", 1)[1]
            assert target in anchors, (
                f"{page.label}: citation {citation['text']!r} links to #{target}, not an entry of the bibliography page"
            )
    cited_pages = [p for p in chapter_pages(pages).values() if p is not None and p.info["citations"]]
    assert cited_pages, "no chapter links to the bibliography: check the test"


def test_every_page_weighs_under_5_mb(pages):
    """The page's HTML plus every file it loads, in bytes as stored (the local server
    does not compress; the gzipped sizes a static host would send are printed too)."""
    heavy = [page for page in pages.values() if page.weight >= MAX_PAGE_BYTES]
    if heavy:
        lines = []
        for page in heavy:
            largest = sorted(page.local_files.items(), key=lambda kv: -kv[1])[:4]
            lines.append(f"{page.label}: {page.weight / 1e6:.2f} MB in {len(page.local_files)} files; largest:")
            lines += [f"    {size / 1e6:5.2f} MB  {path}" for path, size in largest]
        pytest.fail(f"pages of {MAX_PAGE_BYTES / 1e6:.0f} MB or more:\n" + "\n".join(lines), pytrace=False)
