"""Attacks on explanations: Ghorbani et al. 2019, Dombrowski et al. 2019 and paper E's frame attack.

Each attack takes any differentiable explainer with the library signature
``explain(model, x, target, *, create_graph=False, generator=None, batch_size=None)`` returning a
tensor shaped like ``x`` (or ``(N, 1, H, W)``), and explains the clean predicted label. All images of
the batch are attacked together. ReLU networks have a zero second derivative, so the attack
gradient goes through a private Softplus copy of the model (:func:`models.to_softplus`), while label
checks and the returned maps use the real model. The caller's model is never modified.

Budgets (``eps``, ``alpha``, the frame attack's ``lr``) are in pixel units of images in ``[0, 1]``
and the perturbation lives in pixel space, as in :mod:`attacks`, so the eps ball and the valid
range are exact under per-channel normalisation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .attacks import _project, _space_or_raise
from .inputs import InputSpace, check_images, check_model_ready
from .metrics import center_of_mass, topk_intersection
from .models import to_softplus

__all__ = [
    "GhorbaniResult",
    "ManipulationResult",
    "ghorbani_attack",
    "dombrowski_attack",
    "frame_attack",
    "frame_target",
    "OBJECTIVES",
]

Explainer = Callable[..., Tensor]
OBJECTIVES = ("topk", "mass_center", "random", "targeted")
_TINY = 1e-12


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


# --------------------------------------------------------------------------- shared helpers


def _check_eps(eps: float) -> None:
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0 in pixel units (for example 8/255), got {eps}")


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def _check_steps(steps: int) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")


def _channel_abs_sum(
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


def _sum_normalise(m: Tensor) -> Tensor:
    return m / m.flatten(1).sum(1).clamp_min(_TINY).view(-1, 1, 1)


def _max_normalise(m: Tensor) -> Tensor:
    return m / m.flatten(1).amax(1).clamp_min(_TINY).view(-1, 1, 1)


def _softplus_copy(
    model: nn.Module, beta: float, argument: str, smooth_hint: str
) -> tuple[nn.Module, list[nn.Softplus]]:
    """A private Softplus(beta) copy of ``model`` without parameter gradients, and the Softplus
    modules that replaced its ReLUs (for annealing beta in place)."""
    _check_positive(argument, beta)
    relu_names = {name for name, m in model.named_modules(remove_duplicate=False) if isinstance(m, nn.ReLU)}
    if not relu_names:
        raise ValueError(
            f"{argument}={beta} asks for a Softplus surrogate, but the model has no nn.ReLU module to "
            f"replace; pass {smooth_hint} to attack a smooth (for example Softplus) model directly"
        )
    surrogate = to_softplus(model, beta)
    for p in surrogate.parameters():
        p.requires_grad_(False)
    swapped = [m for name, m in surrogate.named_modules(remove_duplicate=False) if name in relu_names]
    return surrogate, swapped


def _raise_if_flat(grad: Tensor, hint: str) -> None:
    if not bool(grad.any()):
        raise RuntimeError(
            "the attack gradient is exactly zero for every image: the map has no usable second "
            f"derivative through this model (ReLU networks are piecewise linear); {hint}"
        )


def _prepare(model: nn.Module, x: Tensor, input_space: InputSpace | None) -> tuple[InputSpace, Tensor]:
    space = _space_or_raise(model, input_space)
    check_images(x, space)
    check_model_ready(model)
    with torch.no_grad():
        label = model(x).argmax(1)
    return space, label


# --------------------------------------------------------------------------- Ghorbani et al.


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
    copy (needed for ReLU models); ``batch_size`` is passed to the explainer.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {OBJECTIVES}")
    _check_eps(eps)
    _check_positive("alpha", alpha)
    _check_steps(steps)
    if surrogate_beta is not None:
        _check_positive("surrogate_beta", surrogate_beta)
    space, label = _prepare(model, x, input_space)
    n, _, h, w = x.shape
    if k is None:
        k = max(1, round(h * w * 1000 / (224 * 224)))
    if not isinstance(k, int) or not 1 <= k <= h * w:
        raise ValueError(f"k must be an int in [1, {h * w}] (pixels of an {h}x{w} map), got {k!r}")
    if objective == "targeted":
        if not isinstance(region, Tensor) or region.dtype != torch.bool or region.shape != (h, w):
            got = f"{region.dtype} {tuple(region.shape)}" if isinstance(region, Tensor) else repr(region)
            raise ValueError(
                f"objective='targeted' needs region, a bool tensor of shape ({h}, {w}) marking the "
                f"pixels to push the map into; got {got}"
            )
        if not bool(region.any()):
            raise ValueError("region marks no pixel; set at least one entry to True")
        region = region.to(x.device)
    elif region is not None:
        raise ValueError(f"region is only used by objective='targeted', not {objective!r}")
    attack_model = model
    if surrogate_beta is not None and objective != "random":  # random needs no attack gradient
        attack_model = _softplus_copy(model, surrogate_beta, "surrogate_beta", "surrogate_beta=None")[0]

    def real_map(x_norm: Tensor) -> Tensor:
        with torch.enable_grad():
            m = _channel_abs_sum(explainer, model, x_norm, label, create_graph=False,
                                 generator=generator, batch_size=batch_size)
        return _sum_normalise(m.detach())

    clean_map = real_map(x.detach())
    # clean top-k pixels, ties broken by position as in metrics.topk_intersection
    top_clean = torch.zeros(n, h * w, dtype=x.dtype, device=x.device)
    order = torch.sort(clean_map.flatten(1), dim=1, descending=True, stable=True).indices
    top_clean.scatter_(1, order[:, :k], 1.0)
    center_clean = center_of_mass(clean_map)
    center_ref = center_clean.floor()

    if objective in ("topk", "random"):
        name, higher_is_stronger = "topk_intersection", False

        def measure(m: Tensor) -> Tensor:
            return topk_intersection(m, clean_map, k)
    elif objective == "mass_center":
        name, higher_is_stronger = "center_shift", True

        def measure(m: Tensor) -> Tensor:
            return (center_of_mass(m) - center_clean).norm(dim=1)
    else:
        name, higher_is_stronger = "region_mass", True

        def measure(m: Tensor) -> Tensor:
            return (m * region).flatten(1).sum(1)

    def attack_objective(s: Tensor) -> Tensor:  # (N,), to be maximised
        if objective == "topk":
            return -(s.flatten(1) * top_clean).sum(1)
        if objective == "mass_center":
            return ((center_of_mass(s) - center_ref) ** 2).sum(1)
        return (s * region).flatten(1).sum(1)

    x01 = space.denormalize(x.detach())

    def attack_gradient(delta: Tensor) -> tuple[Tensor, Tensor]:
        """Gradient of the objective at ``delta`` (one forward + double backward), and the
        attacked model's map there."""
        with torch.enable_grad():
            d = delta.clone().requires_grad_(True)
            s = _sum_normalise(_channel_abs_sum(
                explainer, attack_model, space.normalize(x01 + d), label, create_graph=True,
                generator=generator, batch_size=batch_size))
            (grad,) = torch.autograd.grad(attack_objective(s).sum(), d)
        return grad.nan_to_num(0.0), s.detach()  # an all-zero map has no centre: no step

    delta = torch.zeros_like(x01)
    step = torch.full((n, 1, 1, 1), float(alpha), dtype=x01.dtype, device=x01.device)
    clean_value = measure(clean_map)
    best_value, best_delta, best_map = clean_value.clone(), delta.clone(), clean_map.clone()
    trace = [clean_value]
    # without a surrogate the attack's map at the current iterate is the real map: reuse it
    reuse_attack_map = surrogate_beta is None and objective != "random"
    current_map: Tensor | None = clean_map  # real map of the current iterate when already known

    for t in range(steps + 1):
        grad = None
        if reuse_attack_map and t < steps:
            grad, current_map = attack_gradient(delta)
        if current_map is None:
            current_map = real_map(space.normalize(x01 + delta))
        if t > 0:  # every iterate keeps the clean label (rejected steps are not taken)
            value = measure(current_map)
            better = value > best_value if higher_is_stronger else value < best_value
            best_value = torch.where(better, value, best_value)
            best_delta = torch.where(better.view(-1, 1, 1, 1), delta, best_delta)
            best_map = torch.where(better.view(-1, 1, 1), current_map, best_map)
            trace.append(value)
        if t == steps:
            break
        if objective == "random":
            direction = torch.randn(x01.shape, generator=generator, dtype=x01.dtype, device=x01.device).sign()
        else:
            if grad is None:
                grad, _ = attack_gradient(delta)
            if t == 0:
                _raise_if_flat(grad, "pass surrogate_beta (for example 10) for ReLU models")
            direction = grad.sign()
        candidate = _project(delta + step * direction, x01, eps, "linf")
        with torch.no_grad():
            keep = (model(space.normalize(x01 + candidate)).argmax(1) == label).view(-1, 1, 1, 1)
        delta = torch.where(keep, candidate, delta)
        step = torch.where(keep, step, step / 2)
        current_map = None

    x_adv = space.normalize(x01 + best_delta).detach()
    with torch.no_grad():
        label_kept = model(x_adv).argmax(1) == label
    improved = best_value > clean_value if higher_is_stronger else best_value < clean_value
    return GhorbaniResult(
        x_adv=x_adv, clean_map=clean_map, adv_map=best_map, label=label, label_kept=label_kept,
        success=label_kept & improved, measure=name, clean_value=clean_value, value=best_value,
        trace=torch.stack(trace),
    )


