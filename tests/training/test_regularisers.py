"""Paper E's regularisers (reliable_saliency.training.regularisers): closed-form values on a
Softplus MLP, parameter gradients against finite differences, the Hutchinson estimate against the
exact Hessian norm, Softplus everywhere in the recipes' models, a killed regularised run that
resumes to the same weights, the normalisation-invariance claim, real architectures."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.overrides import TorchFunctionMode

from helpers import gen, same_state
from reliable_saliency import models
from reliable_saliency.core.inputs import CIFAR10, IMAGENET
from reliable_saliency.explainers import gradient
from reliable_saliency.training import zoo
from reliable_saliency.training.loops import TrainConfig
from reliable_saliency.training.regularisers import Regulariser, penalty, regularised_loss

BETA = 3.0
STD = torch.tensor(CIFAR10.std, dtype=torch.float64).view(1, 3, 1, 1)


def softplus_mlp(seed=0, hidden=5, classes=3, d=12):
    """logits = W2 softplus_beta(W1 flatten(x) + b1) + b2 on (N, 3, 2, 2) inputs, float64."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(d, hidden), nn.Softplus(beta=BETA), nn.Linear(hidden, classes))
    model = model.double()
    model.input_space = CIFAR10
    return model


def closed_form(model, x, y):
    """Logits, true-logit gradients (N, d) and input Hessians (N, d, d) of :func:`softplus_mlp`."""
    w1, b1, w2, b2 = model[1].weight, model[1].bias, model[3].weight, model[3].bias
    a = x.flatten(1) @ w1.T + b1
    s = torch.sigmoid(BETA * a)
    logits = F.softplus(a, beta=BETA) @ w2.T + b2
    out = w2[y]  # (N, hidden)
    grads = (out * s) @ w1
    curvature = out * BETA * s * (1 - s)
    hessians = torch.einsum("hi,nh,hj->nij", w1, curvature, w1)
    return logits, grads, hessians


@pytest.fixture
def batch(rng):
    x = torch.randn((4, 3, 2, 2), generator=rng, dtype=torch.float64)
    y = torch.tensor([0, 2, 1, 2])
    return x, y


L2_COSD = Regulariser("l2_cosd", lambda_l2=0.01, lambda_cos=1.0)


def test_penalties_equal_their_closed_forms(batch):
    model = softplus_mlp()
    x, y = batch
    logits, g, hessians = closed_form(model, x, y)
    with torch.no_grad():
        v = torch.randn(x.shape, generator=gen(7)).to(x.dtype).flatten(1)  # drawn in float32
        hv = torch.einsum("nij,nj->ni", hessians, v)
        z = (4 / 255) / STD * (2 * torch.rand(x.shape, generator=gen(7)).to(x.dtype) - 1)
        _, g_n, _ = closed_form(model, x + z, y)
        l2 = (g - g_n).square().sum(1)
        cosd = (1 - (g * g_n).sum(1) / (g.norm(dim=1) * g_n.norm(dim=1))) / 2
        ce = F.cross_entropy(logits, y)

    out = regularised_loss(model, x, y, Regulariser("hessian", lambda_hessian=0.5), generator=gen(7))
    torch.testing.assert_close(out.terms["hessian"], hv.square().sum(1))
    torch.testing.assert_close(out.penalty, 0.5 * hv.square().sum(1).mean())
    torch.testing.assert_close(out.cross_entropy, ce)
    torch.testing.assert_close(out.loss, ce + out.penalty)
    torch.testing.assert_close(out.logits, logits)

    out = regularised_loss(model, x, y, L2_COSD, generator=gen(7))
    torch.testing.assert_close(out.terms["l2"], l2)
    torch.testing.assert_close(out.terms["cosd"], cosd)
    torch.testing.assert_close(out.penalty, 0.01 * l2.mean() + cosd.mean())
    for kind, expected in (("l2", 0.3 * l2.mean()), ("cosd", 0.3 * cosd.mean())):
        reg = Regulariser(kind, **{"lambda_l2" if kind == "l2" else "lambda_cos": 0.3})
        torch.testing.assert_close(penalty(model, x, y, reg, generator=gen(7)), expected)
    plain = regularised_loss(model, x, y, None)
    assert plain.penalty == 0 and plain.terms == {}
    torch.testing.assert_close(plain.loss, ce)


class _Wrapped(nn.Module):
    """The model evaluated with given parameter tensors (so gradcheck can vary them); with
    ``first_call`` parameters, its first forward pass (the regulariser's clean pass) uses those."""

    def __init__(self, model, params, first_call=None):
        super().__init__()
        self.model, self.params, self.first_call = model, params, first_call
        self.input_space = model.input_space

    def forward(self, x):
        params, self.first_call = self.first_call or self.params, None
        return functional_call(self.model, params, (x,))


