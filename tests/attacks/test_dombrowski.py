"""Dombrowski et al.'s attack (reliable_saliency.attacks.dombrowski) on the small CNN of the
``trained`` fixture (tests/attacks/conftest.py)."""

import torch

from helpers.attacks import SIZE, gradient_explainer, real_map
from reliable_saliency import attacks as ea
from reliable_saliency.core.inputs import SYNTHETIC


def test_dombrowski_moves_map_towards_target(trained):
    model, x = trained
    target = real_map(model, x).roll(1, dims=0)  # another image's map
    result = ea.dombrowski_attack(model, x, target, gradient_explainer, steps=50, lr=1e-2,
                                  map_weight=1e11 * (SIZE * SIZE / 224**2) ** 2)
    SYNTHETIC.check(result.x_adv, "x_adv")
    torch.testing.assert_close(result.adv_map, real_map(model, result.x_adv), atol=1e-6, rtol=1e-4)
    before = ((result.clean_map - target) ** 2).flatten(1).mean(1)
    after = ((result.adv_map - target) ** 2).flatten(1).mean(1)
    assert bool((after < before).all())
    assert float((after / before).mean()) < 0.85
    assert bool(result.label_kept.all())
    assert result.loss_trace.shape == (50, len(x))
