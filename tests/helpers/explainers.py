"""Tiny double-precision models and images for the explainer tests (and the reference / batching
tests of :mod:`reliable_saliency.core` that use them)."""

from __future__ import annotations

import torch
from torch import nn


class Linear(nn.Module):
    """logits = W flatten(x) + b."""

    def __init__(self, weight, bias):
        super().__init__()
        self.weight, self.bias = nn.Parameter(weight), nn.Parameter(bias)

    def forward(self, x):
        return x.flatten(1) @ self.weight.T + self.bias


def tiny_cnn(activation=nn.ReLU, channels=3, classes=5, seed=0):
    """For 8x8 inputs."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1), activation(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1), activation(), nn.Flatten(), nn.Linear(6 * 4 * 4, classes),
    ).double().eval()


def images(rng, n=3, c=3, h=8, w=8):
    return torch.randn((n, c, h, w), generator=rng, dtype=torch.float64)
