"""The site check's layout checks, measured in the browser (:mod:`chromium_cdp`) on the rendered page:
overflow of the content column, figure text shrunk below the legible size, search-result snippets,
and the page's height. Used by :mod:`check_site`; each function takes the open browser.
"""

from __future__ import annotations

import json
import re

from page_checks import Problem

# reliable_saliency.chapter.figures.MIN_TEXT_PT (not imported: that module loads torch); a test
# keeps the two equal.
MIN_TEXT_PT = 9.0
WIDE = 1280
SLACK_PX = 1.0  # sub-pixel rounding

# The content column and everything in it that sticks out of its right edge (outermost only), the
# scroll containers in it whose content is wider than they are, and the document's own width.
OVERFLOW_JS = r"""(() => {
  const column = document.querySelector('article.bd-article') || document.querySelector('article')
              || document.querySelector('main');
  const doc = document.scrollingElement || document.documentElement;
  const out = {column: null, right: null, scrollWidth: doc.scrollWidth, clientWidth: doc.clientWidth,
               over: [], scrollers: []};
  if (!column) return out;
  const right = column.getBoundingClientRect().right;
  out.column = column.tagName.toLowerCase() + (column.className ? '.' + column.className.split(/\s+/).join('.') : '');
  out.right = right;
  const name = (el, where = true) => {
    let s = el.tagName.toLowerCase();
    if (el.id) s += '#' + el.id;
    const cls = [...el.classList].slice(0, 3);
    if (cls.length) s += '.' + cls.join('.');
    const holder = el.closest('section[id], figure[id]');
    return where && holder && holder !== el ? s + ' in #' + holder.id : s;
  };
  const walk = (el) => {
    for (const child of el.children) {
      const style = getComputedStyle(child);
      if (style.display === 'none' || style.visibility === 'hidden' || style.position === 'fixed') continue;
      const r = child.getBoundingClientRect();
      if (r.width > 0 && r.height > 0 && r.right > right + %(slack)s) {
        out.over.push({what: name(child), right: r.right, width: r.width});
        continue;  // its descendants stick out with it: the outermost is reported
      }
      const scrolls = ['auto', 'scroll'].includes(style.overflowX);
      if (scrolls && child.scrollWidth > child.clientWidth + %(slack)s) {
        const table = child.tagName === 'TABLE' ? child : child.querySelector('table');
        const image = child.querySelector('img, svg');
        out.scrollers.push({what: name(child), width: child.clientWidth, content: child.scrollWidth,
                            table: table && name(table, false), image: image && name(image, false)});
        continue;  // what it holds scrolls within it
      }
      if (!['hidden', 'clip'].includes(style.overflowX)) walk(child);
    }
  };
  walk(column);
  return out;
})()""".replace("%(slack)s", str(SLACK_PX))

# Each image the chapter kit made (data-text-pt, data-natural-width) as rendered.
FIGURE_TEXT_JS = """[...document.querySelectorAll('img[data-text-pt]')].map(img => ({
  id: (img.closest('figure[id]') || {}).id || img.getAttribute('alt') || '',
  shown: img.getBoundingClientRect().width,
  natural: parseFloat(img.dataset.naturalWidth || img.getAttribute('width') || 'NaN'),
  pt: parseFloat(img.dataset.textPt)}))"""

PAGE_HEIGHT_JS = "Math.round((document.scrollingElement || document.documentElement).scrollHeight)"

# Sphinx's search (7.4) fetches each result's page and adds <p class="context"> under its link, one
# result after another, after "Search finished" shows: wait until every result has one (or time out).
SNIPPETS_JS = """(() => {
  const items = [...document.querySelectorAll('#search-results ul.search > li')];
  const rows = items.map(li => { const a = li.querySelector('a');
    return {href: a ? a.getAttribute('href') : '', title: a ? a.textContent : '',
            snippet: [...li.querySelectorAll('p.context')].map(p => p.textContent).join(' ')}; });
  return rows.every(r => r.snippet.trim()) ? rows : null; })()"""
SNIPPETS_NOW_JS = SNIPPETS_JS.replace("rows.every(r => r.snippet.trim()) ? rows : null", "rows")
# The text of a result's page as the reader knows it: its article (what Sphinx's snippet should
# quote; Sphinx itself quotes [role=main], which in this theme also holds the download buttons'
# ".ipynb .pdf" and the contents list), with what Sphinx removes removed.
ARTICLE_TEXT_JS = """(async () => {
  const doc = new DOMParser().parseFromString(await (await fetch(%s)).text(), 'text/html');
  doc.querySelectorAll('.headerlink, script, style').forEach(e => e.remove());
  const a = doc.querySelector('article.bd-article') || doc.querySelector('article')
         || doc.querySelector('[role=main]') || doc.body;
  return a ? a.textContent : ''; })()"""


