"""How long an arena profile takes, from the model passes it makes and measured costs per pass.

Passes are counted in three kinds, per model input: ``fb`` a forward pass and an input gradient,
``f`` a forward pass without gradient, ``dd`` a double backpropagation (a forward pass, a backward
pass that keeps its graph, and a backward pass through both: what an attack on a map costs).
:data:`UNIT_COSTS` holds the costs measured for paper E's LeNet on the project's 2-core CPU (both
cores, one process): 0.65 ms, 0.33 ms and 2 ms per input. Two single-threaded workers are assumed
to get through the same passes in the same wall time as one process with two threads (not
measured here; the store only divides the shards).

The counts follow the code path of :mod:`.cells` (every map, attack step, strength run and measure
of a cell); where a pass count depends on the data (a sigma* search that stops early, a rejected
attack step) the upper bound is taken. :func:`clean_map_passes` is tested against the passes a
forward pre-hook counts.
"""

from __future__ import annotations

import pandas as pd

from functools import cache

from .perturb import RESTARTABLE, steps_of
from .routes import SECOND_ORDER, is_relu
from .settings import ATTACKS, EXPLAINERS, MODELS, ArenaSettings, arena_settings

__all__ = ["UNIT_COSTS", "relu_model", "clean_map_passes", "estimate", "estimate_text"]

UNIT_COSTS = {"fb": 0.65e-3, "f": 0.33e-3, "dd": 2.0e-3}  # seconds per model input, LeNet, 2 CPU threads
_SIDE = 32
# the pass kinds and the parts of the estimate in words (the estimate is printed on a chapter's page)
KIND_WORDS = {"fb": "forward pass and input gradient", "f": "forward pass", "dd": "double backpropagation"}
SHARED = "every explainer (noise, PGD, training)"


@cache
def relu_model(name: str) -> bool:
    """Whether the model axis's ``name`` is a ReLU network (:func:`.routes.is_relu` of its zoo
    recipe's architecture, built without weights)."""
    from .. import models
    from ..training.zoo import RECIPES

    recipe = RECIPES[MODELS[name]]
    return is_relu(models.build(recipe.architecture, softplus_beta=recipe.softplus_beta))


def _positions(settings: ArenaSettings, side: int = _SIDE) -> int:
    starts = list(range(0, side - 3 + 1, settings.dance_stride))
    return (len(starts) + (starts[-1] != side - 3)) ** 2


def clean_map_passes(name: str, settings: ArenaSettings, side: int = _SIDE) -> dict[str, float]:
    """Model inputs of one scored map of one image, by kind (``fb``, ``f``)."""
    s = settings
    decoys = 2 * _positions(s, side)
    table = {
        "gradient": {"fb": 1}, "smoothgrad": {"fb": s.smoothgrad_samples}, "integrated_gradients": {"fb": s.ig_steps},
        "gradcam": {"fb": 1}, "lrp_epsilon": {"fb": 1}, "rise": {"f": s.rise_masks},
        "relex": {"fb": 2 * s.relex_iterations * s.relex_samples},
        # decoys: steps fb each (up to the layer) and one feasibility check, then the gradient of each decoy
        "dance": {"fb": decoys * (s.dance_steps + 1), "f": decoys},
        "mask_search": {"f": s.mask_search_passes}, "random_map": {}, "edge_map": {}, "smoothed_gradient": {"fb": 1},
    }
    return {"fb": 0.0, "f": 0.0, "dd": 0.0, **{k: float(v) for k, v in table[name].items()}}


def _attack_map(name: str, settings: ArenaSettings, relu: bool) -> tuple[dict, dict]:
    """One call of the map an attack differentiates: (with create_graph, without), by kind."""
    s = settings
    exact = {"gradient": 1, "gradcam": 1, "smoothed_gradient": 1, "lrp_epsilon": 1,
             "smoothgrad": s.smoothgrad_samples, "integrated_gradients": s.ig_steps,
             "relex": 2 * s.relex_attack_iterations * s.relex_attack_samples, "dance": 2 * _positions(s)}
    if name in exact:
        return {"dd": exact[name]}, {"fb": exact[name]}
    first_order = {"rise": s.rise_attack_masks, "mask_search": s.mask_search_attack_passes}
    if name in first_order:
        return {"fb": first_order[name]}, {"f": first_order[name]}
    return {}, {}  # edge map (no model), random map (not attacked)


def _add(total: dict, part: dict, times: float) -> None:
    for kind, count in part.items():
        total[kind] = total.get(kind, 0.0) + count * times


def _attack_run(p: str, name: str, settings: ArenaSettings, relu: bool, steps: int) -> dict:
    """One run of attack ``p`` on one image aimed at ``name``, by kind."""
    graph, plain = _attack_map(name, settings, relu)
    beta = relu and name in SECOND_ORDER
    total: dict = {}
    _add(total, plain, 2)  # the clean map and the last one
    if p in ("topk", "mass_center", "targeted"):
        _add(total, graph, steps)
        if beta:  # Ghorbani judges the real model's map at every step when a surrogate model is used
            _add(total, plain, steps)
        _add(total, {"f": 2}, steps)  # the label check (and the rejected-step bookkeeping)
    elif p in ("dombrowski", "frame"):
        _add(total, graph, steps)
        _add(total, {"fb": 1}, steps)  # the output term
    elif p == "masked_retrieval":
        _add(total, graph if name != "random_map" else {}, steps)
        _add(total, {"fb": 2}, steps)  # the masked and the plain cross-entropy
    if name == "dance":  # decoys solved again every dance_recompute_every steps
        decoys = 2 * _positions(settings)
        _add(total, {"fb": decoys * (settings.dance_steps + 1)}, steps / settings.dance_recompute_every)
    return total


