"""Similarity of two maps, per image (N,): top-k intersection, Spearman, Pearson, cosine, MSE, SSIM.

Maps of the same shape (N, ...) are flattened per image (SSIM: per-pixel maps (N, H, W)). Where a
value is undefined (correlation with a constant map) the result is NaN for that image, as in scipy;
NaN or infinite inputs raise ValueError.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.options import integer
from .checks import flat_pair, nan_where, pixel_pair

__all__ = ["topk_intersection", "spearman", "pearson", "cosine", "mse", "ssim", "descending_order"]


def descending_order(v: Tensor) -> Tensor:
    """Indices sorting each row of (N, D) in decreasing value; ties: lower flat index first."""
    return torch.sort(v, dim=1, descending=True, stable=True).indices


def topk_intersection(a: Tensor, b: Tensor, k: int) -> Tensor:
    """Fraction ``|Top_k(a) & Top_k(b)| / k`` of shared top-k features, per image, (N,).

    Maps of shape (N, ...) are flattened per image (pass channel-summed |maps| for Ghorbani's
    pixel-wise version). Ties at the k-th value are broken by position: among equal values the
    lower flat (row-major) index ranks first, so exactly k features are always selected.
    """
    a, b = flat_pair(a, b)
    d = a.shape[1]
    integer("k", k, 1, d, "features per image")
    top_a = torch.zeros_like(a, dtype=torch.bool).scatter_(1, descending_order(a)[:, :k], True)
    top_b = torch.zeros_like(b, dtype=torch.bool).scatter_(1, descending_order(b)[:, :k], True)
    return (top_a & top_b).sum(1).to(a.dtype) / k


def _pearson_flat(a: Tensor, b: Tensor) -> Tensor:
    constant = (a.amax(1) == a.amin(1)) | (b.amax(1) == b.amin(1))
    ac = a - a.mean(1, keepdim=True)
    bc = b - b.mean(1, keepdim=True)
    r = (ac * bc).sum(1) / (ac.norm(dim=1) * bc.norm(dim=1))
    return nan_where(constant, r.clamp(-1.0, 1.0))


def _average_ranks(v: Tensor) -> Tensor:
    """Ranks 1..D of each row of (N, D), ties given their average rank (scipy's 'average')."""
    n, d = v.shape
    sorted_v, order = torch.sort(v, dim=1, stable=True)
    pos = torch.arange(d, device=v.device).expand(n, d)
    starts = torch.ones_like(sorted_v, dtype=torch.bool)
    starts[:, 1:] = sorted_v[:, 1:] != sorted_v[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    first = torch.where(starts, pos, 0).cummax(1).values
    last = torch.where(ends, pos, d).flip(1).cummin(1).values.flip(1)
    dtype = torch.promote_types(v.dtype, torch.float32)
    average = (first + last).to(dtype) / 2 + 1
    return torch.empty(n, d, dtype=dtype, device=v.device).scatter_(1, order, average)


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation over features, per image, (N,).

    Pearson correlation of the ranks, ties given their average rank (as scipy.stats.spearmanr).
    NaN where a map is constant. Not differentiable.
    """
    a, b = flat_pair(a, b)
    return _pearson_flat(_average_ranks(a), _average_ranks(b)).to(a.dtype)


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation over features, per image, (N,); exactly 1 for identical non-constant
    maps, NaN where a map is constant. Differentiable."""
    return _pearson_flat(*flat_pair(a, b))


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Cosine similarity of the flattened maps, per image, (N,); NaN where a map is all zero.
    Paper E's cosine distance is ``(1 - cosine(a, b)) / 2``. Differentiable."""
    a, b = flat_pair(a, b)
    na, nb = a.norm(dim=1), b.norm(dim=1)
    c = (a * b).sum(1) / (na * nb)
    return nan_where((na == 0) | (nb == 0), c.clamp(-1.0, 1.0))


def mse(a: Tensor, b: Tensor) -> Tensor:
    """Mean squared difference over features, per image, (N,). Differentiable."""
    a, b = flat_pair(a, b)
    return (a - b).pow(2).mean(1)


def _gaussian_kernel(size: int, sigma: float, like: Tensor) -> Tensor:
    coords = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-0.5 * (coords / sigma) ** 2)
    return g / g.sum()


def ssim(
    a: Tensor, b: Tensor, window_size: int = 11, sigma: float = 1.5, data_range: float | None = None
) -> Tensor:
    """Mean structural similarity (Wang et al. 2004) of per-pixel maps (N, H, W), per image, (N,).

    Gaussian window of ``window_size`` taps (odd) and std ``sigma``, normalised to sum 1; local
    statistics use population (biased) variances; K1 = 0.01, K2 = 0.03; the SSIM map is averaged
    over the positions where the window lies fully inside the image. This equals
    ``skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=sigma,
    use_sample_covariance=False, win_size=window_size, data_range=...)`` whenever skimage's own
    filter has ``window_size`` taps (its truncation is fixed at 3.5 sigma: 11 taps for sigma 1.5).
    Paper E uses a 7x7 window: ``window_size=7``.

    ``data_range``: the dynamic range R in C1 = (K1 R)^2, C2 = (K2 R)^2. None: per image,
    ``max(a, b) - min(a, b)`` over both maps (NaN if both maps are the same constant). Give 1.0
    for maps normalised to [0, 1]. Differentiable.
    """
    a, b = pixel_pair(a, b)
    n, h, w = a.shape
    if isinstance(window_size, bool) or not isinstance(window_size, int) or window_size < 1 or window_size % 2 == 0:
        raise ValueError(f"window_size must be an odd positive int, got {window_size!r}")
    if window_size > min(h, w):
        raise ValueError(f"window_size {window_size} is larger than the {h}x{w} maps; use a smaller window")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    if data_range is None:
        both = torch.cat([a.flatten(1), b.flatten(1)], 1)
        big_r = (both.amax(1) - both.amin(1)).view(n, 1, 1)
    else:
        if not data_range > 0:
            raise ValueError(f"data_range must be > 0 (or None for the maps' joint range), got {data_range}")
        big_r = torch.full((n, 1, 1), float(data_range), dtype=a.dtype, device=a.device)
    g = _gaussian_kernel(window_size, sigma, a)
    stats = torch.stack([a, b, a * a, b * b, a * b], 1)  # (N, 5, H, W)
    stats = F.conv2d(stats, g.view(1, 1, 1, -1).expand(5, 1, 1, window_size), groups=5)
    stats = F.conv2d(stats, g.view(1, 1, -1, 1).expand(5, 1, window_size, 1), groups=5)
    ux, uy, uxx, uyy, uxy = stats.unbind(1)
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
    c1, c2 = (0.01 * big_r) ** 2, (0.03 * big_r) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)
