"""One explainer x one model of the arena on one shard of images: every measure and every
perturbation, as a flat dict of per-image tensors for the result store.

Keys are ``"<perturbation>|<measure>|<field>"`` (fields ``value``, ``baseline``, ``doubled``,
``restart``: the measure under the perturbation, under random sign noise of the same budget, and
on the strength subset after twice the steps and after a random restart; PGD, aimed at the label,
also reports ``prediction_kept``, read the same way) and
``"<perturbation>||<field>"`` for what belongs to the perturbation itself (label kept, the
perturbation's mean and max per pixel, its budget, the attack's goal on its own map, the plateau
read-out, the surrogate distance, seconds per image, ``no_gradient``: the image had no attack
gradient, checked per image, and its attacked values are NaN). Measures without a perturbation
use the perturbation ``"none"``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..core.perturbation import pixel_change
from ..evaluation import retrieval
from ..explainers import dance
from .controls import edge_map
from ..maps.similarity import spearman
from ..models.smoothing import to_softplus
from ..core.timing import PassCounter
from .measures import (GOALS, clean_retrieval, faithfulness, goal_value, pixel_map,
                       reliability, sanity, stability)
from .perturb import RESTARTABLE, flat_images, nan_vector, random_noise, run_perturbation, steps_of
from .routes import aim, decoy_options, decoys_of, retrieval_mask, scored_explainer
from .settings import ArenaSettings

__all__ = ["Shared", "pair_shard", "shared_shard"]

@dataclass
class Shared:
    """What every explainer of one model shares (from :func:`shared_shard`, all images): the random
    sign noise and PGD's images, and PGD's strength runs on the subset (NaN images elsewhere) with
    the labels they kept."""

    x_noise: Tensor
    noise_kept: Tensor
    x_pgd: Tensor
    pgd_kept: Tensor
    x_pgd_doubled: Tensor
    x_pgd_restart: Tensor
    pgd_doubled_kept: Tensor
    pgd_restart_kept: Tensor


def shared_shard(model: nn.Module, x: Tensor, y: Tensor, index, settings: ArenaSettings) -> dict[str, Tensor]:
    """The random sign noise and PGD (with its doubled-steps and restart runs on the strength
    subset) for images ``index``; the explainer-independent perturbations of one model."""
    aimed = aim("gradient", "pgd", model, x, settings, index)
    noise, noise_kept = random_noise(model, x, y, settings, index)
    run = run_perturbation("pgd", aimed, model, x, y, settings, index)
    doubled, restart = torch.full_like(x, float("nan")), torch.full_like(x, float("nan"))
    kept = {"doubled": nan_vector(len(x), x), "restart": nan_vector(len(x), x)}
    subset = [i for i, image in enumerate(index) if image < settings.strength_images]
    if subset:
        pick = torch.tensor(subset)
        sub_index = [index[i] for i in subset]
        twice = run_perturbation("pgd", aimed, model, x[pick], y[pick], settings, sub_index,
                                 steps=2 * settings.pgd_steps)
        again = run_perturbation("pgd", aimed, model, x[pick], y[pick], settings, sub_index, restart=True)
        doubled[pick], restart[pick] = twice.x_adv, again.x_adv
        kept["doubled"][pick.to(x.device)] = twice.label_kept.double()
        kept["restart"][pick.to(x.device)] = again.label_kept.double()
    return {"x_noise": noise, "noise_kept": noise_kept.double(), "x_pgd": run.x_adv,
            "pgd_kept": run.label_kept.double(), "x_pgd_doubled": doubled, "x_pgd_restart": restart,
            "pgd_doubled_kept": kept["doubled"], "pgd_restart_kept": kept["restart"]}


class _Scorer:
    """The measures of one explainer's maps against its clean maps, on a shard."""

    def __init__(self, name, index, model, y, clean_px, targets, settings):
        self.name, self.index, self.model, self.y = name, index, model, y
        self.clean, self.targets, self.settings = clean_px, targets, settings
        self.explain = scored_explainer(name, settings, index)

    def map(self, x_at: Tensor, rows=None) -> Tensor:
        """The scored map at ``x_at`` (images ``rows`` of the shard, with their own seeds, or all)."""
        if rows is None:
            return self.explain(self.model, x_at, self.y)
        explain = scored_explainer(self.name, self.settings, [self.index[int(i)] for i in rows])
        return explain(self.model, x_at, self.y[rows])

    def read(self, perturbation: str, raw: Tensor, x_at: Tensor, rows=None) -> dict[str, Tensor]:
        """Every measure of the map ``raw`` made at ``x_at``."""
        rows = slice(None) if rows is None else rows
        px = pixel_map(raw)
        values = stability(self.clean[rows], px, self.settings)
        hit, _ = retrieval(self.model, x_at, retrieval_mask(self.name, raw.detach()), self.y[rows])
        values["retrieval"] = hit.double()
        targets = None if self.targets is None else self.targets[rows]
        goal = goal_value(perturbation, self.clean[rows], px, targets)
        if goal is not None:
            values[GOALS[perturbation]] = goal
        return {k: v.double().cpu() for k, v in values.items()}

    def __call__(self, perturbation: str, x_at: Tensor, rows=None) -> dict[str, Tensor]:
        return self.read(perturbation, self.map(x_at, rows), x_at, rows)


