"""DANCE (paper B, reliable_saliency.explainers.dance): aggregation on a hand-computed case and on
explicit decoys against gradients taken with autograd one decoy at a time; the linear-model negative
control; a numerical check of Theorem 1 (the range is the Hessian term within the patch, to first
order) with an explicit Hessian; independence of the chunk size and of the other images of the call;
gradients of create_graph maps (finite differences); the paper's post-processing; torchvision
ResNet-18 (in-place ReLU) and MobileNet-V2 (ReLU6); clear errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from helpers import gen
from helpers.explainers import images, tiny_cnn
from reliable_saliency.core.inputs import CIFAR10
from reliable_saliency.explainers import EXPLAINERS, dance, get_explainer
from reliable_saliency.explainers.dance import PAPER_POSTPROCESS, aggregate_decoy_maps
from reliable_saliency.explainers.decoys import DecoySet, make_decoys

FAST = {"steps": 4}


def smooth_cnn(seed=0):
    """Softplus CNN for 1x6x6 inputs (a non-zero Hessian everywhere)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.Softplus(beta=2.0), nn.AvgPool2d(2),
        nn.Conv2d(2, 3, 3, padding=1), nn.Softplus(beta=2.0), nn.Flatten(), nn.Linear(3 * 3 * 3, 4),
    ).double().eval()


def explicit_decoys(x, invalid=((1, 1, 0),)):
    """Two images' decoys on two 2x2 patches, chosen by hand; ``invalid`` rows are excluded."""
    n, c = x.shape[:2]
    delta = 0.3 * torch.randn((n, 2, 2, c, 2, 2), generator=gen(4), dtype=x.dtype)
    valid = torch.ones((n, 2, 2), dtype=torch.bool)
    for row in invalid:
        valid[row] = False
        delta[row] = 0
    zeros = torch.zeros((n, 2, 2), dtype=x.dtype)
    return DecoySet(kind="optimised", layer="by hand", patch=2, positions=torch.tensor([[0, 0], [1, 4]]),
                    signs=torch.tensor([1.0, -1.0]), delta=delta, valid=valid, satisfied=valid,
                    violation=zeros, eps=torch.zeros(n), deviation=zeros, change=zeros)


def gradient_by_hand(model, image, target):
    z = image.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(z[None])[0, int(target)], z)
    return grad


def decoy_gradients(model, x, target, decoys):
    """{(i, p, s): gradient at the decoy} for the valid decoys, decoys built by slicing."""
    out = {}
    for i, p, s in decoys.valid.nonzero().tolist():
        r, c = decoys.positions[p].tolist()
        image = x[i].clone()
        image[:, r:r + decoys.patch, c:c + decoys.patch] += decoys.delta[i, p, s]
        out[i, p, s] = gradient_by_hand(model, image, target[i])
    return out


# ----------------------------------------------------------------------------- aggregation


def test_aggregation_of_a_hand_computed_case():
    maps = torch.tensor([[[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 5.0], [3.0, 1.0]]],
                          [[[2.0, 2.0], [2.0, 2.0]], [[-1.0, 0.0], [9.0, 2.0]]]]], dtype=torch.float64)
    maps = maps.unsqueeze(3)  # (1, 2, 2, 1, 2, 2)
    cover = torch.tensor([[[True, True], [False, False]], [[False, True], [True, True]]])
    valid = torch.ones((1, 2, 2), dtype=torch.bool)

    def run(how, valid=valid):
        return aggregate_decoy_maps(maps, valid, cover, how)[0, 0].tolist()

    assert run("range") == [[3.0, 5.0], [7.0, 3.0]]
    assert run("mean") == [[0.5, 2.25], [4.25, 2.25]]
    assert run("range_per_position") == [[1.0, 2.5], [7.0, 0.0]]
    one_out = valid.clone()
    one_out[0, 1, 1] = False
    assert run("range", one_out) == [[2.0, 3.0], [1.0, 3.0]]
    assert run("mean", one_out) == [[1.0, 3.0], [8 / 3, 7 / 3]]
    assert run("range_per_position", one_out) == [[1.0, 3.0], [0.0, 0.0]]  # position 1 left out
    none = torch.zeros_like(valid)
    for how in ("range", "mean", "range_per_position"):
        assert run(how, none) == [[0.0, 0.0], [0.0, 0.0]]
    with pytest.raises(ValueError, match="needs two decoys per position"):
        aggregate_decoy_maps(maps[:, :, :1], valid[:, :, :1], cover, "range_per_position")
    with pytest.raises(ValueError, match="unknown aggregate 'median'"):
        aggregate_decoy_maps(maps, valid, cover, "median")


