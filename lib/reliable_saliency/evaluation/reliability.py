"""Paper C's adversarial reliability measure (Valle, Pimentel, Veloso, IJCNN 2020).

For an image ``X`` in [0, 1], its label ``l`` and a map ``r`` in [0, 1], with ``g`` the gradient of
the cross-entropy of ``l`` w.r.t. the input, four directions of unit L1 norm::

    d_rel  = r / ||r||_1 * sign(g)          d_relshuf  = pi(r) / ||r||_1 * sign(g)      (10 pi)
    d_irel = (1-r) / ||1-r||_1 * sign(g)    d_irelshuf = pi(1-r) / ||1-r||_1 * sign(g)  (10 pi)

and ``X'(sigma) = X + sigma * d`` (not clipped, as the authors). Each score is the smallest total
L1 budget ``sigma`` at which the predicted label is no longer ``l``; a shuffled variant survives
``sigma`` only if all its permutations keep the label. A reliable map has Rel < RelShuf and
Irel > IrelShuf.

Decisions (the spec leaves them open):

- Space: the authors perturb the [0, 1] image; library models take normalised input, so the
  perturbation is applied in pixel space, ``x' = normalize(denormalize(x) + sigma * d)``. sign(g)
  is the same in both spaces (the normalisation is a positive per-channel scale).
- Per-pixel maps (N, H, W) / (N, 1, H, W) are broadcast over the C channels *before* the L1
  normalisation, so ``sigma`` is the total L1 norm of the perturbation over all ``D = C*H*W``
  entries (less where g is exactly 0). The authors save their map as a 3-channel PNG and read it
  back, so their L1 runs over the same ``C*H*W`` entries: the budgets are in the same units.
- Permutations shuffle the map's own entries: the pixels of a per-pixel map (every channel of a
  pixel moves together), where the authors shuffle all ``C*H*W`` entries of their 3-channel copy
  independently; a per-channel map (N, C, H, W) is shuffled entry by entry, as theirs.
- Permutations: ``permutations`` per shuffled variant and image, drawn once from that image's own
  seed (``seeds=``, one per image, so an image gets the same permutations in any batch; otherwise
  drawn in order from ``generator``); the authors redrew them at every budget tried.
- Bracket: ``[0, sigma_max]``, default ``sigma_max = D`` (a mean |change| of one full pixel range
  per entry; the authors' integer bracket 0..10000 on 224x224x3 inputs is 10000 / 150528, about
  0.066 D).
  A label that never flips inside the bracket gives ``+inf`` and ``found = False``.
- The label need not change monotonically with sigma. ``method="bisection"`` first tries ``scan``
  equally spaced budgets and bisects (``iterations`` times) the first cell whose right end flips:
  it returns a budget at which the label is changed, with a kept budget at most ``tolerance``
  below it; a flip that recovers between two scanned budgets is missed.
  ``method="coarse_to_fine"`` is the authors' integer walk (paces 1000, 100, 10, 1 on the grid
  ``k * sigma_max / 10000``): it stops at the first failure of each pace, so it shares that blind
  spot at its own resolution. Both return the failing side of the final bracket.
- The measure is meaningful only where ``target`` is the model's prediction on ``x`` (pass the
  predicted labels; the paper keeps correctly classified images). Elsewhere the scores are NaN
  and ``valid`` is False. A variant with an all-zero weight map (``r = 0`` for Rel/RelShuf,
  ``r = 1`` for Irel/IrelShuf) is undefined: NaN, ``found`` False.

All images, all four variants and all permutations (``2 + 2 * permutations`` rows per image) share
the batch axis, in passes of at most ``batch_size`` model inputs. Results do not depend on
``batch_size`` up to the model's own floating-point differences between batch compositions (none
on CPU in the tests; on a GPU, TF32 convolutions can move the flip point of near-tied logits).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.batching import chunk_ranges, resolve_batch_size, resolve_seeds
from ..core.inputs import InputSpace, check_images, check_model_ready, check_targets
from ..core.options import batch_size as check_batch_size
from ..core.options import choice, float_tensor, integer, number
from ..core.perturbation import space_or_raise
from ..explainers.registry import Explainer
from ..maps.postprocess import postprocess

__all__ = ["VARIANTS", "METHODS", "ReliabilityResult", "adversarial_reliability", "reliability_maps"]

VARIANTS = ("rel", "rel_shuf", "irel_shuf", "irel")
METHODS = ("bisection", "coarse_to_fine")
PACES = (1000, 100, 10, 1)  # the authors' coarse-to-fine walk ...
GRID = 10000  # ... on the integer grid 0..GRID, scaled here to [0, sigma_max]
_GROUP_ENTRIES = 2**24  # direction entries held at once (64 MiB of float32)


@dataclass(frozen=True)
class ReliabilityResult:
    """Per-image minimal budgets (N,) as total L1 norms in pixel units: ``+inf`` when the label
    did not change within ``sigma_max``, NaN where undefined (see ``valid``)."""

    rel: Tensor
    rel_shuf: Tensor
    irel_shuf: Tensor
    irel: Tensor
    found: Tensor  # (N, 4) bool, columns in VARIANTS order
    valid: Tensor  # (N,) bool: the model predicts ``target`` on the unperturbed image
    entries: int  # D = C * H * W
    sigma_max: float
    tolerance: float  # search resolution of each finite budget (total L1)
    model_passes: Tensor  # (N,) model inputs evaluated per image (the gradient pass counts 1)
    method: str

    def per_image(self) -> dict[str, Tensor]:
        """The per-image fields (first axis the image), e.g. for a result store."""
        return {"budgets": self.budgets, "found": self.found, "valid": self.valid, "passes": self.model_passes}

    @classmethod
    def from_per_image(cls, tensors: dict[str, Tensor], *, entries: int, sigma_max: float, tolerance: float,
                       method: str) -> ReliabilityResult:
        """The result back from :meth:`per_image` and the run's settings."""
        return cls(*tensors["budgets"].unbind(1), found=tensors["found"], valid=tensors["valid"], entries=entries,
                   sigma_max=sigma_max, tolerance=tolerance, model_passes=tensors["passes"], method=method)

    @property
    def budgets(self) -> Tensor:
        """(N, 4) in :data:`VARIANTS` order."""
        return torch.stack([self.rel, self.rel_shuf, self.irel_shuf, self.irel], dim=1)

    @property
    def per_entry(self) -> Tensor:
        """(N, 4) budgets divided by D: the mean |change| per input entry, in pixel units."""
        return self.budgets / self.entries

    @property
    def rel_below_relshuf(self) -> Tensor:
        """(N,) bool: Rel < RelShuf (False where either is NaN)."""
        return self.rel < self.rel_shuf

    @property
    def irel_above_irelshuf(self) -> Tensor:
        """(N,) bool: Irel > IrelShuf (False where either is NaN)."""
        return self.irel > self.irel_shuf


