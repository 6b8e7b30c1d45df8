"""RelEx (paper A): hand-computed steps, loss decrease, seeding invariants (chunk size, other images
of the call), unrolled gradients (finite differences), input checks, model hygiene, real nets."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from reliable_saliency.core.batching import image_seeds
from reliable_saliency.explainers import EXPLAINERS, get_explainer, relex, relex_loss

FAST = {"iterations": 4, "samples": 5}


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def tiny_cnn(activation=nn.ReLU, seed=0, classes=5):
    """For 3x8x8 inputs, float64."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), activation(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1), activation(), nn.Flatten(), nn.Linear(6 * 4 * 4, classes),
    ).double().eval()


@pytest.fixture
def case():
    x = torch.randn((3, 3, 8, 8), generator=gen(1), dtype=torch.float64)
    return tiny_cnn(), x, torch.tensor([0, 3, 4])


def draws(x, seeds, samples, iterations, init_scale=0.01):
    """Re-draw what the documented streams give: per image m0, then one noise block per iteration."""
    masks, noise = [], []
    for image, seed in zip(x, seeds):
        g = torch.Generator().manual_seed(seed)
        masks.append(init_scale * torch.rand(image.shape, generator=g).to(x.dtype))  # drawn in float32
        noise.append(torch.stack([torch.randn((samples, *image.shape), generator=g).to(x.dtype)
                                  for _ in range(iterations)]))
    return torch.stack(masks), torch.stack(noise, dim=1)  # (N, C, H, W), (T, N, S, C, H, W)


def noisy_copies(x, noise, noise_level=0.1):
    flat = x.flatten(1)
    sigma = noise_level * (flat.amax(1) - flat.amin(1))
    return x[:, None] + sigma.view(-1, 1, 1, 1, 1) * noise


# ----------------------------------------------------------------------------- the method


def test_first_two_steps_match_hand_computed_momentum_sgd(case):
    model, x, t = case
    lr, mu, lam1, lam2, s = 0.1, 0.99, 1e-2, 0.7, 4
    m, noise = draws(x, image_seeds(gen(5), 3), s, 2)
    velocity = torch.zeros_like(m)
    for step in range(2):
        m_leaf = m.clone().requires_grad_(True)
        loss = relex_loss(model, noisy_copies(x, noise[step]), m_leaf, t, lam1, lam2).sum()
        (g,) = torch.autograd.grad(loss, m_leaf)
        unit = g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)  # each image by its own norm
        velocity = mu * velocity + unit  # torch.optim.SGD: the first buffer is the gradient itself
        m = (m - lr * velocity).clamp(0, 1)
        got = relex(model, x, t, generator=gen(5), iterations=step + 1, samples=s, lambda1=lam1,
                    lambda2=lam2, batch_size=3)
        torch.testing.assert_close(got, m, rtol=1e-10, atol=1e-12)


def test_relex_loss_by_hand(case):
    model, x, t = case
    noisy = noisy_copies(x, torch.randn((3, 2, 3, 8, 8), generator=gen(2), dtype=x.dtype))
    m = torch.rand(x.shape, generator=gen(3), dtype=x.dtype)
    p = lambda inputs, c: model(inputs).softmax(1)[:, c]  # noqa: E731
    expected = torch.stack([
        (-p(noisy[i] * m[i], t[i]).log() - 0.5 * (1 - p(noisy[i] * (1 - m[i]), t[i]) + 1e-7).log()).mean()
        + 1e-3 * m[i].abs().sum()
        for i in range(3)
    ])
    torch.testing.assert_close(relex_loss(model, noisy, m, t, 1e-3, 0.5), expected)


