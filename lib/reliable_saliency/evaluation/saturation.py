"""A gradient-saturation toy (DANCE's first motivation): class 1's logit is
``5 tanh(sum of the top-left 4x4 block - 10)`` (the evidence, saturated on inputs whose top-left
block is 1) plus a weak feature of the bottom-right 4x4 block, either linear,
``0.1 * sum``, or used non-linearly, ``0.1 * sum^2 / 16`` (the same gradient, 0.1 per pixel, at
the block's mean sum of 8 for uniform inputs, and a non-zero curvature). A linear weak feature has
the same gradient on every decoy, so a decoy range gives it exactly zero: a comparison with it is
won by construction; the quadratic one is the fair comparison.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core.options import choice

__all__ = ["SaturatedToy", "toy_images", "RELEVANT", "WEAK", "block_ratio"]

RELEVANT = torch.zeros(8, 8, dtype=torch.bool)
RELEVANT[:4, :4] = True
WEAK = torch.zeros(8, 8, dtype=torch.bool)
WEAK[4:, 4:] = True


class SaturatedToy(nn.Module):
    """Two classes on (N, 1, 8, 8) inputs; ``squash`` (the tanh) is the representation of the
    evidence that decoys keep; ``weak`` is ``"linear"`` or ``"quadratic"`` (module docstring)."""

    def __init__(self, weak: str = "quadratic"):
        super().__init__()
        self.weak = choice("weak", weak, ("linear", "quadratic"))
        self.squash = nn.Tanh()

    def forward(self, z: Tensor) -> Tensor:
        evidence = self.squash(z[:, 0, :4, :4].sum((1, 2), keepdim=True) - 10.0)[:, 0, 0]
        s = z[:, 0, 4:, 4:].sum((1, 2))
        logit = 5.0 * evidence + (0.1 * s if self.weak == "linear" else 0.1 * s ** 2 / 16)
        return torch.stack([torch.zeros_like(logit), logit], 1)


def toy_images(n: int, seed: int = 0) -> Tensor:
    """``n`` uniform (N, 1, 8, 8) inputs with the top-left block set to 1 (saturated evidence)."""
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    x[:, :, :4, :4] = 1.0
    return x


def block_ratio(maps: Tensor) -> Tensor:
    """Per image, the mean score on the relevant block over the mean on the weak block ((N, 8, 8)
    maps); ``inf`` where the weak block scores exactly zero (the ratio has no finite value there)."""
    relevant, weak = maps[:, RELEVANT].mean(1), maps[:, WEAK].mean(1)
    return torch.where(weak > 0, relevant / weak.clamp_min(1e-300), torch.full_like(relevant, float("inf")))
