"""Browser check of the built book (``make browser``, part of ``make test``).

    python tests/browser/check_site.py _build/smoke/_build/html --screenshots _build/screenshots \\
        --search Ghorbani --search "Integrated Gradients" [--allow uncaptioned-figure ...]

Serves the site on 127.0.0.1 and opens every HTML page (outside ``_static``, ``_sources``,
``_images``) in headless Chromium (:mod:`chromium_cdp`), at 1280 px and at phone width (390 px).
On the DOM *after* JavaScript ran, it fails on

- a broken image: an ``<img>`` whose ``src`` is not an existing file of the site, an empty data URI,
  or an image the browser could not decode;
- a broken internal link: an ``href``/``src`` (links, stylesheets, scripts, the index's redirect) to a
  missing file, or a ``#fragment`` that no ``id``/``name`` in the target page carries; a local
  resource the browser got an error for; a JavaScript exception on the page;
- an error output cell (a traceback: myst-nb's ``output traceback``, or "Traceback (most recent
  call last)" in an output);
- a claim link (:mod:`page_checks`): a ``#claim-...`` link on the verdicts page, or to it, that lands
  on something other than a claim card; a claim card of the verdicts page that no link there targets;
- an uncaptioned figure: an ``<img>`` of a notebook output outside a ``<figure>`` with caption text;
- a stderr output (myst-nb's ``output stderr``) of a cell not tagged ``expected-warning``;
- overflow (:mod:`layout_checks`), at 1280 and 390 px: an element of the content column reaching past
  its right edge, or a page that scrolls sideways; a wide table: at 1280 px, a scroll container that
  must scroll to show a table (at 390 px scroll containers are how wide tables fit);
- small figure text: a kit figure (``img[data-text-pt]``) shown so narrow at 1280 px that its text
  falls below 9 pt (rendered width / data-natural-width x data-text-pt);
- a search (``search.html?q=TERM``, Sphinx's JavaScript search) that lists no chapter page, or a chapter
  result whose snippet (``p.context``) is not text of the chapter's article (none, or the theme's
  download buttons ".ipynb .pdf" and contents list, which Sphinx quotes from ``[role=main]``);

logs each page's height, prints a summary table (height at 1280 px, output images, the kit's figures
and tables, other tables, problems), and saves full-page screenshots at 1280 px (at 390 px: the intro,
and every page with a problem there). ``--allow KIND`` (repeatable) prints a kind's problems as
warnings without failing. ``--no-browser`` runs the file checks on the HTML files as written (no
JavaScript, no layout, no screenshots, no search). This file is a script, not a test module: the unit
run does not collect it; its own tests are in ``test_check_site.py``. Exit status 1 when any problem
(not allowed) is found.
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
from html.parser import HTMLParser
from pathlib import Path

import layout_checks
import page_checks
from page_checks import CLAIM_PREFIX, Problem, Tree

__all__ = ["KINDS", "Problem", "Scan", "browser_check", "main", "pages", "static_problems"]

SKIP_DIRS = {"_static", "_sources", "_images"}
EXTERNAL = ("http:", "https:", "mailto:", "javascript:", "ftp:", "tel:", "//")
WIDE, PHONE = 1280, 390
# Requests and JavaScript errors of the toolchain itself, not of the book: listed with the reason.
IGNORED_RESOURCES = {"favicon.ico": "the browser asks for it; Sphinx ships none"}
KNOWN_JS_ERRORS = {
    "Identifier 'THEBE_JS_URL' has already been declared":
        "sphinx-thebe 0.3.1 on Sphinx 7.4 adds its inline config script twice; the first copy runs",
}
PHONE_PAGES = ("book/intro.html", "book/verdicts.html")  # screenshots at phone width (and of every page with a problem there)
# The kinds of problem, each a word for ``--allow KIND`` (spaces or hyphens): the first seven need
# only the files; the browser adds "failed resource", "js error", the layout ones, the search ones.
KINDS = ("broken image", "broken link", "missing anchor", "error cell", "claim link", "uncaptioned figure",
         "stderr output", "failed resource", "js error", "overflow", "wide table", "small figure text",
         "search", "search snippet")


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


@functools.lru_cache(maxsize=None)
def _file_elements(path: Path) -> dict:
    return page_checks.element_by_id(Tree(path.read_text(errors="replace")))


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


def static_problems(site: Path, page: str, html: str, tree: Tree | None = None) -> list[Problem]:
    """The checks that need no browser, on one page's HTML (as written, or the DOM a browser built)."""
    site = Path(site).resolve()
    scan, problems, claim_links, own = Scan(html), [], [], None
    tree = tree or Tree(html)
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
            here = target.resolve() == (site / page).resolve()
            ids = scan.ids if here else _file_ids(target.resolve())
            if fragment not in ids:
                problems.append(Problem(page, "missing anchor", f"{where} {url} (no id {fragment!r} in {target.name})"))
            if where == "a.href" and fragment.startswith(CLAIM_PREFIX):
                elements = (own := own or page_checks.element_by_id(tree)) if here else _file_elements(target.resolve())
                claim_links.append((url, fragment, elements.get(fragment), here))
    problems += [Problem(page, "error cell", detail) for detail in scan.error_cells]
    problems += page_checks.claim_link_problems(page, tree, claim_links)
    problems += page_checks.caption_problems(page, tree)
    problems += page_checks.stderr_problems(page, tree)
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


