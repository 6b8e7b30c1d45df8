"""The smoothness measure and the control smoother of reliable_saliency.maps.smoothness."""

import pytest
import torch

from reliable_saliency.maps.smoothness import blurred_map, matched_sigma, roughness


def test_roughness_orders_noise_blur_and_constant():
    g = torch.Generator().manual_seed(0)
    noise = torch.rand(4, 1, 32, 32, generator=g)
    assert roughness(noise).mean().item() == pytest.approx(1.0, abs=0.1)  # white noise: about 1
    assert bool((roughness(blurred_map(noise, 2.0)) < 0.2).all())  # blurred: much smoother
    checker = (torch.arange(8).view(1, -1) + torch.arange(8).view(-1, 1)).remainder(2).float().view(1, 8, 8)
    assert roughness(checker).item() == pytest.approx(2.0)  # every neighbour differs: the maximum
    assert roughness(torch.ones(2, 8, 8)).tolist() == [0.0, 0.0]  # constant maps: 0, not nan


def test_blurred_map_is_channel_abs_sum_then_blur():
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(blurred_map(x, 0), x.abs().sum(1, keepdim=True))
    b = blurred_map(x, 1.5)
    assert b.shape == (2, 1, 16, 16) and bool((b >= 0).all())
    assert b.sum().item() == pytest.approx(x.abs().sum().item(), rel=0.05)  # a blur keeps the mass (reflect edges)


def test_matched_sigma_picks_the_width_of_a_blurred_target():
    g = torch.Generator().manual_seed(1)
    raw = torch.randn(6, 3, 32, 32, generator=g)
    target = blurred_map(raw, 2.0)
    sigma, seen = matched_sigma(raw, target, [0, 0.5, 1, 2, 3, 4])
    assert sigma == 2.0 and seen[2.0] == pytest.approx(roughness(target).mean().item())
    assert list(seen.values()) == sorted(seen.values(), reverse=True)  # wider: smoother
    with pytest.raises(ValueError):
        matched_sigma(raw, target, [])
