"""Browser check of the built book (``make browser``, part of ``make test``).

    python tests/browser/check_site.py _build/smoke/_build/html --screenshots _build/screenshots \\
        --search Ghorbani --search "Integrated Gradients"

Serves the site on 127.0.0.1 and opens every HTML page (outside ``_static``, ``_sources``,
``_images``) in headless Chromium (:mod:`chromium_cdp`). On the DOM *after* JavaScript ran, it fails on

- a broken image: an ``<img>`` whose ``src`` is not an existing file of the site, an empty data URI,
  or an image the browser could not decode;
- a broken internal link: an ``href``/``src`` (links, stylesheets, scripts, the index's redirect) to a
  missing file, or a ``#fragment`` that no ``id``/``name`` in the target page carries; a local
  resource the browser got an error for; a JavaScript exception on the page;
- an error output cell (a traceback: myst-nb's ``output traceback``, or "Traceback (most recent
  call last)" in an output);
- a search (``search.html?q=TERM``, Sphinx's JavaScript search) that lists no chapter page;

and saves full-page screenshots at 1280 px (and the intro at phone width, 390 px). ``--no-browser``
runs the same checks on the HTML files as written (no JavaScript, no screenshots, no search).
This file is a script, not a test module: the unit run does not collect it; its own tests are in
``test_check_site.py``. Exit status 1 when any problem is found.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

SKIP_DIRS = {"_static", "_sources", "_images"}
EXTERNAL = ("http:", "https:", "mailto:", "javascript:", "ftp:", "tel:", "//")
WIDE, PHONE = 1280, 390
# Requests and JavaScript errors of the toolchain itself, not of the book: listed with the reason.
IGNORED_RESOURCES = {"favicon.ico": "the browser asks for it; Sphinx ships none"}
KNOWN_JS_ERRORS = {
    "Identifier 'THEBE_JS_URL' has already been declared":
        "sphinx-thebe 0.3.1 on Sphinx 7.4 adds its inline config script twice; the first copy runs",
}
PHONE_PAGES = ("book/intro.html",)


@dataclass(frozen=True)
class Problem:
    page: str
    kind: str  # broken image | broken link | missing anchor | error cell | failed resource | js error | search
    detail: str

    def __str__(self) -> str:
        return f"{self.page}: {self.kind}: {self.detail}"


class Scan(HTMLParser):
    """What the checks need from one page: anchors (ids), references, images, error outputs."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.refs: list[tuple[str, str]] = []  # (tag.attribute, value)
        self.images: list[str] = []
        self.error_cells: list[str] = []
        self._output_depth = 0  # >0 inside a notebook cell output
        self._stack: list[bool] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = {k: (v or "") for k, v in attrs}
        for key in ("id", "name"):
            if a.get(key) and (key == "id" or tag == "a"):
                self.ids.add(a[key])
        classes = set(a.get("class", "").split())
        if tag == "img":
            self.images.append(a.get("src", ""))
        elif tag == "a" and "href" in a:
            self.refs.append(("a.href", a["href"]))
        elif tag == "link" and "href" in a:
            self.refs.append(("link.href", a["href"]))
        elif tag == "script" and a.get("src"):
            self.refs.append(("script.src", a["src"]))
        elif tag == "meta" and a.get("http-equiv", "").lower() == "refresh":
            url = a.get("content", "").partition("url=")[2].strip()
            if url:
                self.refs.append(("meta.refresh", url))
        if {"output", "traceback"} <= classes or {"output", "error"} <= classes:
            self.error_cells.append(" ".join(sorted(classes)))
        if tag in ("br", "img", "link", "meta", "input", "hr", "source", "wbr", "col", "area", "base"):
            return  # void elements never get an end tag
        inside = "cell_output" in classes or "output" in classes
        self._stack.append(inside)
        self._output_depth += inside

    def handle_endtag(self, tag):
        if self._stack:
            self._output_depth -= self._stack.pop()

    def handle_data(self, data):
        if self._output_depth and "Traceback (most recent call last)" in data:
            self.error_cells.append("traceback text: " + data.strip().splitlines()[0][:80])


def pages(site: Path) -> list[str]:
    """Every HTML page of the site (relative POSIX paths), outside the asset folders."""
    return sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html")
                  if not SKIP_DIRS & set(p.relative_to(site).parts[:-1]))


@functools.lru_cache(maxsize=None)
def _file_ids(path: Path) -> frozenset[str]:
    return frozenset(Scan(path.read_text(errors="replace")).ids)


