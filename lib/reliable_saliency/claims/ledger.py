"""The claims ledger: each chapter states every claim it tests the same way, the rule of
:mod:`.rule` turns the per-image evidence into a verdict, and the chapter's file
(``$RELIABLE_SALIENCY_CLAIMS_DIR/<chapter>.json``, schema 2) keeps everything a reader or a later
rule needs: per part the values themselves, n, estimate, interval, threshold or null, its own
verdict and power status; per claim the quantifier, the counts and the caveats."""

from __future__ import annotations

import json
import math
import numbers
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..core.experiment import Run, atomic_write
from .rule import ALPHA, COMBINES, MIN_N, NO_POWER, UNDERPOWERED, VERDICTS, PartResult, count_parts, judge, \
    verdict_text
from .statistics import Statistic, effect_of, exact_proportion, one_sided_p

__all__ = ["Claim", "Ledger", "load_claims", "load_bottom_lines", "CLAIMS_DIR_ENV", "SCHEMA", "REQUIRED_KEYS",
           "PART_KEYS"]

CLAIMS_DIR_ENV = "RELIABLE_SALIENCY_CLAIMS_DIR"
SCHEMA = 2
REQUIRED_KEYS = ("id", "paper", "claim", "verdict", "verdict_text", "profile", "combine", "counts", "caveats",
                 "evidence")
PART_KEYS = ("label", "n", "mean", "low", "high", "threshold", "tested_against", "verdict", "power", "role")


@dataclass
class Claim:
    """One row of the ledger. ``combine`` is ``all`` / ``any`` / ``main``, or ``record`` for a
    verdict that is not a bootstrap test (``evidence`` then holds the reason)."""

    id: str
    paper: str
    claim: str
    verdict: str
    profile: str
    evidence: dict = field(default_factory=dict)
    verdict_text: str = ""
    qualifier: str = ""
    combine: str = "record"
    main: str | None = None
    direction: str = "above"
    threshold: float | None = None
    null: float | None = None
    null_reason: str = ""
    min_effect: float | None = None
    min_effect_reason: str = ""
    sign_verdict: str | None = None
    min_n: int = MIN_N
    min_n_reason: str = ""
    caveats: list = field(default_factory=list)
    counts: dict = field(default_factory=dict)


