"""Attacking a DANCE map itself, and a plain smoother, through :func:`.ghorbani.ghorbani_attack`.

DANCE's decoys come out of an optimisation (:func:`..explainers.decoys.make_decoys`) that has no
useful gradient. :class:`RecomputedDecoys` is an explainer for the attack that follows the decoys
as the image moves, in the manner of BPDA (Athalye et al. 2018): it starts from given decoys (those
of the clean image) and solves them again at the attack's current iterate every ``every`` steps,
while the backward pass treats the decoys' changes ``delta`` as constants (the solver's derivative
taken as zero). :func:`blurred_explainer` attacks the control smoother of
:mod:`..maps.smoothness` the same way as any map. :func:`strength` says whether an attack has
levelled off and whether it reached the real method (fresh decoys) as well as its own map.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from ..core.options import integer
from ..explainers.dance import dance
from ..explainers.decoys import DecoySet, make_decoys
from ..explainers.registry import Explainer
from ..maps.smoothness import blurred_map
from .common import GhorbaniResult
from .ghorbani import _goal

__all__ = ["RecomputedDecoys", "blurred_explainer", "objective_value", "strength"]


class RecomputedDecoys:
    """An explainer (the library's signature) for attacks on ``DANCE(base)``: the range of ``base``
    over decoys held as constants in the backward pass and recomputed with ``model`` (the real
    one: the decoys keep its representation) at the images of every ``every``-th call made without
    ``create_graph`` (the attack's evaluation of the real map, once per step; the first such call is
    the clean image, explained with ``decoys``). ``recomputed`` counts the solves, ``excluded`` the
    decoys they left out. ``every`` larger than the attack's steps keeps the clean decoys throughout.
    ``on_graph=True`` counts the calls made *with* ``create_graph`` instead (one per step in every
    attack, where attacks that reuse a map on a smooth model, Dombrowski's, the frame attack and the
    masked retrieval make no plain call between their first and last steps); the first such call
    still uses ``decoys``."""

    def __init__(self, model: nn.Module, decoys: DecoySet, *, every: int, base: str = "gradient",
                 base_options: dict | None = None, on_graph: bool = False, **decoy_options):
        integer("every", every)
        if not isinstance(on_graph, bool):
            raise ValueError(f"on_graph must be True or False, got {on_graph!r}")
        self.model, self.decoys, self.every, self.on_graph = model, decoys, every, on_graph
        self.base, self.base_options, self.options = base, base_options or {}, decoy_options
        self.calls = self.recomputed = self.excluded = 0

    def __call__(self, model: nn.Module, x: Tensor, target: Tensor, *, create_graph: bool = False,
                 generator: torch.Generator | None = None, batch_size: int | None = None) -> Tensor:
        if create_graph == self.on_graph:
            self.calls += 1
            if self.calls > 1 and (self.calls - 1) % self.every == 0:
                self.decoys = make_decoys(self.model, x.detach(), **self.options)
                self.recomputed += 1
                self.excluded += int(self.decoys.excluded)
        with warnings.catch_warnings():  # excluded decoys are counted in self.excluded
            warnings.filterwarnings("ignore", message="DANCE: .* never satisfied")
            return dance(model, x, target, decoys=self.decoys, base=self.base, base_options=self.base_options,
                         create_graph=create_graph, generator=generator, batch_size=batch_size)


def blurred_explainer(explainer: Explainer, sigma: float) -> Explainer:
    """``explainer``'s map through :func:`..maps.smoothness.blurred_map` (differentiable)."""

    def explain(model, x, target, *, create_graph=False, generator=None, batch_size=None):
        raw = explainer(model, x, target, create_graph=create_graph, generator=generator, batch_size=batch_size)
        return blurred_map(raw, sigma)

    return explain


def objective_value(objective: str, clean_map: Tensor, maps: Tensor, *, k: int | None = None,
                    region: Tensor | None = None) -> Tensor:
    """The Ghorbani measure of ``maps`` (N, H, W) against ``clean_map`` (N, H, W), both non-negative
    (sum-normalised inside): top-k intersection for ``"topk"``, centre shift in pixels for
    ``"mass_center"``, region mass for ``"targeted"``; as :func:`.ghorbani.ghorbani_attack` reports it."""
    def norm(m):
        return m / m.flatten(1).sum(1).clamp_min(1e-12).view(-1, 1, 1)

    h, w = clean_map.shape[-2:]
    k = max(1, round(h * w * 1000 / (224 * 224))) if k is None else k
    region = region.to(clean_map.device) if region is not None else None
    return _goal(objective, norm(clean_map), k, region).judge(norm(maps))


def strength(result: GhorbaniResult, real_value: Tensor) -> dict:
    """How far the attack got, in shares of its own total effect ``|value - clean|`` (means over
    images): ``plateau``, what the second half of its steps added to the best of the first half;
    ``shortfall``, how much less the real method's measure ``real_value`` (per image) moved than the
    attacked map did (0 when it moved as far or further)."""
    higher = result.measure != "topk_intersection"
    trace, steps = result.trace.double(), result.trace.shape[0] - 1
    first = trace[: steps // 2 + 1]
    best_first = first.amax(0) if higher else first.amin(0)
    clean, best, real = result.clean_value.double(), result.value.double(), real_value.double().to(result.value.device)
    total = (best - clean).abs().mean().clamp_min(1e-12)
    plateau = (best - best_first).abs().mean() / total
    short = (best - real).clamp_min(0) if higher else (real - best).clamp_min(0)
    return {"effect": float((best - clean).abs().mean()), "plateau": float(plateau),
            "shortfall": float(short.mean() / total)}
