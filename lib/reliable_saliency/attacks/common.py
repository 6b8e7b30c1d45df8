"""What the attacks on explanations share: result types, the attacked map ``sum_c |E(x)|`` and its
normalisations, the Softplus surrogate of a ReLU model, and input checks.

ReLU networks have a zero second derivative, so the attack gradient goes through a private
Softplus copy of the model (:func:`..models.to_softplus`), while label checks and the returned
maps use the real model. The caller's model is never modified.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..core.inputs import InputSpace, check_images, check_model_ready
from ..core.options import number
from ..core.perturbation import space_or_raise
from ..explainers.registry import Explainer
from ..models.smoothing import SMOOTHED, to_softplus

__all__ = [
    "GhorbaniResult", "ManipulationResult", "channel_abs_sum", "sum_normalise", "max_normalise",
    "softplus_copy", "raise_if_flat", "prepare_attack", "manipulation_result", "TINY",
]

TINY = 1e-12


@dataclass
class GhorbaniResult:
    """Outcome of :func:`ghorbani_attack`. Maps are ``(N, H, W)``, summing to 1, of the real model.

    ``measure`` names what ``clean_value`` / ``value`` / ``trace`` hold: ``"topk_intersection"``
    (topk and random; lower is a stronger attack), ``"center_shift"`` (pixels; higher is stronger)
    or ``"region_mass"`` (higher is stronger). ``trace`` is ``(steps + 1, N)``: the measure at each
    accepted iterate, starting with the clean image. ``success``: label kept and the measure
    strictly better than on the clean image.
    """

    x_adv: Tensor
    clean_map: Tensor
    adv_map: Tensor
    label: Tensor
    label_kept: Tensor
    success: Tensor
    measure: str
    clean_value: Tensor
    value: Tensor
    trace: Tensor


@dataclass
class ManipulationResult:
    """Outcome of :func:`dombrowski_attack` and :func:`frame_attack`: the real model's maps
    ``(N, H, W)`` at ``x`` and ``x_adv``, the target map, the explained (clean predicted) label,
    whether the real model still predicts it, and the per-image loss at each step ``(steps, N)``."""

    x_adv: Tensor
    clean_map: Tensor
    adv_map: Tensor
    target_map: Tensor
    label: Tensor
    label_kept: Tensor
    loss_trace: Tensor


def channel_abs_sum(
    explainer: Explainer, model: nn.Module, x: Tensor, label: Tensor, *, create_graph: bool,
    generator: torch.Generator | None, batch_size: int | None,
) -> Tensor:
    """``sum_c |explain(model, x, label)|`` as (N, H, W); with create_graph, differentiable in x."""
    e = explainer(model, x, label, create_graph=create_graph, generator=generator, batch_size=batch_size)
    n, c, h, w = x.shape
    good = isinstance(e, Tensor) and e.dim() == 4 and e.shape[0] == n and e.shape[1] in (1, c)
    if not good or e.shape[2:] != (h, w):
        shape = tuple(e.shape) if isinstance(e, Tensor) else type(e).__name__
        raise ValueError(
            f"the explainer must return a tensor of shape {(n, c, h, w)} or {(n, 1, h, w)}, got {shape}"
        )
    if create_graph and not e.requires_grad:
        raise ValueError(
            "the explainer's map is not differentiable with respect to x with create_graph=True; "
            "explanation attacks need a gradient-family explainer (for example plain gradients)"
        )
    return e.abs().sum(1)


def sum_normalise(m: Tensor) -> Tensor:
    return m / m.flatten(1).sum(1).clamp_min(TINY).view(-1, 1, 1)


def max_normalise(m: Tensor) -> Tensor:
    return m / m.flatten(1).amax(1).clamp_min(TINY).view(-1, 1, 1)


def softplus_copy(
    model: nn.Module, beta: float, argument: str, smooth_hint: str
) -> tuple[nn.Module, list[nn.Softplus]]:
    """A private Softplus(beta) copy of ``model`` without parameter gradients, and the Softplus
    modules that replaced its ReLUs (for annealing beta in place)."""
    number(argument, beta, 0.0, strict=True)
    relu_names = {name for name, m in model.named_modules(remove_duplicate=False) if isinstance(m, SMOOTHED)}
    if not relu_names:
        raise ValueError(
            f"{argument}={beta} asks for a Softplus surrogate, but the model has no nn.ReLU or nn.ReLU6 "
            f"module to replace; pass {smooth_hint} to attack a smooth (for example Softplus) model directly"
        )
    surrogate = to_softplus(model, beta)
    for p in surrogate.parameters():
        p.requires_grad_(False)
    swapped = [m for name, m in surrogate.named_modules(remove_duplicate=False) if name in relu_names]
    return surrogate, swapped


def raise_if_flat(grad: Tensor, hint: str) -> None:
    if not bool(grad.any()):
        raise RuntimeError(
            "the attack gradient is exactly zero for every image: the map has no usable second "
            f"derivative through this model (ReLU networks are piecewise linear); {hint}"
        )


def prepare_attack(model: nn.Module, x: Tensor, input_space: InputSpace | None) -> tuple[InputSpace, Tensor]:
    space = space_or_raise(model, input_space)
    check_images(x, space)
    check_model_ready(model)
    with torch.no_grad():
        label = model(x).argmax(1)
    return space, label


def manipulation_result(explainer, model, x_adv, label, clean_map, target, losses, normalise,
                         generator, batch_size) -> ManipulationResult:
    with torch.enable_grad():
        adv_map = normalise(channel_abs_sum(explainer, model, x_adv, label, create_graph=False,
                                             generator=generator, batch_size=batch_size).detach())
    with torch.no_grad():
        label_kept = model(x_adv).argmax(1) == label
    return ManipulationResult(
        x_adv=x_adv, clean_map=clean_map, adv_map=adv_map, target_map=target, label=label,
        label_kept=label_kept, loss_trace=torch.stack(losses),
    )