def browser_check(site: Path, screenshots: Path | None, searches: list[str], log=print, binary=None,
                  summary: list | None = None) -> list[Problem]:
    """Open every page in headless Chromium, at 1280 px and at phone width; the problems found
    (screenshots written on the way; one row per page appended to ``summary`` when given)."""
    from chromium_cdp import Browser

    site = Path(site).resolve()
    problems: list[Problem] = []
    if screenshots:
        screenshots.mkdir(parents=True, exist_ok=True)
        for old in screenshots.glob("*.png"):
            old.unlink()
    redirects = {page: refs[0] for page in pages(site)
                 if (refs := [u for w, u in Scan((site / page).read_text(errors="replace")).refs if w == "meta.refresh"])}
    visits = [(page, WIDE, "") for page in pages(site)]
    visits += [(page, PHONE, "") for page in pages(site) if page not in redirects]
    visits += [("search.html", WIDE, term) for term in searches]
    server, root = _serve(site)
    try:
        with Browser(binary) as browser:
            for page, width, term in visits:
                started = time.perf_counter()
                browser.viewport(width, mobile=width < 600)
                url = root + page + (f"?q={urllib.parse.quote(term)}" if term else "")
                since = browser.open(url)
                if page in redirects:  # the index: check the file, and that the browser lands on its target
                    found, note = _check_redirect(browser, site, page, url, redirects[page]), f"redirects to {redirects[page]}"
                elif term:
                    found, note = _check_search(browser, site, page, term)
                elif width == WIDE:
                    found, note, row = _check_page(browser, site, page)
                    if summary is not None:
                        summary.append(row)
                else:
                    found, note = layout_checks.overflow_problems(browser, page, width), "layout"
                found += [p for p in _network_problems(browser, since, page, root)  # a missing image once
                          if not (p.kind == "failed resource" and any(p.detail.split(" ")[0] in q.detail for q in found + problems
                                                                      if q.kind == "broken image" and q.page == page))]
                problems += found
                if screenshots and page not in redirects and (width == WIDE or page in PHONE_PAGES or found):
                    name = f"search-{''.join(c if c.isalnum() else '_' for c in term)}.html" if term else page
                    w, h = browser.screenshot(screenshots / _shot_name(name, width))
                    note += f", screenshot {w}x{h}"
                    if page == "book/verdicts.html" and width == WIDE:  # one claim card on its own (a paper's)
                        card = (browser.screenshot_element('div.claim-card[id^="claim-a"]', screenshots / "claim-card.png")
                                or browser.screenshot_element('div.claim-card[id^="claim-"]', screenshots / "claim-card.png"))
                        note += f", claim card {card[0]}x{card[1]}" if card else ", no claim card to photograph"
                where = page + (f" at {width} px" if width != WIDE else "") + (f" ?q={term}" if term else "")
                log(f"  {where}: {note}{f', {len(found)} problems' if found else ''} ({time.perf_counter() - started:.1f} s)")
    finally:
        server.shutdown()
    return problems


def _check_page(browser, site: Path, page: str) -> tuple[list[Problem], str, dict]:
    """At 1280 px: the file checks on the DOM after JavaScript, images the browser could not decode,
    the layout (overflow, figure text size); the page's summary row."""
    html = browser.evaluate("document.documentElement.outerHTML")
    tree = Tree(html)
    found = static_problems(site, page, html, tree)
    found += [Problem(page, "broken image", f"{src} (the browser could not load it)")
              for src in browser.evaluate(IMAGES_JS)
              if not any(p.kind == "broken image" and src in p.detail for p in found)]
    found += layout_checks.overflow_problems(browser, page, WIDE)
    found += layout_checks.figure_text_problems(browser, page)
    row = {"page": page, "height": layout_checks.page_height(browser), **page_checks.counts(tree)}
    note = f"height {row['height']} px, {len(Scan(html).images)} images, {row['figures']} figures, {row['tables']} tables"
    return found, note, row


