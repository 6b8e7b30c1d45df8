"""What the tests of attacks on explanations share: image size, budgets, a plain gradient
explainer and checks of the returned maps and images. The trained model they attack is the
``trained`` fixture of tests/attacks/conftest.py."""

from __future__ import annotations

import torch

from reliable_saliency.core.inputs import SYNTHETIC

EPS = 8 / 255
STEPS = 40
ALPHA = 1 / 255
SIZE = 32


def gradient_explainer(model, x, target, *, create_graph=False, generator=None, batch_size=None):
    """Plain gradient of the target logit (local stand-in for explainers.py)."""
    with torch.enable_grad():
        xg = x if x.requires_grad else x.detach().requires_grad_(True)
        score = model(xg).gather(1, target.view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(score, xg, create_graph=create_graph)
    return grad


def real_map(model, x):
    with torch.no_grad():
        label = model(x).argmax(1)
    m = gradient_explainer(model, x, label).abs().sum(1)
    return m / m.flatten(1).sum(1).view(-1, 1, 1)


def assert_in_ball(x_adv, x, eps):
    x01, adv01 = SYNTHETIC.denormalize(x), SYNTHETIC.denormalize(x_adv)
    assert x_adv.shape == x.shape
    assert float((adv01 - x01).abs().max()) <= eps + 1e-5
    assert float(adv01.min()) >= -1e-5 and float(adv01.max()) <= 1 + 1e-5
