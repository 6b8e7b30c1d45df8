"""Mask search (Thakur & Fischmeister, ICPR 2020): a Markov chain over RISE-style masks whose moves
are driven by the class probability; the masks it visits are summed into the saliency map.

One chain per image; the chains of up to ``batch_size`` images advance together, one batched model
pass per iteration (the chain is sequential in time, so more images fill the batch axis, not more
iterations). Every image has its own random stream (one seed per image from ``generator``, read in
fixed blocks of iterations), so a map depends neither on ``batch_size`` nor on the other images of
the call, and the first ``t`` iterations of a longer run are exactly a run of ``t`` iterations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..core.batching import chunk_ranges, draw, resolve_batch_size, resolve_seeds
from ..core.options import integer, number
from ..core.references import make_baseline
from .objective import Objective, graph_input
from .registry import register
from .rise import _upsampling_matrix

__all__ = ["mask_search", "mask_search_trace", "normalise_search_map"]

_BLOCK = 256  # iterations of random numbers drawn per image at a time (fixed: part of the stream)


def _resample_grid(grid: Tensor, probability: Tensor, previous_probability: Tensor, uniforms: Tensor,
                   rate: float) -> Tensor:
    """One move of the chains, as in the authors' code. ``grid`` (B, s, s): the current cell values
    (0 = off; on cells hold 1 or a down-weighted value <= 1); ``probability`` (B,): the class
    probability of the input masked by ``grid``; ``uniforms`` (B, s, s) in [0, 1).

    An on cell stays on with probability p (``u > 1 - p``), an off cell turns on with probability
    1 - p (``u > p``); the new cells are binary, then every cell whose new value exceeds its previous
    value ("newly switched on", compared with the previous, possibly down-weighted, value as the code
    does) is scaled by ``1 - rate * |p - p_prev|``."""
    p, p_prev = probability.view(-1, 1, 1), previous_probability.view(-1, 1, 1)
    on = torch.where(grid > 0, uniforms > 1 - p, uniforms > p).to(grid.dtype)
    scale = torch.where(on > grid, 1 - rate * (p - p_prev).abs(), torch.ones_like(on))
    return on * scale


def _smoothness(grid: Tensor) -> Tensor:
    """1 - total variation of each (s, s) grid / its largest value 2 s (s - 1) for cells in [0, 1]."""
    s = grid.shape[-1]
    if s == 1:
        return torch.ones(grid.shape[0], dtype=grid.dtype, device=grid.device)
    tv = (grid[:, 1:] - grid[:, :-1]).abs().sum((1, 2)) + (grid[:, :, 1:] - grid[:, :, :-1]).abs().sum((1, 2))
    return 1 - tv / (2 * s * (s - 1))


class _Streams:
    """Per-image uniforms: row 0 sets up the chain, row t drives iteration t; each image's rows come
    from its own generator (on ``device``) in blocks of ``_BLOCK`` rows of ``width`` numbers."""

    def __init__(self, seeds: Sequence[int], width: int, *, device, dtype):
        self.generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
        self.width, self.device, self.dtype = width, device, dtype
        self.block, self.start = None, None

    def row(self, t: int) -> Tensor:
        """Uniforms of row ``t`` for every image, (B, width); rows must be asked for in order."""
        if self.block is None or t >= self.start + _BLOCK:
            self.start = t - t % _BLOCK
            self.block = torch.stack([
                draw(torch.rand, (_BLOCK, self.width), generator=g, device=self.device, dtype=self.dtype)
                for g in self.generators
            ])
        return self.block[:, t - self.start]


def _check_options(grid_size, initial_density, rate, momentum, mean_fraction, normalise):
    if not isinstance(normalise, bool):
        raise ValueError(f"normalise must be True or False, got {normalise!r}")
    s = integer("grid_size", grid_size, 1, what="cells per side of the low-resolution mask")
    density = number("initial_density", initial_density, 0.0, strict=True, maximum=1.0)
    rate = number("rate", rate, 0.0, maximum=1.0)
    momentum = number("momentum", momentum, 0.0)
    if momentum >= 1:
        raise ValueError(f"momentum must be in [0, 1) (0 = the authors' code), got {momentum!r}")
    mean_fraction = number("mean_fraction", mean_fraction, 0.0, maximum=1.0)
    return s, density, rate, momentum, mean_fraction


def _search(model, x, target, *, create_graph, generator, seeds, batch_size, checkpoints, grid_size,
            initial_density, rate, baseline, blur_sigma, momentum) -> Tensor:
    """The summed upsampled masks after each pass count in ``checkpoints``, (K, N, 1, H, W)."""
    objective = Objective(model, x, target, "probability")
    batch_size = resolve_batch_size(batch_size, x)
    s, density = grid_size, initial_density
    n, (h, w) = x.shape[0], x.shape[-2:]
    cell = (math.ceil(h / s), math.ceil(w / s))
    up_h = _upsampling_matrix(s, (s + 1) * cell[0], device=x.device, dtype=x.dtype)
    up_w = _upsampling_matrix(s, (s + 1) * cell[1], device=x.device, dtype=x.dtype)
    span_h, span_w = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    cells = torch.tensor(cell, device=x.device, dtype=x.dtype)

    def upsample(grid: Tensor, u: Tensor) -> Tensor:
        """Bilinear upsampling to (s + 1) * cell, cropped at a random shift (as :func:`.rise.rise`)."""
        shift = (u[:, -2:] * cells).long().minimum(cells.long() - 1)  # (B, 2) shifts in [0, cell)
        rows = up_h[shift[:, :1] + span_h]  # (B, H, s)
        cols = up_w[shift[:, 1:] + span_w]  # (B, W, s)
        return torch.bmm(torch.bmm(rows, grid), cols.transpose(1, 2)).unsqueeze(1)

    seeds = resolve_seeds(seeds, generator, n)
    source = graph_input(x, create_graph)
    base = make_baseline(source, baseline, blur_sigma)
    chunks = []
    with torch.set_grad_enabled(create_graph):
        for start, stop in chunk_ranges(n, batch_size):
            streams = _Streams(seeds[start:stop], s * s + 2, device=x.device, dtype=x.dtype)
            chunk_base, delta = base[start:stop], source[start:stop] - base[start:stop]
            chunk_target = objective.target[start:stop]
            u = streams.row(0)
            grid = (u[:, : s * s] > 1 - density).to(x.dtype).view(-1, s, s)
            applied, mask = grid, upsample(grid, u)
            total = torch.zeros_like(mask)
            p_prev = torch.zeros(stop - start, device=x.device, dtype=x.dtype)
            sums = []
            for t in range(1, checkpoints[-1] + 1):
                p = objective.scores(torch.addcmul(chunk_base, mask, delta), chunk_target)
                u = streams.row(t)
                grid = _resample_grid(grid, p, p_prev, u[:, : s * s].view(-1, s, s), rate)
                if momentum > 0:  # the block diagram's term (inferred; not in the authors' code)
                    carry = (momentum * _smoothness(applied)).view(-1, 1, 1)
                    applied = torch.lerp(grid, applied, carry)
                else:
                    applied = grid
                mask = upsample(applied, u)
                total = total + mask
                p_prev = p
                if t == checkpoints[len(sums)]:
                    sums.append(total)
            chunks.append(torch.stack(sums))
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=1)


def normalise_search_map(total: Tensor, mean_fraction: float = 1.0) -> Tensor:
    """The authors' final step on summed masks (N, ...): ``relu(S - f * mean(S)) / max`` per image
    (``f = mean_fraction``; an all-zero result stays zero)."""
    flat = total.flatten(1)
    flat = (flat - mean_fraction * flat.mean(dim=1, keepdim=True)).clamp(min=0)
    peak = flat.amax(dim=1, keepdim=True)
    return (flat / torch.where(peak > 0, peak, torch.ones_like(peak))).view_as(total)


def _finish(totals: Tensor, passes: Sequence[int], normalise: bool, mean_fraction: float) -> Tensor:
    if normalise:
        return torch.stack([normalise_search_map(t, mean_fraction) for t in totals])
    counts = torch.tensor(passes, dtype=totals.dtype, device=totals.device).view(-1, 1, 1, 1, 1)
    return totals / counts


@register("mask_search")
def mask_search(
    model, x, target, *, create_graph=False, generator=None, batch_size=None,
    passes=5000, grid_size=8, initial_density=0.3, rate=0.02, baseline="zero", blur_sigma=None,
    normalise=True, mean_fraction=1.0, momentum=0.0, seeds=None,
) -> Tensor:
    """Mask search (Thakur & Fischmeister): saliency as the sum of the masks a probability-driven
    Markov chain visits. Returns (N, 1, H, W). Black-box: one forward pass per image and iteration,
    no gradients (``N * passes`` model inputs in ``ceil(N / batch_size) * passes`` model calls).

    As in the authors' code (defaults theirs, for 224 x 224 ImageNet; 4 to 8 cells suit 32 x 32):
    a ``grid_size`` x ``grid_size`` binary grid starts with cells on where ``u > 1 - initial_density``
    (``u`` uniform). Each of the ``passes`` iterations evaluates ``p`` = the softmax probability of
    ``target`` on ``baseline + up(M) * (x - baseline)``, then resamples the grid (an on cell stays on
    with probability ``p``, an off cell turns on with probability ``1 - p``), scales newly switched-on
    cells by ``1 - rate * |p - p_prev|`` (``p_prev`` = 0 before the first pass), upsamples it with a
    new random shift exactly as :func:`.rise.rise` does (bilinear to ``(s + 1) * ceil(H / s)``, crop),
    and adds the upsampled mask to the sum ``S``. Departures: ``S`` starts at zero (the code sums
    into uninitialised memory); one uniform per cell drives both resampling rules (the code draws
    the on and off sets separately: same distribution); ``baseline`` is the library's (default
    zero = the dataset-mean colour, which is what the code's ``mask * preprocessed input`` gives).
    For a constant p each cell is a two-state chain with stationary density 1/2, so RISE with the
    same ``grid_size`` and ``p=0.5`` draws from the matching mask family.

    ``normalise=True`` returns the authors' ``relu(S - mean_fraction * mean(S)) / max(...)`` per image
    (their display code uses ``mean_fraction`` 1 in the reconstruction notebook, 0.96 in
    explainer.py); about half the pixels are then exactly 0, which leaves their order in a deletion
    or insertion curve to tie-breaking. ``normalise=False`` returns ``S / passes`` (the mean
    visited mask, in [0, 1]), which keeps the full pixel order.

    ``momentum`` > 0 adds the paper's block-diagram term "V <- total variation of M_{i-1};
    M_i <- ... + V M_{i-1}", which the authors' code does not implement (its momentum setting is
    never used). Our reading (inferred): the applied grid is ``(1 - b) * M_i + b * applied_{i-1}``
    with ``b = momentum * (1 - TV(applied_{i-1}) / (2 s (s - 1)))``, so smooth masks carry over;
    the chain still resamples from the binary on/off state.

    Chains advance together in chunks of ``batch_size`` images; each image's randomness comes from
    its own seed (``seeds``, one int per image, else drawn in order from ``generator``), so image
    ``i`` gets the same map alone (``seeds=[s_i]``) as in any call and with any ``batch_size``.
    :func:`mask_search_trace` returns the maps after several pass counts of one run.

    ``create_graph=True`` keeps the autograd graph through the class probabilities: the pathwise
    derivative with the chain's moves held fixed (they are locally constant in x; only the
    down-weighting, and so the map, moves smoothly with x). The graph spans all passes: use few.
    """
    passes = integer("passes", passes, 1, what="forward passes (iterations) per image")
    grid_size, initial_density, rate, momentum, mean_fraction = _check_options(
        grid_size, initial_density, rate, momentum, mean_fraction, normalise)
    totals = _search(model, x, target, create_graph=create_graph, generator=generator,
                     seeds=seeds, batch_size=batch_size, checkpoints=(passes,), grid_size=grid_size,
                     initial_density=initial_density, rate=rate, baseline=baseline,
                     blur_sigma=blur_sigma, momentum=momentum)
    return _finish(totals, (passes,), normalise, mean_fraction)[0]


def mask_search_trace(
    model, x, target, *, checkpoints=(100, 250, 500, 1000, 2000, 5000), generator=None,
    batch_size=None, grid_size=8, initial_density=0.3, rate=0.02, baseline="zero", blur_sigma=None,
    normalise=True, mean_fraction=1.0, momentum=0.0, seeds=None,
) -> Tensor:
    """The :func:`mask_search` maps of one run after each number of forward passes in
    ``checkpoints`` (strictly increasing), shape (K, N, 1, H, W); the run makes
    ``max(checkpoints)`` passes per image. Entry k equals ``mask_search(..., passes=checkpoints[k])``
    with the same generator state (the chains' random streams do not depend on the run length).
    Options as :func:`mask_search`."""
    if isinstance(checkpoints, (int, str)) or not isinstance(checkpoints, Sequence) or not checkpoints:
        raise ValueError(f"checkpoints must be a non-empty sequence of pass counts, got {checkpoints!r}")
    points = tuple(integer("checkpoints entry", c, 1) for c in checkpoints)
    if any(b <= a for a, b in zip(points, points[1:])):
        raise ValueError(f"checkpoints must be strictly increasing pass counts, got {list(points)}")
    grid_size, initial_density, rate, momentum, mean_fraction = _check_options(
        grid_size, initial_density, rate, momentum, mean_fraction, normalise)
    totals = _search(model, x, target, create_graph=False, generator=generator, seeds=seeds,
                     batch_size=batch_size, checkpoints=points, grid_size=grid_size,
                     initial_density=initial_density, rate=rate, baseline=baseline,
                     blur_sigma=blur_sigma, momentum=momentum)
    return _finish(totals, points, normalise, mean_fraction)
