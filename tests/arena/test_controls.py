"""The arena's controls behave as controls: the random map knows neither the image nor the model,
the edge map knows the image only (and is the Sobel magnitude scikit-image computes), the smoothed
gradient is exactly the chapters' blur of |gradient|."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from skimage.filters import sobel

from reliable_saliency.arena import edge_map, random_map, smoothed_gradient, sobel_magnitude
from reliable_saliency.core.inputs import SYNTHETIC
from reliable_saliency.core.references import gaussian_blur
from reliable_saliency.explainers import get_explainer


def test_random_map_depends_on_its_seed_only(toy):
    models, x, y = toy
    relu, soft = models["relu"], models["soft"]
    a = random_map(relu, x, y, seeds=[1, 2, 3, 4])
    assert a.shape == (4, 1, 16, 16) and float(a.min()) >= 0 and float(a.max()) < 1
    assert torch.equal(a, random_map(soft, torch.flip(x, [0]), y, seeds=[1, 2, 3, 4]))  # other model, other images
    assert torch.equal(a[2:3], random_map(relu, x[:1], y[:1], seeds=[3]))  # an image alone: the same map
    assert not torch.equal(a[0], a[1])
    # uncorrelated with the image: Spearman with the image's brightness near 0 over many seeds
    brightness = SYNTHETIC.denormalize(x).sum(1).flatten(1)
    many = random_map(relu, x.repeat(25, 1, 1, 1), y.repeat(25), seeds=list(range(100))).flatten(1)
    rho = np.array([spearmanr(m, b).statistic for m, b in zip(many.numpy(), brightness.repeat(25, 1).numpy())])
    assert abs(rho.mean()) < 0.02 and rho.std() < 0.1  # 256 pixels: the null's sd is 1/sqrt(255) = 0.063


def test_edge_map_is_the_model_free_sobel_magnitude(toy):
    models, x, y = toy
    maps = edge_map(models["relu"], x, y)
    assert torch.equal(maps, edge_map(models["soft"], x, (y + 1) % 4))  # no model, no target in the map
    image = SYNTHETIC.denormalize(x).double()
    # scikit-image: sqrt((h^2 + v^2) / 2) with kernels normalised by 4, reflect mode, per channel
    oracle = np.stack([sum(sobel(channel.numpy()) for channel in img) for img in image])
    ours = sobel_magnitude(image)[:, 0].numpy()
    np.testing.assert_allclose(ours, oracle * 4 * np.sqrt(2), rtol=1e-6, atol=1e-5)
    # differentiable (the attacks aim at it): a gradient that is finite everywhere, flat regions too
    flat = torch.zeros(1, 3, 8, 8, requires_grad=True)
    (grad,) = torch.autograd.grad(sobel_magnitude(flat).sum(), flat)
    assert bool(torch.isfinite(grad).all())
    x_grad = x[:1].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(edge_map(models["relu"], x_grad, y[:1], create_graph=True).sum(), x_grad)
    assert bool(grad.abs().sum() > 0)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_smoothed_gradient_is_the_blur_of_the_absolute_gradient(toy, sigma):
    models, x, y = toy
    model = models["soft"]
    grad = get_explainer("gradient")(model, x, y)
    expected = gaussian_blur(grad.abs().sum(1, keepdim=True), sigma)
    torch.testing.assert_close(smoothed_gradient(model, x, y, sigma=sigma), expected, rtol=0, atol=0)
    assert torch.equal(smoothed_gradient(model, x, y, sigma=0), grad.abs().sum(1, keepdim=True))
    x_grad = x.clone().requires_grad_(True)
    m = smoothed_gradient(model, x_grad, y, sigma=sigma, create_graph=True)
    (second,) = torch.autograd.grad(m.sum(), x_grad)
    assert bool(second.abs().sum() > 0)  # a Softplus model: the attack has a gradient
