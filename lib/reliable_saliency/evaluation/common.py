"""Checks shared by the evaluations that run the model."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core.inputs import check_model_input, check_targets

__all__ = ["prepare"]


def prepare(model: nn.Module, x: Tensor, target: Tensor | int, name: str = "target") -> Tensor:
    """Check model and images; return targets (N,) on x's device."""
    check_model_input(model, x)
    with torch.no_grad():
        num_classes = model(x[:1]).shape[1]
    return check_targets(target, x.shape[0], num_classes, x.device, name)
