"""Ghorbani et al.'s attack (reliable_saliency.attacks.ghorbani) with every objective, on the small
CNN of the ``trained`` fixture (tests/attacks/conftest.py): in the eps ball, label kept, the real
model's maps reported, and each objective beating random sign noise."""

import pytest
import torch

from helpers.attacks import ALPHA, EPS, SIZE, STEPS, assert_in_ball, gradient_explainer, real_map
from reliable_saliency import attacks as ea
from reliable_saliency import maps
from reliable_saliency.models import to_softplus


@pytest.fixture(scope="module")
def ghorbani(trained, region):
    model, x = trained
    common = dict(eps=EPS, alpha=ALPHA, steps=STEPS)
    return {
        "topk": ea.ghorbani_attack(model, x, gradient_explainer, objective="topk", surrogate_beta=3,
                                   **common),
        "mass_center": ea.ghorbani_attack(model, x, gradient_explainer, objective="mass_center",
                                          surrogate_beta=3, **common),
        "targeted": ea.ghorbani_attack(model, x, gradient_explainer, objective="targeted", region=region,
                                       surrogate_beta=3, **common),
        "random": ea.ghorbani_attack(model, x, gradient_explainer, objective="random",
                                     generator=torch.Generator().manual_seed(1), **common),
    }


@pytest.mark.parametrize("objective", ["topk", "mass_center", "targeted", "random"])
def test_ghorbani_stays_in_ball_keeps_label_and_reports_real_maps(trained, ghorbani, objective):
    model, x = trained
    result = ghorbani[objective]
    assert_in_ball(result.x_adv, x, EPS)
    with torch.no_grad():
        clean_label = model(x).argmax(1)
        assert torch.equal(model(result.x_adv).argmax(1), clean_label)
    assert torch.equal(result.label, clean_label) and bool(result.label_kept.all())
    # maps are the real (ReLU) model's, normalised to sum 1, and the reported values match them
    torch.testing.assert_close(result.clean_map, real_map(model, x))
    torch.testing.assert_close(result.adv_map, real_map(model, result.x_adv), atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(result.adv_map.flatten(1).sum(1), torch.ones(len(x)))
    assert result.trace.shape == (STEPS + 1, len(x))
    torch.testing.assert_close(result.trace[0], result.clean_value)


def test_ghorbani_topk_beats_random_sign_noise(ghorbani):
    topk, random = ghorbani["topk"], ghorbani["random"]
    assert topk.measure == random.measure == "topk_intersection"
    k = round(SIZE * SIZE * 1000 / 224**2)
    torch.testing.assert_close(topk.value, maps.topk_intersection(topk.adv_map, topk.clean_map, k))
    assert bool((topk.value < 1).all()) and bool(topk.success.all())
    assert float(topk.value.mean()) < float(random.value.mean()) - 0.05
    assert float(topk.value.mean()) < 0.75


def test_ghorbani_mass_center_moves_the_center_more_than_random(ghorbani):
    mass, random = ghorbani["mass_center"], ghorbani["random"]
    torch.testing.assert_close(mass.value, maps.center_of_mass_shift(mass.adv_map, mass.clean_map))
    random_shift = maps.center_of_mass_shift(random.adv_map, random.clean_map)
    assert float(mass.value.mean()) > 1.0
    assert float(mass.value.mean()) > 3 * float(random_shift.mean())


def test_ghorbani_targeted_raises_mass_in_region(ghorbani, region):
    targeted, random = ghorbani["targeted"], ghorbani["random"]
    mass = (targeted.adv_map * region).flatten(1).sum(1)
    torch.testing.assert_close(targeted.value, mass)
    assert float(targeted.success.float().mean()) >= 0.75
    assert float(mass.mean()) > 1.5 * float(targeted.clean_value.mean())
    assert float(mass.mean()) > 1.5 * float((random.adv_map * region).flatten(1).sum(1).mean())


def test_ghorbani_on_a_smooth_model_without_surrogate(trained):
    model, x = trained
    smooth = to_softplus(model, 3.0)
    result = ea.ghorbani_attack(smooth, x[:4], gradient_explainer, steps=10, alpha=ALPHA)
    assert_in_ball(result.x_adv, x[:4], EPS)
    assert bool(result.label_kept.all()) and float(result.value.mean()) < 1
    torch.testing.assert_close(result.adv_map, real_map(smooth, result.x_adv), atol=1e-6, rtol=1e-4)


def test_relu_model_without_surrogate_is_refused(trained):
    model, x = trained
    with pytest.raises(RuntimeError, match="surrogate_beta"):
        ea.ghorbani_attack(model, x[:2], gradient_explainer, steps=2)
