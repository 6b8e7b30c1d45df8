"""Attacks on predictions: FGSM and PGD (L-inf and L2, random start).

Budgets are given in pixel units of images in [0, 1] (``eps=8/255``) and the attack runs on a
pixel-space perturbation, so the per-channel normalisation of the model's input space is handled
exactly: the returned ``x_adv`` is normalised, within the eps ball in pixel space and in the valid
range. Model parameters receive no gradients and the model's mode is left as it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .inputs import InputSpace, check_images, check_model_ready, check_targets, input_space_of

__all__ = ["fgsm", "pgd"]


def _space_or_raise(model: nn.Module, input_space: InputSpace | None) -> InputSpace:
    space = input_space_of(model, input_space)
    if space is None:
        raise ValueError(
            "attacks need the model's input space (normalisation and valid range): pass "
            "input_space=reliable_saliency.inputs.CIFAR10 (or another) or set model.input_space"
        )
    return space


def _project(delta: Tensor, x01: Tensor, eps: float, norm: str) -> Tensor:
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        delta = delta * torch.clamp(eps / norms, max=1.0)
    return (x01 + delta).clamp(0.0, 1.0) - x01


def _random_start(x01: Tensor, eps: float, norm: str, generator) -> Tensor:
    if norm == "linf":
        noise = torch.rand(x01.shape, generator=generator, device=x01.device, dtype=x01.dtype) * 2 - 1
        return noise * eps
    direction = torch.randn(x01.shape, generator=generator, device=x01.device, dtype=x01.dtype)
    direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    radius = torch.rand((x01.shape[0], 1, 1, 1), generator=generator, device=x01.device, dtype=x01.dtype)
    return direction * radius * eps


def run_pgd(
    model: nn.Module, x: Tensor, y: Tensor, space: InputSpace, eps: float, alpha: float, steps: int,
    norm: str = "linf", random_start: bool = True, generator: torch.Generator | None = None,
) -> Tensor:
    """PGD without input checks (used inside training loops, where the model is in train mode)."""
    x01 = space.denormalize(x.detach())
    delta = _random_start(x01, eps, norm, generator) if random_start else torch.zeros_like(x01)
    delta = _project(delta, x01, eps, norm)
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model(space.normalize(x01 + delta)), y)
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            if norm == "linf":
                step = alpha * grad.sign()
            else:
                step = alpha * grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            delta = _project(delta + step, x01, eps, norm)
    return space.normalize(x01 + delta).detach()


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor | int,
    eps: float,
    *,
    steps: int = 10,
    alpha: float | None = None,
    norm: str = "linf",
    random_start: bool = True,
    input_space: InputSpace | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Untargeted PGD (Madry et al.) maximising the cross-entropy of ``y``.

    eps and alpha are in pixel units ([0, 1] images): L-inf radius, or L2 radius of the whole image.
    alpha defaults to ``2.5 * eps / steps``. Returns normalised adversarial inputs.
    """
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0 in pixel units (for example 8/255), got {eps}")
    if alpha is not None and not alpha > 0:
        raise ValueError(f"alpha must be > 0 in pixel units, got {alpha}")
    space = _space_or_raise(model, input_space)
    check_images(x, space)
    check_model_ready(model)
    with torch.no_grad():
        num_classes = model(x[:1]).shape[1]
    y = check_targets(y, x.shape[0], num_classes, x.device)
    alpha = 2.5 * eps / steps if alpha is None else alpha
    return run_pgd(model, x, y, space, eps, alpha, steps, norm, random_start, generator)


def fgsm(
    model: nn.Module,
    x: Tensor,
    y: Tensor | int,
    eps: float,
    *,
    random_start: bool = False,
    alpha: float | None = None,
    input_space: InputSpace | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """FGSM (one L-inf sign step of size eps); with ``random_start`` the variant of Wong et al. 2020
    (uniform start in the ball, step alpha = 1.25 eps by default, projected back)."""
    alpha = (1.25 * eps if random_start else eps) if alpha is None else alpha
    return pgd(
        model, x, y, eps, steps=1, alpha=alpha, norm="linf", random_start=random_start,
        input_space=input_space, generator=generator,
    )
