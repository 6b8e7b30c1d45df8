"""Paper E's attribution-robustness measures (reliable_saliency.evaluation.attribution_robustness):
closed forms on linear and quadratic models, the Hessian-vector product against autograd's Hessian,
the neighbours' distribution and clamping, chunk independence, the cosd bound, the keep-top-r
insertion against the authors' masking, real architectures."""

from __future__ import annotations

import pytest
import torch
from scipy import stats
from torch import nn

from helpers import gen
from helpers.evaluation import tiny_cnn
from reliable_saliency import models
from reliable_saliency.core.inputs import CIFAR10, IMAGENET
from reliable_saliency.evaluation.attribution_robustness import (
    DIAGNOSTICS, alignment_diagnostics, cosd_upper_bound, cosine_distance, gradient_map,
    hessian_vector_product, insertion_curve, random_perturbation_similarity,
)

STD = torch.tensor(CIFAR10.std, dtype=torch.float64).view(1, 3, 1, 1)


def images(rng, n=3, size=8, dtype=torch.float64):
    """Normalised CIFAR-space images, with some saturated pixels (0 and 1) to exercise clamping."""
    x01 = torch.rand((n, 3, size, size), generator=rng, dtype=dtype)
    x01[:, :, 0, :2] = 0.0
    x01[:, :, -1, -2:] = 1.0
    return CIFAR10.normalize(x01)


class Linear(nn.Module):
    def __init__(self, d=192, classes=4, seed=0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn((classes, d), generator=gen(seed), dtype=torch.float64))
        self.input_space = CIFAR10

    def forward(self, x):
        return x.flatten(1) @ self.weight.T


class Quadratic(nn.Module):
    """logit_k = 0.5 x^T A_k x + b_k^T x: gradient A_k x + b_k, Hessian A_k."""

    def __init__(self, d=48, classes=3, seed=0):
        super().__init__()
        m = torch.randn((classes, d, d), generator=gen(seed), dtype=torch.float64)
        self.a = nn.Parameter(m + m.transpose(1, 2))
        self.b = nn.Parameter(torch.randn((classes, d), generator=gen(seed + 1), dtype=torch.float64))
        self.input_space = CIFAR10

    def forward(self, x):
        f = x.flatten(1)
        return 0.5 * torch.einsum("ni,kij,nj->nk", f, self.a, f) + f @ self.b.T


def softplus_cnn(seed=0):
    model = tiny_cnn(seed).double()
    model.input_space = CIFAR10
    return model


def test_maps_of_a_linear_model_do_not_move(rng):
    model = Linear()
    x, y = images(rng), torch.tensor([0, 3, 1])
    sim = random_perturbation_similarity(model, x, y, eps=16 / 255, draws=3, generator=gen(1))
    for norm in ("max", "sum"):
        for name in ("cosine", "pearson", "ssim"):
            torch.testing.assert_close(sim[f"{norm}_{name}"], torch.ones(3, dtype=torch.float64))
        torch.testing.assert_close(sim[f"{norm}_mse"], torch.zeros(3, dtype=torch.float64))
    diag = alignment_diagnostics(model, x, y, draws=3, generator=gen(1))
    torch.testing.assert_close(diag["grad_norm"], model.weight[y].norm(dim=1).detach())
    for name in ("hvp_norm", "hvp_ratio", "l2", "cosd", "cosd_bound"):
        torch.testing.assert_close(diag[name], torch.zeros(3, dtype=torch.float64), atol=1e-12, rtol=0)


def test_quadratic_model_closed_forms(rng):
    model = Quadratic()
    x, y = images(rng, size=4), torch.tensor([2, 0, 1])
    v = torch.randn(x.shape, generator=rng, dtype=torch.float64)
    with torch.no_grad():
        expected = torch.einsum("nij,nj->ni", model.a[y], v.flatten(1)).view_as(x)
        grad = torch.einsum("nij,nj->ni", model.a[y], x.flatten(1)) + model.b[y]
    torch.testing.assert_close(hessian_vector_product(model, x, y, v, batch_size=2), expected)
    # the Hessian is constant: H r is exactly the gradient difference, for each single draw
    diag = alignment_diagnostics(model, x, y, eps=8 / 255, draws=1, generator=gen(2))
    torch.testing.assert_close(diag["hvp_norm"], diag["l2"].sqrt())
    torch.testing.assert_close(diag["grad_norm"], grad.norm(dim=1))
    torch.testing.assert_close(diag["hvp_ratio"], diag["hvp_norm"] / diag["neighbour_grad_norm"])
    assert bool((diag["cosd"] <= diag["cosd_bound"]).all())


