"""How smooth a saliency map is, and a plain smoother of a base map to compare a method with.

A sensitivity score such as ``||E(x) - E(x^)|| / ||x - x^||`` rewards smooth maps whatever they
show: a blurred map moves less under any perturbation. :func:`blurred_map` is the plain control
(a Gaussian blur of ``sum_c |E|``) and :func:`matched_sigma` picks its width so that its maps are
as smooth as a method's maps, by :func:`roughness`, chosen on clean maps only (before any
attack is looked at).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..core.references import gaussian_blur

__all__ = ["roughness", "blurred_map", "matched_sigma"]


def _as_nchw(m: Tensor) -> Tensor:
    if not isinstance(m, Tensor) or m.dim() not in (3, 4) or not m.is_floating_point():
        raise ValueError(f"maps must be a float tensor (N, H, W) or (N, C, H, W), got "
                         f"{tuple(m.shape) if isinstance(m, Tensor) else type(m).__name__}")
    return m.unsqueeze(1) if m.dim() == 3 else m


def roughness(maps: Tensor) -> Tensor:
    """Per image: the mean squared difference of horizontally and vertically neighbouring pixels
    over twice the map's variance, ``1 - (lag-1 autocorrelation)``: 0 for a map that varies
    slowly, about 1 for white noise, up to 2 for a checkerboard. Constant maps get 0. (N,)."""
    m = _as_nchw(maps).double()
    dx = (m[..., :, 1:] - m[..., :, :-1]).pow(2).flatten(1).mean(1)
    dy = (m[..., 1:, :] - m[..., :-1, :]).pow(2).flatten(1).mean(1)
    variance = m.flatten(1).var(1, unbiased=False)
    out = (dx + dy) / 2 / (2 * variance.clamp_min(1e-300))
    return torch.where(variance > 0, out, torch.zeros_like(out)).to(maps.dtype)


def blurred_map(raw: Tensor, sigma: float) -> Tensor:
    """The control smoother: ``sum_c |raw|`` blurred with a Gaussian of ``sigma`` pixels, (N, 1, H, W),
    non-negative, differentiable; ``sigma = 0`` leaves it unblurred."""
    m = _as_nchw(raw).abs().sum(1, keepdim=True)
    return m if sigma == 0 else gaussian_blur(m, sigma)


def matched_sigma(raw: Tensor, target: Tensor, sigmas: Sequence[float],
                  finish: Callable[[Tensor], Tensor] = lambda m: m) -> tuple[float, dict[float, float]]:
    """The ``sigma`` of ``sigmas`` whose blurred maps ``finish(blurred_map(raw, sigma))`` have the mean
    :func:`roughness` closest to that of ``target`` (the method's maps on the same images), and the
    mean roughness of every candidate (``finish``: the post-processing every compared map gets)."""
    if not sigmas or any(s < 0 for s in sigmas):
        raise ValueError(f"sigmas must be a non-empty list of non-negative widths, got {sigmas!r}")
    goal = float(roughness(target).mean())
    seen = {float(s): float(roughness(finish(blurred_map(raw, s))).mean()) for s in sigmas}
    best = min(seen, key=lambda s: (abs(seen[s] - goal), s))
    return best, seen
