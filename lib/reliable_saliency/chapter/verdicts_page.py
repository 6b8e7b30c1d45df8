"""Sphinx extension: the book's "Verdicts at a glance" page, built from every chapter's claims file.

Listed in ``_config.yml`` (``sphinx: extra_extensions``). At each build it reads
``<book>/claims/*.json`` (written by the executed chapters) and writes ``<book>/verdicts.md``
before Sphinx reads any page, so the page is never edited by hand and always matches the claims
the chapters produced. It opens with one card per paper (the chapter's bottom line, its
verdict counts and the arena's re-tests of the paper's claims), then the book's own checks
apart, then every claim as a card with its forest plot, under a stable anchor (``#claim-a2-1``).
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from ..claims import VERDICTS, load_bottom_lines, load_claims
from ..claims.cards import CARD_CSS, anchor, card_html
from ..claims.render import VERDICT_COLOURS

__all__ = ["render_page", "setup", "PAPER_CHAPTERS"]

PAGE = """# Verdicts at a glance

What each paper claimed and whether it held here, then every claim with the numbers behind it.
One rule everywhere: each part of a claim (a model, an explainer, ...) is the mean effect per image
with a 95% bootstrap interval over images (an exact binomial interval and test for a yes/no per
image against a rate), tested against the threshold the claim states, or against the statistic's
chance level when it has one. A part with fewer than 30 images, or whose every value sits at the
tested value (variants at the same ceiling differ by 0 on every image), is shown greyed and never
decides. The claim's quantifier
combines its parts: *for every part* (the default) holds when every deciding part holds and does
not hold when one is significantly against (Holm-adjusted); *for at least one* is its mirror; a
claim with a main part is decided by it alone. Every verdict carries its counts, and the caveats
say where an advantage is there by construction. `smoke` verdicts only show that a chapter runs.

This page is generated from `book/claims/*.json` at every build; do not edit it.

## The five papers

```{{raw}} html
{papers}
```

## The book's own checks

```{{raw}} html
{own}
```

## Every claim

