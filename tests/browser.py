"""Headless Chromium for the book-in-the-browser test: a local web server, a browser
cut off from the network, and the JavaScript that measures what a reader sees.

Chromium comes from Debian (``apt-get install -y chromium chromium-driver``; ``make setup``
installs it when missing). Selenium is given the driver's path, so Selenium Manager never
downloads a driver or a browser.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER_CANDIDATES = ("/usr/bin/chromedriver",)
INSTALL_HINT = "apt-get install -y chromium chromium-driver"

# The flags the project requires, plus a host-resolver rule that makes every host name
# other than the local server unresolvable: a page that reaches for a CDN fails the same
# way on a machine with internet access as on one without.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--window-size=1280,1000",
)


def find_chromium() -> tuple[str, str]:
    """Paths of the Chromium binary and of chromedriver; raises ``FileNotFoundError``
    with the install command when either is missing."""

    def first(candidates: tuple[str, ...], name: str) -> str | None:
        for path in candidates:
            if Path(path).is_file():
                return path
        return shutil.which(name)

    browser = first(CHROMIUM_CANDIDATES, "chromium")
    driver = first(CHROMEDRIVER_CANDIDATES, "chromedriver")
    missing = [name for name, path in (("chromium", browser), ("chromedriver", driver)) if path is None]
    if missing:
        raise FileNotFoundError(
            f"{' and '.join(missing)} not found: the book-in-the-browser test needs Debian's Chromium. "
            f"Install it with `{INSTALL_HINT}` (as root; `make setup` does it when missing)."
        )
    return browser, driver


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve ``directory`` on 127.0.0.1 from a background thread; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextlib.contextmanager
def chromium(user_data_dir: Path) -> Iterator[object]:
    """One headless Chromium session (a selenium ``WebDriver``) with a fresh profile,
    no network beyond 127.0.0.1, and the console log recorded."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = find_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data_dir}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


# Runs in the page once it has loaded: waits for MathJax to finish typesetting, for every
# image to finish loading and for the circuitsvis views to render (or 20 s), then
# describes the page. Called with execute_async_script; the last argument is the callback.
INSPECT_PAGE_JS = r"""
const done = arguments[arguments.length - 1];
const started = performance.now();
const images = () => Array.from(document.images);
const views = () => Array.from(document.querySelectorAll('[id^="circuits-vis-"]'));
const rendered = (el) =>
  Array.from(el.querySelectorAll("*")).some((c) => c.tagName !== "SCRIPT" && c.tagName !== "STYLE")
  && el.getBoundingClientRect().height > 0;
for (const img of images()) { img.loading = "eager"; }
async function settle() {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    try { await MathJax.startup.promise; } catch (e) { /* reported through the console */ }
  }
  while (performance.now() - started < 20000) {
    const imagesDone = images().every((img) => img.complete);
    const viewsDone = views().every(rendered);
    if (imagesDone && viewsDone) break;
    await new Promise((r) => setTimeout(r, 100));
  }
}
settle().then(() => {
  const abs = (u) => new URL(u, document.baseURI).href;
  const nav = document.querySelector("nav.bd-docs-nav, .bd-sidebar-primary nav, #site-navigation");
  const navLinks = nav ? Array.from(nav.querySelectorAll("a[href]")).map((a) => a.href) : [];
  const external = [];
  const selectors = 'script[src], link[href][rel~="stylesheet"], link[href][rel~="preload"], link[href][rel~="modulepreload"], link[href][rel~="icon"], img[src], iframe[src], video[src], audio[src], source[src], embed[src], object[data]';
  for (const el of document.querySelectorAll(selectors)) {
    const raw = el.getAttribute("src") || el.getAttribute("href") || el.getAttribute("data");
    const url = abs(raw);
    if (!url.startsWith(location.origin + "/") && !url.startsWith("data:") && !url.startsWith("blob:")) {
      external.push(el.tagName.toLowerCase() + " " + url);
    }
  }
  const entries = performance.getEntriesByType("navigation").concat(performance.getEntriesByType("resource"));
  const maths = Array.from(document.querySelectorAll("span.math, div.math"));
  const citations = Array.from(document.querySelectorAll('a[href*="bibliography.html#"]'))
    .filter((a) => !a.closest("nav, .bd-sidebar-primary, .bd-header, .prev-next-area"))
    .map((a) => ({ text: a.textContent.trim(), href: a.href }));
  done({
    url: location.href,
    title: document.title,
    navLinks: navLinks,
    external: external,
    loaded: entries.map((e) => ({ url: e.name, bytes: e.encodedBodySize || 0, kind: e.initiatorType || e.entryType })),
    images: images().map((img) => ({ src: img.currentSrc || img.src, complete: img.complete, width: img.naturalWidth,
                                     inArticle: !!img.closest("article") })),
    views: views().map((el) => ({ id: el.id, rendered: rendered(el), height: el.getBoundingClientRect().height })),
    math: { total: maths.length,
            typeset: maths.filter((m) => m.querySelector("mjx-container")).length,
            errors: maths.filter((m) => m.querySelector("mjx-merror")).map((m) => m.textContent.trim().slice(0, 120)),
            mathjax: !!(window.MathJax && MathJax.version),
            mathjaxVersion: window.MathJax && MathJax.version || null },
    citations: citations,
    ids: Array.from(document.querySelectorAll("[id]")).map((el) => el.id),
  });
});
"""
