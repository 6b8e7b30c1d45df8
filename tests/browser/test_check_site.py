"""Tests of the site checker (check_site.py, run by ``make browser``): a tiny fake site, with faults
planted one at a time, must be reported; the clean site must pass. The file-level checks need no
browser; the browser run (JavaScript DOM, image decoding, search, screenshots) is skipped when no
Chromium is installed."""

from __future__ import annotations

import base64
import json

import pytest
from PIL import Image

import check_site
from chromium_cdp import find_chromium

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
DATA_URI = "data:image/png;base64," + base64.b64encode(PNG).decode()

# Sphinx's search fills #search-results from ?q= in JavaScript, then each result's snippet (p.context)
# a little later; this stand-in does the same, with the snippet SNIPPET (none when empty).
SNIPPET = "...Ghorbani’s attack moves the map..."
SEARCH = """<!DOCTYPE html><html><head><title>search</title></head><body><div id="search-results"></div>
<script>const SNIPPET = SNIPPET_JSON; setTimeout(() => {
  const q = new URLSearchParams(location.search).get("q") || "";
  document.getElementById("search-results").innerHTML = q === "Ghorbani"
    ? '<ul class="search"><li><a href="book/chapters/ch.html?highlight=ghorbani">ch</a></li></ul><p>Search finished, found 1 page(s).</p>'
    : '<p>Your search did not match any documents.</p>';
  const li = document.querySelector("ul.search li");
  if (li && SNIPPET) setTimeout(() => { const p = document.createElement("p"); p.className = "context";
                                        p.textContent = SNIPPET; li.appendChild(p); }, 300);
}, 200);</script></body></html>"""

# The theme's frame, reduced: a phone viewport, a main column of at most 688 px (as at 1280 px).
STYLE = ("<meta name='viewport' content='width=device-width, initial-scale=1'><style>body{margin:0}"
         "article.bd-article{box-sizing:border-box;width:100%;max-width:688px;padding:0}"
         "div.cell_output .output{max-width:100%;overflow-x:auto}</style>")


def html(body: str) -> str:
    return (f"<!DOCTYPE html><html><head><title>t</title>{STYLE}</head><body><main role='main'>"
            f"<div class='bd-header-article'>.ipynb .pdf</div><article class='bd-article'>{body}</article></main></body></html>")


def card(ident: str) -> str:
    return (f'<div class="claim-card" id="claim-{ident}" style="background:rgb(0,170,0);padding:4em 0">'
            f'<h4>{ident.upper()}: a claim</h4><p>holds</p></div>')  # a solid colour: its screenshot is checked


def kit_figure(natural: int = 600, text_pt: float = 10.0, caption: str = "what to see", ident: str = "figure-1-1") -> str:
    """A figure as the chapter kit writes it (figures.figure_html)."""
    return (f'<figure class="book-figure" id="{ident}" style="margin:1em 0"><img src="{DATA_URI}" alt="Figure 1.1" width="{natural}" '
            f'data-natural-width="{natural}" data-text-pt="{text_pt:.2f}" style="max-width:100%;height:auto">'
            f"<figcaption><b>Figure 1.1.</b> {caption}</figcaption></figure>")


def output(inner: str, cell_class: str = "cell", kind: str = "text_html") -> str:
    return (f'<div class="{cell_class} docutils container"><div class="cell_output docutils container">'
            f'<div class="output {kind}">{inner}</div></div></div>')


INTRO = html('<h1 id="top">Intro</h1><a href="chapters/ch.html#found">chapter</a> <a href="https://example.org">out</a>'
             '<img src="../_images/ok.png" alt="ok"><a href="#">top</a> <a href="verdicts.html#claim-a1-1">A1.1</a>')
CHAPTER = html('<section id="found"><p>Ghorbani’s attack moves the map.</p><a href="../intro.html#top">back</a>'
               f'<img src="{DATA_URI}"><div class="cell_output docutils container"><div class="output stream">'
               '<pre>fine</pre></div></div><a href="#claim-1-a-section">1</a><section id="claim-1-a-section"><p>A '
               'chapter section "Claim 1" is not a card: its links are not checked.</p></section>'
               + output(kit_figure()) + output('<figure class="book-table" id="table-1-1"><figcaption><b>Table 1.1.'
                                               '</b> numbers</figcaption><div style="overflow-x:auto"><table><tr><td>1'
                                               '</td></tr></table></div></figure>')
               + output("<pre>expected</pre>", "cell tag_expected-warning", "stderr")
               + "{planted}</section>")
