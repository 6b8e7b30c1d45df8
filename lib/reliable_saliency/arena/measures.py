"""The arena's measures per image, each a thin call of the library's own measure, so the harness's
numbers are those a reader gets by calling the measures directly (tested).

- :func:`pixel_map`: ``sum_c |E|`` (N, H, W), the map every stability and faithfulness measure reads;
- :func:`stability`: top-k intersection (Ghorbani's k: 1000 of 224 x 224 pixels, scaled), Spearman
  and SSIM (paper E's 7 x 7 window, maps over their maximum, range 1) between two maps;
- :func:`goal_value`: what an attack itself aims at (centre shift, region mass, distance to a
  target map), read on any map;
- :func:`faithfulness`, :func:`reliability`, :func:`clean_retrieval`, :func:`sanity`: deletion and
  insertion AUC, paper C's sigma* with its shuffled nulls, paper A's retrieval with the
  wrong-class control, the model-randomisation check;
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..attacks.common import max_normalise
from ..attacks.decoy_attack import objective_value
from ..attacks.frame import frame_target
from ..evaluation import deletion_auc, insertion_auc, randomize_parameters, retrieval
from ..evaluation.reliability import adversarial_reliability
from ..maps.postprocess import postprocess
from ..maps.similarity import pearson, spearman, ssim, topk_intersection
from .routes import retrieval_mask
from .settings import ArenaSettings, image_seed

__all__ = ["pixel_map", "topk", "target_region", "stability", "goal_value", "faithfulness",
           "reliability", "clean_retrieval", "matched_mask", "randomised_copy", "sanity", "GOALS"]

# perturbation -> the measure of its own goal (read on the real maps, and on the attack's map)
GOALS = {"mass_center": "center_shift", "targeted": "region_mass", "dombrowski": "target_pearson", "frame": "frame_mse"}


def pixel_map(raw: Tensor) -> Tensor:
    """``sum_c |E|`` as (N, H, W), detached."""
    return raw.detach().abs().sum(1)


def topk(h: int, w: int) -> int:
    """Ghorbani's k (1000 of 224 x 224 pixels) scaled to an h x w map: 20 of 32 x 32."""
    return max(1, round(h * w * 1000 / (224 * 224)))


