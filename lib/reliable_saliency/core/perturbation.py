"""Perturbations in pixel space: the model's input space (or a clear error), projection onto the
eps ball (L-inf or L2) and the valid range [0, 1], uniform random starts inside the ball, and the
size of a perturbation actually used."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .batching import draw
from .inputs import InputSpace, input_space_of

__all__ = ["space_or_raise", "project", "random_start", "pixel_change"]


def space_or_raise(model: nn.Module, input_space: InputSpace | None) -> InputSpace:
    space = input_space_of(model, input_space)
    if space is None:
        raise ValueError(
            "attacks need the model's input space (normalisation and valid range): pass "
            "input_space=reliable_saliency.core.inputs.CIFAR10 (or another) or set model.input_space"
        )
    return space


def project(delta: Tensor, x01: Tensor, eps: float, norm: str) -> Tensor:
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        delta = delta * torch.clamp(eps / norms, max=1.0)
    return (x01 + delta).clamp(0.0, 1.0) - x01


def random_start(x01: Tensor, eps: float, norm: str, generator) -> Tensor:
    if norm == "linf":
        noise = draw(torch.rand, x01.shape, generator=generator, device=x01.device, dtype=x01.dtype) * 2 - 1
        return noise * eps
    direction = draw(torch.randn, x01.shape, generator=generator, device=x01.device, dtype=x01.dtype)
    direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    radius = draw(torch.rand, (x01.shape[0], 1, 1, 1), generator=generator, device=x01.device, dtype=x01.dtype)
    return direction * radius * eps


def pixel_change(space: InputSpace, x: Tensor, x_adv: Tensor) -> dict[str, Tensor]:
    """How much an attack changed each image, in pixel units of [0, 1] images: per image (N,) the
    largest absolute change (``max``), the mean absolute change (``mean``) and the L2 norm (``l2``)."""
    if x.shape != x_adv.shape:
        raise ValueError(f"x and x_adv must have the same shape, got {tuple(x.shape)} and {tuple(x_adv.shape)}")
    delta = (space.denormalize(x_adv) - space.denormalize(x)).flatten(1)
    return {"max": delta.abs().amax(1), "mean": delta.abs().mean(1), "l2": delta.norm(dim=1)}
