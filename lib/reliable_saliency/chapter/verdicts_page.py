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

Every claim the executed chapters tested, with the numbers behind its verdict. One rule everywhere:
each part of a claim (a model, an explainer, ...) is the mean effect per image with a 95% bootstrap
interval over images, tested against the threshold the claim states, or against the statistic's
chance level when it has one. A part with fewer than 30 images, or whose values are all equal (a
ceiling), is shown but never decides. The claim's quantifier combines its parts: *for every part*
(the default) holds when every deciding part holds and does not hold when one is significantly
against (Holm-adjusted); *for at least one* is its mirror; a claim with a main part is decided by
it alone. Every verdict carries its counts ("does not hold (9 of 12 against, 3 inconclusive)"),
and the caveats say where an advantage is there by construction. The profile says at which scale
a claim was measured (`smoke` verdicts only show that a chapter runs).

This page is generated from `book/claims/*.json` at every build; do not edit it.

{rejudged}

{counts}

```{{raw}} html
{chapters}
```

## Every claim

```{{raw}} html
{table}
```
"""

# The chapters that reproduce the five papers; the others are the book's own checks (its models,
# the background papers of chapter 1).
PAPER_CHAPTERS = {
    "02_relex": "A. RelEx (CVPR 2021)",
    "03_dance": "B. DANCE (ICML 2021)",
    "04_reliability_measure": "C. The adversarial reliability measure (IJCNN 2020)",
    "05_mask_search": "D. Black-box mask search (ICPR 2020)",
    "06_gradient_alignment": "E. Gradient alignment, l2 + cosd (AAAI 2023)",
}


def _count(claims: list[dict]) -> str:
    said = ", ".join(f"{sum(c['verdict'] == v for c in claims)} {v}" for v in VERDICTS
                     if any(c["verdict"] == v for c in claims))
    return f"{len(claims)} claims: {said}"


def render_page(claims_dir: Path) -> str:
    """The page's Markdown for the claims files in ``claims_dir`` (none yet: says so)."""
    claims = load_claims(claims_dir) if claims_dir.is_dir() else []
    if not claims:
        return PAGE.format(rejudged="", counts="No chapter has written its claims yet.", chapters="", table="")
    chapters = sorted({c["chapter"] for c in claims})
    papers = [c for c in claims if c["chapter"] in PAPER_CHAPTERS]
    own = [c for c in claims if c["chapter"] not in PAPER_CHAPTERS]
    counts = [f"**The five papers** ({len({c['chapter'] for c in papers})} chapters): {_count(papers)}."] if papers else []
    if own:
        counts.append(f"**The book's own checks** (its models, the background papers): {_count(own)}.")
    rejudged = sorted({c["chapter"] for c in claims if c.get("rejudged")})
    note = ""
    if rejudged:
        note = ("```{note}\nThe claims of " + ", ".join(rejudged) + " were re-judged under the current rule "
                "from the intervals their chapters stored (a normal approximation, every claim read as 'for "
                "every part'), with the caveats of the first referee reading; those chapter pages still show "
                "the old rule's verdicts until they are executed again.\n```")
    return PAGE.format(rejudged=note, counts="\n\n".join(counts), chapters=_chapters_html(claims, chapters),
                       table=claims_html(claims))


def _chapters_html(claims: list[dict], chapters: list[str]) -> str:
    """One row per chapter: its paper, profile(s) and how many claims got each verdict."""
    head = "".join(f'<th style="text-align:left">{h}</th>' for h in ("chapter", "paper", "profile", "claims",
                                                                     *VERDICTS))
    rows = []
    for chapter in chapters:
        own = [c for c in claims if c["chapter"] == chapter]
        cells = [chapter, PAPER_CHAPTERS.get(chapter, "the book's own checks"),
                 ", ".join(sorted({c["profile"] for c in own})), str(len(own)),
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