def _pair(name: str, settings: ArenaSettings, relu: bool, attacks) -> dict[str, dict]:
    """Passes of one explainer x model per image, by part (the maps and measures, each attack)."""
    s = settings
    share = s.strength_images / s.images
    scored = clean_map_passes(name, s)
    parts: dict[str, dict] = {}
    maps: dict = {}
    # clean, wrong class, the randomised model's, the noise map, one map per attack, Dombrowski's own
    # noise, the next image's map once per shard
    _add(maps, scored, 4 + len(attacks) + ("dombrowski" in attacks) + 1 / s.shard_size)
    rows = 2 + 2 * s.sigma_permutations
    _add(maps, {"f": 2 * ((s.auc_steps or _SIDE) + 1) + rows * (s.sigma_scan + s.sigma_iterations) + 1,
                "fb": 1}, 1)  # AUCs, sigma* (upper bound), the reliability measure's gradient
    _add(maps, {"f": 2 + 4 + 1 + len(attacks)}, 1)  # retrievals (with the two controls' matched masks)
    if name in ("rise", "mask_search", "relex", "dance", "lrp_epsilon") or (relu and name in SECOND_ORDER):
        _add(maps, _attack_map(name, s, relu)[1], 1)  # the surrogate distance
    parts["maps and measures"] = maps
    for p in attacks:
        total: dict = {}
        _add(total, scored, share * (2 if p in RESTARTABLE else 1))  # strength maps
        _add(total, {"f": share * 2}, 1)
        if p == "pgd" or (name == "random_map" and p != "masked_retrieval"):
            parts[p] = total
            continue
        steps = steps_of(p, s)
        if p != "masked_retrieval":  # the per-image check of the attack gradient at the start
            _add(total, _attack_map(name, s, relu)[0], 1)
        _add(total, _attack_run(p, name, s, relu, steps), 1)
        _add(total, _attack_run(p, name, s, relu, 2 * steps), share)
        if p in RESTARTABLE:
            _add(total, _attack_run(p, name, s, relu, steps), share)
        parts[p] = total
    return parts


def estimate(settings: ArenaSettings | str = "book", *, explainers=EXPLAINERS, models=None,
             attacks=ATTACKS, images: int | None = None, costs: dict | None = None) -> pd.DataFrame:
    """Estimated passes and seconds of an arena run: one row per explainer x model x part (the
    maps and measures, each attack, the shared PGD and noise, the localisation), with the model
    inputs by kind and the seconds at ``costs`` (default :data:`UNIT_COSTS`) for all images;
    ``models`` None: the profile's."""
    s = arena_settings(settings) if isinstance(settings, str) else settings
    n = s.images if images is None else images
    costs = {**UNIT_COSTS, **(costs or {})}
    models = s.models if models is None else models
    rows = []

    def row(explainer, model, part, counts, times):
        c = {k: counts.get(k, 0.0) * times for k in ("fb", "f", "dd")}
        rows.append({"explainer": explainer, "model": model, "part": part, **c,
                     "seconds": sum(c[k] * costs[k] for k in c)})

    for model in models:
        relu = relu_model(model)
        pgd_runs = 1 + 3 * s.strength_images / s.images  # the run, twice the steps, a restart
        row(SHARED, model, "random noise and PGD", {"fb": s.pgd_steps * pgd_runs, "f": 2 + pgd_runs}, n)
        for name in explainers:
            if name == "lrp_epsilon" and not relu:
                continue  # LRP-epsilon refuses Softplus models
            for part, counts in _pair(name, s, relu, attacks).items():
                row(name, model, part, counts, n)
    for name in explainers:
        row(name, "shapes_cnn", "localisation", clean_map_passes(name, s), s.shapes_images)
    row(SHARED, "shapes_cnn", "training", {"fb": 2.0}, s.shapes_train * s.shapes_epochs)
    return pd.DataFrame(rows)


def estimate_text(table: pd.DataFrame, settings: ArenaSettings, names: dict | None = None) -> str:
    """The estimate in words, per axis (explainer, model, part) and in all; ``names``: the words for
    the arena's names (explainers, models, perturbations)."""
    names = names or {}
    total = table["seconds"].sum()
    costs = ", ".join(f"{UNIT_COSTS[k] * 1e3:.2f} ms per {KIND_WORDS[k]}" for k in ("fb", "f", "dd"))
    lines = [f"Arena at profile {settings.profile!r}: {settings.images} images, estimated {total / 3600:.2f} h on the "
             f"book's 2-core CPU ({total:.0f} s), at the costs per model input measured there for paper E's LeNet "
             f"({costs}); a GPU, which the paper profile is meant for, is not modelled."]
    for axis, word in (("explainer", "explainer"), ("model", "model"), ("part", "part")):
        by = table.groupby(axis)["seconds"].sum().sort_values(ascending=False)
        lines.append(f"per {word}: " + ", ".join(f"{names.get(k, k)} {v / 60:.1f} min" for k, v in by.items()))
    return "\n".join(lines)