def test_hessian_vector_product_matches_autograd_hessian(rng):
    model = softplus_cnn()
    x, y = images(rng, n=2), torch.tensor([1, 4])
    v = torch.randn(x.shape, generator=rng, dtype=torch.float64)
    ours = hessian_vector_product(model, x, y, v, batch_size=1)
    for i in range(2):
        h = torch.autograd.functional.hessian(lambda z: model(z)[0, y[i]], x[i:i + 1]).reshape(192, 192)
        torch.testing.assert_close(ours[i].flatten(), h @ v[i].flatten())


def _recorded_neighbours(measure, noise, rng, eps=8 / 255, draws=40):
    model = softplus_cnn()
    x = images(rng, n=2)
    seen = []
    handle = model.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
    out = measure(model, x, torch.tensor([0, 2]), eps=eps, draws=draws, noise=noise, generator=gen(3),
                  batch_size=16)
    handle.remove()
    # neighbours are the model inputs that are not copies of a clean image
    inputs = torch.cat(seen)
    clean = (inputs.unsqueeze(1) == x.unsqueeze(0)).flatten(2).all(2).any(1)
    neighbours = inputs[~clean]
    assert neighbours.shape[0] == 2 * draws
    return x, neighbours.view(2, draws, *x.shape[1:]), out


@pytest.mark.parametrize("noise", ["uniform", "gaussian"])
def test_neighbours_are_per_channel_scaled_and_clamped(rng, noise):
    eps = 8 / 255
    measure = random_perturbation_similarity if noise == "uniform" else alignment_diagnostics
    x, neighbours, out = _recorded_neighbours(measure, noise, rng, eps)
    CIFAR10.check(neighbours.flatten(0, 1), atol=1e-12)  # inside the valid range
    delta = (neighbours - x.unsqueeze(1)) * STD.unsqueeze(1) / eps  # in units of eps
    x01 = CIFAR10.denormalize(x).unsqueeze(1).expand_as(delta)
    interior = delta[(x01 > 5 * eps) & (x01 < 1 - 5 * eps)]  # pixels that no draw pushes out of range
    if noise == "uniform":
        assert delta.abs().max() <= 1 + 1e-9
        assert stats.kstest(interior.numpy(), stats.uniform(-1, 2).cdf).pvalue > 1e-3
    else:
        assert stats.kstest(interior.numpy(), stats.norm.cdf).pvalue > 1e-3
    saturated = delta[:, :, :, 0, :2]  # pixels at 0 can only move up
    assert bool((saturated >= 0).all()) and bool((saturated > 0).any())
    pixels = (neighbours - x.unsqueeze(1)).abs() * STD.unsqueeze(1)
    torch.testing.assert_close(out["perturbation_max"], pixels.flatten(2).amax(2).amax(1))
    torch.testing.assert_close(out["perturbation_mean"], pixels.flatten(2).mean(2).mean(1))


def test_results_do_not_depend_on_chunks_or_companion_images(rng):
    model = softplus_cnn()
    x, y = images(rng, n=4), torch.tensor([0, 1, 2, 3])
    for measure in (random_perturbation_similarity, alignment_diagnostics):
        reference = measure(model, x, y, draws=3, generator=gen(5))
        for batch_size in (1, 5):
            chunked = measure(model, x, y, draws=3, generator=gen(5), batch_size=batch_size)
            for key in reference:
                torch.testing.assert_close(chunked[key], reference[key])
        first_two = measure(model, x[:2], y[:2], draws=3, generator=gen(5))
        for key in reference:
            torch.testing.assert_close(first_two[key], reference[key][:2])


def test_similarity_falls_and_misalignment_grows_with_eps(rng):
    torch.manual_seed(0)
    model = models.build("lenet", softplus_beta=3.0)
    x, y = images(rng, n=4, size=32, dtype=torch.float32), torch.tensor([0, 1, 2, 3])
    small = random_perturbation_similarity(model, x, y, eps=4 / 255, draws=4, generator=gen(0))
    large = random_perturbation_similarity(model, x, y, eps=16 / 255, draws=4, generator=gen(0))
    assert small["max_cosine"].mean() > large["max_cosine"].mean()
    assert small["max_mse"].mean() < large["max_mse"].mean()
    diag = alignment_diagnostics(model, x, y, eps=4 / 255, draws=4, generator=gen(0))
    assert set(diag) == set(DIAGNOSTICS)
    assert bool((diag["cosd"] <= diag["cosd_bound"]).all()) and bool((diag["hvp_norm"] > 0).all())


