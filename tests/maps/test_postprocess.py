"""Post-processing steps against numpy / scipy references, per image and differentiable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reliable_saliency.maps import postprocess as pp


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(99)


def maps(rng, *shape):
    return torch.randn(shape, generator=rng, dtype=torch.float64)


def per_image_percentile(m, q):
    flat = m.reshape(m.shape[0], -1)
    return np.percentile(flat, q, axis=1).reshape(-1, *([1] * (m.ndim - 1)))


@pytest.mark.parametrize("q", [0, 1, 37.5, 50, 99, 99.9, 100])
@pytest.mark.parametrize("shape", [(3, 2, 5, 7), (4, 6, 6), (2, 101)])
def test_percentile_matches_numpy(rng, q, shape):
    m = maps(rng, *shape)
    m[0].view(-1)[:5] = 0.25  # ties
    ref = per_image_percentile(m.numpy(), q).ravel()
    np.testing.assert_allclose(pp.percentile(m, q).numpy(), ref, rtol=1e-12)


def test_absolute_and_channel_reductions(rng):
    m = maps(rng, 2, 3, 4, 5)
    np.testing.assert_array_equal(pp.absolute(m).numpy(), np.abs(m.numpy()))
    np.testing.assert_allclose(pp.channel_sum(m).numpy(), m.numpy().sum(axis=1))
    np.testing.assert_array_equal(pp.channel_max(m).numpy(), m.numpy().max(axis=1))
    single = m[:, :1]
    assert pp.channel_sum(single).shape == (2, 4, 5) and pp.channel_max(single).shape == (2, 4, 5)
    np.testing.assert_array_equal(pp.channel_max(single).numpy(), single.numpy()[:, 0])
    for step in (pp.channel_sum, pp.channel_max):
        with pytest.raises(ValueError, match=r"\(N, C, H, W\) or \(N, 1, H, W\)"):
            step(m[:, 0])


def test_clip_percentile_clips_both_tails_per_image(rng):
    m = maps(rng, 3, 2, 6, 6)
    m[1] *= 100  # very different scales: clipping must be per image
    ref = np.clip(m.numpy(), per_image_percentile(m.numpy(), 2), per_image_percentile(m.numpy(), 98))
    np.testing.assert_allclose(pp.clip_percentile(m, 98).numpy(), ref, rtol=1e-12)
    with pytest.raises(ValueError, match=r"\[50, 100\]"):
        pp.clip_percentile(m, 10)


def test_winsorize_matches_scipy_mstats(rng):
    from scipy.stats.mstats import winsorize

    m = maps(rng, 2, 101)  # 99th percentile of 101 values is the 100th order statistic
    ref = np.stack([np.asarray(winsorize(row, limits=(0, 0.01))) for row in m.numpy()])
    np.testing.assert_array_equal(pp.winsorize(m, 99).numpy(), ref)
    assert bool((pp.winsorize(m, 99) == m).sum() == 2 * 100)  # only the top value changes


def test_divide_by_percentile_as_relex(rng):
    m = maps(rng, 3, 1, 8, 8).abs()
    m[1] *= 50
    ref = np.clip(m.numpy() / per_image_percentile(m.numpy(), 99), 0, 1)
    np.testing.assert_allclose(pp.divide_by_percentile(m).numpy(), ref, rtol=1e-12)
    np.testing.assert_allclose(pp.divide_by_percentile(m, 90).numpy(),
                               np.clip(m.numpy() / per_image_percentile(m.numpy(), 90), 0, 1), rtol=1e-12)
    zero = torch.zeros(2, 4, 4, dtype=torch.float64)
    assert bool((pp.divide_by_percentile(zero) == 0).all())
    negative = -m  # percentile <= 0: only clamped
    assert bool((pp.divide_by_percentile(negative) == 0).all())


def test_normalizations(rng):
    m = maps(rng, 3, 2, 5, 5)
    flat = m.numpy().reshape(3, -1)
    ref = (flat - flat.min(1, keepdims=True)) / (flat.max(1, keepdims=True) - flat.min(1, keepdims=True))
    np.testing.assert_allclose(pp.normalize_minmax(m).numpy().reshape(3, -1), ref, rtol=1e-12)
    constant = torch.full((2, 3, 3), 4.0, dtype=torch.float64)
    assert bool((pp.normalize_minmax(constant) == 0).all())
    a = m.abs()
    a_flat = a.numpy().reshape(3, -1)
    np.testing.assert_allclose(
        pp.normalize_sum(a).numpy().reshape(3, -1), a_flat / a_flat.sum(1, keepdims=True), rtol=1e-12
    )
    with pytest.raises(ValueError, match="non-negative.*absolute"):
        pp.normalize_sum(m)
    assert bool((pp.normalize_sum(torch.zeros(2, 3, 3, dtype=torch.float64)) == 0).all())


def test_times_input(rng):
    x, m = maps(rng, 2, 3, 4, 4), maps(rng, 2, 3, 4, 4)
    np.testing.assert_array_equal(pp.times_input(m, x).numpy(), m.numpy() * x.numpy())
    np.testing.assert_array_equal(pp.times_input(m[:, :1], x).numpy(), m[:, :1].numpy() * x.numpy())
    with pytest.raises(ValueError, match="before channel reductions"):
        pp.times_input(m[:, 0], x)
    with pytest.raises(ValueError, match="shape of x"):
        pp.times_input(m[:1], x)


@pytest.mark.parametrize("name", sorted(pp.STEPS))
def test_steps_work_per_image(rng, name):
    """A batch gives the same result as each image alone."""
    m, x = maps(rng, 3, 2, 5, 5).abs(), maps(rng, 3, 2, 5, 5)
    call = (lambda a, b: pp.STEPS[name](a, b)) if name == "times_input" else (lambda a, b: pp.STEPS[name](a))
    batched = call(m, x)
    for i in range(3):
        torch.testing.assert_close(batched[i : i + 1], call(m[i : i + 1], x[i : i + 1]), rtol=0, atol=0)


@pytest.mark.parametrize(
    "step",
    [
        lambda m: pp.percentile(m, 73), lambda m: pp.clip_percentile(m, 90), lambda m: pp.winsorize(m, 80),
        lambda m: pp.divide_by_percentile(m.abs(), 80), pp.normalize_minmax,
        lambda m: pp.normalize_sum(m.abs()), pp.channel_max, pp.channel_sum,
    ],
)
def test_steps_are_differentiable(rng, step):
    m = maps(rng, 2, 2, 3, 3).requires_grad_(True)
    assert torch.autograd.gradcheck(step, (m,), eps=1e-6, atol=1e-6)


def test_postprocess_applies_steps_in_order(rng):
    m, x = maps(rng, 2, 3, 6, 6), maps(rng, 2, 3, 6, 6)
    steps = ["absolute", "times_input", "channel_sum", ("divide_by_percentile", {"q": 95})]
    got = pp.postprocess(m, steps, x=x)
    torch.testing.assert_close(got, pp.divide_by_percentile(pp.channel_sum(m.abs() * x), 95))
    got = pp.postprocess(m, ("absolute", "channel_max", ("winsorize", {"q": 90}), "normalize_minmax"))
    torch.testing.assert_close(got, pp.normalize_minmax(pp.winsorize(m.abs().amax(1), 90)))
    assert pp.postprocess(m, []) is m


def test_postprocess_errors(rng):
    m = maps(rng, 2, 3, 4, 4)
    with pytest.raises(ValueError, match="unknown post-processing step 'abs'.*absolute"):
        pp.postprocess(m, ["abs"])
    with pytest.raises(ValueError, match="needs the input batch"):
        pp.postprocess(m, ["times_input"])
    with pytest.raises(TypeError, match="use \\['absolute'\\]"):
        pp.postprocess(m, "absolute")
    with pytest.raises(TypeError, match="name or a \\(name, options-dict\\) pair"):
        pp.postprocess(m, [("winsorize", 99)])
    with pytest.raises(TypeError, match="unexpected keyword"):
        pp.postprocess(m, [("winsorize", {"p": 99})])
    with pytest.raises(ValueError, match=r"percentile q must be a number in \[0, 100\]"):
        pp.winsorize(m, 101)
    with pytest.raises(ValueError, match="batch axis"):
        pp.normalize_minmax(torch.ones(5, dtype=torch.float64))
    with pytest.raises(TypeError, match="float"):
        pp.absolute(torch.ones(2, 3, dtype=torch.long))