def test_dance_on_explicit_decoys_matches_gradients_taken_one_decoy_at_a_time(cnn_case):
    model, x, t = cnn_case
    decoys = explicit_decoys(x)
    grads = decoy_gradients(model, x, t, decoys)
    with pytest.warns(UserWarning, match="1 of 12 decoys never satisfied"):
        z = dance(model, x, t, decoys=decoys)
    ranges, means, per_position = [], [], []
    cover = torch.zeros((2, 1, 8, 8), dtype=x.dtype)
    cover[0, :, 0:2, 0:2] = cover[1, :, 1:3, 4:6] = 1
    for i in range(3):
        stack = torch.stack([g for key, g in grads.items() if key[0] == i])
        ranges.append(stack.amax(0) - stack.amin(0))
        means.append(stack.mean(0))
        pairs = [p for p in range(2) if (i, p, 0) in grads and (i, p, 1) in grads]
        total = sum((grads[i, p, 0] - grads[i, p, 1]).abs() * cover[p] for p in pairs)
        per_position.append(total / sum(cover[p] for p in pairs).clamp(min=1))
    torch.testing.assert_close(z, torch.stack(ranges), rtol=1e-10, atol=1e-12)
    for how, expected in (("mean", means), ("range_per_position", per_position)):
        with pytest.warns(UserWarning):
            got = dance(model, x, t, decoys=decoys, aggregate=how)
        torch.testing.assert_close(got, torch.stack(expected), rtol=1e-10, atol=1e-12)
    with pytest.warns(UserWarning):  # several readings from one run of the base explainer
        every = dance(model, x, t, decoys=decoys, aggregate=["range", "mean", "range_per_position"])
    for how, expected in (("range", ranges), ("mean", means), ("range_per_position", per_position)):
        torch.testing.assert_close(every[how], torch.stack(expected), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="distinct"):
        dance(model, x, t, decoys=decoys, aggregate=["mean", "mean"])


