"""Paper D's reconstruction (reliable_saliency.evaluation.reconstruction): context weights against
scipy, the z search against a NumPy port of the authors' Nesterov loop with analytic gradients,
untouched context pixels, batching invariants, region selection and class retention."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from helpers import gen
from reliable_saliency import models
from reliable_saliency.core.inputs import CIFAR10, InputSpace
from reliable_saliency.evaluation import reconstruction as rec

TANH = InputSpace("tanh", (0.5,) * 3, (0.5,) * 3)  # normalised space == the GAN's space


def box_hole(n=2, size=8, top=2, left=3, height=3, width=4):
    hole = torch.zeros((n, 1, size, size), dtype=torch.bool)
    hole[:, :, top:top + height, left:left + width] = True
    return hole


@pytest.mark.parametrize("k", [1, 3, 4, 7, 20])
def test_context_weights_match_scipy_symmetric_convolution(k):
    from scipy.signal import convolve2d

    hole = torch.rand((3, 1, 9, 7), generator=gen(k)) < 0.3
    got = rec.context_weights(hole, k)
    for i in range(3):
        keep = (~hole[i, 0]).double().numpy()
        ref = keep * convolve2d(1 - keep, np.ones((k, k)) / k**2, mode="same", boundary="symm")
        np.testing.assert_allclose(got[i, 0].numpy(), ref, rtol=1e-6, atol=1e-7)


class LinearGenerator(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.a, self.latent_size = nn.Parameter(a), a.shape[0]

    def forward(self, z):
        return (z @ self.a).view(-1, 3, 8, 8)


class LinearDiscriminator(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.d = nn.Parameter(d)

    def forward(self, images):
        return images.flatten(1) @ self.d


def linear_gan(latent=5):
    g = gen(0)
    return (LinearGenerator(0.2 * torch.randn((latent, 192), generator=g, dtype=torch.float64)),
            LinearDiscriminator(0.1 * torch.randn(192, generator=g, dtype=torch.float64)))


def test_latent_search_matches_the_authors_nesterov_loop_with_analytic_gradients():
    """grad_z [sum W |A^T z - y| + lam softplus(-d . G(z))] = A (W sign(G - y) - lam sigmoid(-d . G) d)."""
    gan_g, gan_d = linear_gan()
    x = torch.rand((2, 3, 8, 8), generator=gen(1), dtype=torch.float64) * 1.6 - 0.8
    hole, lam, lr, m, steps = box_hole(), 0.3, 0.01, 0.9, 25
    options = dict(input_space=TANH, samples=4, lr=lr, momentum=m, perceptual_weight=lam, kernel_size=3)
    start = rec.inpaint(gan_g, gan_d, x, hole, iterations=0, generator=gen(2), return_details=True, **options)
    got = rec.inpaint(gan_g, gan_d, x, hole, iterations=steps, generator=gen(2), return_details=True, **options)
    a, d = gan_g.a.detach().numpy(), gan_d.d.detach().numpy()
    w = rec.context_weights(hole, 3).expand(-1, 3, -1, -1).flatten(1).double().numpy()
    for i in range(2):
        z, v, y = start.latents[i].numpy().copy(), 0.0, x[i].flatten().numpy()
        for _ in range(steps):
            out = z @ a
            sig = 1 / (1 + np.exp(out @ d))
            grad = (w[i] * np.sign(out - y) - lam * sig[:, None] * d) @ a.T
            previous = np.copy(v)
            v = m * v - lr * grad
            z += -m * previous + (1 + m) * v
            z = np.clip(z, -1, 1)
        np.testing.assert_allclose(got.latents[i].numpy(), z, rtol=1e-9, atol=1e-10)
    assert (start.latents.abs() <= 1).all() and start.latents.std() > 0.4  # uniform in [-1, 1]


def tiny_dcgan():
    torch.manual_seed(0)
    return models.build_dcgan(latent_size=8, width=4, channels=3, size=8)


def test_context_untouched_hole_generated_and_independent_of_chunking():
    gan_g, gan_d = tiny_dcgan()
    x = CIFAR10.normalize(torch.rand((3, 3, 8, 8), generator=gen(3)))
    hole = box_hole(3)
    runs = [rec.inpaint(gan_g, gan_d, x, hole, input_space=CIFAR10, samples=5, iterations=6, generator=gen(4),
                        batch_size=b, return_details=True) for b in (4, 64)]
    images = runs[0].images
    assert images.shape == (3, 5, 3, 8, 8)
    context = (~hole)[:, None].expand_as(images)
    assert torch.equal(images[context], x[:, None].expand_as(images)[context])  # bit for bit
    torch.testing.assert_close(images[~context], runs[0].generated[~context], rtol=0, atol=0)
    with torch.no_grad():
        expected = CIFAR10.normalize((gan_g(runs[0].latents.flatten(0, 1)) + 1) / 2).view_as(images)
    torch.testing.assert_close(runs[0].generated, expected)
    for key in ("images", "latents", "loss"):
        torch.testing.assert_close(getattr(runs[1], key), getattr(runs[0], key), rtol=1e-5, atol=1e-6)
    plain = rec.inpaint(gan_g, gan_d, x, hole, input_space=CIFAR10, samples=5, iterations=6, generator=gen(4))
    torch.testing.assert_close(plain, images, rtol=0, atol=0)


def test_search_recovers_a_context_the_generator_can_make():
    gan_g, gan_d = tiny_dcgan()
    with torch.no_grad():
        target = gan_g(0.5 * models.uniform_latents(2, 8, gen(5)))
    x = TANH.normalize((target + 1) / 2)
    hole = box_hole(2, left=2, width=3)
    options = dict(input_space=TANH, samples=6, generator=gen(6), return_details=True, perceptual_weight=0.0)
    before = rec.inpaint(gan_g, gan_d, x, hole, iterations=0, **options).loss
    after = rec.inpaint(gan_g, gan_d, x, hole, iterations=150, **options).loss
    assert (after.mean(1) < 0.5 * before.mean(1)).all()  # worst of 16 images and seeds: 0.41


def test_nets_are_left_unmodified():
    gan_g, gan_d = tiny_dcgan()
    gan_d.body[0].weight.requires_grad_(False)
    states = [copy.deepcopy(net.state_dict()) for net in (gan_g, gan_d)]
    flags = [p.requires_grad for p in (*gan_g.parameters(), *gan_d.parameters())]
    x = TANH.normalize(torch.rand((1, 3, 8, 8), generator=gen(7)))
    rec.inpaint(gan_g, gan_d, x, box_hole(1), input_space=TANH, samples=2, iterations=3, generator=gen(0))
    assert flags == [p.requires_grad for p in (*gan_g.parameters(), *gan_d.parameters())]
    for net, state in zip((gan_g, gan_d), states):
        assert not net.training and all(p.grad is None for p in net.parameters())
        for key, value in net.state_dict().items():
            torch.testing.assert_close(value, state[key], rtol=0, atol=0)


def test_salient_region_takes_the_top_pixels_and_breaks_ties_at_random():
    maps = torch.arange(16, dtype=torch.float64).view(1, 1, 4, 4).repeat(2, 1, 1, 1)
    top = rec.salient_region(maps, 0.25)
    assert top.shape == (2, 1, 4, 4) and top.sum().item() == 8 and top[:, :, 3].all()
    assert rec.salient_region(maps, 0.25, least=True)[:, :, 0].all()
    flat = torch.zeros((200, 1, 4, 4))  # all tied: each pixel chosen about as often
    counts = rec.salient_region(flat, 0.25, generator=gen(8)).float().mean(0)
    assert (counts - 0.25).abs().max() < 0.12 and (rec.salient_region(flat, 0.25).sum((1, 2, 3)) == 4).all()
    shifted = rec.shifted_region(top, gen(9))
    assert torch.equal(shifted.sum((1, 2, 3)), top.sum((1, 2, 3)))
    assert any(torch.equal(shifted[0], top[0].roll((dy, dx), (-2, -1))) for dy in range(4) for dx in range(4))


def test_class_retention_counts_the_variations_that_keep_the_class():
    class Brightness(nn.Module):  # class 1 when the mean is positive
        def forward(self, x):
            m = x.flatten(1).mean(1)
            return torch.stack([-m, m], 1)

    variations = torch.full((2, 4, 3, 8, 8), -1.0)
    variations[0, :3] = 1.0
    variations[1, 0] = 1.0
    got = rec.class_retention(Brightness(), variations, torch.tensor([1, 0]), batch_size=3)
    torch.testing.assert_close(got, torch.tensor([0.75, 0.75]))


def test_bad_inputs_give_clear_errors():
    gan_g, gan_d = tiny_dcgan()
    x = TANH.normalize(torch.rand((2, 3, 8, 8), generator=gen(0)))
    hole = box_hole()
    cases = [
        (dict(hole=hole[:1]), ValueError, "hole must have shape"),
        (dict(hole=hole.float() * 0.5), ValueError, "only 0 and 1"),
        (dict(samples=0), ValueError, "samples must be an int >= 1"),
        (dict(iterations=-1), ValueError, "iterations must be an int >= 0"),
        (dict(momentum=1.5), ValueError, "momentum"),
        (dict(kernel_size=0), ValueError, "kernel_size"),
        (dict(input_space=None), TypeError, "input_space must be the InputSpace"),
    ]
    for change, error, message in cases:
        arguments = dict(hole=hole, input_space=TANH, samples=2, iterations=1)
        arguments.update(change)
        with pytest.raises(error, match=message):
            rec.inpaint(gan_g, gan_d, x, arguments.pop("hole"), **arguments)
    with pytest.raises(ValueError, match="training mode"):
        rec.inpaint(gan_g.train(), gan_d, x, hole, input_space=TANH)
    gan_g.eval()
    with pytest.raises(ValueError, match="fraction"):
        rec.salient_region(torch.rand((2, 1, 4, 4)), 1.5)
    with pytest.raises(ValueError, match="size must be 4"):
        models.build_dcgan(size=28)
    with pytest.raises(ValueError, match=r"z must have shape \(N, 8\)"):
        gan_g(torch.zeros((2, 5)))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_inpainting_keeps_the_context_and_the_chunking_invariant():
    gan_g, gan_d = (net.cuda() for net in tiny_dcgan())
    x = CIFAR10.normalize(torch.rand((2, 3, 8, 8), generator=gen(3))).cuda()
    hole = box_hole(2).cuda()
    runs = [rec.inpaint(gan_g, gan_d, x, hole, input_space=CIFAR10, samples=4, iterations=5,
                        generator=torch.Generator("cuda").manual_seed(0), batch_size=b) for b in (3, 64)]
    context = (~hole)[:, None].expand_as(runs[0])
    assert torch.equal(runs[0][context], x[:, None].expand_as(runs[0])[context])
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-4, atol=1e-5)