VERDICTS = html('<p>A: holds: <a href="#claim-a1-1">A1.1</a>, <a href="verdicts.html#claim-a1-2">A1.2</a></p>'
                '{planted}' + "<div style='height:1500px'></div>" + card("a1-1") + card("a1-2"))


def make_site(root, planted: str = "", index_target: str = "book/intro.html", verdicts: str = "",
              snippet: str = SNIPPET):
    """index (a redirect), book/intro, book/verdicts (with ``verdicts`` HTML), book/chapters/ch (with
    ``planted`` HTML), search, one image."""
    (root / "book" / "chapters").mkdir(parents=True)
    (root / "_images").mkdir()
    (root / "_static").mkdir()
    (root / "_images" / "ok.png").write_bytes(PNG)
    (root / "_static" / "not-a-page.html").write_text(html('<a href="missing.html">ignored: assets</a>'))
    (root / "index.html").write_text(f'<meta http-equiv="Refresh" content="0; url={index_target}" />')
    (root / "book" / "intro.html").write_text(INTRO)
    (root / "book" / "chapters" / "ch.html").write_text(CHAPTER.replace("{planted}", planted))
    (root / "book" / "verdicts.html").write_text(VERDICTS.replace("{planted}", verdicts))
    (root / "search.html").write_text(SEARCH.replace("SNIPPET_JSON", json.dumps(snippet)))
    return root


def file_problems(root):
    return [p for page in check_site.pages(root)
            for p in check_site.static_problems(root, page, (root / page).read_text())]


def test_pages_skip_asset_folders(tmp_path):
    site = make_site(tmp_path)
    assert check_site.pages(site) == ["book/chapters/ch.html", "book/intro.html", "book/verdicts.html",
                                      "index.html", "search.html"]


def test_clean_site_passes(tmp_path):
    assert file_problems(make_site(tmp_path)) == []
    assert check_site.main([str(tmp_path), "--no-browser"]) == 0


PLANTED = {
    "missing image file": ('<img src="../../_images/missing.png">', "broken image", "missing.png"),
    "empty data URI": ('<img src="data:image/png;base64,">', "broken image", "empty data URI"),
    "image without src": ("<img>", "broken image", "without src"),
    "link to a missing page": ('<a href="../nowhere.html">x</a>', "broken link", "nowhere.html"),
    "missing stylesheet": ('<link rel="stylesheet" href="../../_static/gone.css">', "broken link", "gone.css"),
    "link leaving the site": ('<a href="../../../outside.html">x</a>', "broken link", "leaves the site"),
    "missing anchor elsewhere": ('<a href="../intro.html#no-such-section">x</a>', "missing anchor", "no-such-section"),
    "missing anchor here": ('<a href="#nothing-here">x</a>', "missing anchor", "nothing-here"),
    "traceback output": ('<div class="cell_output docutils container"><div class="output traceback highlight-ipythontb">'
                         '<pre>ValueError: boom</pre></div></div>', "error cell", "traceback"),
    "traceback text in an output": ('<div class="cell_output docutils container"><div class="output stream">'
                                    "<pre>Traceback (most recent call last):\n  File x</pre></div></div>",
                                    "error cell", "Traceback"),
    # figures and stderr (the clean chapter holds the fixed forms: a kit figure and table, a tagged stderr)
    "output image outside a figure": (output(f'<img src="{DATA_URI}">'), "uncaptioned figure", "not in a <figure>"),
    "output figure without figcaption": (output(f'<figure><img src="{DATA_URI}"></figure>'), "uncaptioned figure",
                                         "no <figcaption>"),
    "output figure with an empty caption": (output(f'<figure><img src="../../_images/ok.png"><figcaption> </figcaption>'
                                                   "</figure>"), "uncaptioned figure", "no caption text"),
    "stderr output": (output("<pre>UserWarning: careful</pre>", kind="stderr highlight-myst-ansi"),
                      "stderr output", "UserWarning: careful"),
    "stderr output of a cell tagged otherwise": (output("<pre>oops</pre>", "cell tag_hide-input", "stderr"),
                                                 "stderr output", "oops"),
}


