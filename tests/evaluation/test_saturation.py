"""The saturation toy of reliable_saliency.evaluation.saturation: the evidence saturates, the weak
feature is weak, and the quadratic weak feature has the linear one's gradient but curvature."""

import pytest
import torch

from reliable_saliency.evaluation.saturation import RELEVANT, WEAK, SaturatedToy, block_ratio, toy_images


def _gradient(model, x):
    x = x.clone().requires_grad_(True)
    model(x)[:, 1].sum().backward()
    return x.grad[:, 0]


def test_the_evidence_saturates_and_the_weak_feature_is_weak():
    x = toy_images(8)
    assert bool((x[:, 0, :4, :4] == 1).all())
    for weak in ("linear", "quadratic"):
        toy = SaturatedToy(weak)
        g = _gradient(toy, x)
        assert g[:, RELEVANT].abs().max() < 1e-3 < g[:, WEAK].abs().min()  # the gradient vanishes where it matters
        with torch.no_grad():
            drop_relevant = (toy(x)[:, 1] - toy(x * ~RELEVANT)[:, 1]).abs().mean()
            drop_weak = (toy(x)[:, 1] - toy(x * ~WEAK)[:, 1]).abs().mean()
        assert drop_relevant > 5 * drop_weak


def test_quadratic_weak_feature_has_curvature_the_linear_has_none():
    x = toy_images(4, seed=3)
    shifted = x.clone()
    shifted[:, :, 5, 5] += 0.1
    linear, quadratic = SaturatedToy("linear"), SaturatedToy("quadratic")
    assert torch.allclose(_gradient(linear, x)[:, WEAK], _gradient(linear, shifted)[:, WEAK])
    assert not torch.allclose(_gradient(quadratic, x)[:, WEAK], _gradient(quadratic, shifted)[:, WEAK])
    s = x[:, 0, 4:, 4:].sum((1, 2))  # d/dx_i of 0.1 s^2 / 16 is 0.1 s / 8
    assert torch.allclose(_gradient(quadratic, x)[:, 7, 7], 0.1 * s / 8)
    with pytest.raises(ValueError):
        SaturatedToy("cubic")


def test_block_ratio():
    m = torch.zeros(2, 8, 8)
    m[:, RELEVANT] = 2.0
    m[0, WEAK] = 0.5
    r = block_ratio(m)
    assert r[0].item() == pytest.approx(4.0) and r[1].item() == float("inf")
