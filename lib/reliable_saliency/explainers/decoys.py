"""Decoys (DANCE, Lu, Guo, Xing, Noble, ICML 2021, step 1): copies of an image that change one small
patch as much as possible while an intermediate representation ``F_l`` stays within ``eps`` of the
image's. For every patch position and sign ``s`` in (+1, -1), :func:`make_decoys` solves::

    maximise  || ((x~ - x) * s)^+ ||_1        over x~ that differ from x only on the patch,
    subject to  || F_l(x~) - F_l(x) ||_inf <= eps,   |x~_i - x_i| <= tau,   x~ in the valid range.

The authors' solver is in an appendix that was not available; the choices below are ours and are
marked [open]. All ``N * P * 2`` problems (image x position x sign) are rows of one batch, cut into
chunks of at most ``batch_size`` model inputs; every row is its own problem (with its own
multiplier), so a decoy depends neither on the chunk size nor on the other images or positions of
the call. The solver is deterministic (no random start).

- [open] Units: the change ``d = x~ - x`` is optimised in pixel units (images in [0, 1]), like
  ``tau``; models without ``input_space`` use their input units and no range clamp.
- [open] Solver. ``d`` (the patch's ``C * patch * patch`` entries) starts at the unconstrained
  optimum ``s * tau`` (clipped to the valid range) and takes ``steps`` sign-gradient steps (as in
  PGD) on ``-sum(s d) + lambda * sum_j relu(|F_l(x~) - F_l(x)|_j - eps)``, of size
  ``step_size * tau`` decaying geometrically to 1% of it, each followed by the projection onto
  ``[-tau, tau]`` and the valid range. The hinge summed over the representation's entries has the
  zero set of the spec's ``relu(||.||_inf - eps)`` and moves every violating entry at once; the
  objective's gradient is that of ``sum(s d)`` (equal to the one-sided objective's where
  ``s d > 0``; with the latter's zero gradient an entry pushed past zero never comes back).
  ``lambda`` starts at ``multiplier`` (the paper's "initial Lagrange multiplier") and is multiplied
  by ``multiplier_growth`` after every step on which the row violates the constraint. Each row
  keeps the evaluated point of largest one-sided objective that satisfies the constraint; if the
  last iterate violates it, ``repair`` bisection steps find the largest feasible ``alpha * d``,
  alpha in (0, 1) (forward passes only). Departure: the spec suggests Adam; on a problem with a
  closed-form optimum (a diagonal linear layer, ``tests/explainers/test_decoys.py``) Adam reached
  25-45% of the optimum (its second moments are dominated by the penalty), sign steps about 97%.
- [open] ``eps``: relative by default, ``eps * max_j |F_l(x)_j|`` per image, so one value fits every
  layer and model; ``relative_eps=False`` takes it as the absolute bound of the paper's formula.
- [open] Positions: top-left corners every ``stride`` pixels from 0, plus one flush with the last
  row / column when the stride does not reach it (with ``stride <= patch`` every pixel is covered).
- Layer: the representation is the layer's output; the rest of the forward pass is skipped (a
  forward hook stops it), so a decoy step costs a forward and backward pass up to the layer only.

A decoy that satisfies the constraint at no evaluated point is *excluded*: its ``valid`` flag is
False, its ``delta`` is zero and :func:`..dance.dance` never uses it; :class:`DecoySet` reports how
many there were, the fraction that satisfy the constraint and their mean change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..core.batching import chunk_ranges, resolve_batch_size
from ..core.hooks import forward_hooks, last_spatial_layer
from ..core.inputs import InputSpace, check_images, check_model_ready, input_space_of
from ..core.options import batch_size as check_batch_size
from ..core.options import integer, number, pixel_budget
from .layer_rules import _resolve_layer

__all__ = ["DecoySet", "make_decoys", "constant_decoys", "patch_positions"]


def patch_positions(height: int, width: int, patch: int, stride: int, positions=None) -> Tensor:
    """Top-left corners (P, 2) as (row, column), row-major: every ``stride`` pixels from 0, plus
    one flush with the image's last row / column when the stride does not reach it. Explicit
    ``positions`` (P, 2) are checked and returned instead."""
    patch = integer("patch", patch, 1, min(height, width), f"patch side in pixels; the image is {height}x{width}")
    if positions is not None:
        positions = torch.as_tensor(positions)
        if (positions.dim() != 2 or positions.shape[0] < 1 or positions.shape[1] != 2
                or positions.is_floating_point() or bool((positions < 0).any())
                or bool((positions[:, 0] > height - patch).any()) or bool((positions[:, 1] > width - patch).any())):
            raise ValueError(f"positions must be integer top-left corners (P, 2) of {patch}x{patch} patches "
                             f"inside the {height}x{width} image, got {positions.tolist()}")
        return positions.long().cpu()
    stride = integer("stride", stride, 1, what="pixels between patch positions")

    def starts(size):
        values = list(range(0, size - patch + 1, stride))
        return values if values[-1] == size - patch else values + [size - patch]

    return torch.cartesian_prod(torch.tensor(starts(height)), torch.tensor(starts(width)))


def _patch_index(positions: Tensor, patch: int, width: int) -> Tensor:
    """Flat pixel indices (P, patch * patch) of each position's patch in an image of ``width``."""
    offsets = torch.arange(patch, device=positions.device)
    rows = positions[:, 0, None, None] + offsets[:, None]
    cols = positions[:, 1, None, None] + offsets[None, :]
    return (rows * width + cols).flatten(1)


