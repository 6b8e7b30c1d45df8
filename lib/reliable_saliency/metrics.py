"""Metrics on saliency maps: similarity, localisation, faithfulness, robustness and sanity checks.

Every metric is batched over images and returns one value per image, shape (N,), on the maps'
device; nothing loops over images in Python. Conventions:

- Similarity metrics (:func:`topk_intersection`, :func:`spearman`, :func:`pearson`,
  :func:`cosine`, :func:`mse`) take two maps of the same shape (N, ...) and flatten each image.
- Spatial metrics (:func:`ssim`, :func:`center_of_mass`, :func:`pointing_game`, :func:`box_iou`,
  deletion / insertion) take per-pixel maps (N, H, W) (or (N, 1, H, W)); reduce per-channel maps
  first, for example with ``postprocess.channel_sum(postprocess.absolute(m))``.
- Where a value is undefined (correlation with a constant map, centre of mass of an all-zero map,
  ...) the result is NaN for that image, as in scipy; NaN or infinite *inputs* raise ValueError.
- Model-based metrics take normalised input ``x`` (N, C, H, W), run the model in no-grad mode
  without changing its mode, and put all steps / samples of all images on the batch axis, in
  chunks of at most ``batch_size`` model inputs (None: ``batching.default_batch_size``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .batching import chunk_ranges, resolve_batch_size
from .explainers import gaussian_blur
from .inputs import check_images, check_model_ready, check_targets, input_space_of

__all__ = [
    "topk_intersection",
    "spearman",
    "pearson",
    "cosine",
    "mse",
    "ssim",
    "center_of_mass",
    "center_of_mass_shift",
    "deletion_auc",
    "insertion_auc",
    "retrieval",
    "max_sensitivity",
    "randomize_parameters",
    "model_randomisation",
    "pointing_game",
    "box_iou",
    "SUBSTRATES",
]

Explainer = Callable[..., Tensor]

SUBSTRATES = ("zero", "mean", "blur")


# --------------------------------------------------------------------------- input checks


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_finite(m: Tensor, name: str) -> None:
    if not isinstance(m, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(m).__name__}")
    if not m.is_floating_point():
        raise TypeError(f"{name} must be a float tensor, got {m.dtype}")
    if not bool(torch.isfinite(m).all()):
        raise ValueError(f"{name} contains NaN or infinite values; check the explainer's output")


def _flat_pair(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Two maps of equal shape (N, ...) -> (N, D) each, checked."""
    _check_finite(a, "a")
    _check_finite(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dim() < 2:
        raise ValueError(
            f"maps need a batch axis: shape (N, ...), got {tuple(a.shape)}; use m.unsqueeze(0) for one map"
        )
    if a.device != b.device:
        raise ValueError(f"a and b are on different devices ({a.device} and {b.device})")
    return a.flatten(1), b.flatten(1)


def _pixel_maps(m: Tensor, name: str = "maps") -> Tensor:
    """Per-pixel maps (N, H, W) or (N, 1, H, W) -> (N, H, W), checked."""
    _check_finite(m, name)
    if m.dim() == 4 and m.shape[1] == 1:
        m = m[:, 0]
    if m.dim() != 3:
        raise ValueError(
            f"{name} must be per-pixel maps of shape (N, H, W) or (N, 1, H, W), got {tuple(m.shape)}; "
            f"reduce channels first (for example postprocess.channel_sum(postprocess.absolute(m)))"
        )
    return m


def _check_pixel_pair(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    a, b = _pixel_maps(a, "a"), _pixel_maps(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return a, b


def _check_boxes(boxes: Tensor, maps: Tensor) -> Tensor:
    n, h, w = maps.shape
    if not isinstance(boxes, Tensor) or boxes.shape != (n, 4):
        shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(f"boxes must be a tensor of shape ({n}, 4) as (y0, x0, y1, x1), got {shape}")
    if boxes.is_floating_point() or boxes.dtype == torch.bool:
        raise TypeError(f"boxes must hold integer pixel coordinates, got {boxes.dtype}; use boxes.long()")
    boxes = boxes.to(device=maps.device, dtype=torch.long)
    y0, x0, y1, x1 = boxes.unbind(1)
    bad = (y0 < 0) | (x0 < 0) | (y1 > h) | (x1 > w) | (y1 <= y0) | (x1 <= x0)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"box {i} = {boxes[i].tolist()} is not a non-empty (y0, x0, y1, x1) box (end-exclusive) "
            f"inside a {h}x{w} map"
        )
    return boxes


def _nan_where(condition: Tensor, values: Tensor) -> Tensor:
    return torch.where(condition, torch.full_like(values, float("nan")), values)


# --------------------------------------------------------------------------- similarity


def _descending_order(v: Tensor) -> Tensor:
    """Indices sorting each row of (N, D) in decreasing value; ties: lower flat index first."""
    return torch.sort(v, dim=1, descending=True, stable=True).indices


def topk_intersection(a: Tensor, b: Tensor, k: int) -> Tensor:
    """Fraction ``|Top_k(a) & Top_k(b)| / k`` of shared top-k features, per image, (N,).

    Maps of shape (N, ...) are flattened per image (pass channel-summed |maps| for Ghorbani's
    pixel-wise version). Ties at the k-th value are broken by position: among equal values the
    lower flat (row-major) index ranks first, so exactly k features are always selected.
    """
    a, b = _flat_pair(a, b)
    d = a.shape[1]
    if not _is_int(k) or not 1 <= k <= d:
        raise ValueError(f"k must be an int in [1, {d}] (features per image), got {k!r}")
    top_a = torch.zeros_like(a, dtype=torch.bool).scatter_(1, _descending_order(a)[:, :k], True)
    top_b = torch.zeros_like(b, dtype=torch.bool).scatter_(1, _descending_order(b)[:, :k], True)
    return (top_a & top_b).sum(1).to(a.dtype) / k


def _pearson_flat(a: Tensor, b: Tensor) -> Tensor:
    constant = (a.amax(1) == a.amin(1)) | (b.amax(1) == b.amin(1))
    ac = a - a.mean(1, keepdim=True)
    bc = b - b.mean(1, keepdim=True)
    r = (ac * bc).sum(1) / (ac.norm(dim=1) * bc.norm(dim=1))
    return _nan_where(constant, r.clamp(-1.0, 1.0))


def _average_ranks(v: Tensor) -> Tensor:
    """Ranks 1..D of each row of (N, D), ties given their average rank (scipy's 'average')."""
    n, d = v.shape
    sorted_v, order = torch.sort(v, dim=1, stable=True)
    pos = torch.arange(d, device=v.device).expand(n, d)
    starts = torch.ones_like(sorted_v, dtype=torch.bool)
    starts[:, 1:] = sorted_v[:, 1:] != sorted_v[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    first = torch.where(starts, pos, 0).cummax(1).values
    last = torch.where(ends, pos, d).flip(1).cummin(1).values.flip(1)
    dtype = torch.promote_types(v.dtype, torch.float32)
    average = (first + last).to(dtype) / 2 + 1
    return torch.empty(n, d, dtype=dtype, device=v.device).scatter_(1, order, average)


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation over features, per image, (N,).

    Pearson correlation of the ranks, ties given their average rank (as scipy.stats.spearmanr).
    NaN where a map is constant. Not differentiable.
    """
    a, b = _flat_pair(a, b)
    return _pearson_flat(_average_ranks(a), _average_ranks(b)).to(a.dtype)


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation over features, per image, (N,); exactly 1 for identical non-constant
    maps, NaN where a map is constant. Differentiable."""
    return _pearson_flat(*_flat_pair(a, b))


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Cosine similarity of the flattened maps, per image, (N,); NaN where a map is all zero.
    Paper E's cosine distance is ``(1 - cosine(a, b)) / 2``. Differentiable."""
    a, b = _flat_pair(a, b)
    na, nb = a.norm(dim=1), b.norm(dim=1)
    c = (a * b).sum(1) / (na * nb)
    return _nan_where((na == 0) | (nb == 0), c.clamp(-1.0, 1.0))


def mse(a: Tensor, b: Tensor) -> Tensor:
    """Mean squared difference over features, per image, (N,). Differentiable."""
    a, b = _flat_pair(a, b)
    return (a - b).pow(2).mean(1)


def _gaussian_kernel(size: int, sigma: float, like: Tensor) -> Tensor:
    coords = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-0.5 * (coords / sigma) ** 2)
    return g / g.sum()


def ssim(
    a: Tensor, b: Tensor, window_size: int = 11, sigma: float = 1.5, data_range: float | None = None
) -> Tensor:
    """Mean structural similarity (Wang et al. 2004) of per-pixel maps (N, H, W), per image, (N,).

    Gaussian window of ``window_size`` taps (odd) and std ``sigma``, normalised to sum 1; local
    statistics use population (biased) variances; K1 = 0.01, K2 = 0.03; the SSIM map is averaged
    over the positions where the window lies fully inside the image. This equals
    ``skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=sigma,
    use_sample_covariance=False, win_size=window_size, data_range=...)`` whenever skimage's own
    filter has ``window_size`` taps (its truncation is fixed at 3.5 sigma: 11 taps for sigma 1.5).
    Paper E uses a 7x7 window: ``window_size=7``.

    ``data_range``: the dynamic range R in C1 = (K1 R)^2, C2 = (K2 R)^2. None: per image,
    ``max(a, b) - min(a, b)`` over both maps (NaN if both maps are the same constant). Give 1.0
    for maps normalised to [0, 1]. Differentiable.
    """
    a, b = _check_pixel_pair(a, b)
    n, h, w = a.shape
    if not _is_int(window_size) or window_size < 1 or window_size % 2 == 0:
        raise ValueError(f"window_size must be an odd positive int, got {window_size!r}")
    if window_size > min(h, w):
        raise ValueError(f"window_size {window_size} is larger than the {h}x{w} maps; use a smaller window")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    if data_range is None:
        both = torch.cat([a.flatten(1), b.flatten(1)], 1)
        big_r = (both.amax(1) - both.amin(1)).view(n, 1, 1)
    else:
        if not data_range > 0:
            raise ValueError(f"data_range must be > 0 (or None for the maps' joint range), got {data_range}")
        big_r = torch.full((n, 1, 1), float(data_range), dtype=a.dtype, device=a.device)
    g = _gaussian_kernel(window_size, sigma, a)
    stats = torch.stack([a, b, a * a, b * b, a * b], 1)  # (N, 5, H, W)
    stats = F.conv2d(stats, g.view(1, 1, 1, -1).expand(5, 1, 1, window_size), groups=5)
    stats = F.conv2d(stats, g.view(1, 1, -1, 1).expand(5, 1, window_size, 1), groups=5)
    ux, uy, uxx, uyy, uxy = stats.unbind(1)
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
    c1, c2 = (0.01 * big_r) ** 2, (0.03 * big_r) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


# --------------------------------------------------------------------------- localisation


def center_of_mass(m: Tensor) -> Tensor:
    """Centre of mass (row, col) of non-negative per-pixel maps (N, H, W), in pixel indices
    (the top-left pixel's centre is (0, 0)); shape (N, 2). NaN for an all-zero map.
    Differentiable (Ghorbani's mass-centre attack)."""
    m = _pixel_maps(m)
    if bool((m < 0).any()):
        raise ValueError("center_of_mass needs non-negative maps; take absolute values first")
    _, h, w = m.shape
    total = m.sum((1, 2))
    rows = (m.sum(2) * torch.arange(h, dtype=m.dtype, device=m.device)).sum(1) / total
    cols = (m.sum(1) * torch.arange(w, dtype=m.dtype, device=m.device)).sum(1) / total
    return torch.stack([rows, cols], 1)


def center_of_mass_shift(a: Tensor, b: Tensor) -> Tensor:
    """Euclidean distance in pixels between the centres of mass of a and b, (N,)."""
    a, b = _check_pixel_pair(a, b)
    return (center_of_mass(a) - center_of_mass(b)).norm(dim=1)


def pointing_game(maps: Tensor, boxes: Tensor) -> Tensor:
    """Whether each map's maximum lies inside its box, bool (N,).

    Boxes (N, 4) are integer (y0, x0, y1, x1), end-exclusive. If the maximum is shared by several
    pixels, the first in row-major order counts (so a constant map points at (0, 0)).
    """
    maps = _pixel_maps(maps)
    boxes = _check_boxes(boxes, maps)
    w = maps.shape[2]
    flat = maps.flatten(1).argmax(1)
    row, col = flat // w, flat % w
    y0, x0, y1, x1 = boxes.unbind(1)
    return (row >= y0) & (row < y1) & (col >= x0) & (col < x1)


def _first_true(mask: Tensor) -> Tensor:
    return mask.to(torch.uint8).argmax(1)


def box_iou(maps: Tensor, boxes: Tensor, threshold: float = 0.5) -> Tensor:
    """IoU between the ground-truth box and the bounding box of the thresholded map, (N,).

    Pixels with ``map >= threshold * max(map)`` (threshold in (0, 1], a fraction of each map's own
    maximum) are kept and their tightest enclosing box is compared with ``boxes`` (N, 4), integer
    (y0, x0, y1, x1), end-exclusive. NaN for a map whose maximum is <= 0.
    """
    maps = _pixel_maps(maps)
    boxes = _check_boxes(boxes, maps)
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be a fraction of the map's maximum in (0, 1], got {threshold}")
    n, h, w = maps.shape
    peak = maps.flatten(1).amax(1)
    keep = maps >= (threshold * peak).view(n, 1, 1)
    rows, cols = keep.any(2), keep.any(1)
    py0, px0 = _first_true(rows), _first_true(cols)
    py1, px1 = h - _first_true(rows.flip(1)), w - _first_true(cols.flip(1))
    y0, x0, y1, x1 = boxes.unbind(1)
    inter = (torch.minimum(py1, y1) - torch.maximum(py0, y0)).clamp_min(0) * (
        torch.minimum(px1, x1) - torch.maximum(px0, x0)
    ).clamp_min(0)
    union = (py1 - py0) * (px1 - px0) + (y1 - y0) * (x1 - x0) - inter
    iou = inter.to(maps.dtype) / union.to(maps.dtype)
    return _nan_where(peak <= 0, iou)


# --------------------------------------------------------------------------- model-based helpers


def _check_batch_size(batch_size: int | None) -> None:
    if batch_size is not None and not (_is_int(batch_size) and batch_size >= 1):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")


def _prepare(model: nn.Module, x: Tensor, target: Tensor | int, name: str = "target") -> Tensor:
    """Check model and images; return targets (N,) on x's device."""
    check_images(x, input_space_of(model))
    check_model_ready(model)
    with torch.no_grad():
        num_classes = model(x[:1]).shape[1]
    try:
        return check_targets(target, x.shape[0], num_classes, x.device)
    except (TypeError, ValueError) as error:
        raise type(error)(str(error).replace("target", name, 1)) from None


def _substrate(x: Tensor, substrate: str, blur_sigma: float) -> Tensor:
    if substrate == "zero":
        return torch.zeros_like(x)
    if substrate == "mean":
        return x.mean((2, 3), keepdim=True).expand_as(x)
    if substrate == "blur":
        return gaussian_blur(x, blur_sigma)
    raise ValueError(f"unknown substrate {substrate!r}; choose one of {SUBSTRATES}")


def _perturbation_curve(
    model: nn.Module, x: Tensor, maps: Tensor, target: Tensor | int, insert: bool,
    substrate: str, steps: int | None, batch_size: int | None, blur_sigma: float,
) -> tuple[Tensor, Tensor]:
    if substrate not in SUBSTRATES:
        raise ValueError(f"unknown substrate {substrate!r}; choose one of {SUBSTRATES}")
    if not blur_sigma > 0:
        raise ValueError(f"blur_sigma must be > 0, got {blur_sigma}")
    _check_batch_size(batch_size)
    maps = _pixel_maps(maps)
    target = _prepare(model, x, target)
    n, c, h, w = x.shape
    if maps.shape != (n, h, w):
        raise ValueError(
            f"maps must have shape ({n}, {h}, {w}) to match x {tuple(x.shape)}, got {tuple(maps.shape)}"
        )
    if maps.device != x.device:
        raise ValueError(f"maps are on {maps.device} but x is on {x.device}")
    d = h * w
    steps = h if steps is None else steps
    if not _is_int(steps) or not 1 <= steps <= d:
        raise ValueError(f"steps must be an int in [1, {d}] (pixels per image), got {steps!r}")

    order = _descending_order(maps.flatten(1))
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(d, device=x.device).expand(n, d))
    counts = torch.arange(steps + 1, device=x.device) * d // steps  # pixels changed at each step
    base = _substrate(x, substrate, blur_sigma)
    start_from, end_at = (base, x) if insert else (x, base)

    total = n * (steps + 1)
    probs = torch.empty(total, dtype=x.dtype, device=x.device)
    with torch.no_grad():
        for lo, hi in chunk_ranges(total, resolve_batch_size(batch_size, x)):
            idx = torch.arange(lo, hi, device=x.device)
            img, step = idx // (steps + 1), idx % (steps + 1)
            changed = (rank[img] < counts[step].unsqueeze(1)).view(-1, 1, h, w)
            inputs = torch.where(changed, end_at[img], start_from[img])
            logits = model(inputs)
            probs[lo:hi] = logits.softmax(1).gather(1, target[img].unsqueeze(1)).squeeze(1).to(x.dtype)
    curve = probs.view(n, steps + 1)
    fractions = counts.to(x.dtype) / d
    return torch.trapezoid(curve, fractions, dim=1), curve


_CURVE_DOC = """

    Pixels are ranked per image by decreasing map value (ties: lower row-major index first); all
    channels of a pixel change together. Step i of ``steps`` changes the top ``floor(i * H * W /
    steps)`` pixels; the curve is the softmax probability of ``target`` at steps 0..steps, shape
    (N, steps + 1), and the AUC is its trapezoid area over the fraction of pixels changed, in
    [0, 1]. ``steps`` defaults to H (W pixels per step: 224 per step on 224x224, as RISE and RelEx).

    Substrates, in the model's normalised input space: ``"zero"`` (0 = the dataset's mean colour,
    RelEx), ``"mean"`` (the image's own per-channel mean), ``"blur"`` (the image blurred with a
    Gaussian of std ``blur_sigma`` pixels, radius ceil(3 sigma) capped at size - 1, reflect padding;
    RISE's insertion uses sigma 5 on 224x224). All steps of all images share the batch axis, in
    chunks of at most ``batch_size`` model inputs. ``maps`` (N, H, W) or (N, 1, H, W).
    Returns the AUC (N,), or ``(auc, curve)`` with ``return_curve=True``.
    """


def deletion_auc(
    model: nn.Module, x: Tensor, maps: Tensor, target: Tensor | int, *, substrate: str = "zero",
    steps: int | None = None, batch_size: int | None = None, blur_sigma: float = 5.0,
    return_curve: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    auc, curve = _perturbation_curve(model, x, maps, target, False, substrate, steps, batch_size, blur_sigma)
    return (auc, curve) if return_curve else auc


def insertion_auc(
    model: nn.Module, x: Tensor, maps: Tensor, target: Tensor | int, *, substrate: str = "zero",
    steps: int | None = None, batch_size: int | None = None, blur_sigma: float = 5.0,
    return_curve: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    auc, curve = _perturbation_curve(model, x, maps, target, True, substrate, steps, batch_size, blur_sigma)
    return (auc, curve) if return_curve else auc


deletion_auc.__doc__ = (
    "Deletion AUC (Petsiuk et al. 2018): replace the most salient pixels of ``x`` by the substrate\n"
    "    step by step and track the class probability; lower is better. Step 0 is ``x`` itself and\n"
    "    the last step the substrate alone. Default substrate: ``\"zero\"``." + _CURVE_DOC
)
insertion_auc.__doc__ = (
    "Insertion AUC (Petsiuk et al. 2018): start from the substrate and put back the most salient\n"
    "    pixels of ``x`` step by step; higher is better. Step 0 is the substrate alone and the last\n"
    "    step ``x``. Default substrate: ``\"zero\"`` (RelEx, paper E); RISE and paper D insert into\n"
    "    ``\"blur\"``." + _CURVE_DOC
)


def retrieval(
    model: nn.Module, x: Tensor, maps: Tensor, clean_prediction: Tensor | int, *,
    batch_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Paper A's retrieval check: does ``argmax f(x * map)`` equal the clean prediction?

    ``x`` is the (possibly adversarial) normalised input and ``maps`` masks in [0, 1]: (N, H, W)
    or (N, 1, H, W) are broadcast over channels, (N, C, H, W) masks each channel (RelEx). Masking
    multiplies the normalised input, so a masked-out pixel becomes 0, the dataset's mean colour.
    Returns ``(hit, probability)``: bool (N,), and the softmax probability of the clean
    prediction on the masked input (N,).
    """
    _check_batch_size(batch_size)
    _check_finite(maps, "maps")
    clean_prediction = _prepare(model, x, clean_prediction, "clean_prediction")
    n, c, h, w = x.shape
    if maps.dim() == 3:
        maps = maps.unsqueeze(1)
    if maps.dim() != 4 or maps.shape[0] != n or maps.shape[1] not in (1, c) or maps.shape[2:] != (h, w):
        raise ValueError(
            f"maps must have shape ({n}, {h}, {w}), ({n}, 1, {h}, {w}) or ({n}, {c}, {h}, {w}) to match "
            f"x {tuple(x.shape)}, got {tuple(maps.shape)}"
        )
    if maps.device != x.device:
        raise ValueError(f"maps are on {maps.device} but x is on {x.device}")
    if bool(((maps < -1e-6) | (maps > 1 + 1e-6)).any()):
        raise ValueError(
            f"retrieval masks must lie in [0, 1] (got min {maps.min().item():.3g}, "
            f"max {maps.max().item():.3g}); "
            f"normalise them first (postprocess.divide_by_percentile or normalize_minmax)"
        )
    hits, probs = [], []
    with torch.no_grad():
        for lo, hi in chunk_ranges(n, resolve_batch_size(batch_size, x)):
            p = model(x[lo:hi] * maps[lo:hi]).softmax(1)
            hits.append(p.argmax(1) == clean_prediction[lo:hi])
            probs.append(p.gather(1, clean_prediction[lo:hi].unsqueeze(1)).squeeze(1).to(x.dtype))
    return torch.cat(hits), torch.cat(probs)


# --------------------------------------------------------------------------- robustness and sanity


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
    if not _is_int(samples) or samples < 1:
        raise ValueError(f"samples must be a positive int, got {samples!r}")
    _check_batch_size(batch_size)
    target = _prepare(model, x, target)
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
        noise = (torch.rand(shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1) * radius
    else:
        direction = torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)
        direction = direction / direction.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        u = torch.rand((n * samples, 1, 1, 1), generator=generator, device=x.device, dtype=x.dtype)
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
    _check_finite(maps, "explanations")
    flat = maps.flatten(1)
    clean, noisy = flat[:n], flat[n:].view(n, samples, -1)
    ratio = (noisy - clean.unsqueeze(1)).norm(dim=2).amax(1) / clean.norm(dim=1)
    return _nan_where(clean.norm(dim=1) == 0, ratio)


def randomize_parameters(
    model: nn.Module, generator: torch.Generator, modules: Iterable[str] | None = None
) -> nn.Module:
    """A deep copy of ``model`` with re-initialised parameters (Adebayo et al. 2018); the caller's
    model is untouched.

    Every selected module is reset with its own ``reset_parameters()`` (the layer's default
    initialisation: Kaiming-uniform convolutions and linear layers; BatchNorm back to weight 1,
    bias 0 and fresh running statistics). ``modules``: names from ``model.named_modules()`` to
    randomise (with their submodules), for cascading randomisation; None = the whole model. The
    draws come from a seed taken from ``generator``, so a seeded generator gives the same copy;
    the global RNG state is restored afterwards. Raises if a selected parameter belongs to a
    module without ``reset_parameters``.
    """
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    clone = copy.deepcopy(model)
    named = dict(clone.named_modules())
    names = [""] if modules is None else list(modules)
    unknown = [name for name in names if name not in named]
    if unknown:
        raise ValueError(f"unknown module names {unknown}; pick names from model.named_modules()")
    selected: dict[int, tuple[str, nn.Module]] = {}
    for root in names:
        prefix = f"{root}." if root else ""
        for name, module in named[root].named_modules():
            selected.setdefault(id(module), (prefix + name if name else root, module))
    uncovered = [
        f"{name}.{pname}" if name else pname
        for name, module in selected.values()
        if not hasattr(module, "reset_parameters")
        for pname, _ in module.named_parameters(recurse=False)
    ]
    if uncovered:
        raise ValueError(
            f"cannot re-initialise parameters {uncovered}: their modules have no reset_parameters(); "
            f"randomise them yourself or leave those modules out with modules=[...]"
        )
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    cuda_devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda_devices), torch.no_grad():
        torch.manual_seed(seed)
        for _, module in selected.values():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return clone


def model_randomisation(
    explainer: Explainer, model: nn.Module, randomised_model: nn.Module, x: Tensor, target: Tensor | int,
    *, generator: torch.Generator | None = None, batch_size: int | None = None,
) -> Tensor:
    """Model-randomisation sanity check (Adebayo et al. 2018): Spearman correlation between the
    absolute, channel-summed maps of ``model`` and of ``randomised_model`` on the same x and
    target, (N,). Near 1 means the explanation ignores the learned parameters."""
    kwargs = {"generator": generator, "batch_size": batch_size}
    first = explainer(model, x, target, **kwargs).detach().abs().sum(1)
    second = explainer(randomised_model, x, target, **kwargs).detach().abs().sum(1)
    return spearman(first, second)
