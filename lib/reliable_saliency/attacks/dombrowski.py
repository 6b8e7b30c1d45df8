"""Dombrowski et al. (NeurIPS 2019): pull an image's map towards a target map while keeping the
output, with Adam on the input and a Softplus surrogate whose beta is annealed."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core.inputs import InputSpace
from ..core.options import integer, number
from ..explainers.registry import Explainer
from .common import (
    ManipulationResult, channel_abs_sum, manipulation_result, prepare_attack, raise_if_flat, softplus_copy,
    sum_normalise,
)

__all__ = ["dombrowski_attack"]


def dombrowski_attack(
    model: nn.Module,
    x: Tensor,
    target_map: Tensor,
    explainer: Explainer,
    *,
    steps: int = 1500,
    lr: float = 2e-4,
    beta_start: float | None = 10.0,
    beta_end: float | None = 100.0,
    map_weight: float = 1e11,
    output_weight: float = 1e6,
    input_space: InputSpace | None = None,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
) -> ManipulationResult:
    """Dombrowski et al. (NeurIPS 2019): move the map ``h = sum_c |E(x)|`` (sum 1) towards
    ``target_map`` (N, H, W) (for example another image's map; normalised to sum 1 here) while
    keeping the softmax output. Per image the loss is, as in the reference code (``F.mse_loss``),
    ``map_weight * mean_pixels (h - h_t)^2 + output_weight * mean_classes (p - p_clean)^2``.

    Adam on the normalised input (``lr`` in normalised units, as the reference code on ImageNet),
    clamped to the valid range after each step. The gradient goes through a private Softplus copy
    whose beta is annealed ``beta_i = beta_start * (beta_end / beta_start) ** (i / steps)``; pass
    ``beta_start=beta_end=None`` to attack a smooth model directly. The returned maps are the real
    model's. The default weights assume 224 x 224 maps and 1000 classes: the map term scales as
    ``1 / (H W)^2``, so for H x W maps use ``map_weight = 1e11 * (H * W / 224**2) ** 2`` to keep
    the paper's balance between the two terms (Adam is insensitive to a common scale).
    """
    integer("steps", steps)
    number("lr", lr, 0.0, strict=True)
    if map_weight < 0 or output_weight < 0:
        raise ValueError(f"map_weight and output_weight must be >= 0, got {map_weight}, {output_weight}")
    if (beta_start is None) != (beta_end is None):
        raise ValueError("give both beta_start and beta_end (Softplus surrogate) or neither (smooth model)")
    space, label = prepare_attack(model, x, input_space)
    n, _, h, w = x.shape
    if not isinstance(target_map, Tensor) or target_map.shape != (n, h, w):
        got = tuple(target_map.shape) if isinstance(target_map, Tensor) else type(target_map).__name__
        raise ValueError(
            f"target_map must have shape ({n}, {h}, {w}) (one map per image; use .expand({n}, {h}, {w}) "
            f"to share one), got {got}"
        )
    if not target_map.is_floating_point() or not bool(torch.isfinite(target_map).all()):
        raise ValueError("target_map must be a finite float tensor")
    if bool((target_map < 0).any()) or not bool((target_map.flatten(1).sum(1) > 0).all()):
        raise ValueError("target_map must be non-negative with a positive sum per image (a |map|)")
    target = sum_normalise(target_map.detach().to(device=x.device, dtype=x.dtype))
    if beta_start is None:
        attack_model, softplus = model, []
    else:
        number("beta_end", beta_end, 0.0, strict=True)
        attack_model, softplus = softplus_copy(
            model, beta_start, "beta_start", "beta_start=None, beta_end=None"
        )

    with torch.enable_grad():
        clean_map = sum_normalise(channel_abs_sum(
            explainer, model, x.detach(), label, create_graph=False, generator=generator,
            batch_size=batch_size).detach())
    with torch.no_grad():
        p_clean = model(x).softmax(1)

    x_adv = x.detach().clone().requires_grad_(True)
    optimiser = torch.optim.Adam([x_adv], lr=lr)
    losses = []
    for i in range(steps):
        if softplus:
            beta = beta_start * (beta_end / beta_start) ** (i / steps)
            for module in softplus:
                module.beta = beta
        with torch.enable_grad():
            m = sum_normalise(channel_abs_sum(
                explainer, attack_model, x_adv, label, create_graph=True, generator=generator,
                batch_size=batch_size))
            p = attack_model(x_adv).softmax(1)
            map_term = ((m - target) ** 2).flatten(1).mean(1)
            loss = map_weight * map_term + output_weight * ((p - p_clean) ** 2).mean(1)
            (grad,) = torch.autograd.grad(loss.sum(), x_adv)
        if i == 0:
            raise_if_flat(grad, "keep beta_start / beta_end for ReLU models")
        x_adv.grad = grad
        optimiser.step()
        with torch.no_grad():
            x_adv.copy_(space.clamp(x_adv))
        losses.append(loss.detach())

    return manipulation_result(explainer, model, x_adv.detach(), label, clean_map, target, losses,
                                sum_normalise, generator, batch_size)