@dataclass(frozen=True)
class DecoySet:
    """Decoys of N images: ``P`` patch positions x ``S`` signs each (S = 2, signs (+1, -1), for
    optimised decoys; S = 1, sign 0, for constant ones). Row ``(i, p, s)`` is decoy
    ``x_i + delta[i, p, s]`` placed on patch ``p``."""

    kind: str  # "optimised" | "constant"
    layer: str  # dotted name of the representation's layer
    patch: int
    positions: Tensor  # (P, 2) top-left (row, column)
    signs: Tensor  # (S,)
    delta: Tensor  # (N, P, S, C, patch, patch) change of the patch, normalised input units
    valid: Tensor  # (N, P, S) bool: used by DANCE
    satisfied: Tensor  # (N, P, S) bool: ||F_l(x~) - F_l(x)||_inf <= eps at the kept decoy
    violation: Tensor  # (N, P, S) ||F_l(x~) - F_l(x)||_inf (excluded decoys: the smallest seen)
    eps: Tensor  # (N,) the absolute bound used for each image
    deviation: Tensor  # (N, P, S) the objective ||((x~ - x) s)^+||_1, pixel units
    change: Tensor  # (N, P, S) mean |x~ - x| over the patch's entries, pixel units
    input_space: InputSpace | None = None  # the model's; decoys are clipped to its valid range

    @property
    def satisfied_fraction(self) -> float:
        return float(self.satisfied.double().mean())

    @property
    def excluded(self) -> int:
        """Decoys that DANCE does not use (they never satisfied the constraint)."""
        return int((~self.valid).sum())

    @property
    def mean_change(self) -> float:
        """Mean |x~ - x| (pixel units) over the patch entries of the valid decoys (NaN if none)."""
        return float(self.change[self.valid].double().mean()) if bool(self.valid.any()) else math.nan

    def summary(self) -> dict:
        return {"kind": self.kind, "layer": self.layer, "decoys": self.valid.numel(),
                "satisfied_fraction": self.satisfied_fraction, "excluded": self.excluded,
                "mean_change": self.mean_change, "mean_deviation":
                float(self.deviation[self.valid].double().mean()) if bool(self.valid.any()) else math.nan}

    def cover(self, height: int, width: int) -> Tensor:
        """(P, H, W) bool: the pixels of each position's patch."""
        out = torch.zeros((self.positions.shape[0], height * width), dtype=torch.bool)
        out.scatter_(1, _patch_index(self.positions.cpu(), self.patch, width), True)
        return out.view(-1, height, width).to(self.delta.device)

    def images(self, x: Tensor, rows: Tensor | None = None) -> Tensor:
        """Decoy images (R, C, H, W) of flat rows ``(i * P + p) * S + s`` (all rows when None).

        ``x_i + delta`` with ``delta`` fixed: differentiable w.r.t. ``x`` with identity Jacobian.
        Where ``x`` is not the batch the decoys were made for (an attacked copy), ``delta`` is
        first clipped (detached) so that the decoy stays in the model's valid range."""
        n, p, s = self.valid.shape
        if x.dim() != 4 or x.shape[0] != n or x.shape[1] != self.delta.shape[3]:
            raise ValueError(f"x must be the batch of {n} images the decoys were made for, got {tuple(x.shape)}")
        if rows is None:
            rows = torch.arange(n * p * s, device=x.device)
        image, position = rows // (p * s), (rows // s) % p
        base = x[image]
        index = _patch_index(self.positions.cpu(), self.patch, x.shape[-1]).to(x.device)[position]
        index = index[:, None].expand(base.shape[0], base.shape[1], -1)
        delta = self.delta.flatten(0, 2)[rows].flatten(2).to(base.dtype)  # (R, C, patch * patch)
        if self.input_space is not None:
            anchor = base.detach().flatten(2).gather(2, index)
            low, high = (bound(base).view(1, -1, 1) for bound in (self.input_space.lower, self.input_space.upper))
            delta = torch.minimum(torch.maximum(delta, low - anchor), high - anchor)
        return base.flatten(2).scatter_add(2, index, delta).view_as(base)


