"""Faithfulness: does the model's output follow the map? Deletion and insertion AUC (Petsiuk et
al. 2018), paper A's retrieval of the clean prediction from the masked input, and paper B's
saliency fidelity.

All steps of all images share the batch axis, in chunks of at most ``batch_size`` model inputs
(None: :func:`..core.batching.default_batch_size`); the model runs in no-grad mode, its mode left
as it is."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core.batching import chunk_ranges, resolve_batch_size
from ..core.options import batch_size as check_batch_size
from ..core.options import choice, integer, number
from ..core.references import make_baseline
from ..maps.checks import check_finite, pixel_maps
from ..maps.similarity import descending_order
from .common import prepare

__all__ = ["SUBSTRATES", "deletion_auc", "insertion_auc", "retrieval", "saliency_fidelity"]

SUBSTRATES = ("zero", "mean", "blur")


def _perturbation_curve(
    model: nn.Module, x: Tensor, maps: Tensor, target: Tensor | int, insert: bool,
    substrate: str, steps: int | None, batch_size: int | None, blur_sigma: float,
) -> tuple[Tensor, Tensor]:
    choice("substrate", substrate, SUBSTRATES)
    number("blur_sigma", blur_sigma, 0.0, strict=True)
    check_batch_size(batch_size)
    maps = pixel_maps(maps)
    target = prepare(model, x, target)
    n, c, h, w = x.shape
    if maps.shape != (n, h, w):
        raise ValueError(
            f"maps must have shape ({n}, {h}, {w}) to match x {tuple(x.shape)}, got {tuple(maps.shape)}"
        )
    if maps.device != x.device:
        raise ValueError(f"maps are on {maps.device} but x is on {x.device}")
    d = h * w
    steps = h if steps is None else steps
    integer("steps", steps, 1, d, "pixels per image")

    order = descending_order(maps.flatten(1))
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(d, device=x.device).expand(n, d))
    counts = torch.arange(steps + 1, device=x.device) * d // steps  # pixels changed at each step
    base = make_baseline(x, substrate, blur_sigma)
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
    check_batch_size(batch_size)
    check_finite(maps, "maps")
    clean_prediction = prepare(model, x, clean_prediction, "clean_prediction")
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


def saliency_fidelity(
    model: nn.Module, x: Tensor, maps: Tensor, target: Tensor | int, *, batch_size: int | None = None,
) -> Tensor:
    """Paper B's saliency fidelity (lower is better), (N,)::

        SF(E, x) = -log( F_c((E - mean(E)) * x) / F_c(x) )

    ``F_c`` the softmax probability of ``target``; ``E`` the normalised map (N, H, W) or
    (N, 1, H, W), broadcast over channels, its mean taken per image; the product multiplies the
    normalised input (as :func:`retrieval`: 0 is the dataset's mean colour). The paper's formula is
    partly garbled; this is its most consistent reading [inferred]. Computed as a difference of
    log-softmax values, so it stays finite where the masked probability underflows."""
    check_batch_size(batch_size)
    check_finite(maps, "maps")
    target = prepare(model, x, target)
    n, c, h, w = x.shape
    if maps.dim() == 3:
        maps = maps.unsqueeze(1)
    if maps.dim() != 4 or maps.shape[0] != n or maps.shape[1] != 1 or maps.shape[2:] != (h, w):
        raise ValueError(f"maps must have shape ({n}, {h}, {w}) or ({n}, 1, {h}, {w}) to match x "
                         f"{tuple(x.shape)}, got {tuple(maps.shape)}; reduce the channels first")
    if maps.device != x.device:
        raise ValueError(f"maps are on {maps.device} but x is on {x.device}")
    centred = (maps - maps.mean(dim=(1, 2, 3), keepdim=True)).to(x.dtype)
    out = []
    with torch.no_grad():
        for lo, hi in chunk_ranges(n, resolve_batch_size(batch_size, x)):
            t = target[lo:hi, None]
            clean = model(x[lo:hi]).log_softmax(1).gather(1, t)
            masked = model(x[lo:hi] * centred[lo:hi]).log_softmax(1).gather(1, t)
            out.append((clean - masked).squeeze(1).to(x.dtype))
    return torch.cat(out)