def _surrogate_distance(aimed, model, x, y, clean_px) -> Tensor:
    """Spearman between the map the attack differentiates (on the model it differentiates) and the
    scored map, on the clean images. ``aimed`` must be fresh (DANCE's BPDA map keeps the decoys an
    attack solved again at its adversarial images)."""
    attack_model = to_softplus(model, aimed.beta) if aimed.beta else model
    raw = aimed.explainer(attack_model, x, y)
    return spearman(pixel_map(raw), clean_px).double().cpu()


def pair_shard(name: str, model: nn.Module, x: Tensor, y: Tensor, index, settings: ArenaSettings,
               shared: Shared, perturbations, next_image: tuple, randomised: nn.Module,
               classes: int) -> dict[str, Tensor]:
    """Every measure of explainer ``name`` on ``model`` for the images ``x`` (their numbers in the
    run: ``index``); ``shared`` holds this shard's noise and PGD images; ``next_image``: ``(x, y,
    number)`` of the image after the shard's last (Dombrowski's target for each image is the map of
    the next image of the run)."""
    n, s = x.shape[0], settings
    explain = scored_explainer(name, s, index)
    out: dict[str, Tensor] = {}
    decoys = None
    with PassCounter(model) as counter:
        if name == "dance":  # the scored map, and its decoys for the attacks to start from
            raw, decoys = dance(model, x, y, base="gradient", return_decoys=True, **decoy_options(s))
        else:
            raw = explain(model, x, y)
    out["none||passes"] = nan_vector(n, value=counter.passes / n)
    out["none||seconds"] = nan_vector(n, value=counter.seconds / n)
    clean = pixel_map(raw)
    for key, value in faithfulness(model, x, clean, y, s).items():
        out[f"none|{key}|value"] = value.double().cpu()
    rel = reliability(model, x, raw, y, s, index)
    out["none|sigma_rel|value"], out["none|sigma_rel|baseline"] = rel["sigma_rel"], rel["sigma_rel_null"]
    out["none|sigma_irel|value"], out["none|sigma_irel|baseline"] = rel["sigma_irel"], rel["sigma_irel_null"]
    orders = {"random": pixel_map(scored_explainer("random_map", s, index)(model, x, y)),
              "edge": pixel_map(edge_map(model, x, y))}  # the controls' pixel orders, masks at matched sparsity
    found = clean_retrieval(model, x, name, raw, explain, y, classes, orders)
    out["none|retrieval_clean|value"] = found["retrieval_clean"]
    out["none|retrieval_clean|baseline"] = found["retrieval_wrong_class"]
    for control in orders:
        out[f"none|retrieval_{control}_matched|value"] = found[f"retrieval_{control}_matched"].cpu()
        out[f"none|retrieval_{control}_matched|baseline"] = found[f"wrong_{control}_matched"].cpu()
    out["none|sanity_spearman|value"] = sanity(explain, randomised, x, y, clean).double().cpu()
    for key in ("passes", "seconds"):
        out[f"none|{key}|value"] = out[f"none||{key}"]

    targets = _next_maps(name, s, index, clean, next_image, model) if "dombrowski" in perturbations else None
    score = _Scorer(name, index, model, y, clean, targets, s)
    noise_map = score.map(shared.x_noise)
    noise = score.read("random_sign", noise_map, shared.x_noise)
    subset = [i for i, image in enumerate(index) if image < s.strength_images]
    distance = None  # the surrogate distance: one per explainer and model (the attacks share the surrogate)
    for p in perturbations:
        aimed = aim(name, p, model, x, s, index, decoys)
        started = time.perf_counter()
        attack_value, plateau, flat = nan_vector(n), nan_vector(n), nan_vector(n, value=0.0)
        if p == "random_sign":
            x_adv, kept = shared.x_noise, shared.noise_kept.bool()
        elif p == "pgd":
            x_adv, kept = shared.x_pgd, shared.pgd_kept.bool()
        elif aimed.explainer is None:  # not attackable: measured at the noise of the same budget
            x_adv, kept = shared.x_noise, shared.noise_kept.bool()
        else:
            # per image: an image whose attacked map has no gradient is never moved (the library's own
            # check only refuses a batch that is flat everywhere); checked on a fresh aim
            flat_start = flat_images(p, aim(name, p, model, x, s, index, decoys), model, x, y)
            run = run_perturbation(p, aimed, model, x, y, s, index, target_maps=targets)
            x_adv, kept, attack_value, plateau = run.x_adv, run.label_kept, run.attack_value.cpu(), run.plateau.cpu()
            flat = (run.no_gradient.cpu() | flat_start).double()
        seconds = time.perf_counter() - started
        values = noise if p == "random_sign" else score(p, x_adv)
        if bool(flat.any()):  # no evidence either way on those images: left out
            values = {k: torch.where(flat.bool(), torch.full_like(v, float("nan")), v) for k, v in values.items()}
        change = pixel_change(model.input_space, x, x_adv)
        baseline = noise
        if p == "dombrowski" and aimed.explainer is not None:  # unbounded: noise of its own L2 norm per image
            x_rand, _ = random_noise(model, x, y, s, index, budget=_rms(change["l2"], x), stream="noise-dombrowski")
            baseline = score(p, x_rand)
        elif p in GOALS:
            baseline = score.read(p, noise_map, shared.x_noise)
        if p == "pgd":  # aimed at the label: its strength is read on the labels it flips
            values = {**values, "prediction_kept": shared.pgd_kept.double().cpu()}
            baseline = {**baseline, "prediction_kept": shared.noise_kept.double().cpu()}
        for measure, value in values.items():
            out[f"{p}|{measure}|value"] = value
            if p != "random_sign":
                out[f"{p}|{measure}|baseline"] = baseline[measure]
        strength = _strength(p, name, aimed, model, x, y, s, index, subset, shared, score, targets, decoys)
        for measure in values:  # NaN outside the strength subset (every shard has every key)
            out[f"{p}|{measure}|doubled"], out[f"{p}|{measure}|restart"] = strength.get(measure, (nan_vector(n), nan_vector(n)))
        if aimed.surrogate and distance is None:
            distance = _surrogate_distance(aim(name, p, model, x, s, index, decoys), model, x, y, clean)
        out.update({f"{p}||label_kept": kept.double().cpu(), f"{p}||delta_mean": change["mean"].double().cpu(),
                    f"{p}||delta_max": change["max"].double().cpu(),
                    f"{p}||budget": (_rms(change["l2"], x) if p == "dombrowski" else nan_vector(n, value=s.eps)).double().cpu(),
                    f"{p}||attack_value": attack_value, f"{p}||plateau": plateau,
                    f"{p}||surrogate_spearman": distance if aimed.surrogate else nan_vector(n),
                    f"{p}||attack_seconds": nan_vector(n, value=seconds / n),
                    f"{p}||no_gradient": flat})
    return out


