"""Which map each explainer of the arena scores, and how every attack is aimed at it.

:func:`scored_explainer` binds an explainer of the arena's axis to its profile settings and to
per-image seeds (Monte-Carlo maps draw the same noise for an image in every call: clean, attacked,
randomised model), so a map depends only on its image. :func:`aim` says how an attack reaches that
same map: directly (the attack differentiates the scored map, ``create_graph``), through a stated
surrogate (the same method made shorter, or a Softplus copy of a ReLU model for the second
derivative), by BPDA (DANCE: decoys held constant in the backward pass and solved again along the
way), or not at all, with the reason (the random map does not depend on the image). Nothing is
transferred: an attack aimed at one explainer is never scored on another.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

from ..attacks.decoy_attack import RecomputedDecoys
from ..explainers import get_explainer
from ..explainers.decoys import DecoySet, make_decoys
from ..maps.postprocess import postprocess
from ..models.smoothing import SMOOTHED
from .controls import edge_map, random_map, smoothed_gradient
from .settings import ArenaSettings, image_seed

__all__ = ["Aim", "scored_explainer", "aim", "route", "decoys_of", "retrieval_mask", "is_relu", "decoy_options",
           "SECOND_ORDER"]

# maps whose derivative w.r.t. x needs the model's second derivative (a ReLU model needs a Softplus copy)
SECOND_ORDER = {"gradient", "smoothgrad", "integrated_gradients", "gradcam", "lrp_epsilon", "relex", "dance",
                "smoothed_gradient"}


def is_relu(model: nn.Module) -> bool:
    """The model has ReLU units (zero second derivative: attacks on its maps go through a Softplus copy)."""
    return any(isinstance(m, SMOOTHED) for m in model.modules())


def decoy_options(settings: ArenaSettings) -> dict:
    return {"patch": 3, "stride": settings.dance_stride, "steps": settings.dance_steps}


def _rise(settings: ArenaSettings, masks: int):
    rise = get_explainer("rise", masks=masks, grid_size=settings.rise_grid)

    def explain(model, x, target, *, create_graph=False, generator=None, batch_size=None):
        # one mask set for every image and call (RISE shares its masks across images)
        fixed = torch.Generator(device=x.device).manual_seed(image_seed(settings.seed, 0, "rise-masks"))
        return rise(model, x, target, create_graph=create_graph, generator=fixed, batch_size=batch_size)

    return explain


def _own_seeds(explain):
    """``explain`` with its per-image seeds bound, deaf to the caller's ``generator`` (attacks pass
    theirs; an image's draws must not depend on the attack)."""

    def seeded(model, x, target, *, create_graph=False, generator=None, batch_size=None):
        return explain(model, x, target, create_graph=create_graph, batch_size=batch_size)

    return seeded


def scored_explainer(name: str, settings: ArenaSettings, index) -> callable:
    """The explainer ``name`` at the profile's settings, its randomness fixed per image: image
    ``index[i]`` of the run gets the same draws in any call on the images ``index`` (in order)."""
    seeds = [image_seed(settings.seed, int(i), "map") for i in index]
    s = settings
    options = {
        "gradient": lambda: get_explainer("gradient"),
        "smoothgrad": lambda: _own_seeds(get_explainer("smoothgrad", samples=s.smoothgrad_samples, seeds=seeds)),
        "integrated_gradients": lambda: get_explainer("integrated_gradients", steps=s.ig_steps),
        "gradcam": lambda: get_explainer("gradcam"),
        "lrp_epsilon": lambda: get_explainer("lrp_epsilon"),
        "rise": lambda: _rise(s, s.rise_masks),
        "relex": lambda: _own_seeds(get_explainer("relex", iterations=s.relex_iterations, samples=s.relex_samples,
                                                  seeds=seeds)),
        "dance": lambda: get_explainer("dance", base="gradient", **decoy_options(s)),
        # the mean visited mask (normalise=False) keeps every pixel's order; the authors' relu(S - mean)
        # / max zeroes about half the pixels (used for the box IoU only, as chapter 5)
        "mask_search": lambda: _own_seeds(get_explainer("mask_search", passes=s.mask_search_passes,
                                                        grid_size=s.mask_search_grid, normalise=False, seeds=seeds)),
        "random_map": lambda: _own_seeds(partial(random_map, seeds=[image_seed(s.seed, int(i), "random-map")
                                                                    for i in index])),
        "edge_map": lambda: edge_map,
        "smoothed_gradient": lambda: partial(smoothed_gradient, sigma=s.blur_sigma),
    }
    if name not in options:
        raise ValueError(f"unknown explainer {name!r}; choose from {sorted(options)}")
    return options[name]()


def retrieval_mask(name: str, raw: Tensor) -> Tensor:
    """Paper A's masks from raw maps (differentiable): RelEx's mask as it is (per channel, in
    [0, 1]); Grad-CAM min-max; every other map ``sum_c |E|`` over its 99th percentile, clamped to
    [0, 1] (the paper's normalisation of its baselines)."""
    if name == "relex":
        return raw
    if name == "gradcam":
        return postprocess(raw[:, 0], ["normalize_minmax"])
    return postprocess(raw, ["absolute", "channel_sum", "divide_by_percentile"])


