"""Faithfulness (reliable_saliency.evaluation.faithfulness): deletion / insertion curves against a
closed form, scipy substrates and Quantus; retrieval against a direct computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from helpers import gen
from helpers.evaluation import tiny_cnn
from reliable_saliency import evaluation


class KeptWeight(nn.Module):
    """For inputs whose channel 0 is 1 (kept) or 0 (removed): p(class 0) = sum of w over kept pixels."""

    def __init__(self, w):
        super().__init__()
        self.register_buffer("w", w)

    def forward(self, x):
        p = (x[:, 0] * self.w).flatten(1).sum(1).clamp(1e-12, 1 - 1e-12)
        return torch.stack([p.log(), (1 - p).log()], 1)


# ------------------------------------------------------------------------ deletion / insertion


@pytest.mark.parametrize("steps", [8, 5])
def test_deletion_and_insertion_closed_form(steps):
    h = w = 4
    d = h * w
    weights = torch.rand(h, w, generator=gen(10), dtype=torch.float64)
    weights /= weights.sum()
    model = KeptWeight(weights).eval()
    x = torch.ones(3, 2, h, w, dtype=torch.float64)
    maps = torch.stack([weights, -weights, torch.rand(h, w, generator=gen(11), dtype=torch.float64)])
    del_auc, del_curve = evaluation.deletion_auc(model, x, maps, 0, steps=steps, return_curve=True)
    ins_auc, ins_curve = evaluation.insertion_auc(model, x, maps, 0, substrate="zero", steps=steps, return_curve=True)
    counts = np.arange(steps + 1) * d // steps
    for i in range(3):
        order = np.argsort(-maps[i].flatten().numpy(), kind="stable")
        mass = np.concatenate([[0.0], np.cumsum(weights.flatten().numpy()[order])])[counts]
        np.testing.assert_allclose(del_curve[i].numpy(), 1 - mass, atol=1e-9)
        np.testing.assert_allclose(ins_curve[i].numpy(), mass, atol=1e-9)
        np.testing.assert_allclose(del_auc[i].item(), np.trapezoid(1 - mass, counts / d), atol=1e-9)
        np.testing.assert_allclose(ins_auc[i].item(), np.trapezoid(mass, counts / d), atol=1e-9)
    # deleting by the true weights is the best order, by their negation the worst
    assert del_auc[0] < del_auc[2] < del_auc[1] and ins_auc[0] > ins_auc[2] > ins_auc[1]


@pytest.mark.parametrize("substrate, sigma", [("zero", 5.0), ("mean", 5.0), ("blur", 1.0), ("blur", 5.0)])
def test_curve_endpoints_and_substrates(substrate, sigma):
    model = tiny_cnn(1)
    x = torch.randn(2, 3, 8, 8, generator=gen(12))
    maps = torch.rand(2, 8, 8, generator=gen(13))
    target = torch.tensor([1, 3])
    if substrate == "zero":
        base = np.zeros(x.shape, dtype=np.float32)
    elif substrate == "mean":
        base = np.broadcast_to(x.mean((2, 3), keepdim=True).numpy(), x.shape)
    else:  # torch 'reflect' padding is scipy's 'mirror'; radius ceil(3 sigma) capped at 7 on 8x8
        radius = min(int(np.ceil(3 * sigma)), 7)
        truncate = (radius + 0.25) / sigma  # scipy's radius int(truncate * sigma + 0.5)
        base = ndimage.gaussian_filter(x.numpy(), (0, 0, sigma, sigma), mode="mirror", truncate=truncate)
    with torch.no_grad():
        p_x = model(x).softmax(1)[[0, 1], target]
        p_base = model(torch.as_tensor(np.ascontiguousarray(base), dtype=torch.float32)).softmax(1)[[0, 1], target]
    _, dc = evaluation.deletion_auc(model, x, maps, target, substrate=substrate, blur_sigma=sigma, return_curve=True)
    _, ic = evaluation.insertion_auc(model, x, maps, target, substrate=substrate, blur_sigma=sigma, return_curve=True)
    assert dc.shape == ic.shape == (2, 9)
    torch.testing.assert_close(dc[:, 0], p_x)
    torch.testing.assert_close(dc[:, -1], p_base, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ic[:, 0], p_base, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ic[:, -1], p_x)


def test_curves_do_not_depend_on_batch_size():
    model = tiny_cnn(2)
    x = torch.randn(3, 3, 8, 8, generator=gen(14))
    maps = torch.rand(3, 8, 8, generator=gen(15))
    full = evaluation.deletion_auc(model, x, maps, 2, steps=16, return_curve=True)
    chunked = evaluation.deletion_auc(model, x, maps.unsqueeze(1), 2, steps=16, batch_size=7, return_curve=True)
    torch.testing.assert_close(full, chunked)


def test_deletion_curve_matches_quantus_pixel_flipping():
    import quantus

    model = tiny_cnn(3, size=6)
    x = torch.randn(2, 3, 6, 6, generator=gen(16))
    maps = torch.rand(2, 6, 6, generator=gen(17))
    target = torch.tensor([0, 4])
    _, curve = evaluation.deletion_auc(model, x, maps, target, steps=36, return_curve=True)
    # Quantus flips features (channel entries) of the map broadcast over channels: 3 per pixel
    metric = quantus.PixelFlipping(
        features_in_step=3, perturb_baseline=0.0, normalise=False, disable_warnings=True
    )
    ref = metric(model=model, x_batch=x.numpy(), y_batch=target.numpy(), a_batch=maps.unsqueeze(1).numpy(),
                 softmax=True, device="cpu")
    np.testing.assert_allclose(curve[:, 1:].numpy(), np.array(ref), atol=1e-5)


def test_curves_validate_inputs():
    model, x, maps = tiny_cnn(0), torch.randn(2, 3, 8, 8), torch.rand(2, 8, 8)
    with pytest.raises(ValueError, match="unknown substrate"):
        evaluation.deletion_auc(model, x, maps, 0, substrate="noise")
    with pytest.raises(ValueError, match="to match x"):
        evaluation.insertion_auc(model, x, maps[:, :4], 0)
    with pytest.raises(ValueError, match="steps"):
        evaluation.deletion_auc(model, x, maps, 0, steps=65)
    bad = maps.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        evaluation.deletion_auc(model, x, bad, 0)
    with pytest.raises(ValueError, match="channel_sum"):
        evaluation.deletion_auc(model, x, torch.rand(2, 3, 8, 8), 0)
    training_bn = nn.Sequential(nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(128, 3))
    with pytest.raises(ValueError, match="eval"):
        evaluation.insertion_auc(training_bn, x, maps, 0)


# ------------------------------------------------------------------------------------ retrieval


def test_retrieval_matches_direct_computation():
    model = tiny_cnn(4)
    x = torch.randn(4, 3, 8, 8, generator=gen(18))
    clean = torch.tensor([0, 1, 2, 3])
    for masks in (torch.rand(4, 8, 8, generator=gen(19)), torch.rand(4, 1, 8, 8, generator=gen(20)),
                  torch.rand(4, 3, 8, 8, generator=gen(21))):
        masked = x * (masks.unsqueeze(1) if masks.dim() == 3 else masks)
        with torch.no_grad():
            p = model(masked).softmax(1)
        hit, prob = evaluation.retrieval(model, x, masks, clean, batch_size=3)
        assert hit.dtype == torch.bool and torch.equal(hit, p.argmax(1) == clean)
        torch.testing.assert_close(prob, p[torch.arange(4), clean])
    with torch.no_grad():
        pred = model(x).argmax(1)
    assert evaluation.retrieval(model, x, torch.ones(4, 8, 8), pred)[0].all()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        evaluation.retrieval(model, x, 2 * torch.ones(4, 8, 8), pred)
    with pytest.raises(ValueError, match="to match"):
        evaluation.retrieval(model, x, torch.ones(4, 2, 8, 8), pred)


# ---------------------------------------------------------------------- paper B's fidelity


def test_saliency_fidelity_closed_form_and_invariants():
    # a linear softmax model: every probability has a closed form
    w = torch.randn(3, 2 * 4 * 4, generator=gen(30), dtype=torch.float64)
    model = nn.Sequential(nn.Flatten(), nn.Linear(32, 3, bias=False)).double().eval()
    model[1].weight.data.copy_(w)
    x = torch.randn(5, 2, 4, 4, generator=gen(31), dtype=torch.float64)
    maps = torch.rand(5, 4, 4, generator=gen(32), dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 0, 1])
    centred = (maps - maps.flatten(1).mean(1).view(-1, 1, 1)).unsqueeze(1)
    p_clean = (x.flatten(1) @ w.T).softmax(1)[torch.arange(5), target]
    p_masked = ((x * centred).flatten(1) @ w.T).softmax(1)[torch.arange(5), target]
    expected = -(p_masked / p_clean).log()
    got = evaluation.saliency_fidelity(model, x, maps, target, batch_size=2)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(evaluation.saliency_fidelity(model, x, maps.unsqueeze(1), target), expected)
    # a constant map zeroes the input: SF = log p(x) - log p(0) = log(3 p(x)) for a bias-free model
    flat = evaluation.saliency_fidelity(model, x, torch.ones(5, 4, 4, dtype=torch.float64), target)
    torch.testing.assert_close(flat, (3 * p_clean).log())
    with pytest.raises(ValueError, match="reduce the channels"):
        evaluation.saliency_fidelity(model, x, torch.rand(5, 2, 4, 4, dtype=torch.float64), target)
    with pytest.raises(ValueError, match="finite"):
        evaluation.saliency_fidelity(model, x, torch.full((5, 4, 4), float("nan"), dtype=torch.float64), target)
