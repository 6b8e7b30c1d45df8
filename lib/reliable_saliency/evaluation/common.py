"""Checks shared by the evaluations that run the model."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core.inputs import check_images, check_model_ready, check_targets, input_space_of

__all__ = ["prepare"]


def prepare(model: nn.Module, x: Tensor, target: Tensor | int, name: str = "target") -> Tensor:
    """Check model and images; return targets (N,) on x's device."""
    check_images(x, input_space_of(model))
    check_model_ready(model)
    with torch.no_grad():
        num_classes = model(x[:1]).shape[1]
    return check_targets(target, x.shape[0], num_classes, x.device, name)
