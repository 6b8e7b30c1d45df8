"""The bootstrap behind every verdict (reliable_saliency.claims.statistics): intervals against scipy
and the normal approximation, paired effects, NaN handling, one-sided p-values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reliable_saliency import claims


def sample(mean: float, n: int = 200, sd: float = 0.1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(mean, sd, n)


def test_interval_agrees_with_scipy_percentile_bootstrap():
    from scipy.stats import bootstrap

    values = sample(0.3, n=400, sd=1.0, seed=3)
    ours = claims.bootstrap_mean(values, rounds=4000, seed=1)
    theirs = bootstrap((values,), np.mean, n_resamples=4000, method="percentile",
                       random_state=np.random.default_rng(2)).confidence_interval
    width = ours.high - ours.low
    assert ours.mean == pytest.approx(values.mean())
    assert abs(ours.low - theirs.low) < 0.1 * width and abs(ours.high - theirs.high) < 0.1 * width
    half = 1.96 * values.std(ddof=1) / math.sqrt(values.size)  # the normal approximation
    assert width == pytest.approx(2 * half, rel=0.1)


def test_paired_effect_uses_per_image_differences():
    base = sample(0.0, sd=1.0, seed=5)
    shifted = base + 0.05  # tiny effect, large spread between images
    paired = claims.bootstrap_mean(shifted, base, paired=True)
    unpaired = claims.bootstrap_mean(shifted, base, paired=False)
    assert paired.mean == pytest.approx(0.05) and unpaired.mean == pytest.approx(0.05)
    assert paired.low > 0  # every image improved by 0.05
    assert unpaired.low < 0 < unpaired.high  # swamped by the spread between images
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


def test_bad_values_and_settings_get_clear_errors():
    with pytest.raises(TypeError, match="must be numbers"):
        claims.bootstrap_mean(["a", "b"])
    with pytest.raises(ValueError, match="1-D"):
        claims.bootstrap_mean(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="rounds"):
        claims.bootstrap_mean(sample(0.1), rounds=0)
    with pytest.raises(ValueError, match="level"):
        claims.bootstrap_mean(sample(0.1), level=1.5)
    single = claims.bootstrap_mean(torch.tensor([3.0]))
    assert math.isnan(single.low) and single.n == 1


def test_one_sided_p_values_match_the_interval_and_swap_under_mirroring():
    effect = claims.effect_of(sample(0.05, sd=0.2))
    means = effect.bootstrap(10000, seed=0)
    p_for, p_against = claims.one_sided_p(means, 0.0, "above")
    low = np.percentile(means, 2.5)
    assert (p_for < 0.025) == (low > 0)
    mirrored = claims.effect_of(2 * 0.3 - sample(0.05, sd=0.2)).bootstrap(10000, seed=0)
    assert claims.one_sided_p(mirrored, 0.3, "above") == claims.one_sided_p(means, 0.3, "below")
    assert claims.one_sided_p(mirrored, 0.3, "above")[::-1] == claims.one_sided_p(means, 0.3, "above")


def test_interval_text_for_tables():
    assert claims.interval_text([np.nan, np.nan]) == "no usable image"
    assert claims.interval_text([0.5]) == "0.50 (one image)"
    text = claims.interval_text(sample(0.5), digits=1)
    assert text.startswith("0.5 (") and " to " in text
    assert claims.median_interval_text([1.0, 2.0, np.inf]).startswith("2.00")


def test_rank_agreement_and_correlation_gap_against_scipy():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    score = rng.normal(size=(6, 80)) + np.arange(6)[:, None]  # per-method medians rise with the index
    other = rng.normal(size=(6, 80)) + 0.5 * np.arange(6)[:, None]
    statistic = claims.rank_agreement(score, other)
    expected = spearmanr(np.median(score, 1), other.mean(1)).statistic
    assert statistic.mean == pytest.approx(expected) and statistic.n == 80
    means = statistic.bootstrap(500, seed=0)
    assert means.size == 500 and np.all(np.abs(means) <= 1 + 1e-12)
    a, b1, b2 = rng.normal(size=(3, 200))
    b1 = a + 0.3 * b1
    gap = claims.correlation_gap(a, b1, b2)
    assert gap.mean == pytest.approx(spearmanr(a, b1).statistic - spearmanr(a, b2).statistic)
    with pytest.raises(ValueError, match="same images"):
        claims.correlation_gap(a, b1[:-1], b2)


def test_a_statistic_is_a_ledger_part():
    from reliable_saliency.core import experiment

    run = experiment.start_run("99_test", experiment.resolve_profile("smoke"), "cpu", "synthetic shapes", 0)
    ledger = claims.Ledger(run, bootstrap_rounds=2000)
    rng = np.random.default_rng(1)
    a = rng.normal(size=300)
    claim = ledger.test("S1", paper="P", claim="c", measured="m",
                        parts={"gap": claims.correlation_gap(a, a + 0.2 * rng.normal(size=300), rng.normal(size=300))})
    assert claim.verdict == "holds" and claim.evidence["parts"][0]["statistic"].startswith("Spearman")
    assert "values" not in claim.evidence["parts"][0]


def test_correlation_gap_pools_groups_after_resampling_images():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(3)
    a = rng.normal(size=(5, 40))
    b1, b2 = a + 0.5 * rng.normal(size=(5, 40)), rng.normal(size=(5, 40))
    gap = claims.correlation_gap(a, b1, b2)
    expected = spearmanr(a.ravel(), b1.ravel()).statistic - spearmanr(a.ravel(), b2.ravel()).statistic
    assert gap.n == 40 and gap.mean == pytest.approx(expected)
    assert gap.bootstrap(300, seed=0).shape == (300,)


def test_a_failed_precondition_voids_the_verdict():
    from reliable_saliency.core import experiment

    run = experiment.start_run("99_test", experiment.resolve_profile("smoke"), "cpu", "synthetic shapes", 0)
    claim = claims.Ledger(run, bootstrap_rounds=1000).test(
        "P1", paper="P", claim="c", measured="m", parts={"a": sample(0.5, n=60)},
        precondition_failed="regulariser did not act (penalty 0.7% of the loss)")
    assert claim.verdict == "inconclusive" and claim.qualifier.startswith("regulariser did not act")
    assert "as measured: holds" in claim.verdict_text


def test_a_statistic_needs_images_and_its_constancy_is_read_from_the_bootstrap():
    import numpy as np
    import pytest

    from reliable_saliency.claims.statistics import Statistic

    with pytest.raises(ValueError, match="no image"):
        Statistic(lambda a: a.mean(-1), np.zeros((3, 0)), name="empty")
    flat = Statistic(lambda a: a.mean(-1) * 0.0, np.arange(10.0), name="always zero")
    assert flat.constant_over(flat.bootstrap(50, 0))
    moving = Statistic(lambda a: a.mean(-1), np.arange(10.0), name="mean")
    assert not moving.constant_over(moving.bootstrap(50, 0))


@pytest.mark.parametrize("k, n, rate", [(0, 50, 0.5), (50, 50, 0.5), (37, 50, 0.6), (3, 40, 0.1), (199, 200, 0.9)])
def test_exact_proportion_matches_scipy_binomtest(k, n, rate):
    from scipy.stats import binomtest

    low, high, p_for, p_against = claims.statistics.exact_proportion(k, n, rate, "above")
    ci = binomtest(k, n, rate).proportion_ci(0.95, method="exact")
    assert (low, high) == pytest.approx((ci.low, ci.high), abs=1e-9)
    assert p_for == pytest.approx(binomtest(k, n, rate, alternative="greater").pvalue)
    assert p_against == pytest.approx(binomtest(k, n, rate, alternative="less").pvalue)
    assert claims.statistics.exact_proportion(k, n, rate, "below")[2:] == (p_against, p_for)
    assert (p_for < 0.025 or p_against < 0.025) == (not low <= rate <= high)  # the interval inverts the tests


def test_exact_proportion_refuses_a_rate_outside_0_1():
    with pytest.raises(ValueError, match=r"threshold in \(0, 1\)"):
        claims.statistics.exact_proportion(3, 10, 0.0, "above")
