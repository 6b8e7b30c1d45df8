"""Smooth copies of ReLU networks: every ``nn.ReLU`` module replaced by ``nn.Softplus(beta)``."""

from __future__ import annotations

import copy

from torch import nn

__all__ = ["to_softplus"]


def to_softplus(model: nn.Module, beta: float) -> nn.Module:
    """A copy of ``model`` with every ``nn.ReLU`` module replaced by ``nn.Softplus(beta)``.

    The original model is not modified. Raises if the model has no ``nn.ReLU`` module, since
    functional ``F.relu`` calls cannot be swapped and the result would silently stay piecewise
    linear.
    """
    if beta <= 0:
        raise ValueError(f"Softplus beta must be > 0, got {beta}")
    clone = copy.deepcopy(model)
    swapped = 0
    for parent in clone.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(parent, name, nn.Softplus(beta=beta))
                swapped += 1
    if swapped == 0:
        raise ValueError(
            "to_softplus found no nn.ReLU module to replace; models that call F.relu in forward "
            "cannot be converted"
        )
    return clone
