"""The verdict rule: per-part bootstrap tests, the power rule, and how a claim's parts combine.

A claim is made of parts (one per model, per explainer, ...), each a set of per-image values
tested against a threshold (or the statistic's chance level, its null). Each part gets two
one-sided bootstrap p-values (:func:`~.statistics.one_sided_p`): ``p_for`` small means the effect
is on the claimed side, ``p_against`` small means it is on the other side. At the unadjusted level
(``ALPHA`` = 0.025 on each side) this is exactly "the 95% interval lies on one side".

**Power.** A part with fewer than ``min_n`` values (default :data:`MIN_N`) is *underpowered*; a
part whose every value equals the value it is tested against (every variant at the same ceiling, so
the difference is 0 on every image: the test cannot move) has *no power*. Such a part is shown,
never decides, and a claim with no other part is ``inconclusive`` with that reason. A constant
sample elsewhere is evidence (50 of 50 images flipped, against a rate of 0.5): 0/1 values against a
rate are tested exactly (Clopper-Pearson, binomial), so 50 of 50 and 49 of 50 are judged alike.

**How parts combine** (the claim's quantifier):

- ``all`` ("better than every baseline", the default): every deciding part must hold, each at the
  unadjusted level (an intersection-union test needs no correction); one part significantly
  against, at Holm's adjusted level over the deciding parts, makes the claim *not hold*;
  anything else is inconclusive.
- ``any`` ("for at least one"): the dual. A part holds at Holm's adjusted level; the claim does
  not hold only when every deciding part is against at the unadjusted level.
- ``main``: one named part decides at the unadjusted level; the others are descriptive.

**Symmetry** (tested): mirroring every part's values about its threshold swaps ``p_for`` and
``p_against``, so the verdict of ``all`` on some evidence is the mirror of the verdict of ``any``
on the mirrored evidence (de Morgan: "every part above" fails exactly when "some part at or below"
holds), and ``main`` mirrors onto itself. There is no "partly holds": its mirror would be the same
words, so the counts of parts say how mixed the evidence was ("does not hold (9 of 12 against,
3 inconclusive)").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["VERDICTS", "COMBINES", "ALPHA", "MIN_N", "PartResult", "holm", "judge", "count_parts",
           "verdict_text", "mirror", "DUAL"]

VERDICTS = ("holds", "does not hold", "inconclusive")
COMBINES = ("all", "any", "main")
ALPHA = 0.025  # one side of a two-sided 95% interval
MIN_N = 30  # images a part needs before it may decide a verdict
UNDERPOWERED, NO_POWER = "underpowered", "no power (ceiling)"
PART_VERDICTS = VERDICTS + (UNDERPOWERED, NO_POWER)
DUAL = {"all": "any", "any": "all", "main": "main"}
_MIRROR = {"holds": "does not hold", "does not hold": "holds", "inconclusive": "inconclusive",
           UNDERPOWERED: UNDERPOWERED, NO_POWER: NO_POWER}


def mirror(verdict: str) -> str:
    """The verdict the mirrored evidence must get."""
    return _MIRROR[verdict]


@dataclass
class PartResult:
    """One part's test. ``power`` is ``"ok"``, :data:`UNDERPOWERED` or :data:`NO_POWER`; ``role``
    ``"deciding"``, ``"main"`` or ``"descriptive"``; ``alpha_for`` / ``alpha_against`` the one-sided
    levels it was judged at (Holm's adjusted level on the side where the claim needs it)."""

    label: str
    n: int
    dropped: int
    mean: float
    low: float
    high: float
    p_for: float
    p_against: float
    power: str = "ok"
    role: str = "deciding"
    verdict: str = "inconclusive"
    alpha_for: float = ALPHA
    alpha_against: float = ALPHA


def holm(pvalues: Sequence[float], alpha: float = ALPHA) -> tuple[list[bool], list[float]]:
    """Holm's step-down procedure: which p-values are significant, and the level each was (or would
    have been) compared with (alpha / m, alpha / (m - 1), ... in increasing order of p)."""
    p = np.asarray(pvalues, dtype=float)
    significant, levels, stopped = [False] * p.size, [alpha] * p.size, False
    for rank, i in enumerate(np.argsort(p, kind="stable")):
        levels[i] = alpha / (p.size - rank)
        stopped = stopped or not p[i] < levels[i]
        significant[i] = not stopped
    return significant, levels


def _unadjusted(part: PartResult, alpha: float) -> str:
    if part.p_for < alpha:
        return "holds"
    if part.p_against < alpha:
        return "does not hold"
    return "inconclusive"


def judge(parts: Sequence[PartResult], combine: str = "all", main: str | None = None,
          alpha: float = ALPHA) -> tuple[str, str]:
    """Set each part's ``role``, ``verdict`` and levels, and return the claim's ``(verdict,
    qualifier)``; the qualifier is ``""`` or why nothing could decide (module docstring)."""
    if combine not in COMBINES:
        raise ValueError(f"combine must be one of {COMBINES}, got {combine!r}")
    labels = [p.label for p in parts]
    if combine == "main" and main not in labels:
        raise ValueError(f"combine='main' needs main= one of the part labels {labels}, got {main!r}")
    if combine != "main" and main is not None:
        raise ValueError("main= names the deciding part of combine='main'; leave it out otherwise")
    for part in parts:
        part.role = "descriptive" if combine == "main" and part.label != main else (
            "main" if combine == "main" else "deciding")
        part.alpha_for = part.alpha_against = alpha
        part.verdict = {"ok": None, UNDERPOWERED: UNDERPOWERED, NO_POWER: NO_POWER}[part.power] or \
            _unadjusted(part, alpha)
    deciding = [p for p in parts if p.role != "descriptive" and p.power == "ok"]
    if combine in ("all", "any") and deciding:
        side = "p_against" if combine == "all" else "p_for"  # the "there exists" side, Holm-adjusted
        significant, levels = holm([getattr(p, side) for p in deciding], alpha)
        for part, hit, level in zip(deciding, significant, levels):
            setattr(part, "alpha_against" if combine == "all" else "alpha_for", level)
            existing = "does not hold" if combine == "all" else "holds"
            other = "holds" if combine == "all" else "does not hold"
            part.verdict = existing if hit else (other if _unadjusted(part, alpha) == other else "inconclusive")
    if not deciding:
        reasons = {p.power for p in parts if p.role != "descriptive"}
        return "inconclusive", UNDERPOWERED if reasons == {UNDERPOWERED} else (
            NO_POWER if reasons == {NO_POWER} else f"{UNDERPOWERED} or {NO_POWER}")
    verdicts = [p.verdict for p in deciding]
    if combine == "main":
        return verdicts[0], ""
    if combine == "all":
        verdict = "does not hold" if "does not hold" in verdicts else (
            "holds" if set(verdicts) == {"holds"} else "inconclusive")
    else:
        verdict = "holds" if "holds" in verdicts else (
            "does not hold" if set(verdicts) == {"does not hold"} else "inconclusive")
    return verdict, ""


def count_parts(parts: Sequence[PartResult]) -> dict:
    """How many parts went each way (descriptive parts counted apart)."""
    deciding = [p for p in parts if p.role != "descriptive"]
    return {"parts": len(parts), "for": sum(p.verdict == "holds" for p in deciding),
            "against": sum(p.verdict == "does not hold" for p in deciding),
            "inconclusive": sum(p.verdict == "inconclusive" for p in deciding),
            "underpowered": sum(p.verdict == UNDERPOWERED for p in deciding),
            "no power": sum(p.verdict == NO_POWER for p in deciding),
            "descriptive": len(parts) - len(deciding)}


def verdict_text(verdict: str, qualifier: str, counts: dict, combine: str, min_n: int = MIN_N) -> str:
    """The verdict with its counts in words: ``"does not hold (9 of 12 against, 3 inconclusive)"``,
    ``"holds (6 of 6 for)"``, ``"inconclusive (underpowered: 2 parts under n = 30)"``."""
    powered = counts["for"] + counts["against"] + counts["inconclusive"]
    said = [f"{counts[key]} {word}" for key, word in (("for", "for"), ("against", "against"),
                                                     ("inconclusive", "inconclusive")) if counts[key]]
    if said:
        said = [", ".join([said[0].replace(" ", f" of {powered} ", 1), *said[1:]])]
    if combine == "main" and powered:
        said = [{"holds": "the main part for", "does not hold": "the main part against"}.get(
            verdict, "the main part inconclusive")]
    plural = lambda n: f"{n} part{'s' * (n > 1)}"  # noqa: E731
    unpowered = [f"{plural(counts['underpowered'])} under n = {min_n}" if counts["underpowered"] else "",
                 f"{plural(counts['no power'])} with every value at the tested value" if counts["no power"] else ""]
    unpowered = [u for u in unpowered if u]
    if unpowered:
        said.append(", ".join(unpowered) + (", not counted" if powered else ""))
    if counts["descriptive"]:
        said.append(f"{counts['descriptive']} other part{'s' * (counts['descriptive'] > 1)} descriptive")
    head = f"{verdict}: {qualifier}" if qualifier else verdict
    return f"{head} ({'; '.join(said)})" if said else head