def _resolve(site: Path, page: str, url: str) -> tuple[Path | None, str]:
    """The local file a relative URL on ``page`` points to (None for external ones) and its fragment."""
    if url.lower().startswith(EXTERNAL) or url.lower().startswith("data:"):
        return None, ""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme:  # another scheme (about:, blob: ...): not a file of the site
        return None, ""
    base = (site / page).parent
    path = urllib.parse.unquote(parts.path)
    target = (site / path.lstrip("/")) if path.startswith("/") else (base / path if path else site / page)
    if target.is_dir():
        target = target / "index.html"
    return target, urllib.parse.unquote(parts.fragment)


def static_problems(site: Path, page: str, html: str) -> list[Problem]:
    """The checks that need no browser, on one page's HTML (as written, or the DOM a browser built)."""
    site = Path(site).resolve()
    scan, problems = Scan(html), []
    for src in scan.images:
        if src.lower().startswith("data:"):
            payload = src.partition(",")[2].strip()
            if not payload:
                problems.append(Problem(page, "broken image", f"empty data URI {src[:40]!r}"))
            continue
        target, _ = _resolve(site, page, src)
        if not src.strip():
            problems.append(Problem(page, "broken image", "<img> without src"))
        elif target is not None and not target.is_file():
            problems.append(Problem(page, "broken image", f"{src} (no file {_shown(site, target)})"))
    for where, url in scan.refs:
        target, fragment = _resolve(site, page, url)
        if target is None or url in ("#", ""):
            continue
        if not target.resolve().is_relative_to(site):
            problems.append(Problem(page, "broken link", f"{where} {url} leaves the site"))
        elif not target.is_file():
            problems.append(Problem(page, "broken link", f"{where} {url} (no file)"))
        elif fragment and target.suffix == ".html":
            ids = scan.ids if target.resolve() == (site / page).resolve() else _file_ids(target.resolve())
            if fragment not in ids:
                problems.append(Problem(page, "missing anchor", f"{where} {url} (no id {fragment!r} in {target.name})"))
    problems += [Problem(page, "error cell", detail) for detail in scan.error_cells]
    return list(dict.fromkeys(problems))  # a link repeated on a page (header, sidebar) is one problem


def _shown(site: Path, target: Path) -> str:
    target = Path(os.path.normpath(target))
    return target.relative_to(site).as_posix() if target.is_relative_to(site) else str(target)


# ---- the browser run ---------------------------------------------------------------------------
IMAGES_JS = ("[...document.images].filter(i => i.complete && i.naturalWidth === 0)"
             ".map(i => i.getAttribute('src') || '')")
SEARCH_DONE_JS = ("(() => { const s = document.querySelector('#search-results'); if (!s) return null;"
                  " const t = s.innerText; return /Search finished|did not match/.test(t) ?"
                  " [...s.querySelectorAll('ul.search li a')].map(a => a.getAttribute('href')) : null; })()")


def _serve(site: Path):
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _network_problems(browser, since: int, page: str, root: str) -> list[Problem]:
    """Local resources that failed or answered >= 400, and JavaScript exceptions, since an event index."""
    urls, problems = {}, []
    for event in browser.events[since:]:
        method, params = event.get("method"), event.get("params", {})
        if method == "Network.requestWillBeSent":
            urls[params["requestId"]] = params["request"]["url"]
        elif method == "Network.responseReceived" and params["response"]["status"] >= 400:
            url = params["response"]["url"]
            if url.startswith(root) and url[len(root):] not in IGNORED_RESOURCES:
                problems.append(Problem(page, "failed resource", f"{url[len(root):]} ({params['response']['status']})"))
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            url = urls.get(params["requestId"], "")
            if url.startswith(root) and url[len(root):] not in IGNORED_RESOURCES and params.get("errorText") != "net::ERR_ABORTED":
                problems.append(Problem(page, "failed resource", f"{url[len(root):]} ({params.get('errorText')})"))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text", "") or "exception"
            if not any(known in text for known in KNOWN_JS_ERRORS):
                problems.append(Problem(page, "js error", text.splitlines()[0][:200]))
    return problems


def _shot_name(page: str, width: int) -> str:
    return page.removesuffix(".html").replace("/", "__") + ("" if width == WIDE else f".phone-{width}px") + ".png"