def test_cosd_bound_on_random_vectors(rng):
    a = torch.randn((500, 30), generator=rng, dtype=torch.float64)
    scale = torch.exp(2 * torch.randn((500, 1), generator=rng, dtype=torch.float64))
    mix = torch.rand((500, 1), generator=rng, dtype=torch.float64) * 4 - 2  # from opposite to aligned
    b = scale * (mix * a + torch.randn((500, 30), generator=rng, dtype=torch.float64))
    cosd, bound = cosine_distance(a, b), cosd_upper_bound(a, b)
    assert bool((cosd >= 0).all() and (cosd <= 1).all())
    assert bool((cosd <= bound * (1 + 1e-12)).all())
    equal_norms = b / b.norm(dim=1, keepdim=True) * a.norm(dim=1, keepdim=True)  # the bound is tight there
    torch.testing.assert_close(cosd_upper_bound(a, equal_norms), cosine_distance(a, equal_norms))
    torch.testing.assert_close(cosine_distance(3.0 * a, b), cosd)  # cosd is scale invariant
    torch.testing.assert_close(cosd_upper_bound(3.0 * a, 3.0 * b), bound)
    assert cosd_upper_bound(torch.zeros(1, 3), torch.ones(1, 3)).isnan().all()


def test_gradient_map_normalisations():
    g = torch.tensor([[[[1.0, -3.0]], [[-1.0, 1.0]]]])  # (1, 2, 1, 2)
    torch.testing.assert_close(gradient_map(g, "max"), torch.tensor([[[0.5, 1.0]]]))
    torch.testing.assert_close(gradient_map(g, "sum"), torch.tensor([[[1 / 3, 2 / 3]]]))
    assert torch.equal(gradient_map(torch.zeros(1, 2, 1, 2)), torch.zeros(1, 1, 2))


def test_insertion_curve_matches_the_authors_keep_mask(rng):
    model = tiny_cnn(1).double()
    x = torch.randn((3, 3, 8, 8), generator=rng, dtype=torch.float64)
    maps = torch.rand((3, 8, 8), generator=rng, dtype=torch.float64)
    y = torch.tensor([0, 1, 4])
    curve = insertion_curve(model, x, maps, y, batch_size=7)
    assert curve.shape == (3, 20)
    flat = maps.flatten(1)
    order = flat.argsort(dim=1, descending=True)
    for i in range(20):  # the authors' AOPC perturbation: keep pixels above the threshold value
        kept = int(i / 20 * 64)
        threshold = flat.gather(1, order[:, kept:kept + 1]).view(3, 1, 1)
        masked = x * (maps > threshold).unsqueeze(1)
        with torch.no_grad():
            expected = model(masked).softmax(1).gather(1, y[:, None])[:, 0]
        torch.testing.assert_close(curve[:, i], expected)


def test_real_architectures_are_left_untouched():
    torchvision = pytest.importorskip("torchvision")
    x = IMAGENET.normalize(torch.rand((2, 3, 32, 32), generator=gen(0)))
    y = torch.tensor([1, 7])
    for build in (torchvision.models.resnet18, torchvision.models.mobilenet_v2):
        torch.manual_seed(0)
        model = build(weights=None, num_classes=10).eval()
        model.input_space = IMAGENET
        flags = [p.requires_grad for p in model.parameters()]
        sim = random_perturbation_similarity(model, x, y, draws=2, generator=gen(1))
        diag = alignment_diagnostics(model, x, y, draws=2, generator=gen(1))
        assert bool(torch.isfinite(sim["max_cosine"]).all()) and bool((sim["max_cosine"] > 0).all())
        assert torch.equal(diag["hvp_norm"], torch.zeros(2))  # piecewise linear: H = 0
        assert bool((diag["cosd"] <= diag["cosd_bound"]).all())
        assert not model.training and [p.requires_grad for p in model.parameters()] == flags
        assert all(p.grad is None for p in model.parameters())
        assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())


def test_bad_arguments_give_clear_errors(rng):
    model, x, y = softplus_cnn(), images(rng, n=1), torch.tensor([0])
    with pytest.raises(ValueError, match="did you mean 4/255"):
        random_perturbation_similarity(model, x, y, eps=4)
    with pytest.raises(ValueError, match="draws must be an int >= 1"):
        alignment_diagnostics(model, x, y, draws=0)
    with pytest.raises(ValueError, match="unknown noise 'laplace'"):
        alignment_diagnostics(model, x, y, noise="laplace")
    with pytest.raises(ValueError, match="input space"):
        random_perturbation_similarity(tiny_cnn().double(), x, y)
    with pytest.raises(ValueError, match="v must be a tensor of the shape of x"):
        hessian_vector_product(model, x, y, torch.zeros(1, 3))
    with pytest.raises(ValueError, match="class indices outside"):
        random_perturbation_similarity(model, x, torch.tensor([9]))
    with pytest.raises(ValueError, match="unknown normalisation"):
        gradient_map(torch.zeros(1, 3, 2, 2), "l1")