@dataclass
class Aim:
    """How one attack reaches one scored map. ``explainer``: the map the attack differentiates
    (None: not attackable, ``route`` says why); ``beta``: the Softplus copy of the model the attack
    gradient goes through (None: the real model); ``surrogate``: the attacked map is not the scored
    one (a shorter run, another method's formula or a Softplus copy), so the surrogate distance is
    recorded; ``mode``: the masked-retrieval attack's mode; ``normalise``: its mask."""

    route: str
    explainer: object | None
    beta: float | None = None
    surrogate: bool = False
    mode: str = "unrolled"
    normalise: object | None = None


def route(name: str, perturbation: str, relu: bool, settings: ArenaSettings) -> str:
    """How ``perturbation`` is aimed at explainer ``name`` (on a ReLU model or not), in words."""
    s = settings
    if perturbation == "random_sign":
        return "random sign noise of the budget (aimed at nothing: the baseline)"
    if perturbation == "pgd":
        return "the prediction (PGD on the model's cross-entropy; the same images for every explainer)"
    softplus = f" through a Softplus({s.surrogate_beta:g}) copy of the ReLU model" \
        if relu and name in SECOND_ORDER else ""
    if perturbation == "dombrowski" and softplus:
        softplus = (f" through a Softplus copy of the ReLU model, beta annealed from {s.surrogate_beta:g} to "
                    f"{10 * s.surrogate_beta:g}")
    if name == "random_map":
        if perturbation == "masked_retrieval":
            return "direct (the mask does not depend on the image: held fixed, exact)"
        return ("not attackable: the map does not depend on the image (stable by construction); measured at the "
                "random sign noise of the same budget")
    texts = {
        "gradient": "direct", "integrated_gradients": "direct", "gradcam": "direct", "smoothed_gradient": "direct",
        "smoothgrad": "direct, the same noise draws (per-image seeds)",
        "edge_map": "direct (no model in the map)",
        "lrp_epsilon": "surrogate: gradient x input (what LRP-epsilon at epsilon 1e-6 equals on a ReLU network)",
        "rise": f"surrogate: RISE with {s.rise_attack_masks} masks drawn from the same seed (first-order, the real "
                "model)",
        "mask_search": f"surrogate: the mask search's first {s.mask_search_attack_passes} passes, the same chains, "
                       "differentiated with the chains' moves held fixed",
        "relex": f"surrogate: RelEx unrolled over {s.relex_attack_iterations} iterations x {s.relex_attack_samples} "
                 "copies, the same seeds",
        "dance": "BPDA: DANCE(gradient) with its decoys held constant in the backward pass and solved again every "
                 f"{s.dance_recompute_every} steps",
    }
    if name not in texts:
        raise ValueError(f"unknown explainer {name!r}")
    return texts[name] + softplus


def decoys_of(decoys: DecoySet, rows) -> DecoySet:
    """The decoys of the images ``rows`` (a list of positions) of a :class:`..explainers.decoys.DecoySet`."""
    pick = torch.as_tensor(list(rows), dtype=torch.long)
    per_image = ("delta", "valid", "satisfied", "violation", "eps", "deviation", "change")
    return dataclasses.replace(decoys, **{f: getattr(decoys, f)[pick] for f in per_image})


def aim(name: str, perturbation: str, model: nn.Module, x: Tensor, settings: ArenaSettings, index,
        decoys: DecoySet | None = None) -> Aim:
    """The :class:`Aim` of ``perturbation`` at explainer ``name`` on ``model`` for images ``x``
    (``index``: their numbers in the run, for the per-image seeds); :func:`route` in words.
    ``decoys``: DANCE's decoys of ``x`` when they are already solved (else they are solved here)."""
    s, relu = settings, is_relu(model)
    text = route(name, perturbation, relu, s)
    if perturbation in ("random_sign", "pgd") or (name == "random_map" and perturbation != "masked_retrieval"):
        return Aim(text, None)
    beta = s.surrogate_beta if relu and name in SECOND_ORDER else None
    normalise = partial(retrieval_mask, name) if perturbation == "masked_retrieval" and name != "relex" else None
    seeds = [image_seed(s.seed, int(i), "map") for i in index]
    if name == "random_map":  # the masked-retrieval attack on x * M with M fixed is exact
        return Aim(text, scored_explainer(name, s, index), mode="detached", normalise=normalise)
    if name in ("gradient", "smoothgrad", "integrated_gradients", "gradcam", "smoothed_gradient", "edge_map"):
        return Aim(text, scored_explainer(name, s, index), beta, bool(beta), normalise=normalise)
    if name == "lrp_epsilon":  # only ReLU models get here: the explainer refuses Softplus
        return Aim(text, get_explainer("grad_x_input"), beta, True, normalise=normalise)
    if name == "rise":
        return Aim(text, _rise(s, s.rise_attack_masks), None, True, normalise=normalise)
    if name == "mask_search":
        chain = _own_seeds(get_explainer("mask_search", passes=s.mask_search_attack_passes,
                                         grid_size=s.mask_search_grid, normalise=False, seeds=seeds))
        return Aim(text, chain, None, True, normalise=normalise)
    if name == "relex":
        short = _own_seeds(get_explainer("relex", iterations=s.relex_attack_iterations,
                                         samples=s.relex_attack_samples, seeds=seeds))
        return Aim(text, short, beta, True, normalise=normalise)
    options = decoy_options(s)  # dance
    decoys = make_decoys(model, x.detach(), **options) if decoys is None else decoys
    bpda = RecomputedDecoys(model, decoys, every=s.dance_recompute_every, base="gradient", on_graph=True,
                            **options)
    return Aim(text, bpda, beta, True, normalise=normalise)
