"""The claims ledger: every chapter states each claim it tests the same way, and one tested rule
turns the evidence into a verdict.

A claim is tested on per-image values (an effect per image, for example "top-k intersection after
random noise minus after the attack"). The estimate is their mean with a percentile bootstrap
interval over images; the verdict compares the interval with a stated threshold:

- ``direction="above"`` (the claim says the effect exceeds the threshold): ``holds`` when the
  whole interval is above it, ``does not hold`` when the whole interval is at or below it,
  ``inconclusive`` when the interval straddles it. ``"below"`` mirrors this.
- A claim made of several parts (one per model, per explainer, ...) is ``partly holds`` when some
  parts hold and others do not (:func:`combine`).

NaN values are never dropped silently: ``nan="raise"`` (default) refuses them, ``nan="omit"``
drops them and reports how many in the evidence. A chapter writes its ledger to
``$RELIABLE_SALIENCY_CLAIMS_DIR/<chapter>.json`` (the chapter runner sets the folder), and the book's
"Verdicts at a glance" page is built from those files.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .core.experiment import Run, atomic_write

__all__ = [
    "VERDICTS", "CLAIMS_DIR_ENV", "Estimate", "Claim", "Ledger", "bootstrap_mean", "verdict_for",
    "combine", "load_claims",
]

VERDICTS = ("holds", "partly holds", "does not hold", "inconclusive")
DIRECTIONS = ("above", "below")
CLAIMS_DIR_ENV = "RELIABLE_SALIENCY_CLAIMS_DIR"
REQUIRED_KEYS = ("id", "paper", "claim", "verdict", "profile", "evidence")


@dataclass(frozen=True)
class Estimate:
    """Mean of per-image values with a bootstrap interval; ``n`` values used, ``dropped`` NaNs."""

    mean: float
    low: float
    high: float
    n: int
    dropped: int = 0
    level: float = 0.95

    def text(self, digits: int = 3) -> str:
        return f"{self.mean:.{digits}f} (95% CI {self.low:.{digits}f} to {self.high:.{digits}f})"


def _as_array(values, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().double().cpu().numpy()
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one value per image (1-D), got shape {array.shape}")
    return array


def _finite(array: np.ndarray, nan: str, name: str) -> tuple[np.ndarray, int]:
    if nan not in ("raise", "omit"):
        raise ValueError(f"nan must be 'raise' or 'omit', got {nan!r}")
    bad = ~np.isfinite(array)
    if bad.any() and nan == "raise":
        raise ValueError(
            f"{name} has {int(bad.sum())} NaN or infinite values of {array.size}; find out why, or "
            f"pass nan='omit' to drop them (the count is reported in the evidence)"
        )
    return array[~bad], int(bad.sum())


def bootstrap_mean(values, baseline=None, *, paired: bool = True, rounds: int = 2000,
                   level: float = 0.95, seed: int = 0, nan: str = "raise") -> Estimate:
    """Mean of ``values`` (minus the mean of ``baseline`` when given) with a percentile bootstrap
    interval over images. ``paired=True``: ``values`` and ``baseline`` are measured on the same
    images and resampled together (the effect is their per-image difference); ``paired=False``:
    two independent samples, resampled separately. Fewer than two values give a NaN interval."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    a = _as_array(values, "values")
    if baseline is not None and paired:
        b = _as_array(baseline, "baseline")
        if a.shape != b.shape:
            raise ValueError(f"paired values and baseline need the same images: {a.size} vs {b.size}")
        a = a - b
        baseline = None
    a, dropped = _finite(a, nan, "values")
    samples = [a]
    if baseline is not None:
        b, dropped_b = _finite(_as_array(baseline, "baseline"), nan, "baseline")
        samples.append(b)
        dropped += dropped_b
    if any(s.size == 0 for s in samples):
        raise ValueError("no values left to estimate from (all NaN, or an empty sample)")
    rng = np.random.default_rng(seed)
    means = np.zeros(rounds)
    estimate = 0.0
    for sign, s in zip((1.0, -1.0), samples):
        estimate += sign * s.mean()
        means += sign * s[rng.integers(0, s.size, (rounds, s.size))].mean(1)
    n = min(s.size for s in samples)
    if n < 2:
        return Estimate(float(estimate), math.nan, math.nan, n, dropped, level)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Estimate(float(estimate), float(low), float(high), n, dropped, level)


