"""Per-image values -> their mean, its bootstrap distribution over images, intervals and one-sided
bootstrap p-values. Everything a verdict rests on is computed here, once."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Estimate", "Effect", "Statistic", "effect_of", "bootstrap_mean", "exact_proportion", "interval_text",
           "median_interval_text", "finite_median", "one_sided_p", "rank_agreement", "correlation_gap"]


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


def as_values(values, name: str) -> np.ndarray:
    """One float per image (1-D); strings, booleans-as-text or nested shapes are refused clearly."""
    if isinstance(values, torch.Tensor):
        values = values.detach().double().cpu().numpy()
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be numbers, one per image; got {type(values).__name__} ({error})") from None
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


@dataclass(frozen=True)
class Effect:
    """The samples an effect is estimated from: one (per-image values, or paired differences) or
    two independent ones (``values`` minus ``baseline``, unpaired)."""

    samples: tuple[np.ndarray, ...]
    dropped: int
    difference: bool = False  # paired differences (values - baseline per image), not values

    @property
    def n(self) -> int:
        return min(s.size for s in self.samples)

    @property
    def mean(self) -> float:
        return float(self.samples[0].mean() - (self.samples[1].mean() if len(self.samples) == 2 else 0.0)) \
            if self.n else math.nan

    @property
    def constant(self) -> bool:
        """Every value of every sample equal (zero variance): a ceiling or floor, no power."""
        return all(s.size > 0 and np.ptp(s) <= 1e-12 * max(1.0, float(np.abs(s).max())) for s in self.samples)

    @property
    def binary(self) -> bool:
        """One sample of 0/1 values (a per-image success, not a difference that happens to be 0 or 1):
        tested exactly against a rate (:func:`exact_proportion`)."""
        return (len(self.samples) == 1 and not self.difference and self.n > 0
                and bool(np.isin(self.samples[0], (0.0, 1.0)).all()))

    def bootstrap(self, rounds: int, seed: int) -> np.ndarray:
        """``rounds`` bootstrap means of the effect (images resampled with replacement; the same
        ``seed`` and sizes give the same resampling, so mirrored values give mirrored means)."""
        if self.n < 1:
            return np.full(rounds, math.nan)
        rng = np.random.default_rng(seed)
        means = np.zeros(rounds)
        for sign, s in zip((1.0, -1.0), self.samples):
            means += sign * s[rng.integers(0, s.size, (rounds, s.size))].mean(1)
        return means


def effect_of(values, baseline=None, *, paired: bool = True, nan: str = "raise") -> Effect:
    """``values`` (one per image), or their effect against ``baseline``: per-image differences when
    ``paired`` (the same images, resampled together), else two independent samples."""
    a = as_values(values, "values")
    difference = baseline is not None and paired
    if difference:
        b = as_values(baseline, "baseline")
        if a.shape != b.shape:
            raise ValueError(f"paired values and baseline need the same images: {a.size} vs {b.size}")
        a, baseline = a - b, None
    a, dropped = _finite(a, nan, "values")
    samples = [a]
    if baseline is not None:
        b, dropped_b = _finite(as_values(baseline, "baseline"), nan, "baseline")
        samples.append(b)
        dropped += dropped_b
    return Effect(tuple(samples), dropped, difference)


def _check_level(level: float) -> None:
    if not isinstance(level, numbers.Real) or not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")


def bootstrap_mean(values, baseline=None, *, paired: bool = True, rounds: int = 2000,
                   level: float = 0.95, seed: int = 0, nan: str = "raise") -> Estimate:
    """Mean of ``values`` (minus ``baseline``, see :func:`effect_of`) with a percentile bootstrap
    interval over images. Fewer than two values give a NaN interval; none is an error."""
    _check_level(level)
    if not isinstance(rounds, int) or rounds < 100:
        raise ValueError(f"rounds must be an int of at least 100, got {rounds!r}")
    effect = effect_of(values, baseline, paired=paired, nan=nan)
    if effect.n == 0:
        raise ValueError("no values left to estimate from (all NaN, or an empty sample)")
    if effect.n < 2:
        return Estimate(effect.mean, math.nan, math.nan, effect.n, effect.dropped, level)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(effect.bootstrap(rounds, seed), [tail, 100 - tail])
    return Estimate(effect.mean, float(low), float(high), effect.n, effect.dropped, level)


def exact_proportion(successes: int, n: int, threshold: float, direction: str,
                     level: float = 0.95) -> tuple[float, float, float, float]:
    """``(low, high, p_for, p_against)`` for ``successes`` of ``n``: the Clopper-Pearson interval at
    ``level`` and exact one-sided binomial p-values against a rate ``threshold`` in (0, 1) (``p_for``
    small: the rate is on the ``direction`` side). The interval excludes the threshold exactly when a
    p-value is below ``(1 - level) / 2``, and 200 of 200 is judged like 199 of 200: no zero-width
    interval at a ceiling (the percentile bootstrap gives ``[1, 1]`` there)."""
    from scipy.stats import beta, binom

    _check_level(level)
    if not 0 < threshold < 1:
        raise ValueError(f"an exact test of a rate needs a threshold in (0, 1), got {threshold}")
    if direction not in ("above", "below"):
        raise ValueError(f"direction must be 'above' or 'below', got {direction!r}")
    tail = (1 - level) / 2
    low = float(beta.ppf(tail, successes, n - successes + 1)) if successes > 0 else 0.0
    high = float(beta.ppf(1 - tail, successes + 1, n - successes)) if successes < n else 1.0
    at_least, at_most = float(binom.sf(successes - 1, n, threshold)), float(binom.cdf(successes, n, threshold))
    return (low, high, at_least, at_most) if direction == "above" else (low, high, at_most, at_least)


def one_sided_p(means: np.ndarray, threshold: float, direction: str) -> tuple[float, float]:
    """Bootstrap p-values ``(p_for, p_against)``: the share of bootstrap means *not* on the claimed
    side of ``threshold`` (small: the effect is on the claimed side), and the share not on the other
    side. Mirroring the means about the threshold swaps the two exactly."""
    slack = 1e-9 * max(1.0, abs(threshold))  # float rounding of a mean is not an effect
    if np.isnan(means).any():
        return 1.0, 1.0
    at_most, at_least = float(np.mean(means <= threshold + slack)), float(np.mean(means >= threshold - slack))
    return (at_most, at_least) if direction == "above" else (at_least, at_most)


def interval_text(values, baseline=None, *, digits: int = 2, seed: int = 0, paired: bool = True) -> str:
    """``"0.52 (0.41 to 0.63)"``: a mean with its 95% bootstrap interval for tables; NaN dropped;
    ``"no usable image"`` when none is left, the bare mean for one value."""
    effect = effect_of(values, baseline, paired=paired, nan="omit")
    if effect.n == 0:
        return "no usable image"
    e = bootstrap_mean(values, baseline, paired=paired, seed=seed, nan="omit")
    if effect.n < 2:
        return f"{e.mean:.{digits}f} (one image)"
    return f"{e.mean:.{digits}f} ({e.low:.{digits}f} to {e.high:.{digits}f})"


def median_interval_text(values, *, digits: int = 2, seed: int = 0, rounds: int = 2000) -> str:
    """Median with a percentile bootstrap interval; NaN dropped, +inf kept (it sorts last)."""
    a = as_values(values, "values")
    a = a[~np.isnan(a)]
    if a.size == 0:
        return "no usable image"
    medians = np.median(a[np.random.default_rng(seed).integers(0, a.size, (rounds, a.size))], axis=1)
    low, high = np.percentile(medians, 2.5, method="lower"), np.percentile(medians, 97.5, method="higher")
    return f"{np.median(a):.{digits}f} ({low:.{digits}f} to {high:.{digits}f})"


class Statistic:
    """A statistic of a whole set of images (a rank correlation across methods, a difference of two
    correlations) with the :class:`Effect` interface, so a ledger part can be one: ``fn`` maps
    arrays whose last axis is the image to a batch of values, one per leading resample
    (``fn(*[a[..., picks] for a in arrays])`` with ``picks`` of shape (rounds, n) gives (rounds,)).
    Resamples where the statistic is undefined (NaN) are dropped and counted."""

    def __init__(self, fn, *arrays, name: str):
        self.fn, self.name = fn, _text_name(name)
        self.arrays = tuple(np.asarray(a.detach().cpu().double() if isinstance(a, torch.Tensor) else a, dtype=float)
                            for a in arrays)
        sizes = {a.shape[-1] for a in self.arrays}
        if len(sizes) != 1:
            raise ValueError(f"every array of a statistic needs the same images on its last axis, got {sizes}")
        self.n = sizes.pop()
        if self.n < 1:
            raise ValueError(f"statistic {self.name!r} has no image (its arrays' last axis is empty)")
        self.samples = ()
        self.dropped = 0  # undefined resamples of the last bootstrap (not images)

    @property
    def mean(self) -> float:  # the statistic on all images (called "mean" to share Effect's interface)
        return float(self.fn(*[a[..., np.arange(self.n)[None]] for a in self.arrays])[0])

    def bootstrap(self, rounds: int, seed: int) -> np.ndarray:
        picks = np.random.default_rng(seed).integers(0, self.n, (rounds, self.n))
        values = np.asarray(self.fn(*[a[..., picks] for a in self.arrays]), dtype=float)
        self.dropped = int(np.isnan(values).sum())
        return values[~np.isnan(values)] if self.dropped < rounds else np.full(rounds, math.nan)

    def constant_over(self, means: np.ndarray) -> bool:
        """No power: the statistic is undefined on every resample, or the same on all (``means``: the
        values :meth:`bootstrap` returned)."""
        return bool(np.isnan(means).all() or np.ptp(means) <= 1e-12)


def _text_name(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError("a statistic needs a name= that says what it computes")
    return name


def _spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation along the last axis (average ranks for ties); NaN where a row is constant."""
    from scipy.stats import rankdata

    ra, rb = rankdata(a, axis=-1), rankdata(b, axis=-1)
    ra, rb = ra - ra.mean(-1, keepdims=True), rb - rb.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (ra * rb).sum(-1) / np.sqrt((ra ** 2).sum(-1) * (rb ** 2).sum(-1))


