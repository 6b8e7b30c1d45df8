"""Paper E's measures of how robust gradient attributions are (Joo et al., AAAI 2023): similarity of
the map under random input noise, gradient-alignment diagnostics against the cosd bound, and the
keep-top-r insertion curve.

The map is ``h = sum_c |g|`` with ``g`` the gradient of the target logit with respect to the
normalised input, max-normalised (``h / max h``, the authors' "standard") or sum-normalised.
Random neighbours ``x' = x + eps / std_c * noise`` (``eps`` in pixel units, per-channel std of the
model's input space) are drawn per image from :class:`..core.batching.ImageNoise` seeds and share
the batch axis in chunks of at most ``batch_size`` model inputs, so results do not depend on the
chunk size nor on which images share a call. Neighbours are clamped to the valid pixel range; the
authors clamp to the min and max of the whole batch (a quirk that lets a pixel leave [0, 1] and
depends on the batch), which we do not copy.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..attacks.common import max_normalise, sum_normalise
from ..core.batching import ImageNoise, chunk_ranges, reduce_rows, resolve_batch_size, rows_of
from ..core.options import batch_size as check_batch_size
from ..core.options import choice, integer, pixel_budget
from ..core.perturbation import space_or_raise
from ..explainers.objective import Objective, batched_gradient
from ..maps.checks import flat_pair, nan_where
from ..maps.similarity import cosine, mse, pearson, ssim
from .faithfulness import insertion_auc

__all__ = [
    "NOISES", "NORMALISATIONS", "SIMILARITIES", "cosine_distance", "cosd_upper_bound", "gradient_map",
    "hessian_vector_product", "random_perturbation_similarity", "alignment_diagnostics", "insertion_curve",
]

NOISES = ("uniform", "gaussian")
NORMALISATIONS = ("max", "sum")
SIMILARITIES = ("cosine", "pearson", "ssim", "mse")
DIAGNOSTICS = ("grad_norm", "neighbour_grad_norm", "hvp_norm", "hvp_ratio", "l2", "cosd", "cosd_bound",
               "perturbation_mean", "perturbation_max")


def _as_batch(t: Tensor) -> Tensor:
    """(N, D) gradient vectors as (N, 1, D) maps; the map measures refuse 2-D input as ambiguous."""
    return t.unsqueeze(1) if isinstance(t, Tensor) and t.dim() == 2 else t


def cosine_distance(a: Tensor, b: Tensor) -> Tensor:
    """Paper E's cosd ``(1 - cos(a, b)) / 2`` of the flattened maps (N, ...) or vectors (N, D), per
    image (N,), in [0, 1]; NaN where a map is all zero."""
    return (1 - cosine(_as_batch(a), _as_batch(b))) / 2


def cosd_upper_bound(a: Tensor, b: Tensor) -> Tensor:
    """``||a - b||^2 / (4 ||a|| ||b||)``, per image (N,): an upper bound of :func:`cosine_distance`
    (from ``||a - b||^2 >= 2 ||a|| ||b|| (1 - cos)``). With ``b - a ~ H r`` it shows that alignment
    depends on the Hessian-to-gradient-norm ratio. NaN where a map is all zero."""
    a, b = flat_pair(_as_batch(a), _as_batch(b))
    na, nb = a.norm(dim=1), b.norm(dim=1)
    return nan_where((na == 0) | (nb == 0), (a - b).square().sum(1) / (4 * na * nb))


def gradient_map(grad: Tensor, normalisation: str = "max") -> Tensor:
    """Paper E's map from gradients (N, C, H, W): ``h = sum_c |g|`` (N, H, W), divided by its
    maximum (``"max"``, the authors' "standard") or its sum (``"sum"``); all-zero maps stay 0."""
    choice("normalisation", normalisation, NORMALISATIONS)
    h = grad.abs().sum(1)
    return max_normalise(h) if normalisation == "max" else sum_normalise(h)


def _setup(model, x, target, eps, draws, noise, generator, batch_size):
    """Checks; the objective, the per-channel budget, the chunk size and the noise source."""
    eps = pixel_budget("eps", eps)
    draws = integer("draws", draws)
    choice("noise", noise, NOISES)
    check_batch_size(batch_size)
    space = space_or_raise(model, None)
    objective = Objective(model, x, target, "logit")
    source = ImageNoise(generator, x.shape[0], draws, x.shape[1:], device=x.device, dtype=x.dtype)
    scale = space.eps(eps, x)
    std = space.eps(1.0, x).reciprocal()  # pixel units per normalised unit, (1, C, 1, 1)

    def neighbours(start: int, stop: int) -> tuple[Tensor, Tensor]:
        """Image index and clamped neighbour of rows start..stop-1 (row r: draw r % S of image r // S)."""
        image, _ = rows_of(start, stop, draws, x.device)
        z = source.rows(start, stop)
        if noise == "uniform":
            z = torch.erf(z / math.sqrt(2))  # 2 Phi(z) - 1: exactly U(-1, 1) from the same draws
        return image, space.clamp(x[image] + scale * z)

    return objective, neighbours, draws, resolve_batch_size(batch_size, x), std


def _perturbation_stats(delta: Tensor, std: Tensor) -> list[Tensor]:
    pixels = (delta * std).abs().flatten(1)
    return [pixels.mean(1), pixels.amax(1)]


def random_perturbation_similarity(
    model: nn.Module, x: Tensor, target: Tensor | int, *, eps: float = 4 / 255, draws: int = 10,
    noise: str = "uniform", generator: torch.Generator | None = None, batch_size: int | None = None,
    ssim_window: int = 7,
) -> dict[str, Tensor]:
    """Paper E's random-perturbation similarity: for ``draws`` neighbours ``x'`` of each image
    (uniform noise of ``eps`` pixel units per channel, as the authors; clamped to the valid range),
    the similarity of ``h(x')`` to ``h(x)`` (``h`` = :func:`gradient_map`), averaged over the draws.

    Returns (N,) tensors keyed ``"{normalisation}_{similarity}"`` for ``"max"`` and ``"sum"``
    normalised maps and ``cosine``, ``pearson``, ``ssim`` (Gaussian window of ``ssim_window`` taps,
    sigma 1.5, valid positions, per-image data range; the authors pad with zeros and take C1, C2 from
    the batch's range), ``mse`` (mean over pixels; the authors' "MSE" is the per-image sum, H*W
    times ours); plus ``perturbation_mean`` / ``perturbation_max``: the mean and largest |x' - x| in
    pixel units actually used. Pearson is the textbook one (the authors' gives (n-1)/n for
    identical maps). NaN where a map is all zero (or constant, for Pearson).
    """
    objective, neighbours, draws, batch_size, std = _setup(
        model, x, target, eps, draws, noise, generator, batch_size)
    clean = batched_gradient(objective, x.detach(), False, batch_size)
    clean_maps = {name: gradient_map(clean, name) for name in NORMALISATIONS}

    def evaluate(start, stop):
        image, inputs = neighbours(start, stop)
        grad = objective.input_gradient(inputs, objective.target[image], False)
        values = []
        for name in NORMALISATIONS:
            a, b = gradient_map(grad, name), clean_maps[name][image]
            values += [cosine(a, b), pearson(a, b), ssim(a, b, window_size=ssim_window), mse(a, b)]
        return torch.stack(values + _perturbation_stats(inputs - x[image], std), 1)

    rows = reduce_rows(x.shape[0], draws, batch_size, evaluate, lambda block: block)  # (N, S, M)
    names = [f"{n}_{s}" for n in NORMALISATIONS for s in SIMILARITIES] + ["perturbation_mean", "perturbation_max"]
    out = dict(zip(names, rows.mean(1).unbind(1)))
    out["perturbation_max"] = rows[:, :, -1].amax(1)
    return out


def hessian_vector_product(
    model: nn.Module, x: Tensor, target: Tensor | int, v: Tensor, *, batch_size: int | None = None,
) -> Tensor:
    """``H_i v_i`` per image (shape of ``x``), ``H_i`` the input Hessian of the target logit at
    ``x_i``, by double backprop in chunks of ``batch_size`` images. Zero for piecewise-linear
    (ReLU) networks in eval mode."""
    objective = Objective(model, x, target, "logit")
    if not isinstance(v, Tensor) or v.shape != x.shape:
        raise ValueError(f"v must be a tensor of the shape of x {tuple(x.shape)}, got "
                         f"{tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__}")
    check_batch_size(batch_size)
    pieces = [
        _hvp(objective, x[a:b], objective.target[a:b], v[a:b])[1]
        for a, b in chunk_ranges(x.shape[0], resolve_batch_size(batch_size, x))
    ]
    return torch.cat(pieces)


def _hvp(objective: Objective, x: Tensor, target: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """(gradient, Hessian-vector product) at ``x``, both detached."""
    with torch.enable_grad():
        inputs = x.detach().requires_grad_(True)
        grad = objective.input_gradient(inputs, target, True)
        (hv,) = torch.autograd.grad((grad * v.detach()).sum(), inputs, allow_unused=True, materialize_grads=True)
    return grad.detach(), hv


def alignment_diagnostics(
    model: nn.Module, x: Tensor, target: Tensor | int, *, eps: float = 4 / 255, draws: int = 10,
    noise: str = "gaussian", generator: torch.Generator | None = None, batch_size: int | None = None,
) -> dict[str, Tensor]:
    """Paper E's gradient-alignment diagnostics, averaged over ``draws`` neighbours per image.

    As the authors' upper-bound test: Gaussian neighbours ``x' = x + eps / std_c * N(0, I)``
    (``noise="uniform"`` for U[-1, 1]), here clamped to the valid range, and ``r = x' - x`` (the
    authors use the unclamped draw). Per draw, with ``g = g(x)`` and ``g' = g(x')``:
    ``grad_norm`` ||g||, ``neighbour_grad_norm`` ||g'||, ``hvp_norm`` ||H(x) r||, ``hvp_ratio``
    ||H(x) r|| / ||g'|| (the authors divide by the neighbour's gradient), ``l2`` ||g - g'||^2,
    ``cosd`` (1 - cos(g, g')) / 2 and ``cosd_bound`` ||g - g'||^2 / (4 ||g|| ||g'||) (always >=
    cosd); plus ``perturbation_mean`` / ``perturbation_max`` (|x' - x| in pixel units; max over the
    draws). Returns (N,) tensors keyed by these names. Each row costs a double-backprop pass at
    ``x`` and a gradient pass at ``x'``, each of at most ``batch_size`` inputs.
    """
    objective, neighbours, draws, batch_size, std = _setup(
        model, x, target, eps, draws, noise, generator, batch_size)

    def evaluate(start, stop):
        image, inputs = neighbours(start, stop)
        r = inputs - x[image]
        target = objective.target[image]
        grad, hv = _hvp(objective, x[image], target, r)
        grad_n = objective.input_gradient(inputs, target, False)
        norm, norm_n, hv_norm = grad.flatten(1).norm(dim=1), grad_n.flatten(1).norm(dim=1), hv.flatten(1).norm(dim=1)
        ratio = nan_where(norm_n == 0, hv_norm / norm_n)
        l2 = (grad - grad_n).flatten(1).square().sum(1)
        values = [norm, norm_n, hv_norm, ratio, l2, cosine_distance(grad, grad_n), cosd_upper_bound(grad, grad_n)]
        return torch.stack(values + _perturbation_stats(r, std), 1)

    rows = reduce_rows(x.shape[0], draws, batch_size, evaluate, lambda block: block)  # (N, S, M)
    out = dict(zip(DIAGNOSTICS, rows.mean(1).unbind(1)))
    out["perturbation_max"] = rows[:, :, -1].amax(1)
    return out


def insertion_curve(
    model: nn.Module, x: Tensor, maps: Tensor, target: Tensor | int, *, steps: int = 20,
    batch_size: int | None = None,
) -> Tensor:
    """Paper E's insertion (AOPC-style): the softmax probability of ``target`` when only the top
    ``i / steps`` of pixels by ``maps`` (N, H, W) are kept and the rest set to the dataset's mean
    colour (0 in the normalised input, as the authors' ``x * mask``), for i = 0 .. steps-1;
    (N, steps). Its mean over i is the authors' per-image score. This is
    :func:`insertion_auc` with ``substrate="zero"`` (not ``"mean"``, the image's own mean colour)
    without its last point (the full image). Ties in ``maps`` are broken by position (the authors
    keep pixels strictly above the threshold value)."""
    steps = integer("steps", steps)
    _, curve = insertion_auc(model, x, maps, target, substrate="zero", steps=steps, batch_size=batch_size,
                             return_curve=True)
    return curve[:, :steps]