def _number(value, name: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return float(value)


def _text(value, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value


def _rounded(array: np.ndarray) -> list:
    return [float(f"{v:.6g}") for v in array]


class Ledger:
    """The claims one chapter tests, in the order it tests them."""

    def __init__(self, run: Run, *, bootstrap_rounds: int = 10000):
        if not isinstance(bootstrap_rounds, int) or bootstrap_rounds < 1000:
            raise ValueError(f"bootstrap_rounds must be an int of at least 1000 (Holm's levels need the "
                             f"resolution), got {bootstrap_rounds!r}")
        self.run = run
        self.rounds = bootstrap_rounds
        self.claims: list[Claim] = []
        self.conclusion = ""

    def _add(self, claim: Claim) -> Claim:
        _text(claim.id, "claim id")
        if any(c.id == claim.id for c in self.claims):
            raise ValueError(f"claim id {claim.id!r} is already in this chapter's ledger")
        if claim.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {claim.verdict!r}")
        claim.caveats = [_text(c, "each caveat") for c in claim.caveats]
        self.claims.append(claim)
        return claim

    def test(self, id: str, *, paper: str, claim: str, measured: str, parts: dict, threshold: float = 0.0,
             direction: str = "above", combine: str = "all", main: str | None = None,
             null: float | None = None, null_reason: str = "", min_effect: float | None = None,
             min_effect_reason: str = "", min_n: int = MIN_N, min_n_reason: str = "", caveats=(),
             setting: str = "", paired: bool = True, nan: str = "raise", below_strength: str = "",
             weakness_favours: str | None = None, precondition_failed: str = "") -> Claim:
        """Test a claim on per-image values (module :mod:`.rule` for the rule). ``parts`` maps a label
        to the per-image values, to ``(values, baseline)`` for an effect against a baseline
        (paired per image by default), or to a :class:`~.statistics.Statistic` of the image set
        (a rank correlation; resampled over images the same way). ``null`` replaces ``threshold`` when the statistic has a
        chance level (``null_reason`` says why that value); ``min_effect`` makes it a magnitude
        claim (the verdict needs the effect beyond threshold +- min_effect; the sign test is kept
        as ``sign_verdict``). ``min_n`` below :data:`MIN_N` needs ``min_n_reason``, shown on the page.
        ``below_strength`` says why an attack behind the values is not at full strength; the verdict
        such an attack could produce by failing (``weakness_favours``: "holds" when the claim is that
        the method resists, "does not hold" when the claim is that the attack succeeds) then reads
        ``inconclusive``, with the reason and the numbers kept. ``precondition_failed`` says why the
        comparison itself is void (a regulariser that did not change what it targets leaves two
        names for one model): any verdict then reads ``inconclusive`` with that reason."""
        _text(id, "claim id")
        if direction not in ("above", "below"):
            raise ValueError(f"direction must be 'above' or 'below', got {direction!r}")
        if combine not in COMBINES:
            raise ValueError(f"combine must be one of {COMBINES}, got {combine!r}")
        threshold = _number(threshold, "threshold")
        if null is not None:
            if threshold != 0.0:
                raise ValueError("give the statistic's chance level as null= or a threshold=, not both")
            threshold = _number(null, "null")
            _text(null_reason, "null_reason (why this chance level)")
        if min_effect is not None:
            _number(min_effect, "min_effect", positive=True)
            _text(min_effect_reason, "min_effect_reason (why this size)")
        if isinstance(min_n, bool) or not isinstance(min_n, int) or min_n < 2:
            raise ValueError(f"min_n must be an int of at least 2, got {min_n!r}")
        if min_n < MIN_N:
            _text(min_n_reason, f"min_n_reason (min_n = {min_n} is below the book's {MIN_N})")
        if not isinstance(parts, dict) or not parts:
            raise ValueError("parts must be a dict holding at least one label -> values entry")
        if len({str(label) for label in parts}) != len(parts):
            raise ValueError(f"two parts have the same label once written as text: {[str(k) for k in parts]}")
        tested_against = threshold + (min_effect or 0.0) * (1 if direction == "above" else -1)
        rows, results, sign_results = [], [], []
        for label, data in parts.items():
            if isinstance(data, Statistic):
                effect = data
            else:
                values, baseline = data if isinstance(data, tuple) else (data, None)
                effect = effect_of(values, baseline, paired=paired, nan=nan)
            means = effect.bootstrap(self.rounds, self.run.seed)
            dropped = 0 if isinstance(effect, Statistic) else effect.dropped  # NaN images (a statistic's are resamples)
            results.append(PartResult(str(label), effect.n, dropped, effect.mean,
                                      *_part_test(effect, means, tested_against, threshold, direction, min_n)))
            sign_results.append(PartResult(str(label), effect.n, dropped, effect.mean,
                                           *_part_test(effect, means, threshold, threshold, direction, min_n)))
            rows.append((effect, means))
        if below_strength and weakness_favours not in ("holds", "does not hold"):
            raise ValueError("below_strength needs weakness_favours= 'holds' or 'does not hold': the verdict a "
                             "failing attack would produce")
        verdict, qualifier = judge(results, combine, main)
        if below_strength and verdict == weakness_favours:  # a weak attack's failure is no evidence
            verdict, qualifier = "inconclusive", f"attack below full strength ({below_strength}); as measured: {verdict}"
        if precondition_failed:
            verdict, qualifier = "inconclusive", f"{precondition_failed}; as measured: {verdict}"
        sign_verdict = judge(sign_results, combine, main)[0] if min_effect is not None else None
        evidence_parts = []
        for result, sign, (effect, means) in zip(results, sign_results, rows):
            part = {**asdict(result), "threshold": threshold, "tested_against": tested_against,
                    "direction": direction}
            if isinstance(effect, Statistic):  # a statistic of the whole image set: its name, no per-image value
                part["statistic"] = effect.name
            else:
                part["values"] = _rounded(effect.samples[0])
            if len(effect.samples) == 2:
                part["baseline"] = _rounded(effect.samples[1])
            alpha = min(result.alpha_for, result.alpha_against)
            if alpha < ALPHA and effect.n >= 2:  # judged at Holm's level: the matching interval
                part["adjusted_level"] = 1 - 2 * alpha
                part["adjusted_low"], part["adjusted_high"] = _interval(effect, means, tested_against, direction,
                                                                        1 - 2 * alpha)
            if min_effect is not None:
                part["sign_verdict"] = sign.verdict
            evidence_parts.append(part)
        counts = count_parts(results)
        evidence = {"measured": measured, "setting": setting, "parts": evidence_parts, "paired": paired,
                    "seed": self.run.seed, "device": self.run.device, "bootstrap_rounds": self.rounds}
        return self._add(Claim(
            id, paper, claim, verdict, self.run.profile.name, evidence,
            verdict_text=verdict_text(verdict, qualifier, counts, combine, min_n), qualifier=qualifier,
            combine=combine, main=main, direction=direction, threshold=threshold, null=null,
            null_reason=null_reason, min_effect=min_effect, min_effect_reason=min_effect_reason,
            sign_verdict=sign_verdict, min_n=min_n, min_n_reason=min_n_reason, caveats=list(caveats),
            counts=counts))

    def record(self, id: str, *, paper: str, claim: str, verdict: str, measured: str, reason: str,
               numbers: dict | None = None, setting: str = "", qualifier: str = "", caveats=()) -> Claim:
        """A claim whose verdict is not a bootstrap test (for example an attack that did not run
        at full strength: ``inconclusive``, qualifier ``"attack below strength"``); ``reason`` says
        why, ``numbers`` what was seen."""
        _text(reason, "reason (why this verdict)")
        evidence = {"measured": measured, "setting": setting, "reason": reason, "numbers": numbers or {},
                    "seed": self.run.seed, "device": self.run.device}
        text = f"{verdict}: {qualifier}" if qualifier else verdict
        return self._add(Claim(id, paper, claim, verdict, self.run.profile.name, evidence,
                               verdict_text=f"{text} (not a statistical test)", qualifier=qualifier,
                               caveats=list(caveats)))

    def bottom_line(self, text: str) -> str:
        """The chapter's conclusion in plain words (what held, what did not, what the book added),
        kept in the ledger file and shown on the verdicts page; returns it as Markdown."""
        self.conclusion = _text(text, "the bottom line")
        return text

    def cards(self, links: dict[str, str] | None = None):
        """Every claim as a card (verdict with counts, forest plot, caveats) for the findings section."""
        from IPython.display import HTML

        from .cards import cards_html

        return HTML(cards_html([asdict(c) for c in self.claims], links))

    def line(self, id: str) -> str:
        """One claim's verdict in a line, for the section that holds its evidence (Markdown)."""
        from .cards import anchor

        claim = next((c for c in self.claims if c.id == id), None)
        if claim is None:
            raise KeyError(f"no claim {id!r} in this chapter's ledger yet")
        return f"**{id}: {claim.verdict_text}** ([the card](#{anchor(id)}))"

    def table(self):
        """The claims as a wrapped HTML table for the notebook."""
        from IPython.display import HTML

        from .render import claims_html

        return HTML(claims_html([asdict(c) for c in self.claims], show_chapter=False))

    def summary(self, items: bool = True) -> str:
        """One Markdown paragraph computed from the verdicts, with each claim's counts and caveats
        (``items=False``: the counts line alone, for a findings section that shows the cards)."""
        counts = {v: sum(c.verdict == v for c in self.claims) for v in VERDICTS}
        said = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
        lines = [f"Of {len(self.claims)} claims tested at the `{self.run.profile.name}` profile: {said}."]
        if self.conclusion:
            lines.append(f"\n{self.conclusion}")
        for c in self.claims if items else []:
            caveats = "".join(f" *Caveat:* {x}" for x in c.caveats)
            lines.append(f"- **{c.id}, {c.verdict_text}**: {c.claim}.{caveats}")
        if self.run.profile.name == "smoke":
            lines.append("\n(The `smoke` profile only proves that the chapter runs; its verdicts are not results.)")
        return "\n".join(lines)

    def save(self, directory: str | Path | None = None) -> Path | None:
        """Write ``<directory>/<chapter>.json`` atomically (default ``$RELIABLE_SALIENCY_CLAIMS_DIR``;
        nothing is written when neither is set). Returns the path written, or None."""
        directory = directory or os.environ.get(CLAIMS_DIR_ENV)
        if not directory:
            return None
        path = Path(directory) / f"{self.run.chapter}.json"
        document = {"schema": SCHEMA, "chapter": self.run.chapter, "provenance": self.run.as_dict(),
                    "bottom_line": self.conclusion, "claims": [asdict(c) for c in self.claims]}
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(document, indent=1) + "\n"))
        return path