{claims}
"""

# The chapters that reproduce the five papers, with their titles; the others are the book's own
# checks (its models, the background papers of chapter 1).
PAPER_CHAPTERS = {
    "02_relex": "A. RelEx: saliency masks learned on noisy copies (Lim, Lee and Kim, CVPR 2021)",
    "03_dance": "B. DANCE: decoys that keep an intermediate representation (Lu et al., ICML 2021)",
    "04_reliability_measure": "C. An adversarial measure of explanation reliability (Valle et al., IJCNN 2020)",
    "05_mask_search": "D. A black-box mask search and GAN inpainting (Thakur and Fischmeister, ICPR 2020)",
    "06_gradient_alignment": "E. Gradient alignment with l2 + cosd for robust attributions (Joo et al., AAAI 2023)",
}
ARENA = "07_arena"  # its claims re-test the papers' (ids A7.1, B7.1, ...): each paper's card names them too
OWN_CHAPTERS = {
    "00_data_and_models": "The book's data and models",
    "01_fragile_explanations": "Fragile explanations: the background papers (Ghorbani et al.; Dombrowski et al.)",
    "07_arena": "The arena: every method against every attack, on the same footing",
}


def _chapter_link(chapter: str) -> str:
    return f"chapters/{chapter}.html"


def _counts(claims: list[dict]) -> str:
    return ", ".join(f'<span style="color:{VERDICT_COLOURS[v]};font-weight:bold">{n} {v}</span>'
                     for v in VERDICTS if (n := sum(c["verdict"] == v for c in claims)))


def _computed_bottom_line(claims: list[dict]) -> str:
    said = []
    for verdict in VERDICTS:
        ids = [c["id"] for c in claims if c["verdict"] == verdict]
        if ids:
            # verdicts.html from both pages that show the paper cards (the intro includes them)
            said.append(f"{verdict}: " + ", ".join(f'<a href="verdicts.html#{anchor(i)}">{html.escape(i)}</a>'
                                                    for i in ids))
    return "; ".join(said) + "."


def _emphasis(text: str) -> str:
    """The Markdown emphasis a bottom line may use (``*clean*``, ``**not**``) as HTML: the cards are
    raw HTML, where Markdown is not rendered."""
    text = re.sub(r"\*\*(\S(?:[^*]*\S)?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"(?<![\w*])\*(\S(?:[^*]*\S)?)\*(?![\w*])", r"<em>\1</em>", text)


def _arena_line(title: str, claims: list[dict]) -> str:
    """The arena's re-tests of one paper's claims (ids with the paper's letter, ``A7.1``), their
    verdicts linked to their cards; '' when the arena has none for it (or has not run)."""
    retested = [c for c in claims if c["chapter"] == ARENA and c["id"].startswith(title[0])]
    if not retested:
        return ""
    return ("</p><p>Re-tested in <a href=\"" + _chapter_link(ARENA) + "\">the arena</a>, every method measured the "
            f"same way ({retested[0]['profile']} profile): " + _computed_bottom_line(retested))


def _chapter_cards(titles: dict[str, str], claims: list[dict], bottom: dict[str, str]) -> str:
    cards = []
    for chapter, title in titles.items():
        own = [c for c in claims if c["chapter"] == chapter]
        if not own:
            cards.append(f'<div class="claim-card" style="--verdict:#888"><h4>{html.escape(title)}</h4>'
                         f"<p>Not executed at any profile yet.{_arena_line(title, claims)}</p></div>")
            continue
        line = _emphasis(html.escape(bottom.get(chapter, "")))
        line = f"{line}</p><p>{_computed_bottom_line(own)}" if line else _computed_bottom_line(own)  # links
        if chapter in PAPER_CHAPTERS:
            line += _arena_line(title, claims)
        profiles = ", ".join(sorted({c["profile"] for c in own}))
        cards.append(f'<div class="claim-card" style="--verdict:#2c5d8f"><h4><a href="{_chapter_link(chapter)}">'
                     f"{html.escape(title)}</a></h4><p>{len(own)} claims ({profiles} profile): {_counts(own)}.</p>"
                     f"<p>{line}</p></div>")
    return f"<style>{CARD_CSS}</style>" + "".join(cards)


def render_page(claims_dir: Path) -> str:
    """The page's Markdown for the claims files in ``claims_dir`` (none yet: says so)."""
    claims = load_claims(claims_dir) if claims_dir.is_dir() else []
    bottom = load_bottom_lines(claims_dir) if claims_dir.is_dir() else {}
    sections = []
    for chapter in sorted({c["chapter"] for c in claims}):
        own = [c for c in claims if c["chapter"] == chapter]
        title = PAPER_CHAPTERS.get(chapter) or OWN_CHAPTERS.get(chapter) or chapter
        # a chapter executed since the cards exist prints the same cards: link each to its twin
        executed = claims_dir.parent / "chapters" / f"{chapter}.ipynb"
        twins = executed.exists() and 'class=\\"claim-card\\"' in executed.read_text()
        link = _chapter_link(chapter)
        cards = "".join(card_html(c, f"{link}#{anchor(c['id'])}" if twins else link) for c in own)
        sections.append(f"### {title}\n\n```{{raw}} html\n{cards}\n```\n")
    return PAGE.format(papers=_chapter_cards(PAPER_CHAPTERS, claims, bottom),
                       own=_chapter_cards(OWN_CHAPTERS, claims, bottom),
                       claims="\n".join(sections) or "No chapter has written its claims yet.")


def _write(app, config) -> None:
    book = Path(app.srcdir) / "book"
    page = book / "verdicts.md"
    text = render_page(book / "claims")
    if not page.exists() or page.read_text() != text:  # unchanged pages keep Sphinx's cache valid
        page.write_text(text)


def setup(app):
    app.connect("config-inited", _write, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
