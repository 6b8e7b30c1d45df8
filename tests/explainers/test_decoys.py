"""Decoys (paper B, reliable_saliency.explainers.decoys): patch positions; decoys stay inside their
patch, within tau and the valid range, and satisfy the representation constraint (recomputed
independently) or are reported and excluded; the solver reaches a closed-form optimum; results do
not depend on the chunk size or on the other images of the call; constant decoys; layer choice on
a torchvision ResNet-18 with in-place ReLUs; clear errors; the caller's model is left untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers import gen
from helpers.explainers import tiny_cnn
from reliable_saliency.core.inputs import CIFAR10, SYNTHETIC
from reliable_saliency.explainers.decoys import constant_decoys, make_decoys, patch_positions


def spaced_cnn():
    model = tiny_cnn()
    model.input_space = SYNTHETIC  # pixels = 0.25 * x + 0.5
    return model


def saturated_pixels(n=3, seed=1):
    """Pixel images in [0, 1] with saturated corners, so the valid range binds."""
    pixels = torch.rand((n, 3, 8, 8), generator=gen(seed), dtype=torch.float64)
    pixels[:, :, :3, :3] = 0.0
    pixels[:, :, -3:, -3:] = 1.0
    return pixels


def rows_of(decoys):
    """(image, position, sign) of every flat row, in the documented order."""
    n, p, s = decoys.valid.shape
    index = torch.arange(n * p * s)
    return index // (p * s), (index // s) % p, index % s


def by_slicing(decoys, x):
    """The decoy images built independently: the patch of x_i plus delta, by slicing."""
    out = []
    for i, p, s in zip(*rows_of(decoys)):
        r, c = decoys.positions[p].tolist()
        image = x[i].clone()
        image[:, r:r + decoys.patch, c:c + decoys.patch] += decoys.delta[i, p, s]
        out.append(image)
    return torch.stack(out)


# ----------------------------------------------------------------------------- positions


def test_patch_positions_cover_every_pixel():
    assert patch_positions(8, 8, 3, 3).tolist() == [[r, c] for r in (0, 3, 5) for c in (0, 3, 5)]
    assert patch_positions(8, 8, 3, 1).shape == (36, 2)
    assert patch_positions(8, 8, 8, 2).tolist() == [[0, 0]]
    assert patch_positions(7, 9, 2, 4).tolist() == [[r, c] for r in (0, 4, 5) for c in (0, 4, 7)]
    model = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(126, 3)).eval()
    decoys = make_decoys(model, torch.zeros((1, 3, 7, 9)), patch=3, stride=3, steps=1)
    assert decoys.positions.tolist() == [[r, c] for r in (0, 3, 4) for c in (0, 3, 6)]
    cover = decoys.cover(7, 9)  # stride <= patch: every pixel is covered
    assert cover.shape == (9, 7, 9) and bool(cover.any(0).all()) and bool((cover.sum((1, 2)) == 9).all())


# ----------------------------------------------------------------------------- the constraint


def test_decoys_stay_in_patch_tau_and_range_and_satisfy_the_constraint():
    model, pixels = spaced_cnn(), saturated_pixels()
    x = SYNTHETIC.normalize(pixels)
    tau, eps = 0.2, 0.05
    decoys = make_decoys(model, x, tau=tau, eps=eps, steps=10)
    assert decoys.kind == "optimised" and decoys.layer == "4" and decoys.valid.shape == (3, 9, 2)
    images = decoys.images(x)
    torch.testing.assert_close(images, by_slicing(decoys, x), rtol=0, atol=1e-14)
    image, position, sign = rows_of(decoys)
    change = SYNTHETIC.denormalize(images) - pixels[image]
    inside = decoys.cover(8, 8)[position][:, None].expand_as(change)
    assert bool((change[~inside] == 0).all())  # only the patch changes
    assert change.abs().max() <= tau + 1e-12
    low, high = SYNTHETIC.denormalize(images).aminmax()
    assert low >= -1e-12 and high <= 1 + 1e-12
    # the constraint, recomputed with the model's own layers (no hook, no early stop)
    with torch.no_grad():
        reference = model[:5](x)
        gap = (model[:5](images) - reference[image]).flatten(1).abs().amax(1).view(3, 9, 2)
    bound = eps * reference.flatten(1).abs().amax(1)
    torch.testing.assert_close(decoys.eps, bound)
    torch.testing.assert_close(decoys.violation, gap, rtol=1e-9, atol=1e-12)
    assert bool((gap[decoys.valid] <= bound[:, None, None].expand_as(gap)[decoys.valid]).all())
    assert bool(decoys.valid.all()) and decoys.excluded == 0 and decoys.satisfied_fraction == 1.0
    # the constraint binds: some decoys stop short of tau, and they are close to the bound
    assert decoys.mean_change < 0.9 * tau
    assert bool((gap / bound[:, None, None] > 0.9).any())
    # the report: one-sided deviation and mean |change| per decoy, in pixel units
    signed = change.flatten(1) * torch.tensor([1.0, -1.0], dtype=change.dtype)[sign][:, None]
    torch.testing.assert_close(decoys.deviation.flatten(), signed.clamp(min=0).sum(1))
    torch.testing.assert_close(decoys.change.flatten(), change.abs().flatten(1).sum(1) / 27)
    assert abs(decoys.mean_change - decoys.change.mean().item()) < 1e-12
    # each decoy deviates towards its sign, unless its patch is already at that end of the range
    at_end = torch.stack([
        (pixels[i, :, r:r + 3, c:c + 3] == (1.0 if s == 0 else 0.0)).all()
        for i, (r, c), s in zip(image, decoys.positions[position].tolist(), sign)
    ]).view(3, 9, 2)
    assert bool(at_end.any()) and torch.equal(decoys.deviation > 0, ~at_end)


def test_decoys_that_never_satisfy_the_constraint_are_reported_and_excluded():
    model, x = spaced_cnn(), SYNTHETIC.normalize(saturated_pixels())
    decoys = make_decoys(model, x, eps=1e-4, steps=2, repair=0)
    assert 0 < decoys.excluded < decoys.valid.numel()
    assert torch.equal(decoys.valid, decoys.satisfied)
    assert decoys.satisfied_fraction == pytest.approx(decoys.valid.double().mean().item())
    excluded = ~decoys.valid
    assert bool((decoys.delta[excluded] == 0).all()) and bool((decoys.deviation[excluded] == 0).all())
    bound = decoys.eps[:, None, None].expand_as(decoys.violation)
    assert bool((decoys.violation[excluded] > bound[excluded]).all())
    assert bool((decoys.violation[decoys.valid] <= bound[decoys.valid]).all())
    summary = decoys.summary()
    assert summary["excluded"] == decoys.excluded and summary["decoys"] == 54
    assert summary["mean_change"] == pytest.approx(decoys.change[decoys.valid].mean().item())


def test_solver_reaches_the_closed_form_optimum():
    """A diagonal linear layer F(x)_j = w_c x_j: each entry is bounded on its own, so the optimum
    moves entry j of the patch by min(tau, eps * std_c / |w_c|, distance to the valid range's end)."""
    scale = nn.Conv2d(3, 3, 1, groups=3, bias=False)
    weights = torch.tensor([0.5, -2.0, 4.0])
    with torch.no_grad():
        scale.weight.copy_(weights.view(3, 1, 1, 1))
    model = nn.Sequential(scale, nn.Flatten(), nn.Linear(3 * 8 * 8, 4)).double().eval()
    model.input_space = SYNTHETIC
    pixels = saturated_pixels(2, seed=0)
    tau, eps = 0.1, 0.1
    decoys = make_decoys(model, SYNTHETIC.normalize(pixels), layer="0", eps=eps, relative_eps=False, tau=tau)
    per_entry = torch.clamp(eps * 0.25 / weights.abs().double(), max=tau).view(3, 1, 1)
    optimum = torch.zeros(decoys.valid.shape, dtype=torch.float64)
    for i in range(2):
        for p, (r, c) in enumerate(decoys.positions.tolist()):
            patch = pixels[i, :, r:r + 3, c:c + 3]
            optimum[i, p, 0] = torch.minimum(per_entry, 1 - patch).sum()
            optimum[i, p, 1] = torch.minimum(per_entry, patch).sum()
    assert bool(decoys.valid.all())
    saturated = optimum == 0  # the patch is already at that end of the range
    assert bool(saturated.any()) and bool((decoys.deviation[saturated] == 0).all())
    ratio = decoys.deviation[~saturated] / optimum[~saturated]
    assert ratio.max() <= 1 + 1e-9, "a feasible point cannot beat the optimum"
    assert ratio.min() > 0.9 and ratio.mean() > 0.95, (ratio.min(), ratio.mean())


# ----------------------------------------------------------------------------- batching


def test_decoys_do_not_depend_on_chunk_size_or_other_images():
    model, x = spaced_cnn(), SYNTHETIC.normalize(saturated_pixels())
    runs = [make_decoys(model, x, eps=0.05, steps=6, batch_size=b) for b in (1, 7, None)]
    for other in runs[1:]:
        for field in ("delta", "violation", "deviation"):
            torch.testing.assert_close(getattr(other, field), getattr(runs[0], field), rtol=1e-12, atol=1e-14)
        assert torch.equal(other.valid, runs[0].valid)
    alone = make_decoys(model, x[1:2], eps=0.05, steps=6)
    torch.testing.assert_close(alone.delta, runs[0].delta[1:2], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(alone.eps, runs[0].eps[1:2])
    # nor on the other positions of the call
    some = make_decoys(model, x, eps=0.05, steps=6, positions=runs[0].positions[[7, 2]])
    torch.testing.assert_close(some.delta, runs[0].delta[:, [7, 2]], rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------- constant decoys


def test_constant_decoys_take_the_mean_colour():
    model, pixels = spaced_cnn(), saturated_pixels()
    x = SYNTHETIC.normalize(pixels)
    decoys = constant_decoys(model, x, eps=0.05)
    assert decoys.kind == "constant" and decoys.valid.shape == (3, 9, 1) and bool(decoys.valid.all())
    images = SYNTHETIC.denormalize(decoys.images(x))
    image, position, _ = rows_of(decoys)
    colour = pixels.mean(dim=(2, 3))
    for row in range(images.shape[0]):
        r, c = decoys.positions[position[row]].tolist()
        expected = pixels[image[row]].clone()
        expected[:, r:r + 3, c:c + 3] = colour[image[row], :, None, None]
        torch.testing.assert_close(images[row], expected)
    with torch.no_grad():
        gap = (model[:5](decoys.images(x)) - model[:5](x)[image]).flatten(1).abs().amax(1).view(3, 9, 1)
    torch.testing.assert_close(decoys.violation, gap, rtol=1e-9, atol=1e-12)
    assert torch.equal(decoys.satisfied, gap <= decoys.eps.view(3, 1, 1))


# ----------------------------------------------------------------------------- layers and models


def test_layer_by_name_or_module_and_refused_layers():
    model, x = tiny_cnn(), torch.randn((1, 3, 8, 8), generator=gen(0), dtype=torch.float64)
    by_name = make_decoys(model, x, layer="1", steps=2)
    by_module = make_decoys(model, x, layer=model[1], steps=2)
    assert by_name.layer == by_module.layer == "1"
    torch.testing.assert_close(by_name.delta, by_module.delta, rtol=0, atol=0)
    with pytest.raises(ValueError, match="no submodule 'features.9'"):
        make_decoys(model, x, layer="features.9")
    relu = nn.ReLU()
    twice = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), relu, nn.Conv2d(3, 3, 3, padding=1), relu,
                          nn.Flatten(), nn.Linear(192, 2)).double().eval()
    with pytest.raises(ValueError, match="ran 2 times"):
        make_decoys(twice, x, layer="1")

    class ScalarLayer(nn.Module):  # a representation without a feature axis
        def __init__(self):
            super().__init__()
            self.squash = nn.Tanh()

        def forward(self, z):
            score = self.squash(z.sum((1, 2, 3)))
            return torch.stack([score, -score], 1)

    with pytest.raises(ValueError, match=r"batch axis first and at least one more axis, \(N, ...\), got \(1,\)"):
        make_decoys(ScalarLayer().eval(), x, layer="squash")


def test_torchvision_resnet18_with_inplace_relu_and_a_named_layer():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    model.input_space = CIFAR10
    x = CIFAR10.normalize(torch.rand((1, 3, 32, 32), generator=gen(2)))
    decoys = make_decoys(model, x, layer="layer1", patch=3, stride=15, steps=3, eps=0.2)
    assert decoys.valid.shape == (1, 9, 2) and decoys.layer == "layer1"
    captured = []
    handle = model.layer1.register_forward_hook(lambda m, a, out: captured.append(out.clone()))
    try:
        with torch.no_grad():
            model(x)
            model(decoys.images(x))
    finally:
        handle.remove()
    gap = (captured[1] - captured[0]).flatten(1).abs().amax(1).view(1, 9, 2)
    torch.testing.assert_close(decoys.violation, gap, rtol=1e-4, atol=1e-5)
    assert bool((gap[decoys.valid] <= decoys.eps[0] * (1 + 1e-5)).all()) and decoys.satisfied_fraction > 0.5
    with pytest.raises(ValueError, match="ran 2 times"):  # a BasicBlock calls its ReLU twice
        make_decoys(model, x, layer="layer1.0.relu")


# ----------------------------------------------------------------------------- errors and hygiene


def test_bad_options_give_clear_errors():
    model, x = tiny_cnn(), torch.randn((2, 3, 8, 8), generator=gen(0), dtype=torch.float64)
    cases = [
        ({"patch": 9}, r"patch must be an int in \[1, 8\] \(patch side in pixels; the image is 8x8\)"),
        ({"stride": 0}, "stride must be an int >= 1"),
        ({"eps": -0.1}, "eps must be a finite number >= 0"),
        ({"tau": -0.1}, "tau must be >= 0 in pixel units"),
        ({"tau": 8}, "did you mean 8/255"),
        ({"steps": -1}, "steps must be an int >= 0"),
        ({"multiplier": 0.0}, "multiplier must be a finite number > 0"),
        ({"multiplier_growth": 0.5}, "multiplier_growth must be a finite number >= 1"),
        ({"batch_size": 0}, "batch_size must be a positive int"),
        ({"positions": [[6, 0]]}, r"positions must be integer top-left corners \(P, 2\) of 3x3 patches"),
        ({"positions": [[0.5, 0.0]]}, "positions must be integer"),
    ]
    for options, message in cases:
        with pytest.raises(ValueError, match=message):
            make_decoys(model, x, **options)
    with pytest.raises(ValueError, match=r"shape \(N, C, H, W\)"):
        make_decoys(model, x[0])
    with pytest.raises(ValueError, match="outside the valid range"):
        make_decoys(spaced_cnn(), x * 10)
    with_norm = nn.Sequential(nn.BatchNorm2d(3), tiny_cnn()).double()
    with pytest.raises(ValueError, match="call model.eval()"):
        constant_decoys(with_norm, x)


def test_model_is_left_untouched():
    model = tiny_cnn().train()  # no BatchNorm / Dropout: train mode is allowed and must stay on
    model[0].weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    x = torch.randn((2, 3, 8, 8), generator=gen(0), dtype=torch.float64).requires_grad_(True)
    make_decoys(model, x, steps=2, batch_size=5)
    constant_decoys(model, x)
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters()) and x.grad is None
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_the_lagrange_multiplier_grows_while_the_constraint_is_violated():
    """Kills the mutant "the multiplier never grows" (#24, finding 11): with the initial multiplier
    and no repair, only its growth brings the decoys back inside the representation constraint."""
    model = spaced_cnn()
    x = SYNTHETIC.normalize(torch.rand((2, 3, 8, 8), generator=gen(3), dtype=torch.float64))
    options = dict(patch=3, stride=3, eps=0.2, tau=0.5, steps=20, multiplier=1.0, repair=0)
    growing = make_decoys(model, x, multiplier_growth=2.0, **options)
    fixed = make_decoys(model, x, multiplier_growth=1.0, **options)
    assert growing.satisfied_fraction > fixed.satisfied_fraction + 0.5  # 0.75 against 0.0 here
