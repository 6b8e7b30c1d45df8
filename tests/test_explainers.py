"""Explainers and batching against closed forms (linear, quadratic models), independent oracles
(captum, zennit, skimage/scipy, finite differences) and invariants (chunk size, model untouched)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from reliable_saliency import explainers
from reliable_saliency.core import batching, inputs, references
from reliable_saliency.explainers import EXPLAINERS, get_explainer

captum_attr = pytest.importorskip("captum.attr")

MC = ("smoothgrad", "smoothgrad_squared", "vargrad")
SMALL = {  # options that keep every explainer cheap in tests
    "integrated_gradients": {"steps": 6},
    "smoothgrad": {"samples": 5},
    "smoothgrad_squared": {"samples": 5},
    "vargrad": {"samples": 5},
    "rise": {"masks": 12, "grid_size": 3},
}


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(1234)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- models


class Linear(nn.Module):
    """logits = W flatten(x) + b."""

    def __init__(self, weight, bias):
        super().__init__()
        self.weight, self.bias = nn.Parameter(weight), nn.Parameter(bias)

    def forward(self, x):
        return x.flatten(1) @ self.weight.T + self.bias


class Quadratic(nn.Module):
    """logit_k = x^T A_k x (x flattened)."""

    def __init__(self, a):
        super().__init__()
        self.a = a

    def forward(self, x):
        f = x.flatten(1)
        return torch.einsum("ni,kij,nj->nk", f, self.a, f)


def tiny_cnn(activation=nn.ReLU, channels=3, classes=5, seed=0):
    """For 8x8 inputs."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1), activation(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1), activation(), nn.Flatten(), nn.Linear(6 * 4 * 4, classes),
    ).double().eval()


def smooth_cnn(seed=0):
    """Softplus CNN for 1x6x6 inputs (finite-difference checks)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.Softplus(beta=2.0), nn.AvgPool2d(2),
        nn.Conv2d(2, 3, 3, padding=1), nn.Softplus(beta=2.0), nn.Flatten(), nn.Linear(3 * 3 * 3, 4),
    ).double().eval()


class CaptumLrpNet(nn.Module):
    """Only layer types captum's LRP has rules for (flatten is functional)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv1, self.relu1, self.pool = nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2)
        self.conv2, self.relu2 = nn.Conv2d(4, 6, 3, padding=1), nn.ReLU()
        self.fc1, self.relu3, self.fc2 = nn.Linear(96, 16), nn.ReLU(), nn.Linear(16, 5)

    def forward(self, x):
        x = self.relu2(self.conv2(self.pool(self.relu1(self.conv1(x)))))
        return self.fc2(self.relu3(self.fc1(x.flatten(1))))


def images(rng, n=3, c=3, h=8, w=8):
    return torch.randn((n, c, h, w), generator=rng, dtype=torch.float64)


def run(name, model, x, target, **kw):
    return EXPLAINERS[name](model, x, target, **{**SMALL.get(name, {}), **kw})


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


def test_blur_baseline_matches_scipy(rng):
    from scipy.ndimage import gaussian_filter

    x = images(rng, 2, 3, 9, 7)
    got = references.make_baseline(x, "blur", blur_sigma=1.0)
    ref = gaussian_filter(x.numpy(), sigma=(0, 0, 1.0, 1.0), mode="mirror", truncate=3.0)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-12)
    weight = torch.randn((2, 3 * 9 * 7), generator=rng, dtype=torch.float64)
    linear_model = Linear(weight, torch.zeros(2, dtype=torch.float64))
    ig = explainers.integrated_gradients(linear_model, x, 1, baseline="blur", blur_sigma=1.0, steps=2)
    w = linear_model.weight[1].detach().view(1, 3, 9, 7)
    np.testing.assert_allclose(ig.detach().numpy(), ((x.numpy() - ref) * w.numpy()), rtol=1e-10, atol=1e-12)


