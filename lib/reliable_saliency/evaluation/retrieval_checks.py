"""Checks around paper A's retrieval test (chapter 2) that verdicts depend on.

- :func:`budgeted_retrieval`: retrieval with every map held to the same area. Each map keeps its
  ``pixels`` most salient pixels at full value (all channels) and sets the rest to 0 in normalised
  space (the dataset's mean colour); the test asks whether ``argmax f(x * budget_mask)`` is still
  the clean prediction. An optimised mask may use any area; at a fixed area only *where* the map
  puts its mass counts, so the test can move when every unbudgeted mask retrieves.
- :func:`clean_share_of_gap`: how much of a retrieval gap between two explainers under attack is
  already there on the clean images (eps 0), where no attack acted.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..core.options import integer
from .faithfulness import retrieval

__all__ = ["top_pixel_masks", "budgeted_retrieval", "clean_share_of_gap"]


def top_pixel_masks(maps: Tensor, pixels: int) -> Tensor:
    """float (N, H, W) of 0 and 1: each map's ``pixels`` largest pixels. Maps (N, H, W), or
    (N, C, H, W) reduced to pixels by summing ``|.|`` over channels; ties go to the lower index."""
    if maps.dim() == 4:
        maps = maps.abs().sum(1)
    if maps.dim() != 3:
        raise ValueError(f"maps must be (N, H, W) or (N, C, H, W), got {tuple(maps.shape)}")
    n, h, w = maps.shape
    integer("pixels", pixels)
    if not 1 <= pixels <= h * w:
        raise ValueError(f"pixels must lie in [1, {h * w}] for {h} x {w} maps, got {pixels}")
    order = torch.argsort(-maps.detach().flatten(1).double(), dim=1, stable=True)[:, :pixels]
    kept = torch.zeros(n, h * w, dtype=maps.dtype, device=maps.device)
    kept.scatter_(1, order, 1.0)
    return kept.view(n, h, w)


def budgeted_retrieval(model: nn.Module, x: Tensor, maps: Tensor, clean_prediction: Tensor | int,
                       pixels: int, *, batch_size: int | None = None) -> tuple[Tensor, Tensor]:
    """Retrieval (:func:`~.faithfulness.retrieval`) through each map's top ``pixels`` pixels only:
    ``(hit, probability)``, bool (N,) and the clean class's probability on the masked input (N,)."""
    mask = top_pixel_masks(maps, pixels).to(x.dtype)
    return retrieval(model, x, mask, clean_prediction, batch_size=batch_size)


def _mean(values) -> float:
    t = torch.as_tensor(values, dtype=torch.float64)
    t = t[~t.isnan()]
    if t.numel() == 0:
        raise ValueError("no finite values to average")
    return float(t.mean())


def clean_share_of_gap(method_clean, baseline_clean, method_attacked, baseline_attacked) -> float:
    """``(mean(method_clean) - mean(baseline_clean)) / (mean(method_attacked) - mean(baseline_attacked))``:
    the share of the attacked gap that exists at eps 0 (NaN values are left out of each mean; NaN
    when the attacked gap is 0). Above 1: the gap is larger without an attack than with it."""
    attacked = _mean(method_attacked) - _mean(baseline_attacked)
    if attacked == 0:
        return math.nan
    return (_mean(method_clean) - _mean(baseline_clean)) / attacked