def test_constant_decoy_ablation_matches_a_hand_built_range(cnn_case):
    model, x, t = cnn_case
    z, decoys = dance(model, x, t, decoy="constant", stride=5, return_decoys=True)
    colour = x.mean(dim=(2, 3))
    for i in range(3):
        grads = []
        for r, c in decoys.positions.tolist():
            image = x[i].clone()
            image[:, r:r + 3, c:c + 3] = colour[i, :, None, None]
            grads.append(gradient_by_hand(model, image, t[i]))
        grads = torch.stack(grads)
        torch.testing.assert_close(z[i], grads.amax(0) - grads.amin(0), rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- the paper's claims


def test_linear_model_gives_a_zero_range():
    """Negative control: the gradient of a linear model does not depend on the input."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(256, 5)).double().eval()
    x, t = images(gen(1)), torch.tensor([0, 2, 4])
    z, decoys = dance(model, x, t, return_decoys=True, **FAST)
    assert decoys.layer == "0" and decoys.mean_change > 0.01
    assert torch.equal(z, torch.zeros_like(z))
    assert torch.equal(dance(model, x, t, decoys=decoys, aggregate="range_per_position"), torch.zeros_like(z))
    plain = EXPLAINERS["gradient"](model, x, t)
    torch.testing.assert_close(dance(model, x, t, decoys=decoys, aggregate="mean"), plain, rtol=1e-12, atol=1e-14)
    assert dance(model, x, t, decoys=decoys, base="grad_x_input").abs().max() > 1e-3  # the control is specific


def test_theorem_1_range_is_the_hessian_term_within_the_patch():
    """E(x + d_k) = grad f(x) + H d_k + O(|d|^2) with d_k supported on decoy k's patch K_k, so
    Z_i = max_k sum_{j in K_k} H_ij d_kj - min_k (...) + O(|d|^2): the error relative to the
    Hessian term is O(|d|). Measured: O(|d|^2) (a quarter of the decoys' size, 1/16 of the
    relative error): the two decoys of a patch move it in nearly opposite directions, so where
    the max and the min come from the same patch the second-order terms cancel, as in a central
    difference."""
    model, t = smooth_cnn(), 2
    x = torch.randn((1, 1, 6, 6), generator=gen(3), dtype=torch.float64)
    decoys = make_decoys(model, x, patch=2, stride=2, tau=0.05, eps=0.2, steps=5)
    hessian = torch.autograd.functional.hessian(lambda z: model(z.view(1, 1, 6, 6))[0, t], x.flatten())
    errors = []
    for size in (1.0, 0.25):
        scaled = dataclasses.replace(decoys, delta=decoys.delta * size)
        shifts = (scaled.images(x) - x).flatten(1)  # (2P, 36), zero outside each decoy's patch
        terms = shifts @ hessian  # row k: sum_{j in K_k} H_ij d_kj
        predicted = (terms.amax(0) - terms.amin(0)).view(1, 1, 6, 6)
        got = dance(model, x, t, decoys=scaled)
        errors.append(float((got - predicted).norm() / predicted.norm()))
        pairs = terms.view(9, 2, 36)
        cover = scaled.cover(6, 6).flatten(1).double()
        per_position = ((pairs[:, 0] - pairs[:, 1]).abs() * cover).sum(0) / cover.sum(0)
        got = dance(model, x, t, decoys=scaled, aggregate="range_per_position")
        assert float((got.flatten() - per_position).norm() / per_position.norm()) < 2 * errors[-1] + 1e-3
    assert errors[0] < 0.01, errors
    assert errors[1] / errors[0] < 0.25 * 1.2, errors  # at least first order


# ----------------------------------------------------------------------------- batching and randomness


def test_results_do_not_depend_on_batch_size_or_other_images(cnn_case):
    model, x, t = cnn_case
    runs = [dance(model, x, t, batch_size=b, **FAST) for b in (1, 7, None)]
    for other in runs[1:]:
        torch.testing.assert_close(other, runs[0], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(dance(model, x[1:2], t[1:2], **FAST), runs[0][1:2], rtol=1e-12, atol=1e-14)
    noisy = {"base": "smoothgrad", "base_options": {"samples": 3}, **FAST}
    a = dance(model, x, t, generator=gen(5), batch_size=1, **noisy)
    b = dance(model, x, t, generator=gen(5), **noisy)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    prefix = dance(model, x[:2], t[:2], generator=gen(5), **noisy)  # seeds drawn in row order
    torch.testing.assert_close(prefix, b[:2], rtol=1e-12, atol=1e-14)
    assert not torch.allclose(b, dance(model, x, t, generator=gen(6), **noisy))


def test_create_graph_maps_match_finite_differences():
    """With the decoys' delta fixed, x -> DANCE(x) is differentiable (gradcheck, each aggregate)."""
    model = smooth_cnn()
    x = torch.randn((2, 1, 6, 6), generator=gen(1), dtype=torch.float64)
    target = torch.tensor([1, 3])
    decoys = make_decoys(model, x, patch=2, stride=2, tau=0.1, steps=3)
    for how in ("range", "range_per_position", "mean"):
        def of_x(z, how=how):
            return dance(model, z, target, decoys=decoys, aggregate=how, create_graph=True)

        assert torch.autograd.gradcheck(of_x, (x.clone().requires_grad_(True),), eps=1e-6, atol=1e-5, rtol=1e-4)
    z = dance(model, x.clone().requires_grad_(True), target, decoys=decoys, create_graph=True)
    torch.testing.assert_close(z, dance(model, x, target, decoys=decoys), rtol=1e-12, atol=1e-14)
    (weight_grad,) = torch.autograd.grad(z.sum(), model[0].weight)
    assert weight_grad.abs().max() > 0  # the graph reaches the parameters too
    assert not dance(model, x.clone().requires_grad_(True), target, decoys=decoys).requires_grad


# ----------------------------------------------------------------------------- options


def test_paper_postprocessing(cnn_case):
    model, x, t = cnn_case
    z, decoys = dance(model, x, t, return_decoys=True, **FAST)
    got = dance(model, x, t, decoys=decoys, postprocess="paper")
    per_pixel = z.abs().amax(1).flatten(1)
    top = torch.quantile(per_pixel, 0.95, dim=1, keepdim=True)
    clipped = torch.minimum(per_pixel, top)
    low, high = clipped.amin(1, keepdim=True), clipped.amax(1, keepdim=True)
    torch.testing.assert_close(got, ((clipped - low) / (high - low)).view(3, 1, 8, 8))
    assert PAPER_POSTPROCESS[2] == ("winsorize", {"q": 95.0})
    steps = ["absolute", "channel_sum"]
    torch.testing.assert_close(dance(model, x, t, decoys=decoys, postprocess=steps), z.abs().sum(1, keepdim=True))


def test_any_registered_base_and_registration(cnn_case):
    model, x, t = cnn_case
    decoys = make_decoys(model, x, **FAST)
    bases = {"integrated_gradients": {"steps": 3}, "smoothgrad": {"samples": 2}, "gradcam": {"layer": "4"},
             "guided_backprop": None, "lrp_epsilon": None}
    for name, options in bases.items():
        z = dance(model, x, t, base=name, base_options=options, decoys=decoys, generator=gen(0))
        assert z.shape == ((3, 1, 8, 8) if name == "gradcam" else x.shape) and bool(torch.isfinite(z).all()), name
        assert z.min() >= 0 and z.max() > 0, name
    assert EXPLAINERS["dance"] is dance
    bound = get_explainer("dance", base="integrated_gradients", base_options={"steps": 3}, **FAST)
    explicit = dance(model, x, t, base=get_explainer("integrated_gradients", steps=3), **FAST)
    torch.testing.assert_close(bound(model, x, t), explicit, rtol=0, atol=0)


def test_bad_options_give_clear_errors(cnn_case):
    model, x, t = cnn_case
    cases = [
        ({"patch": 9}, r"patch must be an int in \[1, 8\]"),
        ({"stride": 0}, "stride must be an int >= 1"),
        ({"eps": -0.1}, "eps must be a finite number >= 0"),
        ({"tau": -0.1}, "tau must be >= 0 in pixel units"),
        ({"base": "saliency"}, "unknown base explainer 'saliency'"),
        ({"base": "dance"}, "another explainer than 'dance'"),
        ({"base_options": {"steps": 3}}, "'gradient' has no option"),
        ({"aggregate": "median"}, "unknown aggregate 'median'"),
        ({"decoy": "blur"}, "unknown decoy 'blur'"),
        ({"decoy": "constant", "aggregate": "range_per_position"}, "needs two decoys per position"),
        ({"postprocess": "fancy"}, "postprocess must be None, 'paper' or a list"),
        ({"postprocess": ["sharpen"]}, "unknown post-processing step 'sharpen'"),
        ({"decoys": explicit_decoys(x[:2])}, "decoys were made for 2 images"),
    ]
    for options, message in cases:
        with pytest.raises(ValueError, match=message):
            dance(model, x, t, **options)
    with pytest.raises(TypeError, match="base_options must be a dict"):
        dance(model, x, t, base_options=3)
    with pytest.raises(TypeError, match="decoys must be a DecoySet"):
        dance(model, x, t, decoys=torch.zeros(3))


# ----------------------------------------------------------------------------- real architectures


@pytest.mark.parametrize("name, layer", [("resnet18", "layer2"), ("mobilenet_v2", "features.3")])
def test_torchvision_models_with_inplace_relu_and_relu6(name, layer):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None, num_classes=10).eval()
    model.input_space = CIFAR10
    model.features[0][0].weight.requires_grad_(False) if name == "mobilenet_v2" else model.conv1.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    x = CIFAR10.normalize(torch.rand((1, 3, 32, 32), generator=gen(2)))
    target = torch.tensor([3])
    z, decoys = dance(model, x, target, layer=layer, stride=15, steps=2, return_decoys=True)
    assert z.shape == x.shape and bool(torch.isfinite(z).all()) and z.min() >= 0 and z.max() > 0
    assert decoys.layer == layer and decoys.valid.shape == (1, 9, 2)
    grads = torch.stack(list(decoy_gradients(model, x, target, decoys).values()))
    torch.testing.assert_close(z[0], grads.amax(0) - grads.amin(0), rtol=1e-4, atol=1e-6)
    assert [p.requires_grad for p in model.parameters()] == flags and not model.training
    assert all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_and_cuda_agree(cnn_case):
    model, x, t = cnn_case
    cpu, decoys = dance(model, x, t, return_decoys=True, **FAST)
    cuda, on_gpu = dance(model.cuda(), x.cuda(), t.cuda(), return_decoys=True, **FAST)
    assert torch.equal(on_gpu.valid.cpu(), decoys.valid)
    torch.testing.assert_close(on_gpu.delta.cpu(), decoys.delta, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-9, atol=1e-11)
