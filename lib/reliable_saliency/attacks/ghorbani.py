"""Ghorbani et al. (AAAI 2019): iterative sign-gradient attacks on a map, with the label kept.

The attacked map is ``S(x) = sum_c |E(x)|`` normalised to sum 1, for any differentiable explainer
of the library. Budgets (``eps``, ``alpha``) are in pixel units of images in [0, 1]; the
perturbation lives in pixel space, so the eps ball and the valid range are exact under per-channel
normalisation. All images of the batch are attacked together.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..core.batching import draw
from ..core.inputs import InputSpace
from ..core.options import choice, integer, number, pixel_budget
from ..core.perturbation import project
from ..explainers.registry import Explainer
from ..maps.localisation import center_of_mass
from ..maps.similarity import topk_intersection
from .common import GhorbaniResult, channel_abs_sum, prepare_attack, raise_if_flat, softplus_copy, sum_normalise

__all__ = ["OBJECTIVES", "ghorbani_attack", "random_sign_noise"]

OBJECTIVES = ("topk", "mass_center", "random", "targeted")


@dataclass
class _Goal:
    """One objective: what the attack maximises on the attacked map, and how a map is judged.
    ``measure`` names the judged quantity; ``higher_is_stronger`` says which way is a stronger attack."""

    measure: str
    higher_is_stronger: bool
    judge: Callable[[Tensor], Tensor]  # real model's map (N, H, W) -> (N,)
    attack_value: Callable[[Tensor], Tensor] | None  # attacked map -> (N,), maximised; None: random


def _goal(objective: str, clean_map: Tensor, k: int, region: Tensor | None) -> _Goal:
    n, h, w = clean_map.shape
    if objective in ("topk", "random"):
        # clean top-k pixels, ties broken by position as in maps.topk_intersection
        order = torch.sort(clean_map.flatten(1), dim=1, descending=True, stable=True).indices
        top_clean = torch.zeros(n, h * w, dtype=clean_map.dtype, device=clean_map.device)
        top_clean.scatter_(1, order[:, :k], 1.0)
        return _Goal(
            "topk_intersection", False, lambda m: topk_intersection(m, clean_map, k),
            None if objective == "random" else (lambda s: -(s.flatten(1) * top_clean).sum(1)),
        )
    if objective == "mass_center":
        center_clean = center_of_mass(clean_map)
        # from the clean centre rounded down to whole pixels, as in the authors' code, so the first
        # gradient is not zero
        center_ref = center_clean.floor()
        return _Goal(
            "center_shift", True, lambda m: (center_of_mass(m) - center_clean).norm(dim=1),
            lambda s: ((center_of_mass(s) - center_ref) ** 2).sum(1),
        )
    return _Goal("region_mass", True, lambda m: (m * region).flatten(1).sum(1),
                 lambda s: (s * region).flatten(1).sum(1))


def _checked_region(objective: str, region, h: int, w: int, device) -> Tensor | None:
    if objective != "targeted":
        if region is not None:
            raise ValueError(f"region is only used by objective='targeted', not {objective!r}")
        return None
    if not isinstance(region, Tensor) or region.dtype != torch.bool or region.shape != (h, w):
        got = f"{region.dtype} {tuple(region.shape)}" if isinstance(region, Tensor) else repr(region)
        raise ValueError(
            f"objective='targeted' needs region, a bool tensor of shape ({h}, {w}) marking the "
            f"pixels to push the map into; got {got}"
        )
    if not bool(region.any()):
        raise ValueError("region marks no pixel; set at least one entry to True")
    return region.to(device)


def ghorbani_attack(
    model: nn.Module,
    x: Tensor,
    explainer: Explainer,
    *,
    objective: str = "topk",
    eps: float = 8 / 255,
    alpha: float = 0.5 / 255,
    steps: int = 300,
    k: int | None = None,
    region: Tensor | None = None,
    surrogate_beta: float | None = None,
    input_space: InputSpace | None = None,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    random_start: bool = False,
) -> GhorbaniResult:
    """Ghorbani et al. (AAAI 2019) iterative attack on the map ``S(x) = sum_c |E(x)|`` (sum 1).

    Sign steps of size ``alpha`` in pixel space, projected to the L-inf ball of ``eps`` around
    ``x`` and to ``[0, 1]``. Objectives (maximised): ``"topk"`` ``-sum`` of S over the clean top-k
    pixels; ``"mass_center"`` the squared shift of S's centre of mass (from the clean centre
    rounded down to whole pixels, as in the authors' code, so the first gradient is not zero);
    ``"targeted"`` the mass of S in ``region`` (bool (H, W)); ``"random"`` the baseline, sign of
    Gaussian noise each step (``generator``). A step is kept, per image, only if the real model
    still predicts the clean label; a rejected step halves that image's step size. Returns per image
    the worst map over the accepted iterates: lowest top-k intersection with the clean map (topk,
    random), largest centre shift, or largest region mass. ``k`` defaults to the paper's fraction,
    1000 of 224 x 224 pixels. ``surrogate_beta``: take the attack gradient through a Softplus(beta)
    copy (needed for ReLU models); ``batch_size`` is passed to the explainer. ``random_start``: a
    restart, from a uniform draw in the eps ball (``generator``; an image whose label the draw
    flips starts from the clean image) instead of the clean image.
    """
    choice("objective", objective, OBJECTIVES)
    eps = pixel_budget("eps", eps)
    number("alpha", alpha, 0.0, strict=True)
    integer("steps", steps)
    if surrogate_beta is not None:
        number("surrogate_beta", surrogate_beta, 0.0, strict=True)
    space, label = prepare_attack(model, x, input_space)
    n, _, h, w = x.shape
    k = max(1, round(h * w * 1000 / (224 * 224))) if k is None else k
    integer("k", k, 1, h * w, f"pixels of an {h}x{w} map")
    region = _checked_region(objective, region, h, w, x.device)
    attack_model = model
    if surrogate_beta is not None and objective != "random":  # random needs no attack gradient
        attack_model = softplus_copy(model, surrogate_beta, "surrogate_beta", "surrogate_beta=None")[0]
    explain = dict(generator=generator, batch_size=batch_size)

    def real_map(x_norm: Tensor) -> Tensor:
        with torch.enable_grad():
            m = channel_abs_sum(explainer, model, x_norm, label, create_graph=False, **explain)
        return sum_normalise(m.detach())

    clean_map = real_map(x.detach())
    goal = _goal(objective, clean_map, k, region)
    x01 = space.denormalize(x.detach())

    def attack_gradient(delta: Tensor) -> tuple[Tensor, Tensor]:
        """Gradient of the objective at ``delta`` (one forward + double backward), and the
        attacked model's map there."""
        with torch.enable_grad():
            d = delta.clone().requires_grad_(True)
            s = sum_normalise(channel_abs_sum(
                explainer, attack_model, space.normalize(x01 + d), label, create_graph=True, **explain))
            (grad,) = torch.autograd.grad(goal.attack_value(s).sum(), d)
        return grad.nan_to_num(0.0), s.detach()  # an all-zero map has no centre: no step

    delta = torch.zeros_like(x01)
    if random_start:
        start = project(draw(torch.rand, x01.shape, generator=generator, device=x01.device, dtype=x01.dtype)
                        .mul(2 * eps).sub(eps), x01, eps, "linf")
        with torch.no_grad():
            keep = (model(space.normalize(x01 + start)).argmax(1) == label).view(-1, 1, 1, 1)
        delta = torch.where(keep, start, delta)
    step = torch.full((n, 1, 1, 1), float(alpha), dtype=x01.dtype, device=x01.device)
    clean_value = goal.judge(clean_map)
    best_value, best_delta, best_map = clean_value.clone(), delta.clone(), clean_map.clone()
    trace = [clean_value]
    # without a surrogate the attack's map at the current iterate is the real map: reuse it
    reuse_attack_map = surrogate_beta is None and goal.attack_value is not None
    current_map: Tensor | None = None if random_start else clean_map  # real map of the iterate, when known

    for t in range(steps + 1):
        grad = None
        if reuse_attack_map and t < steps:
            grad, current_map = attack_gradient(delta)
        if current_map is None:
            current_map = real_map(space.normalize(x01 + delta))
        if t > 0:  # every iterate keeps the clean label (rejected steps are not taken)
            value = goal.judge(current_map)
            better = value > best_value if goal.higher_is_stronger else value < best_value
            best_value = torch.where(better, value, best_value)
            best_delta = torch.where(better.view(-1, 1, 1, 1), delta, best_delta)
            best_map = torch.where(better.view(-1, 1, 1), current_map, best_map)
            trace.append(value)
        if t == steps:
            break
        if goal.attack_value is None:
            direction = draw(torch.randn, x01.shape, generator=generator, device=x01.device, dtype=x01.dtype).sign()
        else:
            if grad is None:
                grad, _ = attack_gradient(delta)
            if t == 0:
                raise_if_flat(grad, "pass surrogate_beta (for example 10) for ReLU models")
            direction = grad.sign()
        candidate = project(delta + step * direction, x01, eps, "linf")
        with torch.no_grad():
            keep = (model(space.normalize(x01 + candidate)).argmax(1) == label).view(-1, 1, 1, 1)
        delta = torch.where(keep, candidate, delta)
        step = torch.where(keep, step, step / 2)
        current_map = None

    x_adv = space.normalize(x01 + best_delta).detach()
    with torch.no_grad():
        label_kept = model(x_adv).argmax(1) == label
    improved = best_value > clean_value if goal.higher_is_stronger else best_value < clean_value
    return GhorbaniResult(
        x_adv=x_adv, clean_map=clean_map, adv_map=best_map, label=label, label_kept=label_kept,
        success=label_kept & improved, measure=goal.measure, clean_value=clean_value, value=best_value,
        trace=torch.stack(trace),
    )


def random_sign_noise(
    model: nn.Module,
    x: Tensor,
    *,
    eps: float = 8 / 255,
    tries: int = 10,
    input_space: InputSpace | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Ghorbani et al.'s random baseline: one shot of sign noise of the full budget,
    ``x + eps * sign(N(0, I))`` in pixel space, clipped to [0, 1]. An image whose label the noise
    changes draws again, up to ``tries`` times. Returns ``(x_noisy, label_kept)``: images that
    never kept their label stay at their last draw and are flagged False."""
    eps = pixel_budget("eps", eps)
    integer("tries", tries)
    space, label = prepare_attack(model, x, input_space)
    x01 = space.denormalize(x.detach())
    noisy = x01.clone()
    pending = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    for _ in range(tries):
        signs = draw(torch.randn, x01.shape, generator=generator, device=x01.device, dtype=x01.dtype).sign()
        candidate = (x01 + eps * signs).clamp(0.0, 1.0)
        noisy = torch.where(pending.view(-1, 1, 1, 1), candidate, noisy)
        with torch.no_grad():
            pending = model(space.normalize(noisy)).argmax(1) != label
        if not bool(pending.any()):
            break
    return space.normalize(noisy).detach(), ~pending
