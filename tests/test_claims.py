"""The claims ledger: the verdict rule on constructed samples, NaN handling, parts, the JSON file."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from reliable_saliency import claims
from reliable_saliency.core import experiment


def sample(mean: float, n: int = 200, sd: float = 0.1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(mean, sd, n)


def run_record(chapter: str = "99_test", profile: str = "smoke", seed: int = 0) -> experiment.Run:
    return experiment.start_run(chapter, experiment.resolve_profile(profile), "cpu", "synthetic shapes", seed)


@pytest.mark.parametrize("mean, expected", [(0.5, "holds"), (-0.5, "does not hold"), (0.0, "inconclusive")])
def test_verdict_above_threshold(mean, expected):
    estimate = claims.bootstrap_mean(sample(mean))
    assert claims.verdict_for(estimate, 0.0, "above") == expected


@pytest.mark.parametrize("mean, expected", [(0.2, "holds"), (0.8, "does not hold"), (0.5, "inconclusive")])
def test_verdict_below_threshold_mirrors(mean, expected):
    estimate = claims.bootstrap_mean(sample(mean))
    assert claims.verdict_for(estimate, 0.5, "below") == expected


def test_interval_exactly_at_threshold_is_not_a_success():
    # every value equals the threshold: the effect is not above it
    estimate = claims.bootstrap_mean(np.full(50, 0.7))
    assert estimate.low == estimate.high == pytest.approx(0.7)
    assert claims.verdict_for(estimate, 0.7, "above") == "does not hold"


def test_interval_agrees_with_scipy_percentile_bootstrap():
    from scipy.stats import bootstrap

    values = sample(0.3, n=400, sd=1.0, seed=3)
    ours = claims.bootstrap_mean(values, rounds=4000, seed=1)
    theirs = bootstrap((values,), np.mean, n_resamples=4000, method="percentile",
                       random_state=np.random.default_rng(2)).confidence_interval
    width = ours.high - ours.low
    assert ours.mean == pytest.approx(values.mean())
    assert abs(ours.low - theirs.low) < 0.1 * width and abs(ours.high - theirs.high) < 0.1 * width
    # and with the normal approximation, mean +- 1.96 sd / sqrt(n)
    half = 1.96 * values.std(ddof=1) / math.sqrt(values.size)
    assert width == pytest.approx(2 * half, rel=0.1)


def test_paired_effect_uses_per_image_differences():
    base = sample(0.0, sd=1.0, seed=5)
    shifted = base + 0.05  # tiny effect, large spread between images
    paired = claims.bootstrap_mean(shifted, base, paired=True)
    unpaired = claims.bootstrap_mean(shifted, base, paired=False)
    assert paired.mean == pytest.approx(0.05) and unpaired.mean == pytest.approx(0.05)
    assert claims.verdict_for(paired, 0.0) == "holds"  # every image improved by 0.05
    assert claims.verdict_for(unpaired, 0.0) == "inconclusive"  # swamped by between-image spread
    with pytest.raises(ValueError, match="same images"):
        claims.bootstrap_mean(shifted, base[:-1], paired=True)


def test_nan_is_refused_or_counted_never_silently_dropped():
    values = np.concatenate([sample(0.5, n=100), [np.nan, np.nan]])
    with pytest.raises(ValueError, match="2 NaN"):
        claims.bootstrap_mean(values)
    estimate = claims.bootstrap_mean(values, nan="omit")
    assert estimate.n == 100 and estimate.dropped == 2
    with pytest.raises(ValueError, match="no values left"):
        claims.bootstrap_mean([np.nan], nan="omit")
    with pytest.raises(ValueError, match="nan must be"):
        claims.bootstrap_mean(values, nan="ignore")


def test_single_value_is_inconclusive_and_tensors_are_accepted():
    estimate = claims.bootstrap_mean(torch.tensor([3.0]))
    assert math.isnan(estimate.low) and claims.verdict_for(estimate, 0.0) == "inconclusive"
    with pytest.raises(ValueError, match="1-D"):
        claims.bootstrap_mean(torch.zeros(3, 2))


@pytest.mark.parametrize("parts, expected", [
    (["holds", "holds"], "holds"),
    (["does not hold", "does not hold"], "does not hold"),
    (["holds", "does not hold"], "partly holds"),
    (["holds", "inconclusive"], "partly holds"),
    (["does not hold", "inconclusive"], "inconclusive"),
    (["inconclusive"], "inconclusive"),
])
def test_combine_parts(parts, expected):
    assert claims.combine(parts) == expected


def test_combine_rejects_unknown_verdicts():
    with pytest.raises(ValueError):
        claims.combine(["holds", "HOLDS"])
    with pytest.raises(ValueError):
        claims.combine([])


def test_ledger_writes_the_book_file(tmp_path, monkeypatch):
    monkeypatch.setenv(claims.CLAIMS_DIR_ENV, str(tmp_path))
    ledger = claims.Ledger(run_record(), bootstrap_rounds=500)
    ledger.test("A1", paper="A", claim="the effect is positive", measured="difference per image",
                parts={"model 1": sample(0.5), "model 2": (sample(0.0, seed=1), sample(0.0, seed=1) + 1)})
    ledger.record("A2", paper="A", claim="an attack reaches its goal", verdict="inconclusive",
                  measured="attack loss", reason="attack not at full strength", numbers={"steps": 5})
    with pytest.raises(ValueError, match="already"):
        ledger.record("A2", paper="A", claim="again", verdict="holds", measured="x", reason="y")
    with pytest.raises(ValueError, match="verdict must be"):
        ledger.record("A3", paper="A", claim="c", verdict="maybe", measured="x", reason="y")
    with pytest.raises(ValueError, match="reason"):
        ledger.record("A4", paper="A", claim="c", verdict="holds", measured="x", reason="")
    assert [c.verdict for c in ledger.claims] == ["partly holds", "inconclusive"]
    path = ledger.save()
    assert path == tmp_path / "99_test.json"
    document = json.loads(path.read_text())
    assert document["provenance"]["profile"] == "smoke" and "wall_seconds" in document["provenance"]
    for c in document["claims"]:
        assert set(claims.REQUIRED_KEYS) <= set(c)
    loaded = claims.load_claims(tmp_path)
    assert [c["chapter"] for c in loaded] == ["99_test", "99_test"]
    assert "does not hold" in ledger.summary() or "partly holds" in ledger.summary()
    assert "<table" in claims.claims_html(loaded)


def test_ledger_without_a_folder_writes_nothing(monkeypatch):
    monkeypatch.delenv(claims.CLAIMS_DIR_ENV, raising=False)
    ledger = claims.Ledger(run_record())
    ledger.test("B1", paper="B", claim="c", measured="m", parts={"all": sample(1.0)})
    assert ledger.save() is None


def test_load_claims_refuses_malformed_files(tmp_path):
    (tmp_path / "01_x.json").write_text(json.dumps({"claims": [{"id": "X", "verdict": "holds"}]}))
    with pytest.raises(ValueError, match="lacks"):
        claims.load_claims(tmp_path)
