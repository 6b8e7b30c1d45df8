"""Model randomisation (reliable_saliency.evaluation.sanity): seeded copies that leave the caller's
model bit-identical, cascading randomisation, and the similarity of maps before and after."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers import gen
from helpers.evaluation import gradient_explainer, tiny_cnn
from reliable_saliency import evaluation


def test_randomize_parameters_and_model_randomisation():
    model = tiny_cnn(5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng_state = torch.get_rng_state()
    copy_a = evaluation.randomize_parameters(model, gen(7))
    copy_b = evaluation.randomize_parameters(model, gen(7))
    assert torch.equal(torch.get_rng_state(), rng_state)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])  # caller's model bit-identical
        assert torch.equal(copy_a.state_dict()[key], copy_b.state_dict()[key])  # seeded
        assert not torch.equal(copy_a.state_dict()[key], value)
    # cascading: only the named layer changes
    top_only = evaluation.randomize_parameters(model, gen(8), modules=["3"])
    assert torch.equal(top_only[0].weight, model[0].weight)
    assert not torch.equal(top_only[3].weight, model[3].weight)

    x, target = torch.randn(3, 3, 8, 8, generator=gen(26)), torch.tensor([0, 1, 2])
    same = evaluation.model_randomisation(gradient_explainer, model, model, x, target)
    torch.testing.assert_close(same, torch.ones(3))
    randomised = evaluation.model_randomisation(gradient_explainer, model, copy_a, x, target)
    assert randomised.shape == (3,) and (randomised < 0.99).all()

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))

    with pytest.raises(ValueError, match="scale"):
        evaluation.randomize_parameters(Scaled(), gen(0))
    with pytest.raises(ValueError, match="unknown module"):
        evaluation.randomize_parameters(model, gen(0), modules=["head"])