def test_lrp_epsilon_closed_form_single_linear_layer(rng):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).double().eval()
    x = torch.randn((4, 3, 2, 2), generator=rng, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 1])
    for eps in (1e-9, 0.5, 3.0):
        w, b = model[1].weight[target].detach(), model[1].bias[target].detach()
        z = (x.flatten(1) * w).sum(1) + b
        sign = torch.where(z >= 0, 1.0, -1.0).double()
        expected = (x.flatten(1) * w * (z / (z + eps * sign))[:, None]).view_as(x)
        torch.testing.assert_close(explainers.lrp_epsilon(model, x, target, epsilon=eps), expected)


def test_guided_backprop_closed_form_two_layer(rng):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3)).double().eval()
    x = torch.randn((5, 3, 2, 2), generator=rng, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 1, 0])
    w1, b1, w2 = model[1].weight.detach(), model[1].bias.detach(), model[3].weight.detach()
    active = (x.flatten(1) @ w1.T + b1 > 0).double()
    expected = ((active * w2[target].clamp(min=0)) @ w1).view_as(x)
    torch.testing.assert_close(explainers.guided_backprop(model, x, target), expected)


def test_gradcam_closed_form_gap_linear_head(rng):
    """With A at input resolution and a GAP + linear head, Grad-CAM is ReLU(sum_k v_tk A_k) / (h w)."""
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(3, 5, 3, padding=1), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 4)
    ).double().eval()
    x = images(rng, 3, 3, 6, 6)
    target = torch.tensor([3, 0, 1])
    activation = torch.tanh(model[0](x)).detach()
    v = model[4].weight[target].detach()
    expected = torch.relu((v[:, :, None, None] * activation).sum(1, keepdim=True)) / 36
    torch.testing.assert_close(explainers.gradcam(model, x, target, layer=model[1]), expected)


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


GRADCHECKED = (
    "gradient", "grad_x_input", "integrated_gradients", "smoothgrad", "smoothgrad_squared", "vargrad",
    "gradcam", "guided_backprop", "lrp_epsilon", "rise",
)


