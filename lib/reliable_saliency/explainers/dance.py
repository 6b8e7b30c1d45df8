"""DANCE (Lu, Guo, Xing, Noble, ICML 2021): a wrapper around any registered explainer, like a noise
tunnel. Step 1 makes decoys (:mod:`.decoys`); step 2 runs the base explainer ``E`` on every decoy
and keeps, for each feature ``i``, the spread of its score over the decoys::

    Z_i = max_k E(x~^k)_i - min_k E(x~^k)_i        (aggregate="range", the paper's method)

The authors' code was not available: this is an independent implementation from the paper's main
text; choices it leaves open are marked [open] here and in :mod:`.decoys`. Theorem 1, checked
numerically (``tests/explainers/test_dance.py``, explicit Hessian of a small Softplus CNN): with the
gradient as base, ``Z_i = max_k sum_{j in K_k} H_ij d_kj - min_k (...)`` up to a relative error that
falls like ``|d|^2`` (the two opposite decoys of a patch cancel the second-order term). A linear
model gives ``Z = 0`` (the paper: the method is ill-defined there).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from ..core.batching import chunk_ranges
from ..core.options import choice
from ..maps import postprocess as postprocessing
from .decoys import DecoySet, constant_decoys, make_decoys
from .objective import Objective, graph_input
from .registry import EXPLAINERS, get_explainer, register

__all__ = ["dance", "aggregate_decoy_maps", "AGGREGATES", "DECOY_KINDS", "PAPER_POSTPROCESS"]

AGGREGATES = ("range", "range_per_position", "mean")
DECOY_KINDS = ("optimised", "constant")
# |.|, max over colour channels, winsorise at the 95th percentile, rescale to [0, 1] (the paper's
# post-processing for images, applied to every method it compares).
PAPER_POSTPROCESS = ("absolute", "channel_max", ("winsorize", {"q": 95.0}), "normalize_minmax")
# Decoy-image entries per base-explainer call (whole images per call; bounds memory for large images).
DECOY_ENTRIES_PER_CALL = 2**24


def aggregate_decoy_maps(maps: Tensor, valid: Tensor, cover: Tensor, how: str = "range") -> Tensor:
    """Reduce the base maps of the decoys to one map per image.

    ``maps``: (N, P, S, ...) the map of decoy (image, position, sign); entries of invalid decoys are
    ignored. ``valid``: (N, P, S) bool. ``cover``: (P, H, W) bool, the pixels of each position's
    patch (the maps' last two axes are H, W). ``how``:

    - ``"range"``: ``max - min`` over all valid decoys of the image (reading (a), the method);
    - ``"range_per_position"``: per position, ``|E(x~+) - E(x~-)|`` (the range of its two decoys,
      S must be 2), then the mean over the positions whose patch covers the pixel and whose two
      decoys are both valid (reading (b), an ablation); [open] "ensembled" read as the mean;
    - ``"mean"``: the mean over the valid decoys (the paper's "decoys + mean" ablation).

    Pixels without any usable decoy get 0. Returns (N, ...); differentiable w.r.t. ``maps``."""
    how = choice("aggregate", how, AGGREGATES)
    n, p, s = valid.shape
    if maps.shape[:3] != valid.shape or cover.shape != (p, *maps.shape[-2:]):
        raise ValueError(
            f"maps (N, P, S, ..., H, W), valid (N, P, S) and cover (P, H, W) do not match: "
            f"{tuple(maps.shape)}, {tuple(valid.shape)}, {tuple(cover.shape)}"
        )
    extra = (1,) * (maps.dim() - 3)
    if how == "mean":
        used = valid.to(maps.dtype).view(n, p, s, *extra)
        count = valid.flatten(1).sum(1).clamp(min=1).to(maps.dtype).view(n, *extra)
        return (maps * used).sum(dim=(1, 2)) / count
    if how == "range":
        flat, used = maps.flatten(1, 2), valid.flatten(1).view(n, p * s, *extra)
        high = flat.masked_fill(~used, -math.inf).amax(1)
        low = flat.masked_fill(~used, math.inf).amin(1)
        return torch.where(valid.flatten(1).any(1).view(n, *extra), high - low, torch.zeros_like(high))
    if s != 2:
        raise ValueError(
            f"aggregate='range_per_position' needs two decoys per position (s = +1, -1), got {s}; "
            f"constant decoys have one: use aggregate='range' or 'mean' with them"
        )
    spread = (maps[:, :, 0] - maps[:, :, 1]).abs()  # (N, P, ..., H, W)
    weight = (valid.all(2)[:, :, None, None] & cover[None]).to(maps.dtype)  # (N, P, H, W)
    weight = weight.view(n, p, *(1,) * (maps.dim() - 5), *maps.shape[-2:])
    return (spread * weight).sum(1) / weight.sum(1).clamp(min=1)


def _base_explainer(base, options) -> Callable[..., Tensor]:
    if options is not None and not isinstance(options, dict):
        raise TypeError(f"base_options must be a dict of the base explainer's options, got {type(options).__name__}")
    options = options or {}
    if isinstance(base, str):
        if base == "dance":
            raise ValueError("base must be another explainer than 'dance' itself")
        if base not in EXPLAINERS:
            raise ValueError(f"unknown base explainer {base!r}; choose one of {sorted(set(EXPLAINERS) - {'dance'})}")
        return get_explainer(base, **options)
    if callable(base):
        return (lambda *args, **kw: base(*args, **{**options, **kw})) if options else base
    raise TypeError(f"base must be a registered explainer's name or an explainer, got {type(base).__name__}")


def _check_steps(steps):
    if steps is None:
        return None
    if steps == "paper":
        return list(PAPER_POSTPROCESS)
    if isinstance(steps, str) or not isinstance(steps, (list, tuple)):
        raise ValueError(f"postprocess must be None, 'paper' or a list of post-processing steps, got {steps!r}")
    for step in steps:
        name = step[0] if isinstance(step, tuple) else step
        if name not in postprocessing.STEPS:
            raise ValueError(f"unknown post-processing step {name!r}; choose from {sorted(postprocessing.STEPS)}")
    return list(steps)


def _check_decoys(decoys, x: Tensor) -> DecoySet:
    if not isinstance(decoys, DecoySet):
        raise TypeError(f"decoys must be a DecoySet from make_decoys / constant_decoys, got {type(decoys).__name__}")
    n, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    corner = decoys.positions.max(0).values + decoys.patch
    if decoys.valid.shape[0] != n or decoys.delta.shape[3] != x.shape[1] or corner[0] > h or corner[1] > w:
        raise ValueError(
            f"decoys were made for {decoys.valid.shape[0]} images of {decoys.delta.shape[3]} channels "
            f"and at least {int(corner[0])}x{int(corner[1])} pixels; x has shape {tuple(x.shape)}"
        )
    return decoys


@register("dance")
def dance(
    model, x, target, *, create_graph=False, generator=None, batch_size=None,
    base="gradient", base_options=None, aggregate="range", decoy="optimised", layer=None,
    patch=3, stride=3, eps=0.1, relative_eps=True, tau=0.1, steps=20, step_size=0.5, multiplier=1.0,
    multiplier_growth=2.0, repair=6, postprocess=None, decoys=None, return_decoys=False,
):
    """DANCE map: the base explainer's maps over the decoys of each image, aggregated.

    ``base``: a registered explainer's name (default ``"gradient"``; the paper used gradient,
    SmoothGrad and Integrated Gradients) or an explainer; ``base_options``: its options (for
    example ``{"steps": 20}`` for IG). ``aggregate``: ``"range"`` (the method),
    ``"range_per_position"`` or ``"mean"`` (ablations), see :func:`aggregate_decoy_maps`; a list of
    them returns a dict name -> map from one run of the base explainer over the decoys.
    ``decoy``: ``"optimised"`` (:func:`.decoys.make_decoys`) or ``"constant"`` (the ablation,
    :func:`.decoys.constant_decoys`). ``layer``, ``patch``, ``stride``, ``eps``, ``relative_eps``,
    ``tau``, ``steps``, ``step_size``, ``multiplier``, ``multiplier_growth``, ``repair``: decoy
    options, see there ([open] the defaults are ours: the appendix with the paper's values was not
    available; the paper names patch size, layer and initial multiplier as its tuning knobs).
    ``decoys``: a :class:`.decoys.DecoySet` made for this ``x`` (then the decoy options are
    ignored), for example to reuse the decoys across the steps of an attack.

    ``postprocess``: None (default: ``Z`` itself, the shape of the base maps), ``"paper"``
    (:data:`PAPER_POSTPROCESS`: ``|.|``, max over channels, winsorise at the 95th percentile,
    rescale to [0, 1]; returns (N, 1, H, W)) or a list of :mod:`..maps.postprocess` steps.

    Decoys that never satisfied the representation constraint are left out (a warning says how many);
    ``return_decoys=True`` returns ``(map, decoys)`` with the full report. ``generator`` and
    ``batch_size`` go to the base explainer, which sees all decoys of a group of images as one batch
    (rows image x position x sign, whole images per call, at most :data:`DECOY_ENTRIES_PER_CALL`
    input entries); ``batch_size`` also bounds the decoy solver's passes. Results do not depend on
    ``batch_size``; with a random base, decoy rows take their seeds in row order from ``generator``.

    ``create_graph=True``: the map is differentiable w.r.t. ``x`` and the parameters wherever the
    base explainer is. [open] The decoys enter as ``x + delta`` with ``delta`` fixed (the decoy
    optimisation itself is not differentiated), so an attack sees the range of the base maps over
    fixed patch perturbations. Cost: the decoys (``steps`` passes up to ``layer`` per decoy) plus
    the base explainer on ``2 * P`` decoys per image (``P`` patch positions).
    """
    several = isinstance(aggregate, (list, tuple))
    names = [choice("aggregate", a, AGGREGATES) for a in (aggregate if several else [aggregate])]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"aggregate must be one of {AGGREGATES} or a list of distinct ones, got {aggregate!r}")
    decoy = choice("decoy", decoy, DECOY_KINDS)
    explain = _base_explainer(base, base_options)
    steps_after = _check_steps(postprocess)
    if "range_per_position" in names and decoy == "constant" and decoys is None:
        raise ValueError("aggregate='range_per_position' needs two decoys per position; constant decoys have one")
    objective = Objective(model, x, target, "logit")  # checks x, the model's mode and the targets
    with torch.no_grad():
        objective.scores(x[:1].detach(), objective.target[:1])  # the target range, before the decoys
    if decoys is None:
        shared = {"layer": layer, "patch": patch, "stride": stride, "eps": eps,
                  "relative_eps": relative_eps, "batch_size": batch_size}
        decoys = (make_decoys(model, x, tau=tau, steps=steps, step_size=step_size, multiplier=multiplier,
                              multiplier_growth=multiplier_growth, repair=repair, **shared)
                  if decoy == "optimised" else constant_decoys(model, x, **shared))
    decoys = _check_decoys(decoys, x)
    n, p, s = decoys.valid.shape
    per_image = p * s
    cover = decoys.cover(x.shape[-2], x.shape[-1])
    source = graph_input(x, create_graph)
    images_per_call = max(1, DECOY_ENTRIES_PER_CALL // (per_image * x[0].numel()))
    pieces: dict[str, list[Tensor]] = {name: [] for name in names}
    for a, b in chunk_ranges(n, images_per_call):
        valid = decoys.valid[a:b]
        rows = valid.flatten().nonzero()[:, 0]
        if rows.numel() == 0:  # no usable decoy: run one (ignored) row to learn the maps' shape
            rows = rows.new_zeros(1)
        maps = explain(model, decoys.images(source, rows + a * per_image), objective.target[rows // per_image + a],
                       create_graph=create_graph, generator=generator, batch_size=batch_size)
        full = maps.new_zeros(((b - a) * per_image, *maps.shape[1:])).index_copy(0, rows, maps)
        for name in names:
            pieces[name].append(aggregate_decoy_maps(full.view(b - a, p, s, *maps.shape[1:]), valid, cover, name))
    results = {name: parts[0] if len(parts) == 1 else torch.cat(parts) for name, parts in pieces.items()}
    if decoys.excluded:
        empty = int((~decoys.valid.flatten(1).any(1)).sum())
        warnings.warn(
            f"DANCE: {decoys.excluded} of {decoys.valid.numel()} decoys never satisfied the representation "
            f"constraint and were left out ({empty} image(s) had none left and got a zero map); raise "
            f"steps or eps, or pass return_decoys=True for the report", stacklevel=2,
        )
    if steps_after is not None:
        for name, result in results.items():
            result = postprocessing.postprocess(result, steps_after, x=source)
            results[name] = result.unsqueeze(1) if result.dim() == 3 else result
    result = results if several else results[names[0]]
    return (result, decoys) if return_decoys else result