def test_masks_in_unit_interval_and_loss_decreases(case):
    model, x, _ = case
    with torch.no_grad():
        model[-1].weight.mul_(10)  # confident logits, so that the mask has something to keep
    t = model(x).argmax(1)
    m0, _ = draws(x, image_seeds(gen(4), 3), 8, 1)
    fixed = noisy_copies(x, torch.randn((3, 64, 3, 8, 8), generator=gen(9), dtype=x.dtype))
    losses = [relex_loss(model, fixed, m0, t)]
    for iterations in (2, 10, 30):
        mask = relex(model, x, t, generator=gen(4), iterations=iterations, samples=8)
        assert mask.shape == x.shape and mask.dtype == x.dtype
        assert mask.min() >= 0 and mask.max() <= 1
        losses.append(relex_loss(model, fixed, mask, t))
    losses = torch.stack(losses)  # (checkpoints, images), on copies the optimisation never saw
    assert (losses[1:] < losses[:-1]).all() and (losses[-1] < 0.5 * losses[0]).all()


def test_masks_independent_of_chunk_size(case):
    """Same rows in the same order whatever the chunks; differences only from the model's own
    batch-size-dependent rounding (float64: about 1e-16)."""
    model, x, t = case
    runs = [relex(model, x, t, generator=gen(3), batch_size=b, **FAST) for b in (None, 1, 7, 10, 64)]
    for other in runs[1:]:
        torch.testing.assert_close(other, runs[0], rtol=1e-12, atol=1e-13)


def test_masks_independent_of_other_images_in_the_call(case):
    model, x, t = case
    pair = relex(model, x[:2], t[:2], generator=gen(6), **FAST)
    # image a: the first seed drawn from the same generator
    alone_a = relex(model, x[:1], t[:1], generator=gen(6), **FAST)
    torch.testing.assert_close(alone_a, pair[:1], rtol=1e-12, atol=1e-13)
    # image b: its own seed, passed explicitly (the call on [a, b] drew image_seeds(gen(6), 2))
    seeds = image_seeds(gen(6), 2)
    alone_b = relex(model, x[1:2], t[1:2], seeds=seeds[1:], **FAST)
    torch.testing.assert_close(alone_b, pair[1:], rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(relex(model, x[:2], t[:2], seeds=seeds, **FAST), pair, rtol=0, atol=0)
    # order of the images does not matter either when seeds travel with them
    swapped = relex(model, x[[1, 0]], t[[1, 0]], seeds=seeds[::-1], **FAST)
    torch.testing.assert_close(swapped, pair[[1, 0]], rtol=1e-12, atol=1e-13)


def test_generator_controls_randomness(case):
    model, x, t = case
    a, b = (relex(model, x, t, generator=gen(1), **FAST) for _ in range(2))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, relex(model, x, t, generator=gen(2), **FAST))


def test_registered_with_options():
    assert EXPLAINERS["relex"] is relex
    model = tiny_cnn()
    x = torch.randn((1, 3, 8, 8), generator=gen(0), dtype=torch.float64)
    explain = get_explainer("relex", **FAST)
    torch.testing.assert_close(explain(model, x, 1, generator=gen(0)),
                               relex(model, x, 1, generator=gen(0), **FAST), rtol=0, atol=0)
    with pytest.raises(ValueError, match="no option"):
        get_explainer("relex", steps=3)


# ----------------------------------------------------------------------------- create_graph


def test_create_graph_matches_finite_differences():
    model = tiny_cnn(lambda: nn.Softplus(beta=2.0))
    x = torch.randn((2, 3, 8, 8), generator=gen(1), dtype=torch.float64)
    options = {"iterations": 2, "samples": 3, "seeds": [11, 12]}
    weights = torch.randn(x.shape, generator=gen(2), dtype=x.dtype)
    direction = torch.randn(x.shape, generator=gen(3), dtype=x.dtype)
    x_var = x.clone().requires_grad_(True)
    mask = relex(model, x_var, torch.tensor([1, 2]), create_graph=True, **options)
    (grad,) = torch.autograd.grad((mask * weights).sum(), x_var)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    h = 1e-6
    plus, minus = (relex(model, x + sign * h * direction, torch.tensor([1, 2]), **options)
                   for sign in (1, -1))
    numeric = ((plus - minus) * weights).sum() / (2 * h)
    torch.testing.assert_close((grad * direction).sum(), numeric, rtol=1e-4, atol=1e-8)


