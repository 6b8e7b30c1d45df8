"""Robustness of explanations to input changes: max-sensitivity (Yeh et al. 2019) and paper B's
sensitivity of a map to a given perturbation."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core.batching import draw
from ..core.inputs import input_space_of
from ..core.options import batch_size as check_batch_size
from ..core.options import integer
from ..explainers.registry import Explainer
from ..maps.checks import check_finite, nan_where
from .common import prepare

__all__ = ["max_sensitivity", "saliency_sensitivity"]


def max_sensitivity(
    explainer: Explainer, model: nn.Module, x: Tensor, target: Tensor | int, *, radius: float | Tensor,
    samples: int = 10, norm: str = "linf", generator: torch.Generator | None = None,
    batch_size: int | None = None,
) -> Tensor:
    """Max-sensitivity (Yeh et al. 2019): ``max_j ||E(x + d_j) - E(x)||_F / ||E(x)||_F``, (N,).

    ``d_j`` (j < ``samples``) are drawn uniformly from the ball of ``radius`` in the units of ``x``
    (normalised input): ``norm="linf"`` the cube [-radius, radius]^d (radius may be a tensor
    broadcastable to x, for example ``model.input_space.eps(8/255, x)`` for a pixel-unit budget),
    ``norm="l2"`` the Euclidean ball (float radius). Perturbed inputs are clamped to the valid
    range when the model has an ``input_space`` (captum and Quantus do not clamp; away from the
    range boundaries this changes nothing). The norms are Frobenius norms of each whole
    explanation (all channels). x and the N * samples perturbed copies are explained in one
    explainer call (``batch_size`` and ``generator`` are passed on; the generator also draws the
    noise). NaN where ``E(x)`` is all zero.

    Matching the references: captum ``sensitivity_max(explain, x, perturb_radius=r,
    n_perturb_samples=s)`` (defaults r = 0.02, s = 10, norm_ord "fro", uniform L-inf noise) and
    Quantus ``MaxSensitivity(lower_bound=r, nr_samples=s)`` (defaults r = 0.2, s = 200, Frobenius
    numerator and denominator, ``abs=False, normalise=False``) compute the same quantity with
    ``radius=r, samples=s, norm="linf"``, up to their random draws; captum divides by 1 instead
    of 0 for an all-zero E(x) and Quantus returns inf/NaN there.
    """
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    integer("samples", samples)
    check_batch_size(batch_size)
    target = prepare(model, x, target)
    n = x.shape[0]
    if isinstance(radius, Tensor):
        radius = radius.to(device=x.device, dtype=x.dtype)
        if norm == "l2" and radius.numel() != 1:
            raise ValueError("an l2 ball needs a scalar radius; per-channel radii only work with norm='linf'")
        if not bool((radius >= 0).all()):
            raise ValueError("radius must be >= 0")
        try:
            fits = torch.broadcast_shapes(radius.shape, x[:1].shape) == x[:1].shape
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(
                f"radius of shape {tuple(radius.shape)} must broadcast to one image {tuple(x[:1].shape)}, "
                f"for example (1, C, 1, 1)"
            )
    elif not (isinstance(radius, (int, float)) and radius >= 0):
        raise ValueError(f"radius must be a float >= 0 (units of the normalised input), got {radius!r}")

    shape = (n * samples, *x.shape[1:])
    if norm == "linf":
        noise = (draw(torch.rand, shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1) * radius
    else:
        direction = draw(torch.randn, shape, generator=generator, device=x.device, dtype=x.dtype)
        direction = direction / direction.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        u = draw(torch.rand, (n * samples, 1, 1, 1), generator=generator, device=x.device, dtype=x.dtype)
        noise = direction * u.pow(1.0 / x[0].numel()) * radius
    perturbed = x.repeat_interleave(samples, 0) + noise
    space = input_space_of(model)
    if space is not None:
        perturbed = space.clamp(perturbed)

    maps = explainer(
        model, torch.cat([x, perturbed]), torch.cat([target, target.repeat_interleave(samples)]),
        generator=generator, batch_size=batch_size,
    ).detach()
    if maps.shape[0] != n * (samples + 1):
        raise ValueError(f"the explainer returned {maps.shape[0]} maps for {n * (samples + 1)} inputs")
    check_finite(maps, "explanations")
    flat = maps.flatten(1)
    clean, noisy = flat[:n], flat[n:].view(n, samples, -1)
    ratio = (noisy - clean.unsqueeze(1)).norm(dim=2).amax(1) / clean.norm(dim=1)
    return nan_where(clean.norm(dim=1) == 0, ratio)


def saliency_sensitivity(clean_maps: Tensor, attacked_maps: Tensor, x: Tensor, x_adv: Tensor) -> Tensor:
    """Paper B's sensitivity (lower is better), (N,): ``||E(x) - E(x^)||_2 / ||x - x^||_2``, the
    maps' change per unit of input change. Pass the maps as compared (normalised the same way) and
    ``x``, ``x_adv`` in the same units (for example pixels in [0, 1]). NaN where ``x^ = x``."""
    check_finite(clean_maps, "clean_maps")
    check_finite(attacked_maps, "attacked_maps")
    if clean_maps.shape != attacked_maps.shape or clean_maps.shape[0] != x.shape[0] or x.shape != x_adv.shape:
        raise ValueError(f"clean_maps {tuple(clean_maps.shape)} and attacked_maps {tuple(attacked_maps.shape)} must "
                         f"match, and x {tuple(x.shape)} and x_adv {tuple(x_adv.shape)} too, with one map per image")
    moved = (x - x_adv).flatten(1).norm(dim=1)
    change = (clean_maps - attacked_maps).flatten(1).norm(dim=1).to(moved.dtype)
    return nan_where(moved == 0, change / moved.clamp(min=torch.finfo(moved.dtype).tiny))
