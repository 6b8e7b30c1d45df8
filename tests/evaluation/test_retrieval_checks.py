"""Retrieval checks of chapter 2 (reliable_saliency.evaluation.retrieval_checks)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from helpers import gen
from reliable_saliency.evaluation import retrieval
from reliable_saliency.evaluation.retrieval_checks import budgeted_retrieval, clean_share_of_gap, top_pixel_masks


class PixelVote(nn.Module):
    """Class 0's logit is the sum of channel 0 over the left half, class 1's over the right half."""

    def forward(self, x):
        w = x.shape[-1] // 2
        return torch.stack([x[:, 0, :, :w].sum((1, 2)), x[:, 0, :, w:].sum((1, 2))], 1)


def test_top_pixel_masks_keep_exactly_the_largest_pixels_ties_to_the_lower_index():
    maps = torch.tensor([[[0.1, 0.9], [0.5, 0.2]], [[1.0, 1.0], [1.0, 1.0]]])
    kept = top_pixel_masks(maps, 2)
    assert kept.tolist() == [[[0.0, 1.0], [1.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]]]
    channels = torch.rand(3, 4, 5, 5, generator=gen(1)) - 0.5  # (N, C, H, W): |.| summed over channels
    assert torch.equal(top_pixel_masks(channels, 7), top_pixel_masks(channels.abs().sum(1), 7))
    assert top_pixel_masks(channels, 7).sum((1, 2)).tolist() == [7.0, 7.0, 7.0]
    with pytest.raises(ValueError, match=r"pixels must lie in \[1, 25\]"):
        top_pixel_masks(channels, 26)
    with pytest.raises(ValueError, match="must be"):
        top_pixel_masks(torch.rand(5), 1)


def test_budgeted_retrieval_is_retrieval_through_the_binary_top_pixel_mask():
    model = PixelVote().eval()
    x = torch.rand(4, 2, 4, 4, generator=gen(2)) + 0.1
    maps = torch.rand(4, 4, 4, generator=gen(3))
    target = torch.tensor([0, 1, 0, 1])
    hit, p = budgeted_retrieval(model, x, maps, target, 5)
    want_hit, want_p = retrieval(model, x, top_pixel_masks(maps, 5), target)
    assert torch.equal(hit, want_hit) and torch.allclose(p, want_p)
    left = torch.zeros(1, 4, 4)
    left[..., :2] = 1.0  # a map on the left half keeps class 0 and loses class 1 at any budget up to 8
    assert budgeted_retrieval(model, x[:1], left, 0, 8)[0].item()
    assert not budgeted_retrieval(model, x[:1], left, 1, 8)[0].item()


def test_clean_share_of_gap():
    assert clean_share_of_gap([1, 1], [0.25, 0.25], [1, 1], [0.0, 0.0]) == pytest.approx(0.75)
    assert clean_share_of_gap([1, float("nan")], [0.5], [1.0], [0.0]) == pytest.approx(0.5)  # NaN left out
    assert math.isnan(clean_share_of_gap([1], [0], [0.5], [0.5]))  # no gap under attack
    with pytest.raises(ValueError, match="no finite"):
        clean_share_of_gap([float("nan")], [0], [1], [0])