@pytest.mark.parametrize("name", GRADCHECKED)
def test_create_graph_maps_match_finite_differences(name, rng):
    """create_graph=True: the map's derivatives w.r.t. x and a parameter equal central differences."""
    model = smooth_cnn()
    x = torch.randn((2, 1, 6, 6), generator=rng, dtype=torch.float64)
    target = torch.tensor([1, 3])
    options = {**SMALL.get(name, {}), **({"layer": "4"} if name == "gradcam" else {})}

    def of_x(z):
        return EXPLAINERS[name](model, z, target, create_graph=True, generator=gen(5), **options)

    assert torch.autograd.gradcheck(of_x, (x.clone().requires_grad_(True),), eps=1e-6, atol=1e-5, rtol=1e-4)

    class WithWeight(nn.Module):  # the first conv's weight as an explicit input
        def __init__(self):
            super().__init__()
            self.net, self.weight = model, None

        def forward(self, z):
            return functional_call(self.net, {"0.weight": self.weight}, (z,))

    wrapped = WithWeight()

    def of_weight(w):
        wrapped.weight = w
        return EXPLAINERS[name](wrapped, x[:1], target[:1], create_graph=True, generator=gen(5), **{
            **options, **({"layer": "net.4"} if name == "gradcam" else {})})

    weight = model[0].weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(of_weight, (weight,), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_without_create_graph_maps_are_detached(rng):
    model = tiny_cnn()
    x = images(rng).requires_grad_(True)
    for name in EXPLAINERS:
        assert not run(name, model, x, 1, generator=gen()).requires_grad, name
    assert x.grad is None


# ----------------------------------------------------------------------------- captum / zennit oracles


@pytest.fixture
def cnn_case(rng):
    return tiny_cnn(), images(rng), torch.tensor([0, 3, 4])


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


def _noise_reference(x, generator_seed, samples, noise_level):
    """The documented noise: one seed per image from the caller's generator, then
    randn((samples, C, H, W)) from a generator seeded with it; std noise_level * (max - min)."""
    seeds = torch.randint(0, 2**62, (x.shape[0],), generator=gen(generator_seed)).tolist()
    out = []
    for xi, seed in zip(x, seeds):
        eps = torch.randn((samples, *x.shape[1:]), generator=gen(seed), dtype=x.dtype)
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
        noisy = xi + sigma * torch.randn((samples, *xi.shape[1:]), generator=rng, dtype=xi.dtype)
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


def test_gradcam_matches_captum_layer_gradcam(cnn_case):
    model, x, t = cnn_case
    for layer in ("3", "4"):
        module = model.get_submodule(layer)
        oracle = captum_attr.LayerGradCam(model, module).attribute(x, target=t, relu_attributions=True)
        ref = captum_attr.LayerAttribution.interpolate(oracle, (8, 8), "bilinear")
        torch.testing.assert_close(explainers.gradcam(model, x, t, layer=layer), ref)
        torch.testing.assert_close(explainers.gradcam(model, x, t, layer=module), ref)
    frozen = copy.deepcopy(model).requires_grad_(False)  # no graph above the layer: A becomes a leaf
    torch.testing.assert_close(
        explainers.gradcam(frozen, x, t, layer="3"), explainers.gradcam(model, x, t, layer="3")
    )
    # default: the last leaf module with a spatial output (the second ReLU here)
    default = explainers.gradcam(model, x, t)
    torch.testing.assert_close(default, explainers.gradcam(model, x, t, layer=model[4]))


@pytest.mark.parametrize("inplace", [False, True])
def test_guided_backprop_matches_captum(cnn_case, inplace):
    model, x, t = cnn_case
    if inplace:
        for module in model:
            if isinstance(module, nn.ReLU):
                module.inplace = True
    ref = captum_attr.GuidedBackprop(copy.deepcopy(model)).attribute(x.clone().requires_grad_(), target=t)
    torch.testing.assert_close(explainers.guided_backprop(model, x, t), ref)


@pytest.mark.parametrize("epsilon", [1e-9, 0.05, 1.0])
def test_lrp_epsilon_matches_captum(rng, epsilon):
    from captum.attr._utils.lrp_rules import EpsilonRule

    model = CaptumLrpNet().double().eval()
    x, t = images(rng), torch.tensor([0, 2, 4])
    oracle = copy.deepcopy(model)
    for module in oracle.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.AvgPool2d)):
            module.rule = EpsilonRule(epsilon=epsilon)
    ref = captum_attr.LRP(oracle).attribute(x.clone().requires_grad_(), target=t)
    torch.testing.assert_close(explainers.lrp_epsilon(model, x, t, epsilon=epsilon), ref)


def test_lrp_epsilon_matches_zennit_with_max_pooling(cnn_case):
    zennit = pytest.importorskip("zennit")
    from zennit.attribution import Gradient
    from zennit.composites import LayerMapComposite
    from zennit.rules import Epsilon

    model, x, t = cnn_case
    for epsilon in (1e-6, 0.3):
        composite = LayerMapComposite([(nn.Conv2d, Epsilon(epsilon)), (nn.Linear, Epsilon(epsilon))])
        oracle = copy.deepcopy(model)
        onehot = torch.eye(5, dtype=x.dtype)[t]
        with Gradient(oracle, composite) as attributor:
            _, ref = attributor(x.clone().requires_grad_(), lambda out: out * onehot)
        torch.testing.assert_close(explainers.lrp_epsilon(model, x, t, epsilon=epsilon), ref)
    assert zennit is not None


# ----------------------------------------------------------------------------- RISE


@pytest.mark.parametrize("s", [2, 3])
def test_rise_matches_reference_built_with_skimage(rng, s):
    """Masks as in the authors' code (skimage resize order=1, mode='reflect', then crop), from the
    documented draws; weighting by softmax probability, normalised by masks * p."""
    from skimage.transform import resize

    model = tiny_cnn()
    x, t = images(rng, 2, 3, 8, 8), torch.tensor([1, 4])
    masks, p = 20, 0.4
    g = gen(9)
    grids = (torch.rand((masks, s, s), generator=g) < p).numpy().astype(np.float64)
    cell = int(np.ceil(8 / s))
    shift_h = torch.randint(0, cell, (masks,), generator=g).numpy()
    shift_w = torch.randint(0, cell, (masks,), generator=g).numpy()
    ref_masks = np.stack([
        resize(grids[m], ((s + 1) * cell, (s + 1) * cell), order=1, mode="reflect", anti_aliasing=False)[
            shift_h[m] : shift_h[m] + 8, shift_w[m] : shift_w[m] + 8]
        for m in range(masks)
    ])
    with torch.no_grad():
        masked = x[:, None] * torch.from_numpy(ref_masks)[None, :, None]  # (N, M, C, H, W)
        probs = torch.softmax(model(masked.flatten(0, 1)), dim=1).view(2, masks, -1)
    probs = probs[torch.arange(2), :, t].numpy()  # (N, M)
    ref = np.einsum("nm,mhw->nhw", probs, ref_masks)[:, None] / (masks * p)
    got = explainers.rise(model, x, t, masks=masks, grid_size=s, p=p, generator=gen(9), batch_size=7)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-12)