def _rms(l2: Tensor, x: Tensor) -> Tensor:
    """The per-entry sign-noise size whose L2 norm is ``l2`` (before clipping): ``l2 / sqrt(C H W)``."""
    return l2 / x[0].numel() ** 0.5


def _next_maps(name, settings, index, clean, next_image, model) -> Tensor:
    """Pixel maps of the next image of the run for every shard image: the shard's own clean maps,
    and for the last image the map of ``next_image`` = ``(x, y, its number)``."""
    x1, y1, number = next_image
    last = scored_explainer(name, settings, [number])(model, x1, y1)
    return torch.cat([clean[1:], pixel_map(last)])


def _strength(p, name, aimed, model, x, y, settings, index, subset, shared, score, targets, decoys) -> dict:
    """Per measure, its value after twice the steps and after a random restart on the strength
    subset (NaN elsewhere, and for the restart where the attack has no random start)."""
    n = x.shape[0]
    if p == "random_sign" or not subset or (aimed.explainer is None and p != "pgd"):
        return {}
    pick = torch.tensor(subset)
    sub_index = [index[i] for i in subset]

    def decoys_for(rows):
        return None if decoys is None else decoys_of(decoys, rows)

    runs, found = {}, {}
    if p == "pgd":
        runs["doubled"], runs["restart"] = shared.x_pgd_doubled[pick], shared.x_pgd_restart[pick]
        found["prediction_kept"] = [nan_vector(n), nan_vector(n)]
        found["prediction_kept"][0][pick] = shared.pgd_doubled_kept[pick.to(shared.pgd_doubled_kept.device)].cpu()
        found["prediction_kept"][1][pick] = shared.pgd_restart_kept[pick.to(shared.pgd_restart_kept.device)].cpu()
    else:
        fresh = aim(name, p, model, x[pick], settings, sub_index, decoys_for(subset))
        sub_targets = None if targets is None else targets[pick]
        runs["doubled"] = run_perturbation(p, fresh, model, x[pick], y[pick], settings, sub_index,
                                           steps=2 * steps_of(p, settings), target_maps=sub_targets).x_adv
        if p in RESTARTABLE:  # one image at a time: its map's seeds and its start's seed are its own
            runs["restart"] = torch.cat([run_perturbation(
                p, aim(name, p, model, x[i:i + 1], settings, [index[i]], decoys_for([i])), model, x[i:i + 1],
                y[i:i + 1], settings, [index[i]], restart=True).x_adv for i in subset])
    for slot, which in enumerate(("doubled", "restart")):
        if which in runs:
            for measure, value in score(p, runs[which], rows=pick).items():
                found.setdefault(measure, [nan_vector(n), nan_vector(n)])[slot][pick] = value
    return {k: tuple(v) for k, v in found.items()}
