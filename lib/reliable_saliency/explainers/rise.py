"""RISE (Petsiuk et al. 2018): saliency as the class probability averaged over random masks."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..core.batching import chunk_ranges, resolve_batch_size, rows_of
from ..core.options import integer, number
from ..core.references import make_baseline
from .objective import Objective, graph_input, view_rows
from .registry import register

__all__ = ["rise"]



def _upsampling_matrix(n_in: int, n_out: int, *, device, dtype) -> Tensor:
    """(n_out, n_in) linear-interpolation weights resizing n_in samples to n_out with half-pixel
    centres and mirror edges (skimage ``resize(order=1, mode="reflect")``, as in the RISE code)."""
    u = (torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5
    if n_in > 1:
        period = 2 * (n_in - 1)
        u = torch.remainder(u.abs(), period)
        u = torch.where(u > n_in - 1, period - u, u)
    else:
        u = torch.zeros_like(u)
    low = u.floor().long().clamp(max=n_in - 1)
    frac = u - low
    high = (low + 1).clamp(max=n_in - 1)
    rows = torch.arange(n_out)
    matrix = torch.zeros((n_out, n_in), dtype=torch.float64)
    matrix.index_put_((rows, low), 1 - frac, accumulate=True)
    matrix.index_put_((rows, high), frac, accumulate=True)
    return matrix.to(device=device, dtype=dtype)


@register("rise")
def rise(
    model, x, target, *, create_graph=False, generator=None, batch_size=None,
    masks=4000, grid_size=7, p=0.5, baseline="zero", blur_sigma=None,
) -> Tensor:
    """RISE (Petsiuk et al.): ``sum_m P(target | masked_m(x)) M_m / (masks * p)``. Returns (N, 1, H, W).

    As in the authors' code: ``grids = torch.rand((masks, s, s), generator=generator) < p`` with
    ``s = grid_size``, then shifts ``torch.randint(0, ceil(H / s), (masks,))`` and likewise for W
    (drawn up front, on the generator's device); each grid is bilinearly upsampled to
    ``(s + 1) * ceil(H / s)`` x ``(s + 1) * ceil(W / s)`` pixels (skimage ``resize(order=1,
    mode="reflect")``) and cropped to H x W at its shift. Masked pixels take the ``baseline`` value
    (:func:`make_baseline`; default zero = the dataset-mean colour, as in the authors' code):
    ``masked = baseline + M * (x - baseline)``. The same masks are used for every image; rows of
    (image, mask) pairs share the batch axis.
    """
    objective = Objective(model, x, target, "probability")
    batch_size = resolve_batch_size(batch_size, x)
    masks = integer("masks", masks)
    s = integer("grid_size", grid_size)
    p = number("p", p, 0.0, strict=True)
    if p > 1:
        raise ValueError(f"p must be in (0, 1], got {p}")
    n, (h, w) = x.shape[0], x.shape[-2:]
    cell = (math.ceil(h / s), math.ceil(w / s))
    gen_device = generator.device if generator is not None else torch.device("cpu")
    grids = torch.rand((masks, s, s), generator=generator, device=gen_device) < p
    shifts = [torch.randint(0, c, (masks,), generator=generator, device=gen_device) for c in cell]
    grids = grids.to(device=x.device, dtype=x.dtype)
    shift_h, shift_w = (t.to(x.device) for t in shifts)
    up_h = _upsampling_matrix(s, (s + 1) * cell[0], device=x.device, dtype=x.dtype)
    up_w = _upsampling_matrix(s, (s + 1) * cell[1], device=x.device, dtype=x.dtype)
    span_h, span_w = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    source = graph_input(x, create_graph)
    base = make_baseline(source, baseline, blur_sigma)
    delta = source - base
    saliency = torch.zeros((n, 1, h, w), device=x.device, dtype=x.dtype)
    with torch.set_grad_enabled(create_graph):
        for start, stop in chunk_ranges(n * masks, batch_size):
            image, index = rows_of(start, stop, masks, x.device)
            rows = up_h[shift_h[index, None] + span_h]  # (B, H, s)
            cols = up_w[shift_w[index, None] + span_w]  # (B, W, s)
            mask = torch.bmm(torch.bmm(rows, grids[index]), cols.transpose(1, 2)).unsqueeze(1)
            inputs = torch.addcmul(base[image], mask, delta[image])
            prob = objective.scores(inputs, objective.target[image])
            saliency = saliency.index_add(0, image, view_rows(prob) * mask)
    return saliency / (masks * p)
