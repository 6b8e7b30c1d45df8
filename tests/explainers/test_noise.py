"""The noise family (reliable_saliency.explainers.noise: smoothgrad, smoothgrad_squared, vargrad)
against captum with identical noise and against captum's NoiseTunnel in distribution."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from helpers import gen
from helpers.explainers import images, tiny_cnn
from reliable_saliency import explainers
from reliable_saliency.explainers import EXPLAINERS

captum_attr = pytest.importorskip("captum.attr")


def _noise_reference(x, generator_seed, samples, noise_level):
    """The documented noise: one seed per image from the caller's generator, then
    randn((samples, C, H, W)) from a generator seeded with it; std noise_level * (max - min)."""
    seeds = torch.randint(0, 2**62, (x.shape[0],), generator=gen(generator_seed)).tolist()
    out = []
    for xi, seed in zip(x, seeds):
        eps = torch.randn((samples, *x.shape[1:]), generator=gen(seed)).to(x.dtype)  # drawn in float32
        out.append(xi + noise_level * (xi.max() - xi.min()) * eps)
    return out


def test_noise_methods_match_captum_saliency_with_identical_noise(cnn_case):
    model, x, t = cnn_case
    saliency = captum_attr.Saliency(copy.deepcopy(model))
    noisy = _noise_reference(x, 7, 11, 0.2)
    grads = [
        saliency.attribute(z.clone().requires_grad_(), target=int(ti), abs=False).numpy()
        for z, ti in zip(noisy, t)
    ]
    refs = {
        "smoothgrad": np.stack([g.mean(0) for g in grads]),
        "smoothgrad_squared": np.stack([(g**2).mean(0) for g in grads]),
        "vargrad": np.stack([g.var(0) for g in grads]),
    }
    for name, ref in refs.items():
        got = EXPLAINERS[name](model, x, t, samples=11, noise_level=0.2, generator=gen(7), batch_size=4)
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-9, atol=1e-12, err_msg=name)


def test_noise_methods_match_captum_noise_tunnel_in_distribution(rng):
    """Independent noise: ours and captum's NoiseTunnel agree within 6 standard errors, estimated
    from explicit gradients at noisy points; captum's stdevs is absolute, so one image at a time."""
    model = tiny_cnn(nn.Tanh)
    x, target, samples, level = images(rng, 2), [1, 2], 600, 0.5
    tunnel = captum_attr.NoiseTunnel(captum_attr.Saliency(copy.deepcopy(model)))
    saliency = captum_attr.Saliency(copy.deepcopy(model))
    for i in range(2):
        xi = x[i : i + 1]
        sigma = float(level * (xi.max() - xi.min()))
        noisy = xi + sigma * torch.randn((samples, *xi.shape[1:]), generator=rng).to(xi.dtype)
        g = saliency.attribute(noisy.requires_grad_(), target=target[i], abs=False)
        centred = g - g.mean(0)
        se = {
            "smoothgrad": g.var(0).div(samples).sqrt(),
            "smoothgrad_squared": (g**2).var(0).div(samples).sqrt(),
            "vargrad": ((centred**4).mean(0) - centred.var(0) ** 2).clamp(min=0).div(samples).sqrt(),
        }
        kinds = (("smoothgrad", "smoothgrad"), ("smoothgrad_squared", "smoothgrad_sq"), ("vargrad", "vargrad"))
        for name, nt_type in kinds:
            torch.manual_seed(100 + i)
            ref = tunnel.attribute(
                xi, nt_type=nt_type, nt_samples=samples, stdevs=sigma, target=target[i], abs=False
            )
            got = EXPLAINERS[name](model, xi, target[i], samples=samples, noise_level=level, generator=rng)
            bound = 6 * np.sqrt(2) * se[name] + 1e-9
            assert bool(((got - ref).abs()[0] <= bound).all()), name
        plain = explainers.gradient(model, xi, target[i])
        smooth = explainers.smoothgrad(model, xi, target[i], samples=samples, noise_level=level, generator=rng)
        effect = (smooth - plain).abs()[0] > 6 * np.sqrt(2) * se["smoothgrad"]
        assert bool(effect.any()), "noise had no effect"


@pytest.mark.parametrize("name", ["smoothgrad", "smoothgrad_squared", "vargrad"])
def test_per_image_seeds_make_a_map_independent_of_the_batch_and_its_order(name):
    from reliable_saliency import models
    from reliable_saliency.explainers import get_explainer

    torch.manual_seed(0)
    model = models.build("lenet").eval()
    x = model.input_space.normalize(torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2)))
    explain = get_explainer(name, samples=4)
    seeds = [11, 22, 33]
    together = explain(model, x, 1, seeds=seeds)
    reordered = explain(model, x[[2, 0, 1]], 1, seeds=[33, 11, 22])
    alone = explain(model, x[1:2], 1, seeds=[22])
    torch.testing.assert_close(reordered, together[[2, 0, 1]])
    torch.testing.assert_close(alone, together[1:2])
    with pytest.raises(ValueError, match="either generator or seeds"):
        explain(model, x, 1, seeds=seeds, generator=torch.Generator())
    with pytest.raises(ValueError, match="one per image"):
        explain(model, x, 1, seeds=[1, 2])