def verdict_for(estimate: Estimate, threshold: float, direction: str = "above") -> str:
    """The verdict of one interval against ``threshold`` (module docstring); a NaN interval is
    ``inconclusive``."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    low, high = estimate.low, estimate.high
    if math.isnan(low) or math.isnan(high):
        return "inconclusive"
    if direction == "below":
        low, high, threshold = -high, -low, -threshold
    slack = 1e-9 * max(1.0, abs(threshold))  # float rounding of a mean is not an effect
    if low > threshold + slack:
        return "holds"
    if high <= threshold + slack:
        return "does not hold"
    return "inconclusive"


def combine(verdicts: Sequence[str]) -> str:
    """One verdict for a claim made of parts: all the same -> that verdict; some parts hold and
    the others do not or are inconclusive -> ``partly holds``; no part holds and some are
    inconclusive -> ``inconclusive``."""
    verdicts = list(verdicts)
    unknown = sorted(set(verdicts) - set(VERDICTS))
    if not verdicts or unknown:
        raise ValueError(f"combine needs verdicts from {VERDICTS}, got {verdicts}")
    if len(set(verdicts)) == 1:
        return verdicts[0]
    if "holds" in verdicts or "partly holds" in verdicts:
        return "partly holds"
    return "inconclusive"


@dataclass
class Claim:
    """One row of the ledger; ``evidence`` holds what was measured and the numbers."""

    id: str
    paper: str
    claim: str
    verdict: str
    profile: str
    evidence: dict = field(default_factory=dict)


def _part_evidence(label: str, estimate: Estimate, threshold: float, direction: str,
                   verdict: str) -> dict:
    return {"label": label, **asdict(estimate), "threshold": threshold, "direction": direction,
            "verdict": verdict}


class Ledger:
    """The claims one chapter tests, in the order it tests them."""

    def __init__(self, run: Run, *, bootstrap_rounds: int = 2000):
        self.run = run
        self.rounds = bootstrap_rounds
        self.claims: list[Claim] = []

    def _add(self, claim: Claim) -> Claim:
        if any(c.id == claim.id for c in self.claims):
            raise ValueError(f"claim id {claim.id!r} is already in this chapter's ledger")
        if claim.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {claim.verdict!r}")
        self.claims.append(claim)
        return claim

    def test(self, id: str, *, paper: str, claim: str, measured: str, parts: dict,
             threshold: float = 0.0, direction: str = "above", setting: str = "",
             paired: bool = True, nan: str = "raise") -> Claim:
        """Test a claim on per-image values. ``parts`` maps a label (model, explainer, ...) to the
        per-image values, or to ``(values, baseline)`` for an effect against a baseline (paired
        per image by default). ``measured`` says what the values are; ``setting`` the sizes."""
        if not parts:
            raise ValueError("parts must hold at least one label -> values entry")
        rows = []
        for label, data in parts.items():
            values, baseline = data if isinstance(data, tuple) else (data, None)
            estimate = bootstrap_mean(values, baseline, paired=paired, rounds=self.rounds,
                                      seed=self.run.seed, nan=nan)
            rows.append(_part_evidence(label, estimate, threshold, direction,
                                       verdict_for(estimate, threshold, direction)))
        evidence = {"measured": measured, "setting": setting, "parts": rows,
                    "seed": self.run.seed, "device": self.run.device}
        return self._add(Claim(id, paper, claim, combine([r["verdict"] for r in rows]),
                               self.run.profile.name, evidence))

    def record(self, id: str, *, paper: str, claim: str, verdict: str, measured: str,
               reason: str, numbers: dict | None = None, setting: str = "") -> Claim:
        """A claim whose verdict is not a bootstrap test (for example an attack that did not run
        at full strength: ``inconclusive``); ``reason`` says why, ``numbers`` what was seen."""
        if not reason:
            raise ValueError("record() needs the reason for the verdict")
        evidence = {"measured": measured, "setting": setting, "reason": reason,
                    "numbers": numbers or {}, "seed": self.run.seed, "device": self.run.device}
        return self._add(Claim(id, paper, claim, verdict, self.run.profile.name, evidence))

    def table(self):
        """The claims as a wrapped HTML table for the notebook."""
        from IPython.display import HTML

        return HTML(claims_html([asdict(c) for c in self.claims], show_chapter=False))

    def summary(self) -> str:
        """One Markdown paragraph computed from the verdicts."""
        counts = {v: sum(c.verdict == v for c in self.claims) for v in VERDICTS}
        said = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
        scale = f"at the `{self.run.profile.name}` profile"
        lines = [f"Of {len(self.claims)} claims tested {scale}: {said}."]
        lines += [f"- **{c.verdict}**: {c.claim} ({evidence_text(c.evidence)})" for c in self.claims]
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
        document = {"chapter": self.run.chapter, "provenance": self.run.as_dict(),
                    "claims": [asdict(c) for c in self.claims]}
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(document, indent=1) + "\n"))
        return path


def evidence_text(evidence: dict) -> str:
    """The numbers of a claim in one line: each part's mean, interval and n, or the reason."""
    if "parts" in evidence:
        texts = []
        for part in evidence["parts"]:
            estimate = Estimate(part["mean"], part["low"], part["high"], part["n"], part["dropped"])
            relation = ">" if part["direction"] == "above" else "<"
            dropped = f", {part['dropped']} NaN dropped" if part["dropped"] else ""
            texts.append(f"{part['label']}: {estimate.text()}, n = {part['n']}{dropped}, needs {relation} "
                         f"{part['threshold']:g}")
        return "; ".join(texts)
    numbers = ", ".join(f"{k} = {v:.3g}" if isinstance(v, float) else f"{k} = {v}"
                        for k, v in evidence.get("numbers", {}).items())
    return f"{evidence['reason']}{'; ' + numbers if numbers else ''}"


