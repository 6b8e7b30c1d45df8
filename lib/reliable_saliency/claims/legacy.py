"""Re-judging a schema-1 claims file (the first rule, with "partly holds") under the current rule,
from what it stored: each part's mean, 95% interval and n. Schema 1 kept no per-image values, so
each part's bootstrap distribution is taken as normal (standard error = interval width / 3.92) to
get the one-sided p-values the rule needs (Holm included); every part is judged under ``all``
(the rule's default quantifier), a part under n = 30 is underpowered, a zero-width interval has no
power. The file says so (``rejudged``) and keeps each old verdict (``old_verdict``) until its
chapter is executed again. ``python -m reliable_saliency.claims.legacy DIR`` converts a folder in
place and prints the verdicts that changed."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from ..core.experiment import atomic_write
from .ledger import SCHEMA
from .rule import MIN_N, NO_POWER, UNDERPOWERED, PartResult, count_parts, judge, verdict_text

__all__ = ["REJUDGED", "REFEREE_CAVEATS", "rejudge_document", "main"]

REJUDGED = ("Re-judged under the current rule from the stored 95% intervals (normal approximation, every "
            "claim read as 'for every part'); the chapter page still shows the old rule's verdicts until "
            "it is executed again.")


# What the first referee reading found in the published verdicts, shown with them until the chapters
# are corrected and executed again (the corrected chapters declare their own caveats, nulls and
# minimal effects).
REFEREE_CAVEATS = {
    "B0.4": "Generalises from the bundled sample images; on the 37 validation images the two scalings tie.",
    "F1.6": "Read from a floored number: the attack drives the natural model's top-k intersection to about 0.001, "
            "so the defended models' higher random baseline alone makes them look more fragile.",
    "F1.7": "Read from a floored number (as F1.6); the random baseline is a one-shot draw, not the authors' "
            "iterated random steps.",
    "A2.1": "The baselines' masks retrieve only 23-43% of clean images: part of the gap exists without any attack.",
    "A2.3": "x and x_adv got the same noise seeds, which favours RelEx (0.37 against 0.28 top-k with independent "
            "seeds on a few images).",
    "A2.5": "By construction: RelEx's keep term optimises the preservation substrate.",
    "A2.6": "By construction: RelEx's delete term optimises the deletion substrate (the lambda2 = 0 ablation shows it).",
    "A2.7": "The claim says 0.999 at every eps; on the FGSM-trained model RelEx reaches about 0.5.",
    "A2.8": "RelEx is the one map that was not attacked; a Grad-CAM that was not attacked keeps more top pixels "
            "than RelEx under the SmoothGrad attack.",
    "A2.11": "At the per-entry scaled lambda1 the ablation table shows lower stability than with lambda1 = 0.",
    "B3.3": "Sensitivity rewards smooth, image-independent maps; no random-noise or plain-smoother control yet.",
    "B3.5": "Sensitivity without a random-noise or plain-smoother control.",
    "B3.6": "The attack on DANCE leaves 0.147 of its top pixels: a smaller sensitivity is not a map that survives.",
    "B3.8": "Compared against a feature with Z = 0 by construction (the ratio 9.27e29 is a division by a clamp).",
    "B3.9": "The Hessian term fails on the only trained model (error rises to 0.99 as the decoys shrink).",
    "C4.1": "Tested against 0.5, but an uninformative map orders Rel < RelShuf on 1/11 of the images: maps far "
            "above chance fail.",
    "C4.2": "Tested against 0.5, but an uninformative map orders Irel > IrelShuf on 10/11 of the images (a random "
            "map passes with 0.82): this test cannot fail.",
    "C4.3": "Half of it fails by construction (the null of the ordering is 1/11 or 10/11, not 0.5).",
    "C4.5": "The measure perturbs along sign(dCE/dx), which favours gradient-like maps by construction.",
    "C4.6": "By construction: a random map cleans to 54% sparsity; a check, not a finding.",
    "C4.7": "The gains penalise maps that start sparse; no random-map control through the same post-processing.",
    "D5.7": "The paper's figure is 89% of variations keeping the class at a 50% region; the book's interval "
            "excludes 0.89.",
    "E6.2": "A bound that holds for any two vectors: a check, not a finding.",
    "E6.3": "Resamples pooled points; across the five models the relation's sign reverses (Spearman of model "
            "means -0.56).",
    "E6.4": "The regularisers barely acted (weighted Hessian penalty 0.005, l2 0.0014 against a loss of 0.75): the "
            "compared models are nearly the same.",
    "E6.5": "'Much more robust' is a magnitude claim; only the sign was tested (a +0.004 cosine gain passes).",
    "E6.6": "The regularisers barely acted (see E6.4).",
    "E6.7": "The regularisers barely acted (see E6.4).",
    "E6.8": "The top-k attack drives every model to the floor, so it cannot separate them.",
}


def _normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2))


def _part(old: dict) -> PartResult:
    n, mean, low, high = old["n"], old["mean"], old["low"], old["high"]
    threshold, above = old["threshold"], old["direction"] == "above"
    width = high - low if not (math.isnan(low) or math.isnan(high)) else math.nan
    power = UNDERPOWERED if n < MIN_N or math.isnan(width) else (NO_POWER if width <= 1e-12 else "ok")
    p_for = p_against = 1.0
    if power == "ok":
        z = (mean - threshold) / (width / 3.92)
        p_for, p_against = (_normal_cdf(-z), _normal_cdf(z)) if above else (_normal_cdf(z), _normal_cdf(-z))
    return PartResult(old["label"], n, old.get("dropped", 0), mean, low, high, p_for, p_against, power=power)


def rejudge_document(document: dict) -> tuple[dict, list[tuple[str, str, str]]]:
    """The schema-2 document for a schema-1 one, and ``(id, old, new verdict text)`` per claim."""
    if document.get("schema") == SCHEMA:
        raise ValueError("this file is already schema 2")
    claims, changes = [], []
    for old in document["claims"]:
        evidence = old["evidence"]
        caveats = [f"Referee reading: {REFEREE_CAVEATS[old['id']]}"] if old["id"] in REFEREE_CAVEATS else []
        new = {**old, "old_verdict": old["verdict"], "caveats": caveats, "main": None, "null": None, "null_reason": "",
               "min_effect": None, "min_effect_reason": "", "sign_verdict": None, "min_n": MIN_N, "min_n_reason": ""}
        if "parts" in evidence:
            results = [_part(p) for p in evidence["parts"]]
            verdict, qualifier = judge(results, "all")
            counts = count_parts(results)
            parts = []
            for p, r in zip(evidence["parts"], results):
                parts.append({**p, "tested_against": p["threshold"], "verdict": r.verdict, "power": r.power,
                              "role": r.role, "p_for": r.p_for, "p_against": r.p_against,
                              "alpha_for": r.alpha_for, "alpha_against": r.alpha_against})
            new |= {"verdict": verdict, "qualifier": qualifier, "combine": "all", "counts": counts,
                    "direction": evidence["parts"][0]["direction"], "threshold": evidence["parts"][0]["threshold"],
                    "verdict_text": verdict_text(verdict, qualifier, counts, "all"),
                    "evidence": {**evidence, "parts": parts}}
        else:
            verdict, qualifier = old["verdict"], ""
            if verdict == "partly holds":  # the old rule's label has no place in the current one
                verdict, qualifier = "inconclusive", "mixed evidence (the old rule's 'partly holds')"
            new |= {"verdict": verdict, "qualifier": qualifier, "combine": "record", "counts": {},
                    "verdict_text": f"{verdict}: {qualifier} (not a statistical test)" if qualifier
                    else f"{verdict} (not a statistical test)"}
        claims.append(new)
        changes.append((old["id"], old["verdict"], new["verdict_text"]))
    return {**document, "schema": SCHEMA, "rejudged": REJUDGED, "claims": claims}, changes


def main(argv: list[str] | None = None) -> int:
    folder = Path((argv if argv is not None else sys.argv[1:])[0])
    for path in sorted(folder.glob("*.json")):
        document = json.loads(path.read_text())
        if document.get("schema") == SCHEMA:
            continue
        new, changes = rejudge_document(document)
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(new, indent=1) + "\n"))
        for claim_id, old, text in changes:
            mark = "" if text.split(" (")[0].split(":")[0] == old else "  <- changed"
            print(f"{claim_id:6} {old:14} -> {text}{mark}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
