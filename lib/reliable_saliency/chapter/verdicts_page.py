"""Sphinx extension: the book's "Verdicts at a glance" page, built from every chapter's claims file.

Listed in ``_config.yml`` (``sphinx: extra_extensions``). At each build it reads
``<book>/claims/*.json`` (written by the executed chapters) and writes ``<book>/verdicts.md``
before Sphinx reads any page, so the page is never edited by hand and always matches the claims
the chapters produced.
"""

from __future__ import annotations

from pathlib import Path

from ..claims import VERDICTS, claims_html, load_claims

__all__ = ["render_page", "setup"]

PAGE = """# Verdicts at a glance

Every claim the executed chapters tested, with the numbers behind its verdict. The verdict rule
is the same everywhere: the mean effect per image with a 95% bootstrap interval over images,
against the threshold each claim states: *holds* when the whole interval is on the claimed side,
*does not hold* when it is entirely on the other side, *inconclusive* when it straddles the
threshold, *partly holds* when some parts of a claim hold and others do not. The profile says at
which scale a claim was measured (`smoke` verdicts only show that a chapter runs).

This page is generated from `book/claims/*.json` at every build; do not edit it.

{counts}

```{{raw}} html
{chapters}
```

## Every claim

```{{raw}} html
{table}
```
"""


def render_page(claims_dir: Path) -> str:
    """The page's Markdown for the claims files in ``claims_dir`` (none yet: says so)."""
    claims = load_claims(claims_dir) if claims_dir.is_dir() else []
    if not claims:
        return PAGE.format(counts="No chapter has written its claims yet.", chapters="", table="")
    chapters = sorted({c["chapter"] for c in claims})
    counts = ", ".join(f"{sum(c['verdict'] == v for c in claims)} {v}" for v in VERDICTS
                       if any(c["verdict"] == v for c in claims))
    counts = f"{len(claims)} claims from {len(chapters)} chapters ({', '.join(chapters)}): {counts}."
    return PAGE.format(counts=counts, chapters=_chapters_html(claims, chapters), table=claims_html(claims))


def _chapters_html(claims: list[dict], chapters: list[str]) -> str:
    """One row per chapter: its profile(s) and how many claims got each verdict."""
    head = "".join(f'<th style="text-align:left">{h}</th>' for h in ("chapter", "profile", "claims", *VERDICTS))
    rows = []
    for chapter in chapters:
        own = [c for c in claims if c["chapter"] == chapter]
        cells = [chapter, ", ".join(sorted({c["profile"] for c in own})), str(len(own)),
                 *(str(sum(c["verdict"] == v for c in own)) for v in VERDICTS)]
        rows.append("<tr>" + "".join(f'<td style="text-align:left">{x}</td>' for x in cells) + "</tr>")
    return f'<table class="claims-chapters"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'



def _write(app, config) -> None:
    book = Path(app.srcdir) / "book"
    page = book / "verdicts.md"
    text = render_page(book / "claims")
    if not page.exists() or page.read_text() != text:  # unchanged pages keep Sphinx's cache valid
        page.write_text(text)


def setup(app):
    app.connect("config-inited", _write, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