class ConstantModel(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1) + 0 * x.flatten(1)[:, :1]


def test_rise_of_a_constant_model_is_the_constant(rng):
    """E[M] = p per pixel, so sum_m c M_m / (masks p) -> c; 6 standard errors (std of M <= 1/2)."""
    logits = torch.tensor([[0.3, -1.0, 2.0]], dtype=torch.float64)
    c = torch.softmax(logits, dim=1)[0, 2].item()
    masks, p = 3000, 0.5
    model = ConstantModel(logits)
    got = explainers.rise(model, images(rng, 1), 2, masks=masks, grid_size=3, p=p, generator=rng)
    assert abs(got.mean().item() - c) < 0.02 * c
    assert (got - c).abs().max().item() < 6 * c * 0.5 / (p * masks**0.5)


class ReadsOnePixel(nn.Module):
    """P(class 0) = the (masked) input value at one pixel."""

    def __init__(self, row, col):
        super().__init__()
        self.row, self.col = row, col

    def forward(self, x):
        v = x[:, 0, self.row, self.col].clamp(1e-6, 1 - 1e-6)
        return torch.stack([v.log(), (1 - v).log()], dim=1)


def test_rise_points_at_the_pixel_the_model_reads(rng):
    """saliency(b) = mean_m M_m(a) M_m(b) / p peaks at the read pixel a (up to Monte-Carlo noise
    and the slight non-stationarity of the shifted masks: argmax within one pixel of a) and is p
    where M(b) is independent of M(a)."""
    x = torch.ones((1, 1, 16, 16), dtype=torch.float64)
    for row, col in ((3, 12), (13, 2)):
        sal = explainers.rise(ReadsOnePixel(row, col), x, 0, masks=1500, grid_size=4, generator=rng)[0, 0]
        peak_row, peak_col = divmod(int(sal.flatten().argmax()), 16)
        assert abs(peak_row - row) <= 1 and abs(peak_col - col) <= 1
        assert sal[row, col] >= 0.97 * sal.max()
        # pixels > 2 upsampled cells (2 * 5 px) away depend on other grid cells: E[M(a) M(b)] / p = p
        far = sal[(torch.arange(16)[:, None] - row).abs().maximum((torch.arange(16) - col).abs()) >= 11]
        assert abs(far.mean().item() - 0.5) < 0.04 and far.max() < sal[row, col] - 0.1


# ----------------------------------------------------------------------------- chunking and randomness