def test_without_create_graph_no_graph_is_kept(case):
    model, x, t = case
    mask = relex(model, x.clone().requires_grad_(True), t, generator=gen(0), **FAST)
    assert not mask.requires_grad and mask.grad_fn is None


# ----------------------------------------------------------------------------- checks and hygiene


@pytest.mark.parametrize("option, value", [
    ("iterations", 0), ("samples", 0), ("lambda1", -1e-4), ("lambda2", -1.0), ("lr", 0.0),
    ("momentum", -0.1), ("momentum", 1.5), ("noise_level", -0.1), ("init_scale", 2.0),
    ("iterations", 2.5), ("lambda1", float("nan")), ("batch_size", 0), ("seeds", [1, 2]),
])
def test_bad_options_raise(case, option, value):
    model, x, t = case
    with pytest.raises(ValueError, match=option):
        relex(model, x, t, **{**FAST, option: value})


def test_bad_inputs_raise(case):
    model, x, t = case
    with pytest.raises(ValueError, match="N, C, H, W"):
        relex(model, x[0], 1)
    with pytest.raises(TypeError, match="float"):
        relex(model, x.long(), t)
    with pytest.raises(ValueError, match="shape"):
        relex(model, x, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="outside"):
        relex(model, x, torch.tensor([1, 2, 7]), **FAST)
    with pytest.raises(ValueError, match="NaN"):
        relex(model, x.clone().fill_(float("nan")), t)
    with pytest.raises(ValueError, match="either generator or seeds"):
        relex(model, x, t, generator=gen(0), seeds=[1, 2, 3])
    bn = nn.Sequential(nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(192, 5)).double()
    with pytest.raises(ValueError, match="training mode"):
        relex(bn, x, t)
    with pytest.raises(ValueError, match="x_noisy"):
        relex_loss(model, x, x, t)


def test_model_left_unmodified(case):
    model, x, t = case
    model[0].weight.requires_grad_(False)
    before = copy.deepcopy(model.state_dict())
    flags = [p.requires_grad for p in model.parameters()]
    relex(model, x, t, generator=gen(0), **FAST)
    relex(model, x.clone().requires_grad_(True), t, generator=gen(0), create_graph=True, iterations=1,
          samples=2)
    assert not model.training and [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_torchvision_models(name):
    """In-place ReLU and residual additions (ResNet-18), ReLU6 and BatchNorm in eval (MobileNetV2)."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None, num_classes=10).eval()
    x = torch.randn((2, 3, 32, 32), generator=gen(1))
    options = {"iterations": 2, "samples": 2, "generator": gen(0)}
    mask = relex(model, x, torch.tensor([1, 2]), batch_size=3, **options)
    assert mask.shape == x.shape and torch.isfinite(mask).all() and 0 <= mask.min() <= mask.max() <= 1
    options["generator"] = gen(0)
    torch.testing.assert_close(relex(model, x, torch.tensor([1, 2]), batch_size=8, **options), mask,
                               rtol=1e-4, atol=1e-5)
    assert not model.training and all(p.requires_grad and p.grad is None for p in model.parameters())


# ----------------------------------------------------------------------------- CUDA


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_and_cuda_agree(case):
    """Without noise and with m0 = 0 the run is deterministic; with noise, CUDA keeps the seeding
    invariants (its draws differ from the CPU's: each image's generator lives on x.device)."""
    model, x, t = case
    cuda_model = copy.deepcopy(model).cuda()
    fixed = {"iterations": 6, "samples": 3, "noise_level": 0.0, "init_scale": 0.0}
    cpu = relex(model, x, t, generator=gen(0), **fixed)
    cuda = relex(cuda_model, x.cuda(), t.cuda(), generator=gen(0), **fixed)
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-9, atol=1e-11)
    runs = [relex(cuda_model, x.cuda(), t.cuda(), seeds=[1, 2, 3], batch_size=b, **FAST) for b in (2, 64)]
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-12, atol=1e-13)
    alone = relex(cuda_model, x[2:].cuda(), t[2:].cuda(), seeds=[3], **FAST)
    torch.testing.assert_close(alone, runs[0][2:], rtol=1e-12, atol=1e-13)