def _check_redirect(browser, site: Path, page: str, url: str, target: str) -> list[Problem]:
    found = static_problems(site, page, (site / page).read_text(errors="replace"))
    want = urllib.parse.urljoin(url, target)
    if not browser.wait_for(f"location.href === {want!r} && document.readyState === 'complete'", timeout=10):
        found.append(Problem(page, "broken link", f"redirect to {target} did not land (at {browser.evaluate('location.href')})"))
    return found


def _check_search(browser, site: Path, page: str, term: str) -> tuple[list[Problem], str]:
    """Sphinx's search runs in JavaScript: wait for its result list; a chapter must be in it, with a
    snippet of its text."""
    hrefs = browser.wait_for(SEARCH_DONE_JS, timeout=30)
    chapters = sorted({h.split("?")[0].split("#")[0] for h in hrefs or [] if "chapters/" in h})
    found = [] if chapters else [Problem(page, "search", f"{term!r} lists no chapter (results: {hrefs})")]
    if hrefs:
        found += layout_checks.snippet_problems(browser, page, term)[0]
    found += static_problems(site, page, browser.evaluate("document.documentElement.outerHTML"))  # result links
    return found, f"search {term!r} -> {', '.join(chapters) or 'no chapter'}"


def summary_table(rows: list[dict], problems: list[Problem]) -> str:
    """One line per page: its height at 1280 px, output images, the kit's figures and tables, other
    tables, its problems."""
    head = ("page", "height px", "images", "figures", "tables", "plain tables", "problems")
    lines = [[r["page"], str(r.get("height", "-")), *(str(r[k]) for k in head[2:6]),
              str(sum(p.page == r["page"] for p in problems))] for r in rows]
    widths = [max(len(x) for x in column) for column in zip(head, *lines)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([fmt(head), *(fmt(line) for line in lines)])


def _kind(text: str) -> str:
    kind = text.replace("-", " ").replace("_", " ").strip().lower()
    if kind not in KINDS:
        raise argparse.ArgumentTypeError(f"unknown kind {text!r}; one of: {', '.join(k.replace(' ', '-') for k in KINDS)}")
    return kind


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path, help="the built HTML folder, e.g. _build/smoke/_build/html")
    parser.add_argument("--screenshots", type=Path, help="folder for full-page PNG screenshots")
    parser.add_argument("--search", action="append", default=[], metavar="TERM",
                        help="a method name that search.html must find in a chapter (repeatable)")
    parser.add_argument("--allow", action="append", default=[], type=_kind, metavar="KIND",
                        help="report problems of this kind as warnings, not failures (repeatable), e.g. "
                             "uncaptioned-figure")
    parser.add_argument("--no-browser", action="store_true", help="check the HTML files as written only")
    args = parser.parse_args(argv)
    if not (args.site / "index.html").is_file():
        parser.error(f"{args.site}/index.html not found: build the site first (make smoke-book)")
    started = time.perf_counter()
    print(f"check_site: {len(pages(args.site))} pages in {args.site}", flush=True)
    rows: list[dict] = []
    if args.no_browser:
        problems = []
        for page in pages(args.site):
            tree = Tree(html := (args.site / page).read_text(errors="replace"))
            problems += static_problems(args.site, page, html, tree)
            rows.append({"page": page, **page_checks.counts(tree)})
    else:
        from chromium_cdp import BrowserError

        try:
            problems = browser_check(args.site, args.screenshots, args.search, log=lambda s: print(s, flush=True),
                                     summary=rows)
        except BrowserError as error:
            print(f"check_site: the browser failed: {error}", file=sys.stderr)
            return 2
    problems = list(dict.fromkeys(problems))
    failures = [p for p in problems if p.kind not in args.allow]
    print(summary_table(rows, problems))
    for problem in problems:
        print(f"{'FAIL' if problem in failures else 'WARN'} {problem}")
    tally = ", ".join(f"{n} {kind}" for kind in KINDS if (n := sum(p.kind == kind for p in problems)))
    allowed = f" ({len(problems) - len(failures)} allowed by --allow)" if len(failures) < len(problems) else ""
    print(f"check_site: {len(failures)} problems{allowed}{': ' + tally if tally else ''}, {time.perf_counter() - started:.1f} s"
          + (f"; screenshots in {args.screenshots}" if args.screenshots and not args.no_browser else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
