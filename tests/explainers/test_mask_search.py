"""Mask search (reliable_saliency.explainers.mask_search) against a line-by-line NumPy/skimage port of
the authors' loop, closed forms of its Markov chain, a model whose probability depends on one
region, and the batching / seeding invariants."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from helpers import gen
from helpers.explainers import images, tiny_cnn
from reliable_saliency import explainers
from reliable_saliency.explainers.mask_search import _BLOCK, _resample_grid, _smoothness

mask_search, mask_search_trace = explainers.mask_search, explainers.mask_search_trace


def stream(seed, rows, width):
    """The uniforms one image's chain reads (see mask_search._Streams)."""
    g = gen(seed)
    blocks = [torch.rand((_BLOCK, width), generator=g).double() for _ in range(rows // _BLOCK + 1)]  # float32 draws
    return torch.cat(blocks)[:rows].numpy()


def authors_loop(predict, x, s, passes, table, density, rate):
    """explainer.py's explain_and_update (one image, zero baseline), written as the authors wrote it
    but reading its random numbers from ``table`` and starting the sum at zero."""
    from skimage.transform import resize

    h, w = x.shape[-2:]
    cell = (math.ceil(h / s), math.ceil(w / s))

    def upsize(grid, u):
        sh, sw = int(u[-2] * cell[0]), int(u[-1] * cell[1])
        up = resize(grid, ((s + 1) * cell[0], (s + 1) * cell[1]), order=1, mode="reflect", anti_aliasing=False)
        return up[sh:sh + h, sw:sw + w]

    mask = (table[0, : s * s] > 1 - density).reshape(s, s).astype(np.float64)
    mask_ = upsize(mask, table[0])
    m, pred_prev = np.zeros((h, w)), 0.0
    for i in range(passes):
        pred = predict(mask_ * x)
        delta_pred = pred - pred_prev
        mask_prev = mask.copy()
        u = table[i + 1, : s * s].reshape(s, s)
        obs, masked = np.where(mask > 0.0), np.where(mask == 0.0)
        mask[obs] = u[obs] > (1 - pred)
        mask[masked] = u[masked] > pred
        delta_mask = mask - mask_prev
        down, up = np.where(delta_mask < 0), np.where(delta_mask > 0)
        if delta_pred < 0:
            mask[down] = mask[down] - rate * delta_pred * mask[down]
            mask[up] = mask[up] + rate * delta_pred * mask[up]
        else:
            mask[down] = mask[down] + rate * delta_pred * mask[down]
            mask[up] = mask[up] - rate * delta_pred * mask[up]
        mask_ = upsize(mask, table[i + 1])
        m += mask_
        pred_prev = pred
    return m


@pytest.mark.parametrize("s", [3, 4])
def test_matches_a_port_of_the_authors_loop(rng, s):
    model, x, t = tiny_cnn(), images(rng, 2), torch.tensor([1, 3])
    passes, seeds, rate = 40, [11, 12], 0.3  # a large rate makes the down-weighting visible
    got = mask_search(model, x, t, passes=passes, grid_size=s, rate=rate, seeds=seeds, normalise=False)
    for i in range(2):
        def predict(masked, i=i):
            with torch.no_grad():
                return torch.softmax(model(torch.from_numpy(masked)[None]), dim=1)[0, int(t[i])].item()

        ref = authors_loop(predict, x[i].numpy(), s, passes, stream(seeds[i], passes + 1, s * s + 2), 0.3, rate)
        np.testing.assert_allclose(got[i, 0].numpy() * passes, ref, rtol=1e-10, atol=1e-10)


def test_resampling_is_binary_then_down_weights_newly_switched_cells():
    """Before upsampling the cells are 0/1, except cells that have just switched on (value above
    the previous one), which hold 1 - rate |p - p_prev|; with rate 0 the grid is exactly binary."""
    g = gen(0)
    grid = (torch.rand((500, 4, 4), generator=g) < 0.3).double()
    u = torch.rand((500, 4, 4), generator=g, dtype=torch.float64)
    p, p_prev = torch.full((500,), 0.7, dtype=torch.float64), torch.zeros(500, dtype=torch.float64)
    assert set(_resample_grid(grid, p, p_prev, u, 0.0).unique().tolist()) <= {0.0, 1.0}
    new = _resample_grid(grid, p, p_prev, u, 0.1)
    on = u > torch.where(grid > 0, 1 - p.view(-1, 1, 1), p.view(-1, 1, 1))
    torch.testing.assert_close(new > 0, on, rtol=0, atol=0)
    torch.testing.assert_close(new[on & (grid == 0)], torch.full_like(new[on & (grid == 0)], 0.93))
    torch.testing.assert_close(new[on & (grid == 1)], torch.ones_like(new[on & (grid == 1)]))
    # a down-weighted cell that stays on is "newly switched" again (new 1 > previous 0.93), as coded
    again = _resample_grid(new, torch.full_like(p, 0.5), p, torch.ones_like(u) * 0.99, 0.1)
    torch.testing.assert_close(again[new == 0.93], torch.full_like(again[new == 0.93], 0.98))
    torch.testing.assert_close(again[new == 1], torch.ones_like(again[new == 1]))


def test_chain_density_follows_its_closed_form():
    """With constant p = c and no down-weighting each cell is a two-state chain (on->on: c,
    off->on: 1 - c), so the density after t moves is 1/2 + (d0 - 1/2) (2c - 1)^t."""
    g, c, d0 = gen(1), 0.8, 0.3
    grid = (torch.rand((4000, 4, 4), generator=g, dtype=torch.float64) > 1 - d0).double()
    p = torch.full((4000,), c, dtype=torch.float64)
    for t in range(1, 6):
        grid = _resample_grid(grid, p, p, torch.rand((4000, 4, 4), generator=g, dtype=torch.float64), 0.0)
        expected = 0.5 + (d0 - 0.5) * (2 * c - 1) ** t
        assert abs(grid.mean().item() - expected) < 5 * 0.5 / (4000 * 16) ** 0.5


class ConstantModel(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1) + 0 * x.flatten(1)[:, :1]


def test_mean_visited_mask_of_a_constant_model_has_its_closed_form():
    """Upsampling weights sum to 1, so E[up(M_t)] = density_t at every pixel and
    S / T = 1/2 + (d0 - 1/2) sum_{t=1..T} (2c - 1)^t / T (rate 0)."""
    logits = torch.tensor([[math.log(9.0), 0.0]], dtype=torch.float64)  # c = 0.9
    x = torch.ones((3000, 1, 8, 8), dtype=torch.float64)
    passes, r = 12, 0.8
    got = mask_search(ConstantModel(logits), x, 0, passes=passes, grid_size=3, rate=0.0, normalise=False,
                      generator=gen(2))
    expected = 0.5 + (0.3 - 0.5) * sum(r**t for t in range(1, passes + 1)) / passes
    # one chain's mean visited mask has std 0.14 (measured), so 3000 chains: 5 standard errors
    assert abs(got.mean().item() - expected) < 5 * 0.14 / 3000**0.5


class RegionModel(nn.Module):
    """P(class 0) = sigmoid(12 * mean of the (masked) input over a region - 6)."""

    def __init__(self, rows, cols):
        super().__init__()
        self.rows, self.cols = rows, cols

    def forward(self, x):
        z = 12 * x[:, 0, self.rows, self.cols].mean((1, 2)) - 6
        return torch.stack([z, torch.zeros_like(z)], 1)


@pytest.mark.parametrize("region", [(slice(0, 6), slice(0, 6)), (slice(10, 16), slice(8, 14))])
def test_map_concentrates_on_the_region_the_model_reads(region):
    x = torch.ones((3, 1, 16, 16), dtype=torch.float64)
    sal = mask_search(RegionModel(*region), x, 0, passes=400, grid_size=4, generator=gen(3))[:, 0]
    inside = torch.zeros((16, 16), dtype=torch.bool)
    inside[region] = True
    # worst of 90 chains (15 seeds): 0.71 inside, 0.25 outside
    assert (sal[:, inside].mean(1) > 0.6).all() and (sal[:, ~inside].mean(1) < 0.35).all()
    assert sal.amin() == 0 and (sal.amax((1, 2)) == 1).all()


def test_independent_of_chunking_and_of_the_other_images(rng):
    model, x, t = tiny_cnn(), images(rng, 3), torch.tensor([0, 2, 4])
    options = {"passes": 30, "grid_size": 3, "seeds": [5, 6, 7]}
    runs = [mask_search(model, x, t, batch_size=b, **options) for b in (1, 2, 64)]
    for run in runs[1:]:
        torch.testing.assert_close(run, runs[0], rtol=1e-12, atol=1e-12)
    alone = mask_search(model, x[1:2], t[1:2], passes=30, grid_size=3, seeds=[6])
    torch.testing.assert_close(alone, runs[0][1:2], rtol=1e-12, atol=1e-12)
    drawn = [mask_search(model, x, t, passes=30, grid_size=3, generator=gen(4), batch_size=b) for b in (1, 3)]
    torch.testing.assert_close(drawn[0], drawn[1], rtol=1e-12, atol=1e-12)


def test_trace_equals_separate_runs_and_counts_forward_passes(rng):
    """Checkpoints across the random-number block boundary; every model call holds at most
    batch_size chains and each image gets one forward pass per iteration."""
    model, x, t = tiny_cnn(), images(rng, 5), 1
    calls = []
    handle = model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        trace = mask_search_trace(model, x, t, checkpoints=(7, 300), grid_size=3, seeds=list(range(5)),
                                  batch_size=2)
    finally:
        handle.remove()
    assert trace.shape == (2, 5, 1, 8, 8)
    assert calls == [2] * 300 + [2] * 300 + [1] * 300  # chunks of images, all passes each
    for k, passes in enumerate((7, 300)):
        single = mask_search(model, x, t, passes=passes, grid_size=3, seeds=list(range(5)))
        torch.testing.assert_close(trace[k], single, rtol=1e-12, atol=1e-12)
    raw = mask_search_trace(model, x, t, checkpoints=(7, 300), grid_size=3, seeds=list(range(5)), normalise=False)
    assert 0 <= raw.min() and raw.max() <= 1
    again = explainers.normalise_search_map(raw[1])
    torch.testing.assert_close(again, trace[1], rtol=1e-12, atol=1e-12)


def test_momentum_variant_and_smoothness():
    assert _smoothness(torch.ones((1, 4, 4))).item() == 1
    checker = (torch.arange(4)[:, None] + torch.arange(4)).remainder(2).float()[None]
    assert _smoothness(checker).item() == 0
    model, x = RegionModel(slice(0, 6), slice(0, 6)), torch.ones((2, 1, 16, 16), dtype=torch.float64)
    plain = mask_search(model, x, 0, passes=50, grid_size=4, seeds=[1, 2])
    carried = mask_search(model, x, 0, passes=50, grid_size=4, seeds=[1, 2], momentum=0.5)
    assert not torch.allclose(plain, carried) and 0 <= carried.min() and carried.max() <= 1


def test_create_graph_gives_the_pathwise_derivative(rng):
    """With the chain's moves held fixed (locally constant in x) the map is smooth in x through the
    down-weighting 1 - rate |p - p_prev|: autograd matches central differences."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Softplus(beta=2.0), nn.Flatten(),
                          nn.Linear(72, 3)).double().eval()
    x = torch.randn((2, 1, 6, 6), generator=rng, dtype=torch.float64)
    options = dict(passes=8, grid_size=2, rate=0.5, seeds=[1, 2], normalise=False)

    def of_x(z):
        return mask_search(model, z, torch.tensor([0, 2]), create_graph=True, **options)

    z = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(of_x, (z,), eps=1e-6, atol=1e-6, rtol=1e-4)
    (grad,) = torch.autograd.grad(of_x(z).sum(), z)
    assert grad.abs().max() > 1e-3
    torch.testing.assert_close(of_x(z).detach(), mask_search(model, x, torch.tensor([0, 2]), **options))


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_torchvision_models(name):
    """In-place ReLU and residual additions (ResNet-18), ReLU6 and BatchNorm in eval (MobileNetV2)."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None, num_classes=10).eval()
    before = copy.deepcopy(model.state_dict())
    x = torch.randn((2, 3, 32, 32), generator=gen(1))
    maps = [mask_search(model, x, torch.tensor([1, 2]), passes=6, grid_size=4, seeds=[3, 4], batch_size=b)
            for b in (1, 2)]
    assert maps[0].shape == (2, 1, 32, 32) and torch.isfinite(maps[0]).all()
    assert 0 <= maps[0].min() and maps[0].max() <= 1
    torch.testing.assert_close(maps[0], maps[1], rtol=1e-4, atol=1e-5)
    assert not model.training and all(p.requires_grad and p.grad is None for p in model.parameters())
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_registered_and_rise_uses_the_same_mask_family(rng):
    """RISE with the same grid size makes the same number of forward passes per image."""
    assert explainers.EXPLAINERS["mask_search"] is mask_search
    explain = explainers.get_explainer("mask_search", passes=5, grid_size=3)
    model, x = tiny_cnn(), images(rng, 2)
    counted = []
    handle = model.register_forward_hook(lambda m, i, o: counted.append(i[0].shape[0]))
    try:
        explain(model, x, 0, generator=gen(0))
        explainers.rise(model, x, 0, masks=5, grid_size=3, p=0.3, generator=gen(0))
    finally:
        handle.remove()
    assert sum(counted) == 2 * 5 + 2 * 5


def test_bad_options_give_clear_errors(rng):
    model, x = tiny_cnn(), images(rng, 2)
    cases = [
        ({"grid_size": 0}, "grid_size must be an int >= 1"),
        ({"initial_density": 0.0}, "initial_density must be a finite number > 0"),
        ({"initial_density": 1.5}, "initial_density"),
        ({"rate": -0.1}, "rate must be"),
        ({"passes": 0}, "passes must be an int >= 1"),
        ({"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
        ({"mean_fraction": 2.0}, "mean_fraction"),
        ({"normalise": "yes"}, "normalise must be True or False"),
        ({"seeds": [1]}, "seeds must be a sequence of 2 ints"),
        ({"seeds": [1, 2], "generator": gen(0)}, "either generator or seeds"),
        ({"baseline": "noise"}, "baseline must be"),
    ]
    for options, message in cases:
        with pytest.raises(ValueError, match=message):
            mask_search(model, x, 0, passes=options.pop("passes", 2), **options)
    for checkpoints, message in (((5, 3), "strictly increasing"), (5, "non-empty sequence"), ((0, 2), ">= 1")):
        with pytest.raises(ValueError, match=message):
            mask_search_trace(model, x, 0, checkpoints=checkpoints)
    bn = nn.Sequential(nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(192, 5)).double()
    with pytest.raises(ValueError, match="training mode"):
        mask_search(bn, x, 0, passes=2)
    with pytest.raises(ValueError, match="class indices outside"):
        mask_search(model, x, 7, passes=2)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_keeps_the_seeding_invariants(rng):
    """Each image's generator lives on x.device, so CUDA draws differ from the CPU's; the chunking
    and call-composition invariants hold there too, and a constant model gives the closed form."""
    model, x, t = copy.deepcopy(tiny_cnn()).cuda(), images(rng, 3).cuda(), torch.tensor([0, 2, 4]).cuda()
    runs = [mask_search(model, x, t, passes=40, grid_size=3, seeds=[5, 6, 7], batch_size=b) for b in (1, 3)]
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-12, atol=1e-12)
    alone = mask_search(model, x[2:], t[2:], passes=40, grid_size=3, seeds=[7])
    torch.testing.assert_close(alone, runs[0][2:], rtol=1e-12, atol=1e-12)
    logits = torch.tensor([[math.log(9.0), 0.0]], dtype=torch.float64, device="cuda")
    ones = torch.ones((3000, 1, 8, 8), dtype=torch.float64, device="cuda")
    got = mask_search(ConstantModel(logits), ones, 0, passes=12, grid_size=3, rate=0.0, normalise=False,
                      generator=torch.Generator("cuda").manual_seed(2))
    expected = 0.5 - 0.2 * sum(0.8**k for k in range(1, 13)) / 12
    assert abs(got.mean().item() - expected) < 5 * 0.14 / 3000**0.5
