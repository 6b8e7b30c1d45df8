"""Where a map points, per image (N,): centre of mass and its shift, the pointing game, box IoU.

Per-pixel maps (N, H, W) or (N, 1, H, W); an all-zero map has no centre (NaN)."""

from __future__ import annotations

import torch
from torch import Tensor

from .checks import check_boxes, nan_where, pixel_maps, pixel_pair

__all__ = ["center_of_mass", "center_of_mass_shift", "pointing_game", "box_iou"]


def center_of_mass(m: Tensor) -> Tensor:
    """Centre of mass (row, col) of non-negative per-pixel maps (N, H, W), in pixel indices
    (the top-left pixel's centre is (0, 0)); shape (N, 2). NaN for an all-zero map.
    Differentiable (Ghorbani's mass-centre attack)."""
    m = pixel_maps(m)
    if bool((m < 0).any()):
        raise ValueError("center_of_mass needs non-negative maps; take absolute values first")
    _, h, w = m.shape
    total = m.sum((1, 2))
    rows = (m.sum(2) * torch.arange(h, dtype=m.dtype, device=m.device)).sum(1) / total
    cols = (m.sum(1) * torch.arange(w, dtype=m.dtype, device=m.device)).sum(1) / total
    return torch.stack([rows, cols], 1)


def center_of_mass_shift(a: Tensor, b: Tensor) -> Tensor:
    """Euclidean distance in pixels between the centres of mass of a and b, (N,)."""
    a, b = pixel_pair(a, b)
    return (center_of_mass(a) - center_of_mass(b)).norm(dim=1)


def pointing_game(maps: Tensor, boxes: Tensor) -> Tensor:
    """Whether each map's maximum lies inside its box, bool (N,).

    Boxes (N, 4) are integer (y0, x0, y1, x1), end-exclusive. If the maximum is shared by several
    pixels, the first in row-major order counts (so a constant map points at (0, 0)).
    """
    maps = pixel_maps(maps)
    boxes = check_boxes(boxes, maps)
    w = maps.shape[2]
    flat = maps.flatten(1).argmax(1)
    row, col = flat // w, flat % w
    y0, x0, y1, x1 = boxes.unbind(1)
    return (row >= y0) & (row < y1) & (col >= x0) & (col < x1)


def _first_true(mask: Tensor) -> Tensor:
    return mask.to(torch.uint8).argmax(1)


def box_iou(maps: Tensor, boxes: Tensor, threshold: float = 0.5) -> Tensor:
    """IoU between the ground-truth box and the bounding box of the thresholded map, (N,).

    Pixels with ``map >= threshold * max(map)`` (threshold in (0, 1], a fraction of each map's own
    maximum) are kept and their tightest enclosing box is compared with ``boxes`` (N, 4), integer
    (y0, x0, y1, x1), end-exclusive. NaN for a map whose maximum is <= 0.
    """
    maps = pixel_maps(maps)
    boxes = check_boxes(boxes, maps)
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be a fraction of the map's maximum in (0, 1], got {threshold}")
    n, h, w = maps.shape
    peak = maps.flatten(1).amax(1)
    keep = maps >= (threshold * peak).view(n, 1, 1)
    rows, cols = keep.any(2), keep.any(1)
    py0, px0 = _first_true(rows), _first_true(cols)
    py1, px1 = h - _first_true(rows.flip(1)), w - _first_true(cols.flip(1))
    y0, x0, y1, x1 = boxes.unbind(1)
    inter = (torch.minimum(py1, y1) - torch.maximum(py0, y0)).clamp_min(0) * (
        torch.minimum(px1, x1) - torch.maximum(px0, x0)
    ).clamp_min(0)
    union = (py1 - py0) * (px1 - px0) + (y1 - y0) * (x1 - x0) - inter
    iou = inter.to(maps.dtype) / union.to(maps.dtype)
    return nan_where(peak <= 0, iou)