class _StopForward(Exception):
    """Raised by the representation hook: nothing after the layer needs to run."""


class _Representation:
    """``F_l(inputs)``: the output of ``module`` in a forward pass of ``model``, which stops there."""

    def __init__(self, model: nn.Module, module: nn.Module):
        self.model, self.module = model, module

    def __call__(self, inputs: Tensor) -> Tensor:
        captured: list[Tensor] = []

        def stop(module, args, out):
            if not isinstance(out, Tensor) or out.dim() < 2 or out.shape[0] != inputs.shape[0]:
                got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ValueError(f"the decoy layer must output a tensor with the batch axis first and at least one "
                                 f"more axis, (N, ...), got {got}; choose another layer")
            captured.append(out)
            raise _StopForward

        with forward_hooks([self.module], stop):
            try:
                self.model(inputs)
            except _StopForward:
                pass
        if not captured:
            raise ValueError("the decoy layer did not run in the model's forward pass; choose another layer")
        return captured[0]


def _layer(model: nn.Module, x: Tensor, layer) -> tuple[nn.Module, str]:
    """The representation's module (default: :func:`..core.hooks.last_spatial_layer`), checked to
    run exactly once in a forward pass of ``x[:1]``."""
    if layer is None:
        name, call = last_spatial_layer(model, x)
        if call is not None:
            raise ValueError(f"the last spatial layer {name!r} runs more than once per forward pass; pass "
                             f"layer= (a module that runs once, for example the block that contains it)")
        layer = name
    chosen = _resolve_layer(model, layer)
    calls: list[nn.Module] = []
    with forward_hooks([chosen], lambda module, args, out: calls.append(module)), torch.no_grad():
        model(x[:1].detach())
    if len(calls) != 1:
        raise ValueError(
            f"the decoy layer ran {len(calls)} times in one forward pass; choose a module that runs exactly "
            f"once (for example the block that contains it)"
        )
    name = next(n for n, m in model.named_modules() if m is chosen)
    return chosen, name


def _setup(model, x, layer, patch, stride, positions, eps, relative_eps, batch_size):
    """Shared checks; the layer, positions, patch indices, reference features and per-image eps."""
    space = input_space_of(model)
    check_images(x, space)
    check_model_ready(model)
    positions = patch_positions(x.shape[-2], x.shape[-1], patch, stride, positions)
    eps = number("eps", eps)
    batch_size = resolve_batch_size(check_batch_size(batch_size), x)
    module, name = _layer(model, x, layer)
    rep = _Representation(model, module)
    x = x.detach()
    with torch.no_grad():
        reference = torch.cat([rep(x[a:b]) for a, b in chunk_ranges(x.shape[0], batch_size)])
    scale = reference.flatten(1).abs().amax(1) if relative_eps else torch.ones(x.shape[0], device=x.device)
    index = _patch_index(positions, patch, x.shape[-1]).to(x.device)
    return space, positions.to(x.device), index, rep, name, reference, eps * scale.to(x.dtype), batch_size