@pytest.mark.parametrize("reg", [
    Regulariser("hessian", lambda_hessian=1.0),
    Regulariser("l2_cosd", lambda_l2=0.01, lambda_cos=1.0, detach_clean=False),
], ids=["hessian", "l2_cosd_undetached"])
def test_parameter_gradients_match_finite_differences(batch, reg):
    model = softplus_mlp(hidden=3, classes=3)
    x, y = batch
    names = [n for n, _ in model.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in model.parameters())

    def f(*values):
        return penalty(_Wrapped(model, dict(zip(names, values))), x, y, reg, generator=gen(3))

    assert torch.autograd.gradcheck(f, params, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_detached_clean_gradient_is_a_constant_target(batch):
    """With ``detach_clean`` (the default) the parameter gradient is that of the penalty with the
    clean gradient g frozen at the current parameters: finite differences that move only the
    neighbour's parameters agree with it, and it differs from the undetached gradient."""
    model = softplus_mlp(hidden=3, classes=3)
    x, y = batch
    names = [n for n, _ in model.named_parameters()]
    frozen = {n: p.detach().clone() for n, p in model.named_parameters()}
    params = tuple(p.detach().clone().requires_grad_(True) for p in model.parameters())
    undetached = Regulariser("l2_cosd", lambda_l2=0.01, lambda_cos=1.0, detach_clean=False)

    def neighbour_only(*values):
        return penalty(_Wrapped(model, dict(zip(names, values)), first_call=frozen), x, y, undetached, generator=gen(3))

    assert torch.autograd.gradcheck(neighbour_only, params, eps=1e-6, atol=1e-6, rtol=1e-4)
    def grads(value, wrt):  # the last bias never enters an input gradient: zero
        return torch.autograd.grad(value, list(wrt), allow_unused=True, materialize_grads=True)

    expected = grads(neighbour_only(*params), params)
    ours = grads(penalty(model, x, y, L2_COSD, generator=gen(3)), model.parameters())
    both = grads(penalty(model, x, y, undetached, generator=gen(3)), model.parameters())
    for a, b in zip(ours, expected):
        torch.testing.assert_close(a, b)
    assert not all(torch.allclose(a, c) for a, c in zip(ours, both))


def test_hutchinson_term_estimates_the_squared_frobenius_norm(rng):
    model = softplus_mlp(seed=2)
    x = torch.randn((1, 3, 2, 2), generator=rng, dtype=torch.float64)
    y = torch.tensor([1])
    exact = torch.autograd.functional.hessian(lambda v: model(v)[0, 1], x).reshape(12, 12)
    _, _, hessians = closed_form(model, x, y)
    torch.testing.assert_close(hessians[0], exact)  # the closed form is right
    draws = 4000  # one Hutchinson draw per row: the same image repeated on the batch axis
    terms = regularised_loss(model, x.expand(draws, -1, -1, -1), y.expand(draws),
                             Regulariser("hessian", lambda_hessian=1.0), generator=gen(5)).terms["hessian"]
    frobenius = exact.square().sum()
    standard_error = terms.std() / draws ** 0.5
    assert abs(terms.mean() - frobenius) < 4 * standard_error
    assert standard_error < 0.05 * frobenius  # the test can tell


class _ActivationCalls(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.names.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", sorted(n for n in zoo.RECIPES if "_sp3_" in n))
def test_softplus_reaches_every_activation_of_the_recipes_models(name):
    recipe = zoo.RECIPES[name]
    assert recipe.softplus_beta == 3.0
    relu_model = models.build(recipe.architecture)
    model = models.build(recipe.architecture, softplus_beta=recipe.softplus_beta)
    relus = sum(isinstance(m, nn.ReLU) for m in relu_model.modules())
    softplus = [m for m in model.modules() if isinstance(m, nn.Softplus)]
    assert relus > 0 and len(softplus) == relus and all(m.beta == 3.0 for m in softplus)
    with _ActivationCalls() as calls, torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    assert not [c for c in calls.names if "relu" in c or "hardtanh" in c]  # no functional ReLU left
    assert calls.names.count("softplus") == relus  # each activation runs as a Softplus


def test_invariance_claim_l2_scales_cosd_and_maps_do_not(rng):
    """Scaling the last layer by c scales g by c and ||g - g'||^2 by c^2; cosd and the normalised
    map h = sum_c |g| / max do not move (paper E, claim 1)."""
    torch.manual_seed(0)
    model = models.build("lenet", softplus_beta=3.0).double()
    scaled = copy.deepcopy(model)
    c = 7.0
    with torch.no_grad():
        scaled.classifier[-1].weight.mul_(c)
        scaled.classifier[-1].bias.mul_(c)
    x = CIFAR10.normalize(torch.rand((3, 3, 32, 32), generator=rng, dtype=torch.float64))
    y = torch.tensor([0, 4, 9])
    base = regularised_loss(model, x, y, L2_COSD, generator=gen(2)).terms
    big = regularised_loss(scaled, x, y, L2_COSD, generator=gen(2)).terms
    torch.testing.assert_close(big["l2"], c ** 2 * base["l2"])
    torch.testing.assert_close(big["cosd"], base["cosd"])
    assert bool((base["l2"] > 0).all() and (base["cosd"] > 0).all())

    def h(m):
        maps = gradient(m, x, y).abs().sum(1)
        return maps / maps.flatten(1).amax(1).view(-1, 1, 1)
    torch.testing.assert_close(h(scaled), h(model))


def test_spec_is_checked():
    with pytest.raises(ValueError, match="kind.*one of"):
        Regulariser("gradnorm")
    with pytest.raises(ValueError, match="does not use lambda_cos.*l2_cosd"):
        Regulariser("l2", lambda_l2=0.01, lambda_cos=1.0)
    with pytest.raises(ValueError, match="lambda_hessian must be a finite number >= 0"):
        Regulariser("hessian", lambda_hessian=-1.0)
    with pytest.raises(ValueError, match="did you mean 4/255"):
        Regulariser("l2_cosd", lambda_l2=0.01, lambda_cos=1.0, eps=4)
    with pytest.raises(TypeError, match="regulariser must be a training.Regulariser"):
        TrainConfig(epochs=1, regulariser="l2_cosd")
    with pytest.raises(TypeError, match="Regulariser or None"):
        regularised_loss(softplus_mlp(), torch.zeros(1, 3, 2, 2, dtype=torch.float64), torch.tensor([0]), "hessian")
    plain = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))  # no input space: the neighbour's scale is unknown
    with pytest.raises(ValueError, match="input space"):
        penalty(plain, torch.zeros(1, 3, 2, 2), torch.tensor([0]), L2_COSD)


