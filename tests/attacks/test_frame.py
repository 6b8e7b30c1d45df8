"""Paper E's frame attack (reliable_saliency.attacks.frame) on the small CNN of the ``trained``
fixture (tests/attacks/conftest.py)."""

import torch
import torch.nn.functional as F

from helpers.attacks import SIZE, assert_in_ball, gradient_explainer
from reliable_saliency import attacks as ea


def test_frame_attack_raises_similarity_to_frame(trained):
    model, x = trained
    result = ea.frame_attack(model, x, gradient_explainer, eps=4 / 255, steps=40)
    assert_in_ball(result.x_adv, x, 4 / 255)
    frame = ea.frame_target(SIZE, SIZE)
    assert int(frame.sum()) == SIZE * SIZE - (SIZE - 10) ** 2  # 5-pixel border on 32x32
    assert torch.equal(result.target_map, frame.expand(len(x), SIZE, SIZE))
    cos_clean = F.cosine_similarity(result.clean_map.flatten(1), frame.flatten().unsqueeze(0))
    cos_adv = F.cosine_similarity(result.adv_map.flatten(1), frame.flatten().unsqueeze(0))
    assert bool((cos_adv > cos_clean).all())
    assert float((cos_adv - cos_clean).mean()) > 0.03
    assert torch.equal(result.adv_map.flatten(1).amax(1), torch.ones(len(x)))  # max-normalised
