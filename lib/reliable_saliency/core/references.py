"""Reference inputs shared by every method that replaces pixels: IG baselines, RISE and RelEx
masking, deletion / insertion substrates. One Gaussian blur for all of them."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .options import number

__all__ = ["gaussian_blur", "make_baseline", "BASELINES"]

BASELINES = ("zero", "mean", "blur")



def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Per-channel Gaussian blur of (N, C, H, W) with std ``sigma`` pixels: separable, radius
    ceil(3 sigma) capped at size - 1, reflect padding (``d c b | a b c d``, scipy's "mirror").
    The one blur of the library (IG's blur baseline, the deletion/insertion blur substrate).
    Differentiable."""
    sigma = number("blur sigma", sigma, 0.0, strict=True)
    c, h, w = x.shape[1:]
    out = x
    for horizontal, size in ((True, w), (False, h)):
        radius = min(math.ceil(3 * sigma), size - 1)
        if radius == 0:
            continue
        offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
        kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
        kernel = kernel / kernel.sum()
        pad = (radius, radius, 0, 0) if horizontal else (0, 0, radius, radius)
        kernel = kernel.view(1, 1, 1, -1) if horizontal else kernel.view(1, 1, -1, 1)
        out = F.conv2d(F.pad(out, pad, mode="reflect"), kernel.expand(c, -1, -1, -1), groups=c)
    return out


def make_baseline(x: Tensor, baseline="zero", blur_sigma: float | None = None) -> Tensor:
    """A reference input of the shape of ``x`` (normalised space).

    ``"zero"``: zeros, i.e. the dataset-mean colour; ``"mean"``: each image's per-channel mean;
    ``"blur"``: ``x`` Gaussian-blurred with std ``blur_sigma`` pixels (default max(H, W) / 16);
    or a tensor broadcastable to ``x`` (same dtype and device).
    """
    if isinstance(baseline, Tensor):
        if baseline.dtype != x.dtype or baseline.device != x.device:
            raise ValueError(
                f"baseline tensor must match x in dtype and device ({x.dtype}, {x.device}), "
                f"got {baseline.dtype} on {baseline.device}"
            )
        try:
            shape = torch.broadcast_shapes(baseline.shape, x.shape)
        except RuntimeError:
            shape = None
        if shape != x.shape:
            raise ValueError(
                f"baseline tensor of shape {tuple(baseline.shape)} does not broadcast to x "
                f"{tuple(x.shape)}; use (C, H, W), (1, C, H, W) or (N, C, H, W)"
            )
        if not bool(torch.isfinite(baseline).all()):
            raise ValueError("baseline tensor contains NaN or infinite values")
        return baseline.expand_as(x)
    if baseline == "zero":
        return torch.zeros_like(x)
    if baseline == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    if baseline == "blur":
        sigma = max(x.shape[-2:]) / 16 if blur_sigma is None else blur_sigma
        return gaussian_blur(x, sigma)
    raise ValueError(f"baseline must be 'zero', 'mean', 'blur' or a tensor, got {baseline!r}")