def overflow_problems(browser, page: str, width: int) -> list[Problem]:
    """At ``width``: an element of the content column reaching past its right edge; the document
    scrolling sideways; at the wide width, a scroll container that must scroll to show a table
    ("wide table") or an image (at phone width, scroll containers are how wide content fits)."""
    found = browser.evaluate(OVERFLOW_JS)
    at = f"at {width} px"
    problems = []
    if found["scrollWidth"] > found["clientWidth"] + SLACK_PX:
        problems.append(Problem(page, "overflow", f"{at}: the page scrolls sideways ({found['scrollWidth']} px "
                                                  f"of content in a {found['clientWidth']}-px window)"))
    if found["column"] is None:
        return problems
    for item in found["over"]:
        problems.append(Problem(page, "overflow", f"{at}: {item['what']} reaches {item['right']:.0f} px, past the "
                                                  f"content column's right edge at {found['right']:.0f} px "
                                                  f"({item['width']:.0f} px wide)"))
    if width >= WIDE:
        for item in found["scrollers"]:
            if item["table"] or item["image"]:
                kind = "wide table" if item["table"] else "overflow"
                shows = f"<{item['table'] or item['image']}>"
                problems.append(Problem(page, kind, f"{at}: {item['what']} must scroll sideways to show {shows} "
                                                    f"({item['content']} px of content in {item['width']} px)"))
    return problems


def figure_text_problems(browser, page: str) -> list[Problem]:
    """A kit figure shown so narrow that its smallest text falls below :data:`MIN_TEXT_PT`."""
    problems = []
    for fig in browser.evaluate(FIGURE_TEXT_JS):
        natural, pt, shown = fig["natural"], fig["pt"], fig["shown"]
        if not (natural and natural > 0 and pt == pt and natural == natural):  # NaN: a kit attribute is unreadable
            problems.append(Problem(page, "small figure text", f"{fig['id']}: data-text-pt / data-natural-width unreadable"))
            continue
        if shown <= 0:
            continue  # not rendered (in a folded box): measured when shown
        text = shown / natural * pt
        if text < MIN_TEXT_PT - 0.005:
            problems.append(Problem(page, "small figure text", f"{fig['id']}: its {pt:.1f}-pt text shows at {text:.1f} pt "
                                                               f"({shown:.0f} of {natural:.0f} px), below {MIN_TEXT_PT:g} pt"))
    return problems


def page_height(browser) -> int:
    return int(browser.evaluate(PAGE_HEIGHT_JS))


def _words(text: str) -> str:
    return " ".join(text.split())


SNIPPET_TIMEOUT = 15.0  # seconds for every result's snippet to arrive


def snippet_problems(browser, page: str, term: str, timeout: float | None = None) -> tuple[list[Problem], list[dict]]:
    """Each chapter result of a search must carry a snippet (``p.context``) quoting the text of the
    chapter's article: not nothing, and not the theme's buttons (".ipynb .pdf") or contents list.
    Returns the problems and the results (href, title, snippet)."""
    rows = browser.wait_for(SNIPPETS_JS, timeout=timeout or SNIPPET_TIMEOUT) or browser.evaluate(SNIPPETS_NOW_JS) or []
    problems = []
    for row in rows:
        href = row["href"] or ""
        if "chapters/" not in href:
            continue
        snippet = _words(row["snippet"]).removeprefix("...").removesuffix("...").strip()
        where = f"{term!r}: the result {_words(row['title'])!r} ({href.split('?')[0]})"
        if not re.search(r"[^\W\d_]{2,}", snippet):
            problems.append(Problem(page, "search snippet", f"{where} shows no text"
                                                            + (f" ({json.dumps(snippet, ensure_ascii=False)})" if snippet else "")))
        elif snippet not in _words(browser.evaluate(ARTICLE_TEXT_JS % json.dumps(href.split("#")[0])) or ""):
            problems.append(Problem(page, "search snippet", f"{where} shows {json.dumps(snippet[:90], ensure_ascii=False)}..., not "
                                                            f"(only) text of the page's article"))
    return problems, rows
