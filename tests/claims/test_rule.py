"""The verdict rule (reliable_saliency.claims.rule through the Ledger): quantifiers, power, nulls,
magnitudes, and the symmetry property: mirrored evidence gets the mirrored verdict."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from reliable_saliency import claims
from reliable_saliency.claims.rule import NO_POWER, UNDERPOWERED, PartResult
from reliable_saliency.core import experiment


def run_record(seed: int = 0) -> experiment.Run:
    return experiment.start_run("99_test", experiment.resolve_profile("smoke"), "cpu", "synthetic shapes", seed)


def ledger() -> claims.Ledger:
    return claims.Ledger(run_record(), bootstrap_rounds=2000)


def sample(mean: float, n: int = 200, sd: float = 0.1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(mean, sd, n)


def claim_of(parts, **options) -> claims.Claim:
    return ledger().test("X1", paper="P", claim="c", measured="m", parts=parts, **options)


# --- hand cases from the referee reading -----------------------------------------------------


def test_mostly_against_with_some_inconclusive_does_not_hold():
    """D5.3 / D5.4: 9 of 12 parts against, 3 inconclusive read 'inconclusive' under the old rule."""
    parts = {f"against {i}": sample(-0.2, seed=i) for i in range(9)}
    parts |= {f"unclear {i}": sample(0.0, sd=1.0, seed=20 + i) for i in range(3)}
    claim = claim_of(parts)
    assert claim.verdict == "does not hold"
    assert claim.verdict_text.startswith("does not hold (9 of 12 against")
    assert claim.counts["against"] == 9


def test_one_part_for_three_against_does_not_hold():
    """A2.4 read 'partly holds' from one part for and three significantly against."""
    parts = {"for": sample(0.3)} | {f"against {i}": sample(-0.3, seed=i + 1) for i in range(3)}
    claim = claim_of(parts)
    assert claim.verdict == "does not hold" and "1 for" not in claim.verdict_text.split(";")[0][:8]
    assert claim.counts == {"parts": 4, "for": 1, "against": 3, "inconclusive": 0, "underpowered": 0,
                            "no power": 0, "descriptive": 0}


def test_every_part_for_holds_and_says_so():
    claim = claim_of({f"m{i}": sample(0.3, seed=i) for i in range(6)})
    assert claim.verdict == "holds" and claim.verdict_text == "holds (6 of 6 for)"


def test_all_for_but_some_inconclusive_is_inconclusive_and_its_mirror_under_any_too():
    parts = {f"for {i}": sample(0.3, seed=i) for i in range(9)} | {
        f"unclear {i}": sample(0.0, sd=1.0, seed=30 + i) for i in range(3)}
    assert claim_of(parts).verdict == "inconclusive"
    assert claim_of(parts, combine="any").verdict == "holds"


def test_a_ceiling_has_no_power():
    """A2.12: every variant retrieves 100%, the difference is 0 on every image."""
    claim = claim_of({"noise vs none": (np.ones(200), np.ones(200))})
    assert claim.verdict == "inconclusive" and claim.qualifier == NO_POWER
    assert claim.evidence["parts"][0]["power"] == NO_POWER
    claim = claim_of({"all on the threshold": np.full(200, 0.5)}, threshold=0.5)
    assert claim.verdict == "inconclusive" and "every value at the tested value" in claim.verdict_text


def test_a_constant_sample_off_the_threshold_is_evidence_judged_like_its_neighbour():
    """A2.10: every image flipped, against a rate of 0.5, holds like 199 of 200 does (it read "no
    power" before, so more evidence gave a weaker verdict), with an exact interval, not [1, 1]."""
    ceiling, near = (claim_of({"flipped": v}, threshold=0.5) for v in (np.ones(200), np.r_[np.ones(199), 0.0]))
    assert ceiling.verdict == near.verdict == "holds"
    part = ceiling.evidence["parts"][0]
    assert part["power"] == "ok" and 0.98 < part["low"] < 0.99 and part["high"] == 1.0  # Clopper-Pearson
    assert part["p_for"] == pytest.approx(0.5 ** 200)
    floor = claim_of({"flipped": np.zeros(200)}, threshold=0.5)  # the mirror
    assert floor.verdict == "does not hold" and floor.evidence["parts"][0]["p_against"] == pytest.approx(0.5 ** 200)
    few = claim_of({"flipped": np.ones(31)}, threshold=0.9)  # 31 of 31 against 0.9: 0.9 ** 31 = 0.038
    assert few.verdict == "inconclusive" and few.evidence["parts"][0]["p_for"] == pytest.approx(0.9 ** 31)
    shifted = claim_of({"gain": np.full(40, 0.2)})  # a constant, non-binary sample above 0: the sign test
    assert shifted.verdict == "holds" and shifted.evidence["parts"][0]["p_for"] == pytest.approx(0.5 ** 40)


def test_a_shared_ceiling_has_no_power_for_a_magnitude_claim_either():
    """Every difference 0 (both variants at 100%): no effect size can be read, not 'does not hold'."""
    claim = claim_of({"noise vs none": np.zeros(200)}, min_effect=0.05, min_effect_reason="r")
    assert claim.verdict == "inconclusive" and claim.sign_verdict == "inconclusive"
    assert claim.evidence["parts"][0]["power"] == NO_POWER
    short = claim_of({"gain": np.full(40, 0.02)}, min_effect=0.05, min_effect_reason="r")  # real but small
    assert short.verdict == "does not hold" and short.sign_verdict == "holds"


def test_underpowered_parts_never_decide():
    claim = claim_of({"3 values": sample(0.5, n=3), "12 values": sample(0.5, n=12)})
    assert claim.verdict == "inconclusive" and claim.qualifier == UNDERPOWERED
    assert "underpowered (2 parts under n = 30)" in claim.verdict_text
    claim = claim_of({"big": sample(0.5), "small, against": sample(-0.5, n=6)})
    assert claim.verdict == "holds" and "1 part under n = 30, not counted" in claim.verdict_text
    with pytest.raises(ValueError, match="min_n_reason"):
        claim_of({"a": sample(0.5, n=10)}, min_n=10)
    assert claim_of({"a": sample(0.5, n=10)}, min_n=10, min_n_reason="ten images exist").verdict == "holds"


def test_a_null_replaces_zero():
    """C4.2: 'Irel > IrelShuf on most images' where an uninformative map scores 10/11."""
    random_map = np.r_[np.ones(273), np.zeros(27)]  # 273 / 300 = 0.91: what chance gives
    assert claim_of({"random map": random_map}, threshold=0.5).verdict == "holds"  # the old test could not fail
    claim = claim_of({"random map": random_map}, null=10 / 11, null_reason="an uninformative map: 10 of 11 ranks")
    assert claim.verdict == "inconclusive" and claim.threshold == pytest.approx(10 / 11)
    with pytest.raises(ValueError, match="not both"):
        claim_of({"a": random_map}, threshold=0.5, null=0.9, null_reason="r")
    with pytest.raises(ValueError, match="null_reason"):
        claim_of({"a": random_map}, null=0.9)


def test_a_magnitude_claim_needs_its_minimal_effect():
    """E6.5 'much more robust' held on a +0.004 gain."""
    claim = claim_of({"gain": sample(0.004, sd=0.005, n=500)}, min_effect=0.05,
                   min_effect_reason="a tenth of the similarity's range")
    assert claim.sign_verdict == "holds" and claim.verdict == "does not hold"
    assert claim.evidence["parts"][0]["tested_against"] == pytest.approx(0.05)
    with pytest.raises(ValueError, match="min_effect_reason"):
        claim_of({"gain": sample(0.004)}, min_effect=0.05)


def test_any_uses_holm_and_main_decides_alone():
    # one part barely significant alone, among five: not significant after Holm
    weak = sample(0.0, sd=1.0, n=400, seed=7)
    weak = weak - weak.mean() + 2.3 / np.sqrt(400)  # mean about 2.3 standard errors above 0
    parts = {"weak": weak} | {f"null {i}": sample(0.0, sd=1.0, seed=40 + i) - 0.0 for i in range(4)}
    for label in list(parts)[1:]:
        parts[label] = parts[label] - parts[label].mean()  # exactly mean 0: inconclusive
    assert claim_of({"weak": weak}).verdict == "holds"
    claim = claim_of(parts, combine="any")
    assert claim.verdict == "inconclusive"
    weak_part = claim.evidence["parts"][0]
    assert weak_part["alpha_for"] == pytest.approx(0.025 / 5) and weak_part["adjusted_level"] == pytest.approx(0.99)
    assert claim_of({"strong": sample(0.3)} | parts, combine="any").verdict == "holds"
    claim = claim_of({"main": sample(0.3), "other": sample(-0.3)}, combine="main", main="main")
    assert claim.verdict == "holds" and claim.counts["descriptive"] == 1
    with pytest.raises(ValueError, match="main="):
        claim_of({"a": sample(0.3)}, combine="main", main="b")


def test_holm_step_down():
    significant, levels = claims.holm([0.001, 0.04, 0.009, 0.3], alpha=0.05)
    assert significant == [True, False, True, False]
    assert levels == pytest.approx([0.0125, 0.025, 0.05 / 3, 0.05])


# --- symmetry ----------------------------------------------------------------------------------


def random_parts(rng) -> tuple[dict, float]:
    threshold = float(rng.choice([0.0, 0.5, -0.2]))
    parts = {}
    for i in range(int(rng.integers(1, 7))):
        n = int(rng.choice([3, 29, 30, 60, 200]))
        sd = float(rng.choice([0.0, 0.05, 0.5]))
        mean = threshold + float(rng.choice([-0.3, -0.05, -0.01, 0.0, 0.01, 0.05, 0.3]))
        values = rng.normal(mean, sd, n) if sd else np.full(n, mean)
        if rng.random() < 0.3:  # a paired part
            baseline = rng.normal(0.0, 0.2, n)
            parts[f"p{i}"] = (values + baseline, baseline)
        else:
            parts[f"p{i}"] = values
    return parts, threshold


def mirrored(parts: dict, threshold: float) -> dict:
    out = {}
    for label, data in parts.items():
        if isinstance(data, tuple):  # mirror the effect: swap the roles around the threshold
            values, baseline = data
            out[label] = (2 * threshold - (values - baseline) + baseline, baseline)
        else:
            out[label] = 2 * threshold - data
    return out


@pytest.mark.parametrize("case", range(150))
def test_mirrored_evidence_gets_the_mirrored_verdict(case):
    rng = np.random.default_rng(case)
    parts, threshold = random_parts(rng)
    direction = str(rng.choice(["above", "below"]))
    mirror_parts = mirrored(parts, threshold)
    for combine in ("all", "any"):
        claim = claim_of(parts, threshold=threshold, direction=direction, combine=combine)
        dual = claim_of(mirror_parts, threshold=threshold, direction=direction, combine=claims.rule.DUAL[combine])
        assert dual.verdict == claims.mirror(claim.verdict), (combine, claim.verdict_text, dual.verdict_text)
        assert (dual.counts["for"], dual.counts["against"]) == (claim.counts["against"], claim.counts["for"])
        flipped = claim_of(mirror_parts, threshold=threshold, direction="above" if direction == "below" else "below",
                         combine=combine)  # the same claim stated the other way round
        assert flipped.verdict == claim.verdict
    main = next(iter(parts))
    claim = claim_of(parts, threshold=threshold, direction=direction, combine="main", main=main)
    dual = claim_of(mirror_parts, threshold=threshold, direction=direction, combine="main", main=main)
    assert dual.verdict == claims.mirror(claim.verdict)


STATUS_P = {"for": (0.0, 1.0), "against": (1.0, 0.0), "unclear": (0.5, 0.5), "weak for": (0.01, 0.99),
            "weak against": (0.99, 0.01)}


@pytest.mark.parametrize("statuses", [s for k in range(1, 4) for s in itertools.product(
    [*STATUS_P, "underpowered", "no power"], repeat=k)])
def test_every_combination_of_part_verdicts_mirrors(statuses):
    def parts(swap: bool):
        out = []
        for i, status in enumerate(statuses):
            power = {"underpowered": UNDERPOWERED, "no power": NO_POWER}.get(status, "ok")
            p_for, p_against = STATUS_P.get(status, (0.5, 0.5))
            if swap:
                p_for, p_against = p_against, p_for
            out.append(PartResult(f"p{i}", 100, 0, 0.0, -1.0, 1.0, p_for, p_against, power=power))
        return out

    for combine in ("all", "any"):
        verdict, qualifier = claims.judge(parts(False), combine)
        dual, dual_qualifier = claims.judge(parts(True), claims.rule.DUAL[combine])
        assert dual == claims.mirror(verdict) and dual_qualifier == qualifier
    assert claims.judge(parts(True), "main", "p0")[0] == claims.mirror(claims.judge(parts(False), "main", "p0")[0])