@pytest.mark.parametrize("fault", sorted(PLANTED))
def test_each_planted_fault_is_reported(tmp_path, fault):
    snippet, kind, text = PLANTED[fault]
    problems = file_problems(make_site(tmp_path, planted=snippet))
    assert [(p.page, p.kind) for p in problems] == [("book/chapters/ch.html", kind)], problems
    assert text in problems[0].detail
    assert check_site.main([str(tmp_path), "--no-browser"]) == 1


VERDICTS_PLANTED = {
    "claim link to a section, not a card": ('<a href="#claim-a1-3">A1.3</a><section id="claim-a1-3"><p>A1.3</p></section>',
                                            "not a claim card"),
    "claim card no link points to": (card("a1-4"), "#claim-a1-4 (A1-4: a claim) has no link"),
}


@pytest.mark.parametrize("fault", sorted(VERDICTS_PLANTED))
def test_each_planted_verdicts_fault_is_reported(tmp_path, fault):
    snippet, text = VERDICTS_PLANTED[fault]
    problems = file_problems(make_site(tmp_path, verdicts=snippet))
    assert [(p.page, p.kind) for p in problems] == [("book/verdicts.html", "claim link")], problems
    assert text in problems[0].detail


def test_claim_link_from_another_page_needs_a_card(tmp_path):
    site = make_site(tmp_path / "bad", planted='<a href="../verdicts.html#claim-summary">all</a>',
                     verdicts='<div id="claim-summary">a summary, not a card</div>')
    assert [(p.page, p.kind) for p in file_problems(site)] == [("book/chapters/ch.html", "claim link")]
    fixed = make_site(tmp_path / "fixed", planted='<a href="../verdicts.html#claim-a1-2">A1.2</a>')
    assert file_problems(fixed) == []


def test_allow_turns_a_kind_into_warnings(tmp_path, capsys):
    site = make_site(tmp_path, planted=output(f'<img src="{DATA_URI}">') + output("<pre>w</pre>", kind="stderr"))
    assert check_site.main([str(site), "--no-browser"]) == 1
    assert check_site.main([str(site), "--no-browser", "--allow", "uncaptioned-figure"]) == 1  # stderr still fails
    capsys.readouterr()
    assert check_site.main([str(site), "--no-browser", "--allow", "uncaptioned-figure", "--allow", "stderr output"]) == 0
    out = capsys.readouterr().out
    assert "WARN book/chapters/ch.html: uncaptioned figure" in out and "WARN book/chapters/ch.html: stderr output" in out
    assert "FAIL" not in out and "0 problems (2 allowed by --allow)" in out
    with pytest.raises(SystemExit):
        check_site.main([str(site), "--no-browser", "--allow", "no-such-kind"])


def test_summary_table_counts_figures_and_tables(tmp_path, capsys):
    site = make_site(tmp_path, planted=output('<table><tr><td>pandas</td></tr></table>'))
    assert check_site.main([str(site), "--no-browser"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("book/chapters/ch.html"))
    assert row.split() == ["book/chapters/ch.html", "-", "1", "1", "1", "1", "0"]  # height only in the browser


def test_min_text_pt_is_the_kits():
    figures = pytest.importorskip("reliable_saliency.chapter.figures")
    import layout_checks

    assert layout_checks.MIN_TEXT_PT == figures.MIN_TEXT_PT


def test_broken_redirect_is_reported(tmp_path):
    problems = file_problems(make_site(tmp_path, index_target="book/moved.html"))
    assert [(p.page, p.kind) for p in problems] == [("index.html", "broken link")]


def test_prose_mentioning_a_traceback_is_not_an_error_cell(tmp_path):
    prose = "<p>A chapter may say Traceback (most recent call last) in prose.</p>"
    assert file_problems(make_site(tmp_path, planted=prose)) == []


@pytest.mark.skipif(find_chromium() is None, reason="no Chromium (apt-get install chromium)")
def test_browser_run_passes_a_clean_site_and_reports_planted_faults(tmp_path):
    site = make_site(tmp_path / "clean")
    shots = tmp_path / "shots"
    assert check_site.browser_check(site, shots, ["Ghorbani"], log=lambda s: None) == []
    assert sorted(p.name for p in shots.iterdir()) == [
        "book__chapters__ch.png", "book__intro.phone-390px.png", "book__intro.png", "book__verdicts.phone-390px.png",
        "book__verdicts.png", "claim-card.png", "search-Ghorbani.png", "search.png"]  # the index only redirects: no screenshot of its own
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in shots.iterdir())
    pixels = list(Image.open(shots / "claim-card.png").convert("RGB").getdata())
    assert sum(p == (0, 170, 0) for p in pixels) > 0.8 * len(pixels)  # the card itself, not the page beside it

    # faults only a browser sees: an image file that does not decode, a JavaScript exception, a
    # search that lists no chapter; plus one the files show (a missing image) on the DOM
    bad = make_site(tmp_path / "bad", planted='<img src="../../_images/corrupt.png"><img src="../../_images/gone.png">'
                                              '<script>throw new Error("planted")</script>')
    (bad / "_images" / "corrupt.png").write_bytes(b"not a png")
    problems = check_site.browser_check(bad, None, ["Ghorbani", "Nowhere"], log=lambda s: None)
    found = {(p.kind, next(w for w in ("corrupt.png", "gone.png", "planted", "Nowhere") if w in p.detail))
             for p in problems}
    assert found == {("broken image", "corrupt.png"), ("broken image", "gone.png"), ("js error", "planted"),
                     ("search", "Nowhere")}, problems