def browser_check(site: Path, screenshots: Path | None, searches: list[str], log=print, binary=None) -> list[Problem]:
    """Open every page in headless Chromium; the problems found (screenshots written on the way)."""
    from chromium_cdp import Browser

    site = Path(site).resolve()
    problems: list[Problem] = []
    if screenshots:
        screenshots.mkdir(parents=True, exist_ok=True)
        for old in screenshots.glob("*.png"):
            old.unlink()
    visits = [(page, WIDE, "") for page in pages(site)]
    visits += [(page, PHONE, "") for page in PHONE_PAGES if (site / page).is_file()]
    visits += [("search.html", WIDE, term) for term in searches]
    server, root = _serve(site)
    try:
        with Browser(binary) as browser:
            for page, width, term in visits:
                started = time.perf_counter()
                browser.viewport(width, mobile=width < 600)
                url = root + page + (f"?q={urllib.parse.quote(term)}" if term else "")
                since = browser.open(url)
                redirect = [u for w, u in Scan((site / page).read_text(errors="replace")).refs if w == "meta.refresh"]
                if redirect:  # the index: check the file, and that the browser lands on its target
                    found, note = _check_redirect(browser, site, page, url, redirect[0]), f"redirects to {redirect[0]}"
                elif term:
                    found, note = _check_search(browser, site, page, term)
                else:
                    found, note = _check_page(browser, site, page)
                found += [p for p in _network_problems(browser, since, page, root)  # a missing image once
                          if not (p.kind == "failed resource" and any(p.detail.split(" ")[0] in q.detail
                                                                      for q in found if q.kind == "broken image"))]
                problems += found
                if screenshots and not redirect:
                    name = f"search-{''.join(c if c.isalnum() else '_' for c in term)}.html" if term else page
                    w, h = browser.screenshot(screenshots / _shot_name(name, width))
                    note += f", screenshot {w}x{h}"
                where = page + (f" at {width} px" if width != WIDE else "") + (f" ?q={term}" if term else "")
                log(f"  {where}: {note} ({time.perf_counter() - started:.1f} s)")
    finally:
        server.shutdown()
    return problems


def _check_page(browser, site: Path, page: str) -> tuple[list[Problem], str]:
    """The file checks on the DOM after JavaScript, plus images the browser could not decode."""
    html = browser.evaluate("document.documentElement.outerHTML")
    found = static_problems(site, page, html)
    found += [Problem(page, "broken image", f"{src} (the browser could not load it)")
              for src in browser.evaluate(IMAGES_JS)
              if not any(p.kind == "broken image" and src in p.detail for p in found)]
    return found, f"{len(Scan(html).images)} images"


def _check_redirect(browser, site: Path, page: str, url: str, target: str) -> list[Problem]:
    found = static_problems(site, page, (site / page).read_text(errors="replace"))
    want = urllib.parse.urljoin(url, target)
    if not browser.wait_for(f"location.href === {want!r} && document.readyState === 'complete'", timeout=10):
        found.append(Problem(page, "broken link", f"redirect to {target} did not land (at {browser.evaluate('location.href')})"))
    return found


def _check_search(browser, site: Path, page: str, term: str) -> tuple[list[Problem], str]:
    """Sphinx's search runs in JavaScript: wait for its result list; a chapter must be in it."""
    hrefs = browser.wait_for(SEARCH_DONE_JS, timeout=30)
    chapters = sorted({h.split("?")[0].split("#")[0] for h in hrefs or [] if "chapters/" in h})
    found = [] if chapters else [Problem(page, "search", f"{term!r} lists no chapter (results: {hrefs})")]
    found += static_problems(site, page, browser.evaluate("document.documentElement.outerHTML"))  # result links
    return found, f"search {term!r} -> {', '.join(chapters) or 'no chapter'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path, help="the built HTML folder, e.g. _build/smoke/_build/html")
    parser.add_argument("--screenshots", type=Path, help="folder for full-page PNG screenshots")
    parser.add_argument("--search", action="append", default=[], metavar="TERM",
                        help="a method name that search.html must find in a chapter (repeatable)")
    parser.add_argument("--no-browser", action="store_true", help="check the HTML files as written only")
    args = parser.parse_args(argv)
    if not (args.site / "index.html").is_file():
        parser.error(f"{args.site}/index.html not found: build the site first (make smoke-book)")
    started = time.perf_counter()
    print(f"check_site: {len(pages(args.site))} pages in {args.site}", flush=True)
    if args.no_browser:
        problems = [p for page in pages(args.site)
                    for p in static_problems(args.site, page, (args.site / page).read_text(errors="replace"))]
    else:
        from chromium_cdp import BrowserError

        try:
            problems = browser_check(args.site, args.screenshots, args.search, log=lambda s: print(s, flush=True))
        except BrowserError as error:
            print(f"check_site: the browser failed: {error}", file=sys.stderr)
            return 2
    problems = list(dict.fromkeys(problems))
    for problem in problems:
        print(f"FAIL {problem}")
    print(f"check_site: {len(problems)} problems, {time.perf_counter() - started:.1f} s"
          + (f"; screenshots in {args.screenshots}" if args.screenshots and not args.no_browser else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
