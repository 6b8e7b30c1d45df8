"""The claims ledger: every chapter states each claim it tests the same way, and one tested rule
turns the per-image evidence into a verdict (:mod:`.rule` explains the rule; :mod:`.statistics`
the bootstrap; :mod:`.ledger` the chapter's ledger and its file; :mod:`.render` the text)."""

from .cards import anchor, card_html, cards_html, forest_svg
from .ledger import CLAIMS_DIR_ENV, PART_KEYS, REQUIRED_KEYS, SCHEMA, Claim, Ledger, load_bottom_lines, load_claims
from .render import claims_html, evidence_text, part_text
from .rule import ALPHA, COMBINES, MIN_N, VERDICTS, PartResult, count_parts, holm, judge, mirror, verdict_text
from .statistics import (Estimate, Statistic, bootstrap_mean, finite_median, correlation_gap, effect_of, interval_text,
                         median_interval_text, one_sided_p, rank_agreement)

__all__ = [
    "VERDICTS", "COMBINES", "ALPHA", "MIN_N", "SCHEMA", "CLAIMS_DIR_ENV", "REQUIRED_KEYS", "PART_KEYS",
    "Estimate", "Claim", "Ledger", "PartResult", "bootstrap_mean", "effect_of", "one_sided_p", "holm", "judge",
    "count_parts", "verdict_text", "mirror", "load_claims", "claims_html", "evidence_text", "part_text",
    "interval_text", "median_interval_text", "load_bottom_lines", "anchor", "card_html", "cards_html", "forest_svg",
    "Statistic", "rank_agreement", "correlation_gap", "finite_median",
]