def test_real_architectures_with_inplace_relu_and_relu6():
    torchvision = pytest.importorskip("torchvision")
    x = IMAGENET.normalize(torch.rand((2, 3, 32, 32), generator=gen(0)))
    y = torch.tensor([1, 3])
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None, num_classes=10).train()  # BatchNorm in train mode
    out = regularised_loss(resnet, x, y, L2_COSD, generator=gen(1), input_space=IMAGENET)
    out.loss.backward()
    grads = [p.grad for p in resnet.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert out.terms["l2"].shape == (2,) and bool((out.terms["cosd"] > 0).all())
    # a piecewise-linear network in eval mode has a zero input Hessian: the term vanishes exactly
    mobilenet = torchvision.models.mobilenet_v2(weights=None, num_classes=10).eval()
    hessian = regularised_loss(mobilenet, x, y, Regulariser("hessian", lambda_hessian=1.0), generator=gen(1))
    assert torch.equal(hessian.terms["hessian"], torch.zeros(2))


# One source for the killed run (child process) and the runs of the test itself.
SETUP = textwrap.dedent("""
    import torch
    from reliable_saliency import models
    from reliable_saliency.data import make_synthetic
    from reliable_saliency.training.loops import TrainConfig
    from reliable_saliency.training.regularisers import Regulariser

    def make():
        torch.manual_seed(0)
        model = models.build("lenet", softplus_beta=3.0)
        config = TrainConfig(epochs=3, batch_size=16, seed=5, weight_decay=4e-5, grad_clip=0.5,
                             regulariser=Regulariser("l2_cosd", lambda_l2=0.01, lambda_cos=1.0))
        return model, make_synthetic(n=32, size=32, seed=0), config
""")

CHILD = SETUP + textwrap.dedent("""
    import sys, time
    from reliable_saliency.training import loops
    torch.set_num_threads(1)
    save = loops.atomic_torch_save

    def save_then_wait(state, path):  # hold still after each checkpoint so the parent can kill us
        save(state, path)
        print("saved", state["epoch"], flush=True)
        time.sleep(120)

    loops.atomic_torch_save = save_then_wait
    model, data, config = make()
    loops.train(model, data, config, state_path=sys.argv[1], progress=False)
""")


def test_killed_regularised_training_resumes_to_the_same_weights(tmp_path):
    from reliable_saliency.training.loops import train

    setup = {}
    exec(SETUP, setup)
    state = tmp_path / "state.pt"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    import reliable_saliency

    lib = str(Path(reliable_saliency.__file__).resolve().parents[1])  # the child imports this same library
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [lib, os.environ.get("PYTHONPATH")])))
    child = subprocess.Popen([sys.executable, str(script), str(state)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = child.stdout.readline()
        assert line.strip() == "saved 1", line
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL and state.exists()

    straight, data, config = setup["make"]()
    train(straight, data, config, progress=False)
    resumed, _, _ = setup["make"]()
    result = train(resumed, data, config, state_path=state, progress=False)
    assert result.resumed_from_epoch == 1 and len(result.history) == 3
    assert all(entry["penalty"] > 0 for entry in result.history)
    assert same_state(resumed, straight)


def test_regularised_loss_refuses_nan_and_warns_on_raw_pixels():
    """#24 finding 10: a NaN image gave a NaN loss, raw [0, 1] input no warning."""
    from reliable_saliency.models import build

    torch.manual_seed(0)
    model = build("lenet").eval()
    x = torch.rand(2, 3, 32, 32)
    y = torch.tensor([1, 2])
    with pytest.warns(UserWarning, match="raw pixels|normalize"):
        regularised_loss(model, x, y, L2_COSD, generator=torch.Generator().manual_seed(0))
    bad = model.input_space.normalize(x)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        regularised_loss(model, bad, y, L2_COSD, generator=torch.Generator().manual_seed(0))
