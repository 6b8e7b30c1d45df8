"""Paper E's targeted attack: push the map towards a frame around the image border."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core.inputs import InputSpace
from ..core.options import integer, number, pixel_budget
from ..core.perturbation import project
from ..explainers.registry import Explainer
from .common import ManipulationResult, channel_abs_sum, manipulation_result, max_normalise, prepare_attack, raise_if_flat, softplus_copy

__all__ = ["frame_target", "frame_attack"]


def frame_target(height: int, width: int, frame_width: int | None = None, *, device=None,
                 dtype=torch.float32) -> Tensor:
    """Paper E's target map (H, W): 1 on a border of ``frame_width`` pixels, 0 inside. The default
    width is 5 pixels per 32 (paper E on CIFAR-10; 35 on 224 x 224), at least 1."""
    if frame_width is None:
        frame_width = max(1, round(5 * min(height, width) / 32))
    if not isinstance(frame_width, int) or frame_width < 1 or 2 * frame_width >= min(height, width):
        raise ValueError(
            f"frame_width must be an int >= 1 that leaves an inside in a {height}x{width} map, "
            f"got {frame_width!r}"
        )
    target = torch.ones(height, width, device=device, dtype=dtype)
    target[frame_width:-frame_width, frame_width:-frame_width] = 0
    return target


def frame_attack(
    model: nn.Module,
    x: Tensor,
    explainer: Explainer,
    *,
    eps: float = 4 / 255,
    steps: int = 100,
    lr: float | None = None,
    frame_width: int | None = None,
    surrogate_beta: float | None = 20.0,
    input_space: InputSpace | None = None,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
) -> ManipulationResult:
    """Paper E's targeted attack pushing the map ``h = sum_c |E(x)| / max`` towards a frame
    (:func:`frame_target`). Per image the loss is, as in the authors' code,
    ``0.5 * sum_pixels (h - h_t)^2 + 0.5 * mean_classes (f(x_adv) - f(x))^2`` on logits (``f(x)``
    the real model's clean logits). Adam on a pixel-space perturbation, ``lr`` in pixel units
    (default ``4 * eps / steps`` as the authors' code: ``4 * eps / 100`` at the paper's 100 steps),
    projected to the L-inf ball of ``eps`` and ``[0, 1]`` after each step. ReLU models are attacked
    through a private Softplus(``surrogate_beta``) copy; pass ``surrogate_beta=None`` for smooth
    models.
    Returned maps (max-normalised, like ``h``) are the real model's.
    """
    eps = pixel_budget("eps", eps)
    integer("steps", steps)
    lr = 4 * eps / steps if lr is None else lr
    if eps > 0:
        number("lr", lr, 0.0, strict=True)
    space, label = prepare_attack(model, x, input_space)
    n, _, h, w = x.shape
    target = frame_target(h, w, frame_width, device=x.device, dtype=x.dtype).expand(n, h, w).clone()
    attack_model = model
    if surrogate_beta is not None:
        attack_model = softplus_copy(model, surrogate_beta, "surrogate_beta", "surrogate_beta=None")[0]

    with torch.enable_grad():
        clean_map = max_normalise(channel_abs_sum(
            explainer, model, x.detach(), label, create_graph=False, generator=generator,
            batch_size=batch_size).detach())
    with torch.no_grad():
        logits_clean = model(x)

    x01 = space.denormalize(x.detach())
    delta = torch.zeros_like(x01, requires_grad=True)
    optimiser = torch.optim.Adam([delta], lr=lr)
    losses = []
    for i in range(steps):
        with torch.enable_grad():
            x_adv = space.normalize(x01 + delta)
            m = max_normalise(channel_abs_sum(
                explainer, attack_model, x_adv, label, create_graph=True, generator=generator,
                batch_size=batch_size))
            logits = attack_model(x_adv)
            map_term = ((m - target) ** 2).flatten(1).sum(1)
            loss = 0.5 * map_term + 0.5 * ((logits - logits_clean) ** 2).mean(1)
            (grad,) = torch.autograd.grad(loss.sum(), delta)
        if i == 0:
            raise_if_flat(grad, "pass surrogate_beta (for example 20) for ReLU models")
        delta.grad = grad
        optimiser.step()
        with torch.no_grad():
            delta.copy_(project(delta, x01, eps, "linf"))
        losses.append(loss.detach())

    x_adv = space.normalize(x01 + delta.detach())
    return manipulation_result(explainer, model, x_adv, label, clean_map, target, losses,
                                max_normalise, generator, batch_size)