_VERDICT_COLOURS = {"holds": "#1b7837", "partly holds": "#b8860b", "does not hold": "#b2182b",
                    "inconclusive": "#555555"}


def claims_html(claims: list[dict], show_chapter: bool = True) -> str:
    """Claims (dicts with the keys of :class:`Claim`, plus ``chapter``) as an HTML table that wraps."""
    head = (["chapter"] if show_chapter else []) + ["claim", "paper", "what was measured", "effect (95% CI)",
                                                    "profile", "verdict"]
    rows = []
    for c in claims:
        e = c["evidence"]
        measured = e.get("measured", "") + (f" ({e['setting']})" if e.get("setting") else "")
        cells = ([c.get("chapter", "")] if show_chapter else []) + [
            f"<b>{html.escape(c['id'])}</b>: {html.escape(c['claim'])}", html.escape(c["paper"]),
            html.escape(measured), html.escape(evidence_text(e)), html.escape(c["profile"]),
            f'<span style="color:{_VERDICT_COLOURS[c["verdict"]]};font-weight:bold">{c["verdict"]}</span>',
        ]
        rows.append("<tr>" + "".join(f'<td style="text-align:left;vertical-align:top">{x}</td>' for x in cells) + "</tr>")
    header = "".join(f'<th style="text-align:left">{h}</th>' for h in head)
    return ('<table class="claims-ledger" style="table-layout:auto;white-space:normal;word-break:normal">'
            f"<thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def load_claims(directory: str | Path) -> list[dict]:
    """Every chapter's claims from ``<directory>/*.json``, in chapter order, each with ``chapter``;
    raises if a file lacks a required key or has an unknown verdict."""
    claims = []
    for path in sorted(Path(directory).glob("*.json")):
        document = json.loads(path.read_text())
        for c in document.get("claims", []):
            missing = [k for k in REQUIRED_KEYS if k not in c]
            if missing or c["verdict"] not in VERDICTS:
                raise ValueError(f"{path.name}: claim {c.get('id')!r} lacks {missing} or has verdict "
                                 f"{c.get('verdict')!r} (allowed: {VERDICTS})")
            claims.append({**c, "chapter": document.get("chapter", path.stem)})
    return claims