def target_region(h: int, w: int, device=None) -> Tensor:
    """The targeted attack's region: the bottom-right quarter of the side (DANCE: bottom-right 4 x 4
    of 224; chapter 3: 8 x 8 of 32)."""
    region = torch.zeros(h, w, dtype=torch.bool, device=device)
    region[-max(1, h // 4):, -max(1, w // 4):] = True
    return region


def stability(clean: Tensor, other: Tensor, settings: ArenaSettings) -> dict[str, Tensor]:
    """Top-k intersection, Spearman and SSIM of two pixel maps (N, H, W), per image."""
    h, w = clean.shape[-2:]
    window = min(settings.ssim_window, h - (1 - h % 2), w - (1 - w % 2))
    return {
        "topk_intersection": topk_intersection(clean, other, topk(h, w)),
        "spearman": spearman(clean, other),
        "ssim": ssim(max_normalise(clean), max_normalise(other), window_size=window, data_range=1.0),
    }


def goal_value(perturbation: str, clean: Tensor, maps: Tensor, target: Tensor | None = None) -> Tensor | None:
    """The goal of ``perturbation`` read on pixel maps (N, H, W): the centre shift (pixels) and the
    region mass of the Ghorbani attacks (as :func:`..attacks.decoy_attack.objective_value`), the
    Pearson correlation of the map with Dombrowski's target (``target``: another image's map), the
    mean squared distance of the max-normalised map to paper E's frame. None for a perturbation
    without its own goal."""
    h, w = clean.shape[-2:]
    if perturbation == "mass_center":
        return objective_value("mass_center", clean, maps, k=topk(h, w))
    if perturbation == "targeted":
        return objective_value("targeted", clean, maps, region=target_region(h, w, clean.device))
    if perturbation == "dombrowski":
        return pearson(maps, target)
    if perturbation == "frame":
        frame = frame_target(h, w, device=maps.device, dtype=maps.dtype)
        return (max_normalise(maps) - frame).square().flatten(1).mean(1)
    return None


def faithfulness(model: nn.Module, x: Tensor, pixels: Tensor, label: Tensor, settings: ArenaSettings) -> dict:
    """Deletion and insertion AUC of the clean maps (substrate zero: the dataset's mean colour)."""
    steps = settings.auc_steps
    return {"deletion_auc": deletion_auc(model, x, pixels, label, steps=steps),
            "insertion_auc": insertion_auc(model, x, pixels, label, steps=steps)}


def reliability(model: nn.Module, x: Tensor, raw: Tensor, label: Tensor, settings: ArenaSettings, index) -> dict:
    """Paper C's budgets per input entry (mean |change| per entry, pixel units) of the authors' map
    ``r`` (|E| clipped at its 99th percentile, times the image, channel sum, min-max, 8 bits):
    sigma*_Rel with sigma*_RelShuf, its null, beside it; sigma*_Irel with sigma*_IrelShuf."""
    space = model.input_space
    r = postprocess(raw.detach(), [("adversarial_measure_map", {"q": 99.0, "quantize": True})],
                    x=space.denormalize(x.detach()))
    seeds = [image_seed(settings.seed, int(i), "shuffle") for i in index]
    result = adversarial_reliability(model, x, r, label, permutations=settings.sigma_permutations,
                                     iterations=settings.sigma_iterations, scan=settings.sigma_scan, seeds=seeds)
    per_entry = result.per_entry
    return {"sigma_rel": per_entry[:, 0], "sigma_rel_null": per_entry[:, 1],
            "sigma_irel": per_entry[:, 3], "sigma_irel_null": per_entry[:, 2]}


def matched_mask(mask: Tensor, order: Tensor) -> Tensor:
    """``mask``'s own values (per image and channel) moved to the pixels in the order of ``order``
    (N, H, W): the largest value where ``order`` is largest, and so on. The result has exactly the
    mask's sparsity (the same values), only the places come from the other map."""
    flat = mask.flatten(-2)
    values = flat.sort(-1).values
    ranks = order.flatten(1).argsort(-1).argsort(-1)
    if mask.dim() == 4:
        ranks = ranks.unsqueeze(1).expand_as(flat)
    return values.gather(-1, ranks).reshape(mask.shape)


def clean_retrieval(model: nn.Module, x: Tensor, name: str, raw: Tensor, explain, label: Tensor,
                    classes: int, orders: dict | None = None) -> dict:
    """Paper A's retrieval on the clean image (``argmax f(x * mask) == label``) and its control: the
    same explainer asked for a wrong class ``(label + 1) mod classes``, and whether its mask makes
    the model predict that class. ``orders``: name -> pixel map (N, H, W) of a control (a random
    map, the edge map); for each, ``retrieval_<name>_matched`` and ``wrong_<name>_matched``: the same
    two retrievals with the explainer's masks (of the clean and of the wrong class) rearranged in
    the control's pixel order (:func:`matched_mask`), so a mask wins only by where it keeps the
    image, not by how much of it."""
    mask = retrieval_mask(name, raw.detach())
    hit, _ = retrieval(model, x, mask, label)
    wrong = (label + 1) % classes
    mask_wrong = retrieval_mask(name, explain(model, x, wrong).detach())
    wrong_hit, _ = retrieval(model, x, mask_wrong, wrong)
    out = {"retrieval_clean": hit.double(), "retrieval_wrong_class": wrong_hit.double()}
    for control, order in (orders or {}).items():
        out[f"retrieval_{control}_matched"] = retrieval(model, x, matched_mask(mask, order), label)[0].double()
        out[f"wrong_{control}_matched"] = retrieval(model, x, matched_mask(mask_wrong, order), wrong)[0].double()
    return out


def randomised_copy(model: nn.Module, settings: ArenaSettings) -> nn.Module:
    """The model with every parameter re-initialised from a fixed seed (Adebayo et al. 2018)."""
    generator = torch.Generator().manual_seed(image_seed(settings.seed, 0, "randomise"))
    return randomize_parameters(model, generator).eval()


def sanity(explain, randomised: nn.Module, x: Tensor, label: Tensor, clean: Tensor) -> Tensor:
    """The model-randomisation check (:func:`..evaluation.model_randomisation`: Spearman between the
    channel-summed |maps| of the trained and the randomised model) with the trained model's map
    ``clean`` (N, H, W) already at hand: the same number, one map fewer (tested)."""
    return spearman(clean, pixel_map(explain(randomised, x, label)))
