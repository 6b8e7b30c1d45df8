"""Map cleaning with paper C's measure: the sparsest map whose sigma*_Rel does not rise.

Each map ``r`` in [0, 1] is sparsified at several levels (keep the top q% of its entries per
image, and/or zero the entries below a threshold t); sigma*_Rel
(:func:`.reliability.adversarial_reliability`) is measured for the original and every sparsified
map in one batched search (all images x levels on the batch axis); per image the sparsest
candidate whose sigma*_Rel is at most the original's is returned, with the whole curve.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..core.inputs import InputSpace
from ..core.options import choice, integer, number
from .reliability import (
    GRID, METHODS, check_relevance, default_sigma_max, prepare_search, search_groups,
)

__all__ = ["CleaningResult", "clean_maps"]


@dataclass(frozen=True)
class CleaningResult:
    """Cleaned maps and the sparsity-versus-sigma*_Rel curve. Candidate 0 is the original map."""

    maps: Tensor  # the chosen maps, shape of the input maps
    selected: Tensor  # (N,) index of the chosen candidate (0: the original was kept)
    sigma_rel: Tensor  # (N,) sigma*_Rel of the chosen map (total L1, pixel units)
    original_sigma_rel: Tensor  # (N,) +inf: no flip within sigma_max, NaN: undefined
    candidates: tuple[str, ...]  # ("original", "top 50%", ..., "r >= 0.5", ...)
    curve_sigma_rel: Tensor  # (N, Q) sigma*_Rel of every candidate
    curve_sparsity: Tensor  # (N, Q) fraction of zero entries of every candidate
    found: Tensor  # (N, Q) bool
    sigma_max: float
    tolerance: float
    model_passes: Tensor  # (N,) model inputs evaluated per image

    @property
    def sparsity(self) -> Tensor:
        """(N,) fraction of zero entries of the chosen maps."""
        return self.curve_sparsity.gather(1, self.selected.unsqueeze(1)).squeeze(1)

    @property
    def cleaned(self) -> Tensor:
        """(N,) bool: a sparsified candidate replaced the original."""
        return self.selected > 0


def clean_maps(
    model: nn.Module, x: Tensor, maps: Tensor, target: Tensor | int, *,
    keep_percent: Sequence[float] = (50, 30, 20, 10, 5, 2, 1), thresholds: Sequence[float] = (),
    sigma_max: float | None = None, method: str = "bisection", iterations: int = 14, scan: int = 10,
    batch_size: int | None = None, input_space: InputSpace | None = None,
) -> CleaningResult:
    """Sparsify ``maps`` (in [0, 1], shapes as in ``adversarial_reliability``) and keep, per image,
    the sparsest candidate whose sigma*_Rel is <= the original's (as measured: at the search's
    resolution ``tolerance``). ``keep_percent``: keep each image's top q% entries (ties at the cut
    are kept, so at least ceil(q% of the map's entries)); ``thresholds``: zero entries below t. The
    original is kept where its sigma*_Rel is not finite (no flip within ``sigma_max``, or
    undefined: misclassified image, all-zero map), since there is nothing to preserve. The search
    options are those of ``adversarial_reliability``.
    """
    choice("method", method, METHODS)
    iterations, scan = integer("iterations", iterations), integer("scan", scan)
    levels = [number("keep_percent", q, strict=True, maximum=100.0) for q in keep_percent]
    cuts = [number("thresholds", t, strict=True, maximum=1.0) for t in thresholds]
    space, target, sign, valid, bs = prepare_search(model, x, target, input_space, batch_size)
    r = check_relevance(maps, x)
    sigma_max = default_sigma_max(sigma_max, x)
    n, c = r.shape[:2]
    flat = r.flatten(1)
    ranked = flat.sort(dim=1, descending=True).values
    cut_values = [ranked[:, max(1, math.ceil(q / 100 * flat.shape[1])) - 1] for q in levels]
    cut_values += [torch.full((n,), t, dtype=r.dtype, device=r.device) for t in cuts]
    candidates = torch.stack(
        [flat] + [torch.where(flat >= v.unsqueeze(1), flat, torch.zeros_like(flat)) for v in cut_values],
        dim=1,
    )  # (N, Q, M)
    count = candidates.shape[1]

    def directions(images: Tensor) -> tuple[Tensor, Tensor]:
        rows = candidates[images]
        mass = rows.sum(2) * (x.shape[1] // c)
        weights = rows / torch.where(mass > 0, mass, torch.ones_like(mass)).unsqueeze(2)
        return weights.unflatten(2, r.shape[1:]), mass > 0

    layout = torch.arange(count, device=x.device)
    sigma, found, passes = search_groups(
        model, x, target, sign, valid, space, directions, layout, count, sigma_max, method, iterations,
        scan, bs,
    )
    original = sigma[:, :1]
    eligible = torch.isfinite(sigma) & (sigma <= original) & torch.isfinite(original)
    sparsity = (candidates == 0).to(r.dtype).mean(2)
    score = torch.where(eligible, sparsity, torch.full_like(sparsity, -1.0))
    score[:, 0] = torch.where(eligible[:, 0], score[:, 0], torch.zeros_like(score[:, 0]))
    picked = score.argmax(1)  # first maximum: the least sparsified of equally sparse candidates
    chosen = candidates[torch.arange(n, device=x.device), picked].reshape(maps.shape)
    names = ("original",) + tuple(f"top {p:g}%" for p in levels) + tuple(f"r >= {t:g}" for t in cuts)
    tolerance = sigma_max / GRID if method == "coarse_to_fine" else sigma_max / scan / 2**iterations
    return CleaningResult(
        maps=chosen, selected=picked, sigma_rel=sigma.gather(1, picked.unsqueeze(1)).squeeze(1),
        original_sigma_rel=sigma[:, 0], candidates=names, curve_sigma_rel=sigma,
        curve_sparsity=sparsity, found=found, sigma_max=sigma_max, tolerance=tolerance,
        model_passes=passes,
    )
