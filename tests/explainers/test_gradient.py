"""The gradient family (reliable_saliency.explainers.gradient: gradient, grad_x_input, integrated
gradients) against closed forms (linear, quadratic models) and captum. The linear closed forms
also cover the noise family and the differentiated output kinds (logit / probability /
log-probability)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from helpers.explainers import Linear
from reliable_saliency import explainers
from reliable_saliency.explainers import EXPLAINERS

captum_attr = pytest.importorskip("captum.attr")


class Quadratic(nn.Module):
    """logit_k = x^T A_k x (x flattened)."""

    def __init__(self, a):
        super().__init__()
        self.a = a

    def forward(self, x):
        f = x.flatten(1)
        return torch.einsum("ni,kij,nj->nk", f, self.a, f)


# ----------------------------------------------------------------------------- closed forms


@pytest.fixture
def linear(rng):
    weight = torch.randn((4, 3 * 5 * 5), generator=rng, dtype=torch.float64)
    bias = torch.randn(4, generator=rng, dtype=torch.float64)
    return Linear(weight, bias).eval(), weight, bias


def test_linear_gradient_family_closed_forms(linear, rng):
    model, weight, bias = linear
    x = torch.randn((2, 3, 5, 5), generator=rng, dtype=torch.float64)
    target = torch.tensor([1, 3])
    w = weight[target].view_as(x)
    torch.testing.assert_close(explainers.gradient(model, x, target), w)
    torch.testing.assert_close(explainers.grad_x_input(model, x, target), w * x)
    for method in explainers.IG_METHODS:
        ig = explainers.integrated_gradients(model, x, target, steps=7, method=method)
        torch.testing.assert_close(ig, x * w)
    mean = x.mean(dim=(2, 3), keepdim=True)
    ig = explainers.integrated_gradients(model, x, target, steps=3, baseline="mean")
    torch.testing.assert_close(ig, (x - mean) * w)
    b = torch.randn((3, 5, 5), generator=rng, dtype=torch.float64)
    ig = explainers.integrated_gradients(model, x, target, baseline=b, steps=2)
    torch.testing.assert_close(ig, (x - b) * w)
    sg_options = {"samples": 6, "noise_level": 0.3}
    torch.testing.assert_close(explainers.smoothgrad(model, x, target, generator=rng, **sg_options), w)
    sg2 = explainers.smoothgrad_squared(model, x, target, generator=rng, **sg_options)
    torch.testing.assert_close(sg2, w * w)
    var = explainers.vargrad(model, x, target, generator=rng, **sg_options)
    torch.testing.assert_close(var, torch.zeros_like(x), atol=1e-20, rtol=0)


def test_linear_output_kinds_closed_forms(linear, rng):
    model, weight, bias = linear
    x = torch.randn((2, 3, 5, 5), generator=rng, dtype=torch.float64)
    target = torch.tensor([0, 2])
    prob = torch.softmax(x.flatten(1) @ weight.T + bias, dim=1)
    expected_w = prob @ weight  # E_p[w]
    dlogp = (weight[target] - expected_w).view_as(x)
    got = explainers.gradient(model, x, target, output="log_probability")
    torch.testing.assert_close(got, dlogp)
    got = explainers.gradient(model, x, target, output="probability")
    torch.testing.assert_close(got, prob[[0, 1], target].view(-1, 1, 1, 1) * dlogp)


# ----------------------------------------------------------------------------- second order


@pytest.fixture
def quadratic(rng):
    a = torch.randn((3, 8, 8), generator=rng, dtype=torch.float64)
    x = torch.randn((1, 2, 2, 2), generator=rng, dtype=torch.float64)
    return a, x


def test_quadratic_maps_and_their_jacobians_closed_form(quadratic):
    a, x = quadratic
    t = 2
    model = Quadratic(a).eval()
    s = a[t] + a[t].T
    f = x.flatten()
    sx = s @ f
    cases = {
        "gradient": (sx, s),
        "grad_x_input": (f * sx, torch.diag(sx) + f[:, None] * s),
        # the integrand is linear in alpha, so midpoint and trapezoid are exact: IG = x * (S x) / 2
        "integrated_gradients": (f * sx / 2, (torch.diag(sx) + f[:, None] * s) / 2),
    }
    for name, (value, jac) in cases.items():
        for method in ("midpoint", "trapezoid"):
            options = {"steps": 4, "method": method} if name == "integrated_gradients" else {}
            fn = lambda z: EXPLAINERS[name](model, z, t, create_graph=True, **options).flatten()  # noqa: E731
            torch.testing.assert_close(fn(x), value)
            torch.testing.assert_close(torch.autograd.functional.jacobian(fn, x).view(8, 8), jac)


def test_quadratic_gradient_map_differentiable_wrt_parameters(quadratic, rng):
    a, x = quadratic
    a = a.clone().requires_grad_(True)
    v = torch.randn(8, generator=rng, dtype=torch.float64)
    gmap = explainers.gradient(Quadratic(a), x, 1, create_graph=True).flatten()
    (da,) = torch.autograd.grad((gmap * v).sum(), a)
    f = x.flatten()
    expected = torch.zeros_like(a)
    expected[1] = torch.outer(v, f) + torch.outer(f, v)  # d (A + A^T) f / dA, contracted with v
    torch.testing.assert_close(da, expected)


# ----------------------------------------------------------------------------- captum oracles


def test_gradient_and_input_x_gradient_match_captum(cnn_case):
    model, x, t = cnn_case
    oracle = copy.deepcopy(model)
    ref = captum_attr.Saliency(oracle).attribute(x.clone().requires_grad_(), target=t, abs=False)
    torch.testing.assert_close(explainers.gradient(model, x, t), ref)
    ref = captum_attr.InputXGradient(oracle).attribute(x.clone().requires_grad_(), target=t)
    torch.testing.assert_close(explainers.grad_x_input(model, x, t), ref)
    for output, head in (("probability", nn.Softmax(dim=1)), ("log_probability", nn.LogSoftmax(dim=1))):
        with_head = captum_attr.Saliency(nn.Sequential(oracle, head))
        ref = with_head.attribute(x.clone().requires_grad_(), target=t, abs=False)
        torch.testing.assert_close(explainers.gradient(model, x, t, output=output), ref)


@pytest.mark.parametrize(
    "method, captum_method",
    [("midpoint", "riemann_middle"), ("trapezoid", "riemann_trapezoid"), ("gauss_legendre", "gausslegendre")],
)
def test_integrated_gradients_match_captum(cnn_case, method, captum_method):
    model, x, t = cnn_case
    ig = captum_attr.IntegratedGradients(copy.deepcopy(model))
    # captum's trapezoid weights are 1/n (halved at the ends), summing to (n-1)/n instead of 1;
    # the trapezoid rule on linspace(0, 1, n) has weights 1/(n-1), so ours = captum * n / (n-1).
    scale = 9 / 8 if method == "trapezoid" else 1.0
    for baseline, captum_baseline in (("zero", None), ("mean", x.mean(dim=(2, 3), keepdim=True).expand_as(x))):
        ref = scale * ig.attribute(x, baselines=captum_baseline, target=t, n_steps=9, method=captum_method)
        got = explainers.integrated_gradients(model, x, t, steps=9, method=method, baseline=baseline)
        torch.testing.assert_close(got, ref)