def _exact(effect, against: float) -> bool:
    """A 0/1 value per image tested against a rate strictly between 0 and 1: the exact binomial test."""
    return not isinstance(effect, Statistic) and effect.binary and 0 < against < 1


def _interval(effect, means: np.ndarray, against: float, direction: str, level: float = 0.95) -> tuple[float, float]:
    if effect.n < 2:
        return math.nan, math.nan
    if _exact(effect, against):
        return exact_proportion(int(effect.samples[0].sum()), effect.n, against, direction, level)[:2]
    tail = (1 - level) / 2 * 100
    return tuple(map(float, np.percentile(means, [tail, 100 - tail])))


def _part_test(effect, means: np.ndarray, against: float, threshold: float, direction: str, min_n: int) -> tuple:
    """``(low, high, p_for, p_against, power)`` of one part against the value it is tested against
    (``threshold``, or beyond it by a claim's minimal effect). A 0/1 sample against a rate is tested
    exactly; any other sample by the bootstrap ``means``. *No power* only where the measurement
    cannot move: every value equal to ``threshold`` (a difference of 0 on every image: variants at
    one ceiling, so no effect size can be read either), or a statistic that is the same on every
    resample. A sample that is constant elsewhere (every image flipped, against a rate of 0.5) is
    evidence: its p-value is the sign test's, 0.5 ** n (a zero-variance bootstrap would say 0)."""
    low, high = _interval(effect, means, against, direction)
    on = lambda value: abs(effect.mean - value) <= 1e-12 * max(1.0, abs(value))  # noqa: E731
    power = "ok"
    if isinstance(effect, Statistic):
        power = NO_POWER if effect.constant_over(means) else "ok"
        p_for, p_against = one_sided_p(means, against, direction)
    elif effect.constant and on(threshold):
        power, p_for, p_against = NO_POWER, 1.0, 1.0
    elif _exact(effect, against):
        p_for, p_against = exact_proportion(int(effect.samples[0].sum()), effect.n, against, direction)[2:]
    elif effect.constant:
        claimed = (effect.mean > against) == (direction == "above")
        p_for, p_against = (1.0, 1.0) if on(against) else ((0.5 ** effect.n, 1.0) if claimed else (1.0, 0.5 ** effect.n))
    else:
        p_for, p_against = one_sided_p(means, against, direction)
    return float(low), float(high), float(p_for), float(p_against), UNDERPOWERED if effect.n < min_n else power


