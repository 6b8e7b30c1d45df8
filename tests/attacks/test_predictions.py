"""FGSM / PGD against closed forms on a linear classifier, where the optimal L-inf attack is the
vertex x - eps * sign(w) (clamped to [0, 1]) and the optimal L2 attack is x - eps * w / ||w||."""

import pytest
import torch
from torch import nn

from reliable_saliency.core import inputs
from reliable_saliency.attacks import fgsm, pgd

SPACE = inputs.CIFAR10


def linear_model(rng) -> nn.Module:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    with torch.no_grad():
        # small weights: a saturated softmax gives an exactly zero cross-entropy gradient in float32
        model[1].weight.copy_(0.01 * torch.randn(2, 3 * 8 * 8, generator=rng))
        model[1].bias.zero_()
    model.input_space = SPACE
    return model.eval()


def pixel_gradient_of_margin(model) -> torch.Tensor:
    """d (logit_0 - logit_1) / d x01 for x in pixel space: weights divided by the channel std."""
    w = (model[1].weight[0] - model[1].weight[1]).view(1, 3, 8, 8)
    return w / torch.tensor(SPACE.std).view(1, 3, 1, 1)


@pytest.fixture
def setup(rng):
    model = linear_model(rng)
    x01 = 0.3 + 0.4 * torch.rand(32, 3, 8, 8, generator=rng)  # mid-range: no clamping at small eps
    x = SPACE.normalize(x01)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x01, x, y


def test_pgd_linf_reaches_the_optimal_vertex(setup):
    model, x01, x, y = setup
    eps = 8 / 255
    x_adv = pgd(model, x, y, eps, steps=20, alpha=eps / 4, random_start=False)
    # the attack lowers the margin of the true class: move against sign(g) for class 0, along it for 1
    direction = torch.where(y.view(-1, 1, 1, 1) == 0, -1.0, 1.0) * pixel_gradient_of_margin(model).sign()
    expected = (x01 + eps * direction).clamp(0, 1)
    assert torch.allclose(SPACE.denormalize(x_adv), expected, atol=1e-5)


def test_pgd_stays_in_ball_and_range_and_lowers_accuracy(setup, rng):
    model, x01, x, y = setup
    x01 = torch.rand(32, 3, 8, 8, generator=rng)  # full range: clamping active
    x = SPACE.normalize(x01)
    for norm, eps in (("linf", 8 / 255), ("l2", 0.5)):
        x_adv = pgd(model, x, y, eps, steps=10, norm=norm, generator=torch.Generator().manual_seed(0))
        delta = SPACE.denormalize(x_adv) - x01
        size = delta.abs().flatten(1).amax(1) if norm == "linf" else delta.flatten(1).norm(dim=1)
        assert torch.all(size <= eps + 1e-5)
        assert SPACE.denormalize(x_adv).min() >= -1e-6 and SPACE.denormalize(x_adv).max() <= 1 + 1e-6
        with torch.no_grad():
            assert (model(x_adv).argmax(1) == y).float().mean() < 1.0


def test_pgd_l2_matches_the_closed_form(setup):
    model, x01, x, y = setup
    eps = 0.05
    x_adv = pgd(model, x, y, eps, steps=30, alpha=eps / 10, norm="l2", random_start=False)
    g = pixel_gradient_of_margin(model)
    direction = torch.where(y.view(-1, 1, 1, 1) == 0, -1.0, 1.0) * g / g.norm()
    assert torch.allclose(SPACE.denormalize(x_adv), x01 + eps * direction, atol=1e-4)


def test_accuracy_drop_matches_the_analytic_flip_set(setup):
    model, x01, x, y = setup
    eps = 2 / 255
    g = pixel_gradient_of_margin(model)
    with torch.no_grad():
        margin = (model(x)[:, 0] - model(x)[:, 1]).abs()
    flips = margin < eps * g.abs().sum()  # the vertex moves the margin by eps * ||g||_1 (no clamping)
    x_adv = fgsm(model, x, y, eps)
    with torch.no_grad():
        flipped = model(x_adv).argmax(1) != y
    assert torch.equal(flipped, flips)


def test_eps_is_converted_per_channel():
    x = SPACE.normalize(torch.full((1, 3, 4, 4), 0.5))
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 2))
    model.input_space = SPACE
    x_adv = fgsm(model.eval(), x, 0, 4 / 255)
    change = (x_adv - x).abs().amax(dim=(0, 2, 3))
    assert torch.allclose(change, torch.tensor([4 / 255 / s for s in SPACE.std]), atol=1e-6)


def test_fgsm_random_start_is_seeded(setup):
    model, _, x, y = setup
    a = fgsm(model, x, y, 8 / 255, random_start=True, generator=torch.Generator().manual_seed(3))
    b = fgsm(model, x, y, 8 / 255, random_start=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_bad_inputs(setup):
    model, _, x, y = setup
    bare = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2)).eval()
    with pytest.raises(ValueError, match="input space"):
        pgd(bare, x, y, 8 / 255)
    assert pgd(bare, x, y, 8 / 255, input_space=SPACE).shape == x.shape
    with pytest.raises(ValueError, match="eps must be >= 0"):
        pgd(model, x, y, -1.0)
    with pytest.raises(ValueError, match="norm must be"):
        pgd(model, x, y, 0.1, norm="l1")
    with pytest.raises(ValueError, match="outside the valid range"):
        pgd(model, SPACE.normalize(x), y, 0.1)
    with pytest.raises(ValueError, match="class indices outside"):
        pgd(model, x, torch.full_like(y, 5), 0.1)
    dropout = nn.Sequential(nn.Flatten(), nn.Dropout(), nn.Linear(3 * 8 * 8, 2))
    with pytest.raises(ValueError, match="model.eval"):
        pgd(dropout, x, y, 0.1, input_space=SPACE)
