"""Claims as text and HTML: each part's number with its interval, n and its own verdict; each
claim's verdict with its counts, its null or minimal effect, and its caveats."""

from __future__ import annotations

import html

__all__ = ["part_text", "evidence_text", "claims_html", "VERDICT_COLOURS"]

VERDICT_COLOURS = {"holds": "#1b7837", "does not hold": "#b2182b", "inconclusive": "#555555"}


def part_text(part: dict) -> str:
    """``"lenet_natural vs RISE: -0.028 (95% CI -0.051 to -0.006), n = 200; against"``."""
    relation = ">" if part["direction"] == "above" else "<"
    dropped = f", {part['dropped']} NaN dropped" if part.get("dropped") else ""
    holm = ""
    if "adjusted_level" in part:
        holm = f"; Holm: {100 * part['adjusted_level']:.2f}% CI {part['adjusted_low']:.3g} to {part['adjusted_high']:.3g}"
    role = " (descriptive)" if part.get("role") == "descriptive" else (" (main)" if part.get("role") == "main" else "")
    return (f"{part['label']}{role}: {part['mean']:.3f} (95% CI {part['low']:.3f} to {part['high']:.3f}), "
            f"n = {part['n']}{dropped}{holm}; needs {relation} {part['tested_against']:.4g}: {part['verdict']}")


def evidence_text(claim: dict) -> str:
    """The numbers of a claim in one line: each part, or the reason of a recorded verdict."""
    evidence = claim["evidence"]
    if "parts" in evidence:
        said = "; ".join(part_text(p) for p in evidence["parts"])
        if claim.get("null") is not None:
            said += f". Null {claim['null']:.4g}: {claim['null_reason']}"
        if claim.get("min_effect") is not None:
            said += (f". Minimal effect {claim['min_effect']:.4g} ({claim['min_effect_reason']}); the sign test "
                     f"alone: {claim['sign_verdict']}")
        if claim.get("min_n_reason"):
            said += f". Parts need n >= {claim['min_n']}: {claim['min_n_reason']}"
        return said
    numbers = ", ".join(f"{k} = {v:.3g}" if isinstance(v, float) else f"{k} = {v}"
                        for k, v in evidence.get("numbers", {}).items())
    return f"{evidence['reason']}{'; ' + numbers if numbers else ''}"


def claims_html(claims: list[dict], show_chapter: bool = True) -> str:
    """Claims (dicts with the keys of :class:`~.ledger.Claim`, plus ``chapter``) as an HTML table
    that wraps; the verdict cell carries the counts, the caveats follow the evidence."""
    head = (["chapter"] if show_chapter else []) + ["claim", "what was measured", "evidence", "verdict"]
    rows = []
    for c in claims:
        e = c["evidence"]
        measured = e.get("measured", "") + (f" ({e['setting']})" if e.get("setting") else "")
        caveats = "".join(f"<br><i>Caveat:</i> {html.escape(x)}" for x in c.get("caveats", []))
        rejudged = f"<br><i>{html.escape(c['rejudged'])}</i>" if c.get("rejudged") else ""
        colour = VERDICT_COLOURS[c["verdict"]]
        cells = ([html.escape(c.get("chapter", ""))] if show_chapter else []) + [
            f"<b>{html.escape(c['id'])}</b>: {html.escape(c['claim'])} <small>({html.escape(c['paper'])}; "
            f"{html.escape(c['profile'])} profile)</small>",
            html.escape(measured), html.escape(evidence_text(c)) + caveats,
            f'<span style="color:{colour};font-weight:bold">{html.escape(c["verdict_text"])}</span>{rejudged}',
        ]
        rows.append("<tr>" + "".join(f'<td style="text-align:left;vertical-align:top">{x}</td>' for x in cells) + "</tr>")
    header = "".join(f'<th style="text-align:left">{h}</th>' for h in head)
    return ('<table class="claims-ledger" style="table-layout:auto;white-space:normal;word-break:normal">'
            f"<thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
