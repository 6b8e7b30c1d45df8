"""Tests of the site checker (check_site.py, run by ``make browser``): a tiny fake site, with faults
planted one at a time, must be reported; the clean site must pass. The file-level checks need no
browser; the browser run (JavaScript DOM, image decoding, search, screenshots) is skipped when no
Chromium is installed."""

from __future__ import annotations

import base64

import pytest

import check_site
from chromium_cdp import find_chromium

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
DATA_URI = "data:image/png;base64," + base64.b64encode(PNG).decode()

# Sphinx's search fills #search-results from ?q= in JavaScript; this stand-in does the same, late.
SEARCH = """<!DOCTYPE html><html><head><title>search</title></head><body><div id="search-results"></div>
<script>setTimeout(() => {
  const q = new URLSearchParams(location.search).get("q") || "";
  document.getElementById("search-results").innerHTML = q === "Ghorbani"
    ? '<ul class="search"><li><a href="book/chapters/ch.html?highlight=ghorbani">ch</a></li></ul><p>Search finished, found 1 page(s).</p>'
    : '<p>Your search did not match any documents.</p>';
}, 200);</script></body></html>"""


def html(body: str) -> str:
    return f"<!DOCTYPE html><html><head><title>t</title></head><body>{body}</body></html>"


INTRO = html('<h1 id="top">Intro</h1><a href="chapters/ch.html#found">chapter</a> <a href="https://example.org">out</a>'
             '<img src="../_images/ok.png" alt="ok"><a href="#">top</a>')
CHAPTER = html('<section id="found"><p>Ghorbani</p><a href="../intro.html#top">back</a>'
               f'<img src="{DATA_URI}"><div class="cell_output docutils container"><div class="output stream">'
               "fine</div></div>{planted}</section>")


def make_site(root, planted: str = "", index_target: str = "book/intro.html"):
    """index (a redirect), book/intro, book/chapters/ch (with ``planted`` HTML), search, one image."""
    (root / "book" / "chapters").mkdir(parents=True)
    (root / "_images").mkdir()
    (root / "_static").mkdir()
    (root / "_images" / "ok.png").write_bytes(PNG)
    (root / "_static" / "not-a-page.html").write_text(html('<a href="missing.html">ignored: assets</a>'))
    (root / "index.html").write_text(f'<meta http-equiv="Refresh" content="0; url={index_target}" />')
    (root / "book" / "intro.html").write_text(INTRO)
    (root / "book" / "chapters" / "ch.html").write_text(CHAPTER.replace("{planted}", planted))
    (root / "search.html").write_text(SEARCH)
    return root


def file_problems(root):
    return [p for page in check_site.pages(root)
            for p in check_site.static_problems(root, page, (root / page).read_text())]


def test_pages_skip_asset_folders(tmp_path):
    site = make_site(tmp_path)
    assert check_site.pages(site) == ["book/chapters/ch.html", "book/intro.html", "index.html", "search.html"]


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
}


@pytest.mark.parametrize("fault", sorted(PLANTED))
def test_each_planted_fault_is_reported(tmp_path, fault):
    snippet, kind, text = PLANTED[fault]
    problems = file_problems(make_site(tmp_path, planted=snippet))
    assert [(p.page, p.kind) for p in problems] == [("book/chapters/ch.html", kind)], problems
    assert text in problems[0].detail
    assert check_site.main([str(tmp_path), "--no-browser"]) == 1


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
        "book__chapters__ch.png", "book__intro.phone-390px.png", "book__intro.png",
        "search-Ghorbani.png", "search.png"]  # the index only redirects: no screenshot of its own
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in shots.iterdir())

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
