"""Attacks on DANCE (reliable_saliency.attacks.decoy_attack): decoys recomputed along the attack,
the blurred control explainer, the Ghorbani measure of any map, and the strength report."""

import pytest
import torch

from helpers.attacks import SIZE
from reliable_saliency.attacks import ghorbani_attack
from reliable_saliency.attacks.common import channel_abs_sum
from reliable_saliency.attacks.decoy_attack import RecomputedDecoys, blurred_explainer, objective_value, strength
from reliable_saliency.explainers import dance, get_explainer
from reliable_saliency.explainers.decoys import make_decoys
from reliable_saliency.maps import topk_intersection
from reliable_saliency.maps.smoothness import blurred_map

OPTIONS = dict(layer="3", patch=4, stride=8, eps=0.2, tau=0.1, steps=3)


def test_recomputed_decoys_follow_the_images(trained):
    model, x = trained
    x = x[:3]
    label = model(x).argmax(1)
    clean = make_decoys(model, x, **OPTIONS)
    explain = RecomputedDecoys(model, clean, every=2, **OPTIONS)
    first = explain(model, x, label)  # the clean image: the given decoys
    assert torch.equal(first, dance(model, x, label, decoys=clean)) and explain.recomputed == 0
    moved = (x + 0.05).clamp(-3, 3)
    explain(model, moved, label)  # call 2: not yet
    assert explain.recomputed == 0
    third = explain(model, moved, label)  # call 3: every 2 -> solved again at the moved images
    assert explain.recomputed == 1
    assert torch.allclose(third, dance(model, moved, label, decoys=make_decoys(model, moved, **OPTIONS)))
    graph = explain(model, moved.clone().requires_grad_(True), label, create_graph=True)
    assert graph.requires_grad and explain.recomputed == 1  # gradient calls never solve


def test_attack_through_recomputed_decoys_runs_and_reports(trained):
    model, x = trained
    x = x[:2]
    explain = RecomputedDecoys(model, make_decoys(model, x, **OPTIONS), every=2, **OPTIONS)
    result = ghorbani_attack(model, x, explain, objective="topk", eps=8 / 255, alpha=2 / 255, steps=4, k=40,
                             surrogate_beta=3)
    assert explain.recomputed == 2  # steps 2 and 4
    s = strength(result, result.value)
    assert s["shortfall"] == 0 and 0 <= s["plateau"] <= 1
    worse = strength(result, result.value + 0.5 * (result.clean_value - result.value))
    assert worse["shortfall"] == pytest.approx(0.5, abs=1e-6)


def test_blurred_explainer_and_objective_value(trained):
    model, x = trained
    x = x[:4]
    label = model(x).argmax(1)
    gradient = get_explainer("gradient")
    m = blurred_explainer(gradient, 1.0)(model, x, label)
    assert torch.allclose(m, blurred_map(gradient(model, x, label), 1.0))
    a = channel_abs_sum(gradient, model, x, label, create_graph=False, generator=None, batch_size=None)
    b = a.flip(-1)
    assert torch.allclose(objective_value("topk", a, b, k=30), topk_intersection(a, b, 30))
    region = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    region[-8:, -8:] = True
    mass = objective_value("targeted", a, b, region=region)
    assert torch.allclose(mass, (b / b.flatten(1).sum(1).view(-1, 1, 1))[:, region].sum(1))
    assert torch.allclose(objective_value("mass_center", a, a), torch.zeros(4), atol=1e-5)


def test_recomputed_decoys_can_follow_the_calls_with_a_graph(trained):
    """on_graph=True re-solves at every every-th create_graph call (the first keeps the clean decoys)
    and never on plain calls; a wrong flag is refused."""
    model, x = trained
    x = x[:2]
    label = model(x).argmax(1)
    clean = make_decoys(model, x, **OPTIONS)
    explain = RecomputedDecoys(model, clean, every=2, on_graph=True, **OPTIONS)
    for _ in range(3):
        explain(model, x, label)
    assert explain.recomputed == 0
    for _ in range(5):
        explain(model, x.clone().requires_grad_(True), label, create_graph=True)
    assert explain.recomputed == 2  # graph calls 3 and 5
    with pytest.raises(ValueError, match="on_graph"):
        RecomputedDecoys(model, clean, every=2, on_graph="yes", **OPTIONS)