@pytest.mark.parametrize("name", ["integrated_gradients", *MC, "rise", "gradient", "gradcam", "lrp_epsilon"])
def test_results_do_not_depend_on_batch_size(name, cnn_case):
    model, x, t = cnn_case
    options = {"samples": 10} if name in MC else {"steps": 10} if name == "integrated_gradients" else {}
    results = [run(name, model, x, t, generator=gen(3), batch_size=b, **options) for b in (1, 7, 64)]
    for other in results[1:]:
        torch.testing.assert_close(other, results[0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", [*MC, "rise"])
def test_generator_controls_randomness(name, cnn_case):
    model, x, t = cnn_case
    a, b = run(name, model, x, t, generator=gen(1)), run(name, model, x, t, generator=gen(1))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, run(name, model, x, t, generator=gen(2)))


def test_reduce_rows_and_image_noise_are_chunk_invariant(rng):
    n, samples, shape = 3, 5, (2, 3)
    values = torch.randn((n * samples, 4), generator=rng)
    ref_noise = None
    for batch_size in (1, 2, 7, 15, 40):
        noise = batching.ImageNoise(gen(4), n, samples, shape, device="cpu", dtype=torch.float32)
        rows = []
        out = batching.reduce_rows(
            n, samples, batch_size,
            lambda a, b: rows.append(noise.rows(a, b)) or values[a:b],
            lambda block: block.sum(dim=1),
        )
        torch.testing.assert_close(out, values.view(n, samples, 4).sum(1), rtol=0, atol=0)
        full = torch.cat(rows)
        ref_noise = full if ref_noise is None else ref_noise
        torch.testing.assert_close(full, ref_noise, rtol=0, atol=0)
        assert len(noise._blocks) <= -(-batch_size // samples) + 1  # finished images are dropped
    seeds = torch.randint(0, 2**62, (n,), generator=gen(4)).tolist()
    expected = torch.cat([torch.randn((samples, *shape), generator=gen(s)) for s in seeds])
    torch.testing.assert_close(ref_noise, expected, rtol=0, atol=0)


def test_default_batch_size_rule():
    assert batching.default_batch_size(torch.zeros(1, 3, 32, 32)) == 64
    assert batching.default_batch_size(torch.zeros(1, 3, 16, 16)) == 256
    assert batching.default_batch_size(torch.zeros(1, 3, 224, 224)) == 1
    assert batching.default_batch_size(torch.zeros(1, 1, 28, 28)) == 64 * 1024 // 784
    with pytest.raises(ValueError, match="batch_size"):
        batching.resolve_batch_size(0, torch.zeros(1, 3, 8, 8))


# ----------------------------------------------------------------------------- the caller's model


def _state(model):
    return (
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        [p.detach().clone() for p in model.parameters()],
    )


def _assert_untouched(model, before):
    training, flags, values = _state(model)
    assert training == before[0] and flags == before[1]
    for a, b in zip(values, before[2]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert all(p.grad is None for p in model.parameters())
    for m in model.modules():
        for hooks in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            assert not getattr(m, hooks), (type(m).__name__, hooks)


@pytest.mark.parametrize("name", list(EXPLAINERS))
def test_model_is_left_untouched(name, rng):
    model = tiny_cnn().train()  # train mode is allowed without BatchNorm/Dropout; it must stay on
    model[0].weight.requires_grad_(False)
    before = _state(model)
    x = images(rng)
    run(name, model, x, 1, generator=gen(), batch_size=2)
    run(name, model, x.clone().requires_grad_(True), 1, generator=gen(), create_graph=True)
    _assert_untouched(model, before)


class FailsOnCall(nn.Module):
    def __init__(self, net, fail_at):
        super().__init__()
        self.net, self.fail_at, self.calls = net, fail_at, 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("boom")
        return self.net(x)


@pytest.mark.parametrize("name", list(EXPLAINERS))
def test_hooks_are_removed_when_an_error_is_raised_midway(name, rng):
    model = FailsOnCall(tiny_cnn(), fail_at=3)
    before = _state(model)
    with pytest.raises(RuntimeError, match="boom"):
        run(name, model, images(rng), 1, generator=gen(), batch_size=1)
    _assert_untouched(model, before)


def test_gradcam_layer_that_runs_twice_is_an_error_and_leaves_no_hook(rng):
    relu = nn.ReLU()
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), relu, nn.Conv2d(4, 4, 3, padding=1), relu,
                          nn.Flatten(), nn.Linear(256, 3)).double().eval()
    with pytest.raises(ValueError, match="ran 2 times"):
        explainers.gradcam(model, images(rng), 0, layer=relu)
    assert not relu._forward_hooks


# ----------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("name", list(EXPLAINERS))
def test_bad_inputs_give_clear_errors(name, rng):
    model = tiny_cnn()
    x = images(rng)
    with pytest.raises(ValueError, match=r"shape \(N, C, H, W\)"):
        run(name, model, x[0], 1)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        run(name, model, bad, 1)
    with pytest.raises(ValueError, match=r"outside \[0, 5\)"):
        run(name, model, x, 5)
    with pytest.raises(ValueError, match=r"outside \[0, 5\)"):
        run(name, model, x, torch.tensor([0, -1, 2]))
    with pytest.raises(ValueError, match=r"target must have shape \(3,\)"):
        run(name, model, x, torch.tensor([0, 1]))
    spaced = tiny_cnn()
    spaced.input_space = inputs.SYNTHETIC
    with pytest.raises(ValueError, match="outside the valid range"):
        run(name, spaced, x * 10, 1)
    run(name, spaced, x.clamp(-2, 2), 1)  # inside the space: fine
    for layer in (nn.BatchNorm2d(3), nn.Dropout(0.5)):
        with_norm = nn.Sequential(layer, tiny_cnn()).double()
        with pytest.raises(ValueError, match="call model.eval()"):
            run(name, with_norm, x, 1)
        assert with_norm.training


def test_bad_options_give_clear_errors(rng):
    model, x = tiny_cnn(), images(rng)
    with pytest.raises(ValueError, match="output must be one of"):
        explainers.gradient(model, x, 1, output="softmax")
    with pytest.raises(ValueError, match="baseline"):
        explainers.integrated_gradients(model, x, 1, baseline="black")
    with pytest.raises(ValueError, match="does not broadcast"):
        explainers.integrated_gradients(model, x, 1, baseline=torch.zeros(2, 8, 8, dtype=x.dtype))
    with pytest.raises(ValueError, match="IG method"):
        explainers.integrated_gradients(model, x, 1, method="simpson")
    with pytest.raises(ValueError, match="samples"):
        explainers.smoothgrad(model, x, 1, samples=0)
    with pytest.raises(ValueError, match="samples"):
        explainers.vargrad(model, x, 1, samples=1)
    with pytest.raises(ValueError, match="batch_size"):
        explainers.gradient(model, x, 1, batch_size=0)
    with pytest.raises(ValueError, match="p must be"):
        explainers.rise(model, x, 1, p=0.0)
    with pytest.raises(ValueError, match="no submodule 'features.9'"):
        explainers.gradcam(model, x, 1, layer="features.9")
    with pytest.raises(ValueError, match="no ReLU"):
        explainers.guided_backprop(nn.Sequential(nn.Flatten(), nn.Linear(192, 3)).double(), x, 1)


def test_get_explainer():
    with pytest.raises(KeyError, match="gradcam.*vargrad|choose one of"):
        get_explainer("saliency")
    with pytest.raises(ValueError, match="has no option"):
        get_explainer("gradient", steps=5)
    model, x = tiny_cnn(), images(gen())
    ig = get_explainer("integrated_gradients", steps=5, method="trapezoid")
    for steps, call in ((5, {}), (3, {"steps": 3})):  # call-time options override bound ones
        ref = explainers.integrated_gradients(model, x, 2, steps=steps, method="trapezoid")
        torch.testing.assert_close(ig(model, x, 2, **call), ref)
    sg = get_explainer("smoothgrad", samples=4)
    torch.testing.assert_close(sg(model, x, 1, generator=gen(2), batch_size=3),
                               explainers.smoothgrad(model, x, 1, samples=4, generator=gen(2)))
    assert set(EXPLAINERS) == {
        "gradient", "grad_x_input", "integrated_gradients", "smoothgrad", "smoothgrad_squared", "vargrad",
        "gradcam", "guided_backprop", "lrp_epsilon", "rise",
    }


# ----------------------------------------------------------------------------- CUDA


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(
    "name", ["gradient", "grad_x_input", "integrated_gradients", "gradcam", "guided_backprop", "lrp_epsilon", "rise"]
)
def test_cpu_and_cuda_agree(name, cnn_case):
    """Deterministic methods, and RISE (masks drawn on the generator's device, here the CPU)."""
    model, x, t = cnn_case
    cpu = run(name, model, x, t, generator=gen(0))
    cuda = run(name, copy.deepcopy(model).cuda(), x.cuda(), t.cuda(), generator=gen(0))
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-9, atol=1e-11)
