"""Checks shared by the map measures: finite float maps with a batch axis, pairs of equal shape,
per-pixel maps, boxes; and NaN for values that are undefined for an image."""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.inputs import check_not_empty

__all__ = ["check_finite", "flat_pair", "pixel_maps", "pixel_pair", "check_boxes", "nan_where"]


def check_finite(m: Tensor, name: str) -> None:
    if not isinstance(m, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(m).__name__}")
    if not m.is_floating_point():
        raise TypeError(f"{name} must be a float tensor, got {m.dtype}")
    if not bool(torch.isfinite(m).all()):
        raise ValueError(f"{name} contains NaN or infinite values; check the explainer's output")


def flat_pair(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Two maps of equal shape (N, ...) -> (N, D) each, checked."""
    check_finite(a, "a")
    check_finite(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dim() < 3:
        raise ValueError(
            f"maps must be a batch (N, H, W) or (N, C, H, W), got {tuple(a.shape)}: a single (H, W) map "
            f"would be read as H one-row maps; add the batch axis with m.unsqueeze(0)"
        )
    check_not_empty(a, "a")
    if a.device != b.device:
        raise ValueError(f"a and b are on different devices ({a.device} and {b.device})")
    return a.flatten(1), b.flatten(1)


def pixel_maps(m: Tensor, name: str = "maps") -> Tensor:
    """Per-pixel maps (N, H, W) or (N, 1, H, W) -> (N, H, W), checked."""
    check_finite(m, name)
    if m.dim() == 4 and m.shape[1] == 1:
        m = m[:, 0]
    if m.dim() != 3:
        hint = ("add the batch axis with m.unsqueeze(0) for one map" if m.dim() == 2 else
                "reduce channels first (for example postprocess.channel_sum(postprocess.absolute(m)))")
        raise ValueError(f"{name} must be per-pixel maps of shape (N, H, W) or (N, 1, H, W), got {tuple(m.shape)}; {hint}")
    check_not_empty(m, name)
    return m


def pixel_pair(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    a, b = pixel_maps(a, "a"), pixel_maps(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return a, b


def check_boxes(boxes: Tensor, maps: Tensor) -> Tensor:
    n, h, w = maps.shape
    if not isinstance(boxes, Tensor) or boxes.shape != (n, 4):
        shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(f"boxes must be a tensor of shape ({n}, 4) as (y0, x0, y1, x1), got {shape}")
    if boxes.is_floating_point() or boxes.dtype == torch.bool:
        raise TypeError(f"boxes must hold integer pixel coordinates, got {boxes.dtype}; use boxes.long()")
    boxes = boxes.to(device=maps.device, dtype=torch.long)
    y0, x0, y1, x1 = boxes.unbind(1)
    bad = (y0 < 0) | (x0 < 0) | (y1 > h) | (x1 > w) | (y1 <= y0) | (x1 <= x0)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"box {i} = {boxes[i].tolist()} is not a non-empty (y0, x0, y1, x1) box (end-exclusive) "
            f"inside a {h}x{w} map"
        )
    return boxes


def nan_where(condition: Tensor, values: Tensor) -> Tensor:
    return torch.where(condition, torch.full_like(values, float("nan")), values)
