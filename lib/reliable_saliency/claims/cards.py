"""Claim cards: one card per claim (its words, the verdict with its counts, a forest plot of its
parts, the caveats), with a stable anchor, for the chapters' findings and the verdicts page. The
forest plot is inline SVG drawn from the ledger's numbers, so it needs no image file and scales to
the column: each part's estimate and 95% interval, the threshold (and the null, when one is
declared) as a line, parts that cannot decide greyed."""

from __future__ import annotations

import html
import math
import re

from .render import VERDICT_COLOURS, evidence_text

__all__ = ["anchor", "forest_svg", "card_html", "cards_html", "CARD_CSS"]

PART_COLOURS = {"holds": "#1b7837", "does not hold": "#b2182b", "inconclusive": "#555555"}
GREY = "#bbbbbb"
CARD_CSS = (".claim-card{border:1px solid #ddd;border-left:6px solid var(--verdict);border-radius:4px;"
            "padding:.6em .9em;margin:1em 0;max-width:100%;overflow-wrap:anywhere}"
            ".claim-card h4{margin:.1em 0 .4em 0;font-size:1.05em}.claim-card .verdict{font-weight:bold;"
            "color:var(--verdict)}.claim-card svg{width:100%;height:auto;max-width:640px}"
            ".claim-card .caveat{font-size:.92em}.claim-card details{font-size:.88em}")


def anchor(claim_id: str) -> str:
    """``"A2.1"`` -> ``"claim-a2-1"``: the card's id, stable across runs."""
    return "claim-" + re.sub(r"[^a-z0-9]+", "-", claim_id.lower()).strip("-")


def _finite(*values) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def forest_svg(claim: dict, width: int = 640) -> str:
    """The parts of a tested claim as a forest plot (empty string for a recorded verdict)."""
    parts = claim.get("evidence", {}).get("parts", [])
    if not parts:
        return ""
    lines = [p.get("tested_against", p.get("threshold")) for p in parts[:1]]
    if claim.get("min_effect") is not None:
        lines.append(claim.get("threshold"))
    numbers = [v for p in parts for v in (p["low"], p["high"], p["mean"]) if _finite(v)] + [v for v in lines if _finite(v)]
    if not numbers:
        return ""
    lo, hi = min(numbers), max(numbers)
    pad = (hi - lo) * 0.08 or max(abs(hi), 1.0) * 0.1
    lo, hi = lo - pad, hi + pad
    label_w, row_h, top = int(width * 0.5), 22, 18
    fits = int((label_w - 8) / 6.6)  # characters of 12 px sans-serif that fit left of the plot
    plot_w = width - label_w - 12
    x = lambda v: label_w + (v - lo) / (hi - lo) * plot_w  # noqa: E731
    height = top + row_h * len(parts) + 26
    out = [f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="forest plot of {html.escape(claim["id"])}" '
           f'xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="12">']
    for k, value in enumerate(lines):
        if _finite(value):
            dash = "" if k == 0 else ' stroke-dasharray="2 3"'
            out.append(f'<line x1="{x(value):.1f}" x2="{x(value):.1f}" y1="{top - 4}" y2="{height - 22}" '
                       f'stroke="#444" stroke-width="1"{dash}/>')
            name = "sign" if k else ("needs" if claim.get("min_effect") is not None else
                                     "null" if claim.get("null") is not None else "threshold")
            out.append(f'<text x="{x(value):.1f}" y="{top - 7}" text-anchor="middle" fill="#444" font-size="10">'
                       f'{name} {value:.3g}</text>')
    for i, p in enumerate(parts):
        y = top + row_h * i + row_h / 2
        decides = p.get("power", "ok") == "ok" and p.get("role", "deciding") != "descriptive"
        colour = PART_COLOURS.get(p.get("verdict"), "#555555") if decides else GREY
        label = p["label"] if len(p["label"]) <= fits else p["label"][:fits - 1] + "…"
        out.append(f'<text x="{label_w - 6}" y="{y + 4:.1f}" text-anchor="end" fill="{"#222" if decides else "#888"}">'
                   f'{html.escape(label)}</text>')
        if _finite(p["low"], p["high"]):
            out.append(f'<line x1="{x(p["low"]):.1f}" x2="{x(p["high"]):.1f}" y1="{y:.1f}" y2="{y:.1f}" '
                       f'stroke="{colour}" stroke-width="2"/>')
        if _finite(p["mean"]):
            out.append(f'<circle cx="{x(p["mean"]):.1f}" cy="{y:.1f}" r="4" fill="{colour}"/>')
        out.append(f'<title>{html.escape(p["label"])}: {p["mean"]:.3g}, n = {p["n"]}, {p.get("verdict", "")}</title>')
    axis_y = height - 8
    for v in (lo + pad, (lo + hi) / 2, hi - pad):
        out.append(f'<text x="{x(v):.1f}" y="{axis_y}" text-anchor="middle" fill="#666">{v:.3g}</text>')
    out.append("</svg>")
    return "".join(out)


def card_html(claim: dict, link: str | None = None) -> str:
    """One claim as a card with the anchor :func:`anchor`; ``link`` (optional) points to the
    section with the evidence."""
    colour = VERDICT_COLOURS[claim["verdict"]]
    caveats = "".join(f'<p class="caveat"><b>Caveat.</b> {html.escape(c)}</p>' for c in claim.get("caveats", []))
    rejudged = f'<p class="caveat"><i>{html.escape(claim["rejudged"])}</i></p>' if claim.get("rejudged") else ""
    null = ""
    if claim.get("null") is not None:
        null = f" Tested against its chance level {claim['null']:.3g}: {html.escape(claim['null_reason'])}."
    magnitude = ""
    if claim.get("min_effect") is not None:
        magnitude = (f" A magnitude claim: it needs at least {claim['min_effect']:.3g} "
                     f"({html.escape(claim['min_effect_reason'])}); the sign alone: {claim['sign_verdict']}.")
    evidence = claim.get("evidence", {})
    measured = html.escape(evidence.get("measured", "")) + (
        f" <small>({html.escape(evidence['setting'])})</small>" if evidence.get("setting") else "")
    where = f' <a href="{html.escape(link)}">the evidence</a>' if link else ""
    return (f'<div class="claim-card" id="{anchor(claim["id"])}" style="--verdict:{colour}">'
            f'<h4>{html.escape(claim["id"])}: {html.escape(claim["claim"])}</h4>'
            f'<p><span class="verdict">{html.escape(claim["verdict_text"])}</span> '
            f'<small>({html.escape(claim["paper"])}; {html.escape(claim["profile"])} profile)</small>{where}</p>'
            f'{forest_svg(claim)}<p><b>Measured:</b> {measured}.{null}{magnitude}</p>{caveats}{rejudged}'
            f'<details><summary>Every number</summary>{html.escape(evidence_text(claim))}</details></div>')


def cards_html(claims: list[dict], links: dict[str, str] | None = None) -> str:
    """Several cards, with the stylesheet once."""
    links = links or {}
    return f"<style>{CARD_CSS}</style>" + "".join(card_html(c, links.get(c["id"])) for c in claims)
