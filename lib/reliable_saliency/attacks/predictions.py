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

from ..core.inputs import InputSpace, check_images, check_model_ready, check_targets
from ..core.options import choice, integer, number, pixel_budget
from ..core.perturbation import project, random_start as draw_random_start, space_or_raise

__all__ = ["fgsm", "pgd"]


def run_pgd(
    model: nn.Module, x: Tensor, y: Tensor, space: InputSpace, eps: float, alpha: float, steps: int,
    norm: str = "linf", random_start: bool = True, generator: torch.Generator | None = None,
) -> Tensor:
    """PGD without input checks (used inside training loops, where the model is in train mode)."""
    x01 = space.denormalize(x.detach())
    delta = draw_random_start(x01, eps, norm, generator) if random_start else torch.zeros_like(x01)
    delta = project(delta, x01, eps, norm)
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model(space.normalize(x01 + delta)), y)
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            if norm == "linf":
                step = alpha * grad.sign()
            else:
                step = alpha * grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            delta = project(delta + step, x01, eps, norm)
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
    choice("norm", norm, ("linf", "l2"))
    integer("steps", steps)
    eps = pixel_budget("eps", eps, norm)
    if alpha is not None:
        number("alpha (pixel units)", alpha, 0.0, strict=True)
    space = space_or_raise(model, input_space)
    check_images(x, space)
    check_model_ready(model)
    with torch.no_grad():
        num_classes = model(x[:1]).shape[1]
    y = check_targets(y, x.shape[0], num_classes, x.device, "y")
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