def load_claims(directory: str | Path) -> list[dict]:
    """Every chapter's claims from ``<directory>/*.json``, in chapter order, each with ``chapter``;
    refuses a file of another schema, a claim that lacks a key of schema 2, or an unknown verdict."""
    claims = []
    for path in sorted(Path(directory).glob("*.json")):
        document = json.loads(path.read_text())
        if document.get("schema") != SCHEMA:
            raise ValueError(f"{path.name}: claims schema {document.get('schema')!r}, this library reads schema "
                             f"{SCHEMA}; execute the chapter again to write it under the current rule")
        for c in document.get("claims", []):
            missing = [k for k in REQUIRED_KEYS if k not in c]
            for part in c.get("evidence", {}).get("parts", []):
                missing += [f"parts.{k}" for k in PART_KEYS if k not in part and f"parts.{k}" not in missing]
            if missing or c["verdict"] not in VERDICTS:
                raise ValueError(f"{path.name}: claim {c.get('id')!r} lacks {missing} or has verdict "
                                 f"{c.get('verdict')!r} (allowed: {VERDICTS})")
            claims.append({**c, "chapter": document.get("chapter", path.stem),
                           "rejudged": document.get("rejudged", "")})
    return claims


def load_bottom_lines(directory: str | Path) -> dict[str, str]:
    """Each chapter's bottom line (``""`` where it wrote none), by chapter."""
    out = {}
    for path in sorted(Path(directory).glob("*.json")):
        document = json.loads(path.read_text())
        out[document.get("chapter", path.stem)] = document.get("bottom_line", "")
    return out
