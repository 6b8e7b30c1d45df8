"""A small Softplus CNN and a checked plain-gradient explainer for the evaluation tests (the
explainers themselves are tested in tests/explainers)."""

from __future__ import annotations

import torch
from torch import nn

from reliable_saliency.core.inputs import check_images, check_targets


def gradient_explainer(model, x, target, *, create_graph=False, generator=None, batch_size=None):
    """Plain gradient of the selected logits (the explainers module is tested separately)."""
    target = check_targets(target, x.shape[0], model(x[:1]).shape[1], x.device)
    check_images(x, getattr(model, "input_space", None))
    x = x.detach().requires_grad_(True)
    selected = model(x).gather(1, target.unsqueeze(1)).sum()
    (grad,) = torch.autograd.grad(selected, x, create_graph=create_graph)
    return grad


def tiny_cnn(seed=0, channels=3, size=8, classes=5):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1), nn.Softplus(), nn.Flatten(), nn.Linear(4 * size * size, classes)
    )
    return model.eval()