def _pixels(space, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Pixel values of x, the per-channel std (1, C, 1) (a pixel-unit change divided by it is the
    change of the normalised input) and the valid pixel range (or +-inf without an input space)."""
    one = torch.ones((1, x.shape[1], 1), dtype=x.dtype, device=x.device)
    if space is None:
        return x, one, -math.inf * one, math.inf * one
    std = torch.tensor(space.std, dtype=x.dtype, device=x.device).view(1, -1, 1)
    return space.denormalize(x), std, 0 * one, one


@torch.no_grad()
def _measure(rep, x_rows, reference, index, change, std):
    """||F_l(x + change on the patch) - F_l(x)||_inf per row; ``change`` (B, C, K) in pixel units."""
    b, c = x_rows.shape[:2]
    decoy = x_rows.flatten(2).scatter_add(2, index[:, None].expand(b, c, -1), change / std).view_as(x_rows)
    return (rep(decoy) - reference).flatten(1).abs().amax(1)


def _solve(rep, x_rows, reference, eps, index, signs, std, lower, upper, tau, steps, step_size,
           multiplier, growth, repair):
    """Sign-gradient descent on the penalised loss for B independent rows; see the module docstring."""
    b, c = x_rows.shape[:2]
    spread = index[:, None].expand(b, c, -1)
    s = signs.view(-1, 1, 1)
    d = torch.minimum(torch.maximum(s * tau, lower), upper)
    lam = torch.full((b,), float(multiplier), dtype=d.dtype, device=d.device)
    best, best_deviation = torch.zeros_like(d), torch.full_like(lam, -math.inf)
    kept_violation = torch.full_like(lam, math.inf)
    found = torch.zeros(b, dtype=torch.bool, device=d.device)

    def evaluate(point: Tensor, rows: Tensor | None = None, with_grad: bool = False):
        """Feasibility of ``point`` (of all rows, or of ``rows``), recorded where it is the row's
        best so far; with ``with_grad`` also the loss gradient (all rows)."""
        nonlocal best, best_deviation, kept_violation, found
        pick = (lambda t: t) if rows is None else (lambda t: t[rows])
        put = (lambda t, v: v) if rows is None else (lambda t, v: t.index_copy(0, rows, v))
        leaf = point.detach().requires_grad_(with_grad)
        with torch.set_grad_enabled(with_grad):
            decoy = pick(x_rows).flatten(2).scatter_add(2, pick(spread), leaf / std)
            gap = (rep(decoy.view(-1, *x_rows.shape[1:])) - pick(reference)).flatten(1).abs()
        deviation = (pick(s) * point).clamp(min=0).flatten(1).sum(1)
        violation = gap.detach().amax(1)
        ok = violation <= pick(eps)
        better = ok & (deviation > pick(best_deviation))
        closer = ~pick(found) & ~ok & (violation < pick(kept_violation))
        best = put(best, torch.where(better.view(-1, 1, 1), point, pick(best)))
        best_deviation = put(best_deviation, torch.where(better, deviation, pick(best_deviation)))
        kept_violation = put(kept_violation, torch.where(better | closer, violation, pick(kept_violation)))
        found = put(found, pick(found) | ok)
        if not with_grad:
            return ok, None
        with torch.enable_grad():
            penalty = (gap - eps[:, None]).clamp(min=0).sum(1)
            (grad,) = torch.autograd.grad((lam * penalty).sum(), leaf)
        return ok, grad - s  # the objective's gradient taken as that of s * d, see the module docstring

    for step in range(steps):
        ok, grad = evaluate(d, with_grad=True)
        size = step_size * tau * 0.01 ** (step / max(steps - 1, 1))
        d = torch.minimum(torch.maximum(d - size * grad.sign(), lower), upper)
        lam = torch.where(ok, lam, lam * growth)
    ok, _ = evaluate(d)
    failing = (~ok).nonzero()[:, 0] if repair else ok.new_zeros(0, dtype=torch.long)
    low, high = d.new_zeros(failing.shape[0]), d.new_ones(failing.shape[0])
    for _ in range(repair if failing.numel() else 0):  # largest feasible alpha * d, alpha in (0, 1)
        middle = (low + high) / 2
        ok, _ = evaluate(middle.view(-1, 1, 1) * d[failing], failing)
        low, high = torch.where(ok, middle, low), torch.where(ok, high, middle)
    return best, found, kept_violation, best_deviation.clamp(min=0)


def make_decoys(
    model: nn.Module, x: Tensor, *, layer=None, patch: int = 3, stride: int = 3, positions=None,
    eps: float = 0.1, relative_eps: bool = True, tau: float = 0.1, steps: int = 20,
    step_size: float = 0.5, multiplier: float = 1.0, multiplier_growth: float = 2.0, repair: int = 6,
    batch_size: int | None = None,
) -> DecoySet:
    """Two optimised decoys (s = +1, -1) per patch position of every image; see the module docstring.

    ``layer``: module or dotted name (default: the last leaf module with a spatial output); it must
    run once per forward pass. ``patch``, ``stride``: pixels; ``positions``: explicit top-left
    corners (P, 2) instead of the stride's grid. ``eps``: bound on ``||F_l(x~) - F_l(x)||_inf``,
    relative to ``max |F_l(x)|`` per image unless ``relative_eps=False``. ``tau``: per-entry bound
    on ``|x~ - x|`` in pixel units. ``steps``, ``step_size`` (the first step, a fraction of tau),
    ``multiplier``, ``multiplier_growth``, ``repair``: the solver. ``batch_size``: rows per pass
    (default: :func:`..core.batching.default_batch_size`). Cost per decoy (``2 * P`` per image):
    ``steps`` forward+backward passes up to the layer, then 1 to ``1 + repair`` forward passes.
    """
    tau = pixel_budget("tau", tau)
    steps = integer("steps", steps, 0)
    step_size = number("step_size", step_size, strict=True)
    repair = integer("repair", repair, 0)
    multiplier = number("multiplier", multiplier, strict=True)
    growth = number("multiplier_growth", multiplier_growth, 1.0)
    space, positions, index, rep, name, reference, eps, batch_size = _setup(
        model, x, layer, patch, stride, positions, eps, relative_eps, batch_size)
    x = x.detach()
    n, c, p = x.shape[0], x.shape[1], positions.shape[0]
    rows_per_image = 2 * p
    signs = torch.tensor([1.0, -1.0], dtype=x.dtype, device=x.device)
    results = []
    for start, stop in chunk_ranges(n * rows_per_image, batch_size):
        rows = torch.arange(start, stop, device=x.device)
        image, position, sign = rows // rows_per_image, (rows // 2) % p, signs[rows % 2]
        x_rows = x[image]
        pixels, std, low, high = _pixels(space, x_rows)
        patch_pixels = pixels.flatten(2).gather(2, index[position][:, None].expand(-1, c, -1))
        lower = torch.clamp(low - patch_pixels, min=-tau)
        upper = torch.clamp(high - patch_pixels, max=tau)
        results.append(_solve(rep, x_rows, reference[image], eps[image], index[position], sign, std,
                              lower, upper, tau, steps, step_size, multiplier, growth, repair))
    change, found, violation, deviation = (torch.cat(parts) for parts in zip(*results))
    std = _pixels(space, x[:1])[1].view(1, c, 1)
    shape = (n, p, 2)
    return _decoy_set("optimised", name, patch, positions, signs, change, std, found, found,
                      violation, eps, deviation, shape, space)


def constant_decoys(
    model: nn.Module, x: Tensor, *, layer=None, patch: int = 3, stride: int = 3, positions=None,
    eps: float = 0.1, relative_eps: bool = True, batch_size: int | None = None,
) -> DecoySet:
    """The paper's ablation: one decoy per patch position whose patch takes the image's mean colour
    (per channel, over the whole image). No bound and no constraint: every decoy is used; whether
    it satisfies ``||F_l(x~) - F_l(x)||_inf <= eps`` (same ``layer`` / ``eps`` meaning as
    :func:`make_decoys`) is measured and reported only."""
    space, positions, index, rep, name, reference, eps, batch_size = _setup(
        model, x, layer, patch, stride, positions, eps, relative_eps, batch_size)
    x = x.detach()
    n, c, p = x.shape[0], x.shape[1], positions.shape[0]
    pixels_all, std, _, _ = _pixels(space, x)
    colour = pixels_all.flatten(2).mean(2, keepdim=True)  # (N, C, 1)
    changes, violations = [], []
    for start, stop in chunk_ranges(n * p, batch_size):
        rows = torch.arange(start, stop, device=x.device)
        image, position = rows // p, rows % p
        patch_pixels = pixels_all[image].flatten(2).gather(2, index[position][:, None].expand(-1, c, -1))
        change = colour[image] - patch_pixels
        changes.append(change)
        violations.append(_measure(rep, x[image], reference[image], index[position], change, std))
    change, violation = torch.cat(changes), torch.cat(violations)
    signs = torch.zeros(1, dtype=x.dtype, device=x.device)
    satisfied = violation <= eps.repeat_interleave(p)
    return _decoy_set("constant", name, patch, positions, signs, change, std, torch.ones_like(satisfied),
                      satisfied, violation, eps, change.abs().flatten(1).sum(1), (n, p, 1), space)


def _decoy_set(kind, name, patch, positions, signs, change, std, valid, satisfied, violation, eps,
               deviation, shape, space) -> DecoySet:
    """Pack flat rows (R, C, K) of pixel-unit changes into a :class:`DecoySet`."""
    c = change.shape[1]
    change = torch.where(valid.view(-1, 1, 1), change, torch.zeros_like(change))
    delta = (change / std).view(*shape, c, patch, patch)
    return DecoySet(
        kind=kind, layer=name, patch=patch, positions=positions, signs=signs, delta=delta,
        valid=valid.view(shape), satisfied=satisfied.view(shape), violation=violation.view(shape),
        eps=eps, deviation=torch.where(valid, deviation, torch.zeros_like(deviation)).view(shape),
        change=change.abs().flatten(1).mean(1).view(shape), input_space=space,
    )
