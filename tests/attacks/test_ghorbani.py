"""Ghorbani et al.'s attack (reliable_saliency.attacks.ghorbani) with every objective, on the small
CNN of the ``trained`` fixture (tests/attacks/conftest.py): in the eps ball, label kept, the real
model's maps reported, and each objective beating random sign noise."""

import pytest
import torch

from helpers.attacks import ALPHA, EPS, SIZE, STEPS, assert_in_ball, gradient_explainer, real_map
from reliable_saliency import attacks as ea
from reliable_saliency import maps
from reliable_saliency.core.inputs import SYNTHETIC
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


def test_random_sign_noise_is_one_shot_of_the_full_budget(trained):
    model, x = trained
    noisy, kept = ea.random_sign_noise(model, x, eps=EPS, generator=torch.Generator().manual_seed(3))
    x01, noisy01 = SYNTHETIC.denormalize(x), SYNTHETIC.denormalize(noisy)
    change = (noisy01 - x01).abs()
    # every pixel moves by the whole budget unless the [0, 1] range clips it
    inside = (x01 > EPS + 1e-4) & (x01 < 1 - EPS - 1e-4)
    torch.testing.assert_close(change[inside], torch.full_like(change[inside], EPS), atol=1e-5, rtol=0)
    assert float(noisy01.min()) >= -1e-6 and float(noisy01.max()) <= 1 + 1e-6
    with torch.no_grad():
        same = model(noisy).argmax(1) == model(x).argmax(1)
    assert torch.equal(same, kept)
    again, _ = ea.random_sign_noise(model, x, eps=EPS, generator=torch.Generator().manual_seed(3))
    assert torch.equal(again, noisy)
    with pytest.raises(ValueError, match="did you mean 8/255"):
        ea.random_sign_noise(model, x, eps=8)


def test_random_sign_noise_redraws_images_whose_label_flips():
    from torch import nn

    class FlipsOnDarkCorner(nn.Module):
        """Class 1 while the top-left pixel is bright; noise darkens it half the time."""

        input_space = SYNTHETIC

        def forward(self, x):
            corner = SYNTHETIC.denormalize(x)[:, 0, 0, 0]
            return torch.stack([0.5 - corner, corner - 0.5], 1)

    x01 = torch.full((16, 3, 4, 4), 0.5)
    x01[:, 0, 0, 0] = 0.52
    x = SYNTHETIC.normalize(x01)
    _, kept_once = ea.random_sign_noise(FlipsOnDarkCorner(), x, eps=0.1, tries=1,
                                        generator=torch.Generator().manual_seed(0))
    _, kept_many = ea.random_sign_noise(FlipsOnDarkCorner(), x, eps=0.1, tries=20,
                                        generator=torch.Generator().manual_seed(0))
    assert 0 < int(kept_once.sum()) < 16 and bool(kept_many.all())


def test_a_random_restart_starts_elsewhere_in_the_ball_and_keeps_the_rules(trained, ghorbani):
    model, x = trained
    restarts = [ea.ghorbani_attack(model, x, gradient_explainer, objective="topk", surrogate_beta=3, eps=EPS,
                                   alpha=ALPHA, steps=STEPS, random_start=True,
                                   generator=torch.Generator().manual_seed(seed)) for seed in (1, 2)]
    for result in restarts:
        assert_in_ball(result.x_adv, x, EPS)
        assert bool(result.label_kept.all())
        torch.testing.assert_close(result.adv_map, real_map(model, result.x_adv), atol=1e-6, rtol=1e-4)
        torch.testing.assert_close(result.trace[0], result.clean_value)  # the trace still starts at the clean map
    # a restart is a different attack: another start than the clean image's, and than the other restart's
    assert not torch.equal(restarts[0].x_adv, ghorbani["topk"].x_adv)
    assert not torch.equal(restarts[0].x_adv, restarts[1].x_adv)