# --------------------------------------------------------------------------- Dombrowski et al.


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
    _check_steps(steps)
    _check_positive("lr", lr)
    if map_weight < 0 or output_weight < 0:
        raise ValueError(f"map_weight and output_weight must be >= 0, got {map_weight}, {output_weight}")
    if (beta_start is None) != (beta_end is None):
        raise ValueError("give both beta_start and beta_end (Softplus surrogate) or neither (smooth model)")
    space, label = _prepare(model, x, input_space)
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
    target = _sum_normalise(target_map.detach().to(device=x.device, dtype=x.dtype))
    if beta_start is None:
        attack_model, softplus = model, []
    else:
        _check_positive("beta_end", beta_end)
        attack_model, softplus = _softplus_copy(
            model, beta_start, "beta_start", "beta_start=None, beta_end=None"
        )

    with torch.enable_grad():
        clean_map = _sum_normalise(_channel_abs_sum(
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
            m = _sum_normalise(_channel_abs_sum(
                explainer, attack_model, x_adv, label, create_graph=True, generator=generator,
                batch_size=batch_size))
            p = attack_model(x_adv).softmax(1)
            map_term = ((m - target) ** 2).flatten(1).mean(1)
            loss = map_weight * map_term + output_weight * ((p - p_clean) ** 2).mean(1)
            (grad,) = torch.autograd.grad(loss.sum(), x_adv)
        if i == 0:
            _raise_if_flat(grad, "keep beta_start / beta_end for ReLU models")
        x_adv.grad = grad
        optimiser.step()
        with torch.no_grad():
            x_adv.copy_(space.clamp(x_adv))
        losses.append(loss.detach())

    return _manipulation_result(explainer, model, x_adv.detach(), label, clean_map, target, losses,
                                _sum_normalise, generator, batch_size)


def _manipulation_result(explainer, model, x_adv, label, clean_map, target, losses, normalise,
                         generator, batch_size) -> ManipulationResult:
    with torch.enable_grad():
        adv_map = normalise(_channel_abs_sum(explainer, model, x_adv, label, create_graph=False,
                                             generator=generator, batch_size=batch_size).detach())
    with torch.no_grad():
        label_kept = model(x_adv).argmax(1) == label
    return ManipulationResult(
        x_adv=x_adv, clean_map=clean_map, adv_map=adv_map, target_map=target, label=label,
        label_kept=label_kept, loss_trace=torch.stack(losses),
    )


# --------------------------------------------------------------------------- paper E frame attack


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
    _check_eps(eps)
    _check_steps(steps)
    lr = 4 * eps / steps if lr is None else lr
    if eps > 0:
        _check_positive("lr", lr)
    space, label = _prepare(model, x, input_space)
    n, _, h, w = x.shape
    target = frame_target(h, w, frame_width, device=x.device, dtype=x.dtype).expand(n, h, w).clone()
    attack_model = model
    if surrogate_beta is not None:
        attack_model = _softplus_copy(model, surrogate_beta, "surrogate_beta", "surrogate_beta=None")[0]

    with torch.enable_grad():
        clean_map = _max_normalise(_channel_abs_sum(
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
            m = _max_normalise(_channel_abs_sum(
                explainer, attack_model, x_adv, label, create_graph=True, generator=generator,
                batch_size=batch_size))
            logits = attack_model(x_adv)
            map_term = ((m - target) ** 2).flatten(1).sum(1)
            loss = 0.5 * map_term + 0.5 * ((logits - logits_clean) ** 2).mean(1)
            (grad,) = torch.autograd.grad(loss.sum(), delta)
        if i == 0:
            _raise_if_flat(grad, "pass surrogate_beta (for example 20) for ReLU models")
        delta.grad = grad
        optimiser.step()
        with torch.no_grad():
            delta.copy_(_project(delta, x01, eps, "linf"))
        losses.append(loss.detach())

    x_adv = space.normalize(x01 + delta.detach())
    return _manipulation_result(explainer, model, x_adv, label, clean_map, target, losses,
                                _max_normalise, generator, batch_size)