@pytest.mark.skipif(find_chromium() is None, reason="no Chromium (apt-get install chromium)")
def test_browser_reports_planted_layout_faults(tmp_path):
    """Overflow at 1280 and 390 px, a table that must scroll at 1280 px (allowed at 390), figure text
    shrunk below 9 pt; each with its fixed form in the clean site (the test above)."""
    planted = ('<div id="too-wide" style="width:2000px">a 2000-px block</div>'
               '<div id="phone-wide" style="width:600px">fits 688 px, not 390</div>'
               + output('<table id="wide-table" style="width:2000px"><tr><td>2000 px</td></tr></table>')
               + output(kit_figure(natural=1800, ident="figure-1-2")))
    site = make_site(tmp_path / "site", planted=planted)
    shots, rows = tmp_path / "shots", []
    problems = check_site.browser_check(site, shots, [], log=lambda s: None, summary=rows)
    found = {(p.kind, next((w for w in ("too-wide", "phone-wide", "wide-table", "sideways", "figure-1-2")
                            if w in p.detail), p.detail), "390" if "at 390 px" in p.detail else "1280")
             for p in problems}
    assert found == {("overflow", "too-wide", "1280"), ("overflow", "sideways", "1280"),
                     ("wide table", "wide-table", "1280"), ("small figure text", "figure-1-2", "1280"),
                     ("overflow", "too-wide", "390"), ("overflow", "phone-wide", "390"), ("overflow", "sideways", "390")}, problems
    assert all(p.page == "book/chapters/ch.html" for p in problems)
    small = next(p for p in problems if p.kind == "small figure text")
    assert "shows at 3.8 pt (688 of 1800 px)" in small.detail, small
    assert (shots / "book__chapters__ch.phone-390px.png").is_file()  # a page with a problem at phone width
    chapter = next(r for r in rows if r["page"] == "book/chapters/ch.html")
    assert chapter["height"] > 900 and (chapter["figures"], chapter["tables"], chapter["images"]) == (2, 1, 2)


@pytest.mark.skipif(find_chromium() is None, reason="no Chromium (apt-get install chromium)")
def test_browser_reports_search_snippets_without_page_text(tmp_path, monkeypatch):
    import layout_checks

    monkeypatch.setattr(layout_checks, "SNIPPET_TIMEOUT", 2.0)
    for name, snippet, text in [("chrome", ".ipynb .pdf Ghorbani\u2019s attack", "not (only) text of the page"),
                                ("none", "", "shows no text"), ("names", "... ch.ipynb ...", 'shows "ch.ipynb"')]:
        site = make_site(tmp_path / name, snippet=snippet)
        problems = check_site.browser_check(site, None, ["Ghorbani"], log=lambda s: None)
        assert [(p.page, p.kind) for p in problems] == [("search.html", "search snippet")], (name, problems)
        assert text in problems[0].detail, (name, problems)
