"""Smooth copies of ReLU networks: every ``nn.ReLU`` module replaced by ``nn.Softplus(beta)`` and
every ``nn.ReLU6`` by :class:`SmoothReLU6` (``softplus(x) - softplus(x - 6)``), so the second
derivative that attacks on explanations need exists."""

from __future__ import annotations

import copy

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SMOOTHED", "SmoothReLU6", "to_softplus"]

SMOOTHED = (nn.ReLU, nn.ReLU6)  # the activation modules to_softplus replaces


class SmoothReLU6(nn.Module):
    """``softplus_beta(x) - softplus_beta(x - 6)``: a smooth clamp to [0, 6] that tends to ReLU6
    as ``beta`` grows (the same role as Softplus for ReLU). ``beta`` may be changed in place."""

    def __init__(self, beta: float):
        super().__init__()
        self.beta = beta

    def forward(self, x: Tensor) -> Tensor:
        return F.softplus(x, beta=self.beta) - F.softplus(x - 6.0, beta=self.beta)

    def extra_repr(self) -> str:
        return f"beta={self.beta}"


def to_softplus(model: nn.Module, beta: float) -> nn.Module:
    """A copy of ``model`` with every ``nn.ReLU`` module replaced by ``nn.Softplus(beta)`` and every
    ``nn.ReLU6`` by ``SmoothReLU6(beta)``; a module used at several places stays one shared module.

    The original model is not modified. Raises if the model has neither, since functional
    ``F.relu`` calls cannot be swapped and the result would silently stay piecewise linear.
    """
    if beta <= 0:
        raise ValueError(f"Softplus beta must be > 0, got {beta}")
    clone = copy.deepcopy(model)
    replacement: dict[int, nn.Module] = {}
    for parent in clone.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, SMOOTHED):
                if id(child) not in replacement:
                    replacement[id(child)] = SmoothReLU6(beta) if isinstance(child, nn.ReLU6) else nn.Softplus(beta=beta)
                setattr(parent, name, replacement[id(child)])
    if not replacement:
        raise ValueError(
            "to_softplus found no nn.ReLU or nn.ReLU6 module to replace; models that call F.relu in "
            "forward cannot be converted"
        )
    return clone
