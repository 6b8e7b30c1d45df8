"""The registry (reliable_saliency.explainers.registry) and the contract every registered explainer
keeps: differentiable maps with create_graph=True (finite differences), detached maps otherwise,
results independent of batch_size, randomness from the generator only, the caller's model left
untouched (also when an error is raised midway), clear errors for bad inputs and options, and
get_explainer's option binding."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call

from helpers import gen
from helpers.explainers import images, tiny_cnn
from reliable_saliency import explainers
from reliable_saliency.core import inputs
from reliable_saliency.explainers import EXPLAINERS, get_explainer


MC = ("smoothgrad", "smoothgrad_squared", "vargrad")
SMALL = {  # options that keep every explainer cheap in tests
    "integrated_gradients": {"steps": 6},
    "smoothgrad": {"samples": 5},
    "smoothgrad_squared": {"samples": 5},
    "vargrad": {"samples": 5},
    "rise": {"masks": 12, "grid_size": 3},
    "relex": {"iterations": 2, "samples": 3},
    "mask_search": {"passes": 20, "grid_size": 3},
    "dance": {"steps": 2, "stride": 4},
}


def smooth_cnn(seed=0, activation=None):
    """Softplus CNN for 1x6x6 inputs (finite-difference checks); ``activation`` replaces Softplus
    (LRP has no rule for Softplus: it gets ReLU, whose kinks random inputs do not meet at eps 1e-6)."""
    torch.manual_seed(seed)
    unit = activation or (lambda: nn.Softplus(beta=2.0))
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), unit(), nn.AvgPool2d(2),
        nn.Conv2d(2, 3, 3, padding=1), unit(), nn.Flatten(), nn.Linear(3 * 3 * 3, 4),
    ).double().eval()


def run(name, model, x, target, **kw):
    return EXPLAINERS[name](model, x, target, **{**SMALL.get(name, {}), **kw})


# ----------------------------------------------------------------------------- differentiable maps


GRADCHECKED = (
    "gradient", "grad_x_input", "integrated_gradients", "smoothgrad", "smoothgrad_squared", "vargrad",
    "gradcam", "guided_backprop", "lrp_epsilon", "rise",
)


@pytest.mark.parametrize("name", GRADCHECKED)
def test_create_graph_maps_match_finite_differences(name, rng):
    """create_graph=True: the map's derivatives w.r.t. x and a parameter equal central differences."""
    model = smooth_cnn(activation=nn.ReLU if name == "lrp_epsilon" else None)
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
    assert set(EXPLAINERS) >= {
        "gradient", "grad_x_input", "integrated_gradients", "smoothgrad", "smoothgrad_squared", "vargrad",
        "gradcam", "guided_backprop", "lrp_epsilon", "rise",
    }
    for name, function in EXPLAINERS.items():  # registered next to its definition, in a family module
        assert function.__module__.startswith("reliable_saliency.explainers."), (name, function.__module__)
        assert get_explainer(name).__name__ == name


def test_register_refuses_duplicates_and_wrong_signatures():
    from reliable_saliency.explainers import register

    with pytest.raises(ValueError, match="already registered"):
        register("gradient")(lambda model, x, target, *, create_graph=False, generator=None, batch_size=None: x)
    with pytest.raises(TypeError, match="must accept"):
        register("no_options")(lambda model, x, target: x)
    assert "no_options" not in EXPLAINERS


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
