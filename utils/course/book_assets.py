"""A Sphinx extension for the book build: lighter pages that work offline.

circuitsvis embeds its whole JavaScript bundle (about 1.3 MB) in every view it renders,
which keeps a notebook's views working offline but makes each chapter page of the book
heavier by that much. During the book build this extension

* sets :data:`BUNDLE_ENV_VAR` before the chapters are executed, so that
  :func:`utils.viz.plots.attention_heads_view` writes a ``<script src=...>`` tag pointing
  at the shared file instead of the bundle itself (the kernels inherit the variable);
* copies the bundle into the built site's ``_static/`` once.

Outside the book build nothing changes: views embed their JavaScript.

It also removes the theme's ``fontawesome.js`` (1.5 MB on every page) from the built
pages: it only swaps the icons' ``<i>`` tags for SVG, and the theme's stylesheet
already draws the same icons from Font Awesome's web fonts.

When ``$COURSE_EXECUTED_DIR`` names a folder of executed chapters (the test run sets it,
see :mod:`utils.course.executed`), a chapter whose executed copy there is up to date is
rendered with that copy's outputs and not executed again; the log says, for each
chapter, which copy was used or why it was executed.
"""

from __future__ import annotations

import os
import re
import shutil
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import nbformat

from utils.course.executed import EXECUTED_DIR_ENV_VAR, executed_copy, with_outputs_of
from utils.viz.plots import BUNDLE_ENV_VAR

BUNDLE_NAME = "circuitsvis.js"
#: Where chapter pages (``notebooks/*.html``) find the shared bundle.
BUNDLE_URL = f"../_static/{BUNDLE_NAME}"


def circuitsvis_bundle() -> Path:
    """The JavaScript bundle shipped inside the installed circuitsvis package."""
    spec = find_spec("circuitsvis")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("circuitsvis is not installed: run `make setup`")
    bundle = Path(spec.origin).parent / "dist" / "cdn" / "iife.js"
    if not bundle.is_file():
        raise FileNotFoundError(f"circuitsvis has no bundle at {bundle}")
    return bundle


_FONTAWESOME_SCRIPT = re.compile(
    r'[ \t]*<script[^>]*src="[^"]*_static/scripts/fontawesome\.js[^"]*"[^>]*></script>\n?'
)


def without_fontawesome_script(html: str) -> str:
    """``html`` without the ``<script>`` tag that loads the theme's fontawesome.js."""
    return _FONTAWESOME_SCRIPT.sub("", html)


def _finish_html(app: Any, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    static = Path(app.outdir) / "_static"
    static.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(circuitsvis_bundle(), static / BUNDLE_NAME)
    for page in Path(app.outdir).rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        lighter = without_fontawesome_script(html)
        if lighter != html:
            page.write_text(lighter, encoding="utf-8")


def _reuse_executed_copy(app: Any, docname: str, source: list[str]) -> None:
    """``source-read``: give myst-nb a chapter's up-to-date executed copy, with its
    outputs, in place of the stripped notebook (which myst-nb would execute)."""
    folder = os.environ.get(EXECUTED_DIR_ENV_VAR)
    path = Path(app.env.doc2path(docname))
    if not folder or path.suffix != ".ipynb":
        return
    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    committed = nbformat.reads(source[0], as_version=4)
    executed, reason = executed_copy(committed, path, folder=Path(folder), root=Path(app.srcdir))
    if executed is None:
        logger.info(f"[course] {docname}: executing it ({reason})")
        return
    logger.info(f"[course] {docname}: reusing the executed copy, not executing it: {reason}")
    source[0] = nbformat.writes(with_outputs_of(committed, executed))


def setup(app: Any) -> dict[str, Any]:
    """Sphinx entry point (listed under ``sphinx: config: extensions`` in _config.yml)."""
    os.environ[BUNDLE_ENV_VAR] = BUNDLE_URL
    app.connect("source-read", _reuse_executed_copy)
    app.connect("build-finished", _finish_html)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