def rank_agreement(score, other) -> Statistic:
    """Spearman across methods between each method's median of ``score`` and its mean of ``other``,
    both (methods, images) with NaN where undefined (``inf``, "not found", sorts last);
    bootstrapped over images, resampled together for all methods."""
    def fn(s, o):  # (methods, rounds, n) each
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN resample of a method: NaN
            medians = np.nan_to_num(np.nanmedian(s, axis=-1), nan=np.nan, posinf=1e300).T  # (rounds, methods)
            means = np.nanmean(o, axis=-1).T
        rho = _spearman_rows(medians, means)
        rho[np.isnan(medians).any(1) | np.isnan(means).any(1)] = np.nan
        return rho

    return Statistic(fn, score, other, name="Spearman across methods: median of the score vs mean of the other")


def correlation_gap(a, b1, b2) -> Statistic:
    """Spearman(a, b1) minus Spearman(a, b2), bootstrapped over images: 1-D arrays (one value per
    image), or (groups, images) arrays (e.g. one row per model) whose groups are pooled after the
    images are resampled, so the interval reflects the images, not the pooled points."""
    def pooled(v):  # (*groups, rounds, n) -> (rounds, groups * n)
        return np.moveaxis(v, -2, 0).reshape(v.shape[-2], -1)

    return Statistic(lambda x, y, z: _spearman_rows(pooled(x), pooled(y)) - _spearman_rows(pooled(x), pooled(z)),
                     a, b1, b2, name="Spearman(a, b1) - Spearman(a, b2), images resampled")


def finite_median(values) -> float:
    """Median without the NaN (undefined) values; +inf ("not found") sorts last; NaN when none is left."""
    a = as_values(values, "values")
    a = a[~np.isnan(a)]
    return float(np.median(a)) if a.size else math.nan