def adversarial_reliability(
    model: nn.Module, x: Tensor, maps: Tensor, target: Tensor | int, *,
    sigma_max: float | None = None, method: str = "bisection", iterations: int = 14, scan: int = 10,
    permutations: int = 10, generator: torch.Generator | None = None, seeds=None,
    batch_size: int | None = None, input_space: InputSpace | None = None,
) -> ReliabilityResult:
    """Paper C's four minimal budgets sigma*_Rel, _RelShuf, _IrelShuf, _Irel per image.

    ``x`` (N, C, H, W) normalised; ``maps`` in [0, 1], (N, H, W), (N, 1, H, W) or (N, C, H, W)
    (turn explanations into such maps with :func:`reliability_maps`); ``target`` the predicted
    labels. ``sigma_max`` (total L1, pixel units, default D) bounds the search; ``iterations`` and
    ``scan`` set the bisection (resolution ``sigma_max / scan / 2**iterations``; the coarse-to-fine
    walk resolves ``sigma_max / 10000``). ``seeds`` (one per image) fix each image's permutations
    whatever else is in the batch. ``input_space`` defaults to ``model.input_space``. See the
    module docstring for the decisions taken.
    """
    choice("method", method, METHODS)
    iterations = integer("iterations", iterations)
    scan = integer("scan", scan)
    permutations = integer("permutations", permutations)
    space, target, sign, valid, bs = prepare_search(model, x, target, input_space, batch_size)
    r = check_relevance(maps, x)
    sigma_max = default_sigma_max(sigma_max, x)
    n, c = r.shape[0], r.shape[1]
    entries = r[0].numel()
    seeds = resolve_seeds(seeds, generator, n)
    layout = torch.tensor([0] + [1] * permutations + [2] * permutations + [3], device=x.device)

    def directions(images: Tensor) -> tuple[Tensor, Tensor]:
        rows = []
        for i in images.tolist():
            rel = r[i].flatten()
            orders = shuffle_orders(seeds[i], 2 * permutations, entries, x.device)
            rows.append(torch.cat([rel[None], rel[orders[:permutations]],
                                   1 - rel[orders[permutations:]], 1 - rel[None]]))
        rows = torch.stack(rows)  # (G, R, M)
        mass = rows.sum(2) * (x.shape[1] // c)  # L1 norm after broadcasting over channels
        defined = mass[:, [0, 1 + permutations]] > 0  # (G, 2): r != 0 and r != 1
        weights = rows / torch.where(mass > 0, mass, torch.ones_like(mass)).unsqueeze(2)
        return weights.unflatten(2, r.shape[1:]), defined[:, [0, 0, 1, 1]]

    sigma, found, passes = search_groups(
        model, x, target, sign, valid, space, directions, layout, 4, sigma_max, method, iterations,
        scan, bs,
    )
    tolerance = sigma_max / GRID if method == "coarse_to_fine" else sigma_max / scan / 2**iterations
    return ReliabilityResult(
        *sigma.unbind(1), found=found, valid=valid, entries=x[0].numel(), sigma_max=sigma_max,
        tolerance=tolerance, model_passes=passes, method=method,
    )


def reliability_maps(
    explainer: Explainer, model: nn.Module, x: Tensor, target: Tensor | int, *, q: float = 99.0,
    quantize: bool = True, generator: torch.Generator | None = None, batch_size: int | None = None,
    input_space: InputSpace | None = None, **options,
) -> Tensor:
    """Any explainer's maps turned into the authors' ``r`` (N, H, W) in [0, 1]: the
    ``adversarial_measure_map`` step (|R| clipped at the q-th percentile, times the [0, 1] image,
    channel sum, min-max; ``quantize``: 8 bits as the authors' saved PNGs)."""
    space = space_or_raise(model, input_space)
    explanation = explainer(model, x, target, generator=generator, batch_size=batch_size, **options)
    step = ("adversarial_measure_map", {"q": q, "quantize": quantize})
    return postprocess(explanation.detach(), [step], x=space.denormalize(x.detach()))


# -- shared with .cleaning -------------------------------------------------------------------


def default_sigma_max(sigma_max: float | None, x: Tensor) -> float:
    if sigma_max is None:
        return float(x[0].numel())
    return number("sigma_max (total L1 budget in pixel units)", sigma_max, strict=True)


def prepare_search(model, x, target, input_space, batch_size):
    """Checks; returns (space, targets, sign of the input gradient, valid mask, batch size)."""
    space = space_or_raise(model, input_space)
    check_images(x, space)
    if x.shape[0] == 0:
        raise ValueError("x must hold at least one image")
    check_model_ready(model)
    check_batch_size(batch_size)
    bs = resolve_batch_size(batch_size, x)
    x = x.detach()
    target = check_targets(target, x.shape[0], None, x.device)
    signs, valid = [], []
    with torch.enable_grad():
        for start, stop in chunk_ranges(x.shape[0], bs):
            xi = x[start:stop].clone().requires_grad_(True)
            logits = model(xi)
            if start == 0:
                target = check_targets(target, x.shape[0], logits.shape[1], x.device)
            loss = F.cross_entropy(logits, target[start:stop], reduction="sum")
            (grad,) = torch.autograd.grad(loss, xi)
            signs.append(grad.sign())
            valid.append(logits.detach().argmax(1) == target[start:stop])
    return space, target, torch.cat(signs), torch.cat(valid), bs


def check_relevance(maps: Tensor, x: Tensor) -> Tensor:
    """Maps in [0, 1] of shape (N, H, W), (N, 1, H, W) or (N, C, H, W) -> (N, 1 or C, H, W)."""
    float_tensor("maps", maps)
    r = maps.detach().to(device=x.device, dtype=x.dtype)
    r = r.unsqueeze(1) if r.dim() == 3 else r
    n, c, h, w = x.shape
    if r.dim() != 4 or r.shape[0] != n or r.shape[1] not in (1, c) or r.shape[2:] != (h, w):
        raise ValueError(
            f"maps must have shape ({n}, {h}, {w}), ({n}, 1, {h}, {w}) or ({n}, {c}, {h}, {w}) for x "
            f"of shape {tuple(x.shape)}, got {tuple(maps.shape)}"
        )
    if bool((r < 0).any() or (r > 1).any()):
        raise ValueError(
            f"maps must lie in [0, 1], got values in [{float(r.min()):.3g}, {float(r.max()):.3g}]; "
            f"use reliability_maps or postprocess(maps, ['adversarial_measure_map'], x=image)"
        )
    return r


def shuffle_orders(seed: int, count: int, entries: int, device) -> Tensor:
    """``count`` random permutations of ``range(entries)`` (count, entries) from one image's seed."""
    gen = torch.Generator(device=device).manual_seed(seed)
    return torch.rand((count, entries), generator=gen, device=device).argsort(dim=1)


def search_groups(
    model, x, target, sign, valid, space: InputSpace, directions: Callable, layout: Tensor,
    states: int, sigma_max: float, method: str, iterations: int, scan: int, bs: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Minimal budgets of ``states`` per image, images in groups that bound memory.

    ``directions(images)`` gives unit-L1 weight maps (G, R, c, H, W) in pixel space and a
    (G, states) mask of defined states; row k of an image belongs to state ``layout[k]``. The
    direction of a row is ``weights * sign / std`` in normalised units. Returns sigma (N, states),
    found (N, states), model inputs per image (N,).
    """
    n, rows = x.shape[0], layout.numel()
    group = max(1, max(bs, _GROUP_ENTRIES // x[0].numel()) // rows)
    scale = sign * space.eps(1.0, x)  # sign(g) / std: one pixel unit per entry, normalised units
    sigma = torch.full((n, states), float("nan"), dtype=x.dtype, device=x.device)
    found = torch.zeros((n, states), dtype=torch.bool, device=x.device)
    passes = torch.ones(n, dtype=torch.long, device=x.device)
    x = x.detach()
    with torch.no_grad():
        for start, stop in chunk_ranges(n, group):
            images = torch.arange(start, stop, device=x.device)
            weights, defined = directions(images)
            d = (weights * scale[start:stop].unsqueeze(1)).flatten(0, 1)  # (G * R, C, H, W)
            del weights
            image_of_row = torch.arange(stop - start, device=x.device).repeat_interleave(rows)
            state_of_row = image_of_row * states + layout.repeat(stop - start)
            active = (defined & valid[start:stop].unsqueeze(1)).flatten()
            counter = torch.zeros(stop - start, dtype=torch.long, device=x.device)

            def survives(mask: Tensor, budget: Tensor) -> Tensor:
                """Per state: all its rows keep the label at the state's budget (for states in mask)."""
                selected = mask[state_of_row].nonzero().squeeze(1)
                failures = torch.zeros(mask.numel(), dtype=torch.long, device=x.device)
                for a, b in chunk_ranges(selected.numel(), bs):
                    sel = selected[a:b]
                    img, st = image_of_row[sel], state_of_row[sel]
                    inputs = x[start:stop][img] + budget[st].to(x.dtype).view(-1, 1, 1, 1) * d[sel]
                    lost = model(inputs).argmax(1) != target[start:stop][img]
                    failures.index_add_(0, st, lost.long())
                    counter.index_add_(0, img, torch.ones_like(img))
                return failures == 0

            search = _bisection if method == "bisection" else _coarse_to_fine
            s, f = search(survives, active, sigma_max, iterations, scan)
            sigma[start:stop] = s.view(-1, states).to(x.dtype)
            found[start:stop] = f.view(-1, states)
            passes[start:stop] += counter
    return sigma, found, passes


def _bisection(survives, active: Tensor, sigma_max: float, iterations: int, scan: int):
    lo = torch.zeros(active.shape, dtype=torch.float64, device=active.device)
    hi = torch.full_like(lo, float("inf"))
    found, pending = torch.zeros_like(active), active.clone()
    for k in range(1, scan + 1):  # the first of `scan` equally spaced budgets that flips
        if not bool(pending.any()):
            break
        kept = survives(pending, torch.full_like(lo, sigma_max * k / scan))
        flipped = pending & ~kept
        lo = torch.where(flipped, sigma_max * (k - 1) / scan, lo)
        hi = torch.where(flipped, sigma_max * k / scan, hi)
        found, pending = found | flipped, pending & kept
    for _ in range(iterations if bool(found.any()) else 0):
        mid = torch.where(found, (lo + hi) / 2, lo)
        kept = survives(found, mid)
        lo, hi = torch.where(found & kept, mid, lo), torch.where(found & ~kept, mid, hi)
    return torch.where(active, hi, torch.full_like(hi, float("nan"))), found


def _coarse_to_fine(survives, active: Tensor, sigma_max: float, iterations: int, scan: int):
    """The authors' walk: per pace, step from the last kept budget until the label changes."""
    paces = torch.tensor(PACES, device=active.device)
    start = torch.zeros(active.shape, dtype=torch.long, device=active.device)
    level = torch.zeros_like(start)
    candidate = start + PACES[0]
    running = active.clone()

    def advance(mask: Tensor) -> None:
        nonlocal candidate
        level.add_(mask.long())
        running.logical_and_(level < len(PACES))
        candidate = torch.where(mask, start + paces[level.clamp(max=len(PACES) - 1)], candidate)

    while bool(running.any()):
        while bool((exhausted := running & (candidate > GRID)).any()):
            advance(exhausted)
        if not bool(running.any()):
            break
        kept = survives(running, candidate.double() * (sigma_max / GRID))
        start = torch.where(running & kept, candidate, start)
        candidate = torch.where(running & kept, candidate + paces[level.clamp(max=len(PACES) - 1)],
                                candidate)
        advance(running & ~kept)
    final = start + PACES[-1]
    found = active & (final <= GRID)
    sigma = torch.where(found, final.double() * (sigma_max / GRID), torch.full(final.shape, float("inf"),
                        dtype=torch.float64, device=final.device))
    return torch.where(active, sigma, torch.full_like(sigma, float("nan"))), found
