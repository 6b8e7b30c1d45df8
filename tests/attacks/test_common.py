"""What all attacks on explanations share (reliable_saliency.attacks.common): the Softplus surrogate
leaves the caller's model unchanged, attacks run under no_grad, and inputs are checked with clear
errors."""

import copy

import pytest
import torch
from torch import nn

from helpers.attacks import SIZE, gradient_explainer, real_map
from reliable_saliency import attacks as ea
from reliable_saliency.core.inputs import SYNTHETIC
from reliable_saliency.models import to_softplus


def test_surrogate_paths_leave_callers_model_unchanged(trained, region):
    model, x = trained
    before = copy.deepcopy(model.state_dict())
    types = [type(m) for m in model.modules()]
    flags = [m.training for m in model.modules()]
    grads = [p.requires_grad for p in model.parameters()]
    ea.ghorbani_attack(model, x[:2], gradient_explainer, steps=2, surrogate_beta=10)
    ea.ghorbani_attack(model, x[:2], gradient_explainer, objective="targeted", region=region, steps=2,
                       surrogate_beta=10)
    ea.dombrowski_attack(model, x[:2], real_map(model, x[2:4]), gradient_explainer, steps=3, lr=1e-2)
    ea.frame_attack(model, x[:2], gradient_explainer, steps=2)
    assert [type(m) for m in model.modules()] == types
    assert not any(isinstance(m, nn.Softplus) for m in model.modules())
    assert [m.training for m in model.modules()] == flags
    assert [p.requires_grad for p in model.parameters()] == grads
    assert all(p.grad is None for p in model.parameters())
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_attacks_work_under_no_grad(trained):
    model, x = trained
    with torch.no_grad():
        result = ea.frame_attack(model, x[:2], gradient_explainer, steps=2)
        ghorbani = ea.ghorbani_attack(model, x[:2], gradient_explainer, steps=2, surrogate_beta=10)
    assert result.x_adv.shape == ghorbani.x_adv.shape == x[:2].shape


def test_bad_inputs_give_clear_errors(trained, region):
    model, x = trained
    x2 = x[:2]
    with pytest.raises(ValueError, match="eps must be >= 0"):
        ea.ghorbani_attack(model, x2, gradient_explainer, eps=-0.1, steps=1, surrogate_beta=10)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        ea.frame_attack(model, x2, gradient_explainer, eps=-0.1, steps=1)
    with pytest.raises(ValueError, match="unknown objective"):
        ea.ghorbani_attack(model, x2, gradient_explainer, objective="center", steps=1)
    with pytest.raises(ValueError, match=r"bool tensor of shape \(32, 32\)"):
        ea.ghorbani_attack(model, x2, gradient_explainer, objective="targeted", region=region[:4], steps=1)
    with pytest.raises(ValueError, match=r"bool tensor of shape \(32, 32\)"):
        ea.ghorbani_attack(model, x2, gradient_explainer, objective="targeted", region=region.float(),
                           steps=1)
    with pytest.raises(ValueError, match="needs region"):
        ea.ghorbani_attack(model, x2, gradient_explainer, objective="targeted", steps=1)
    with pytest.raises(ValueError, match="only used by objective='targeted'"):
        ea.ghorbani_attack(model, x2, gradient_explainer, region=region, steps=1)
    with pytest.raises(ValueError, match="k must be"):
        ea.ghorbani_attack(model, x2, gradient_explainer, k=0, steps=1)
    with pytest.raises(ValueError, match="no nn.ReLU"):
        ea.ghorbani_attack(to_softplus(model, 3.0), x2, gradient_explainer, steps=1, surrogate_beta=10)
    with pytest.raises(ValueError, match="target_map must have shape"):
        ea.dombrowski_attack(model, x2, torch.rand(SIZE, SIZE), gradient_explainer, steps=1)
    with pytest.raises(ValueError, match="both beta_start and beta_end"):
        ea.dombrowski_attack(model, x2, torch.rand(2, SIZE, SIZE), gradient_explainer, steps=1, beta_end=None)

    bare = copy.deepcopy(model)
    del bare.input_space
    with pytest.raises(ValueError, match="input_space"):
        ea.ghorbani_attack(bare, x2, gradient_explainer, steps=1, surrogate_beta=10)
    with pytest.raises(ValueError, match="input_space"):
        ea.frame_attack(bare, x2, gradient_explainer, steps=1)
    ea.ghorbani_attack(bare, x2, gradient_explainer, steps=1, surrogate_beta=10, input_space=SYNTHETIC)

    with pytest.raises(ValueError, match="valid range"):
        ea.ghorbani_attack(model, SYNTHETIC.denormalize(x2) * 20, gradient_explainer, steps=1)
    dropout = nn.Sequential(model, nn.Dropout()).train()
    dropout.input_space = SYNTHETIC
    with pytest.raises(ValueError, match="model.eval"):
        ea.ghorbani_attack(dropout, x2, gradient_explainer, steps=1, surrogate_beta=10)

    with pytest.raises(RuntimeError, match="beta_start"):
        ea.dombrowski_attack(model, x2, torch.rand(2, SIZE, SIZE), gradient_explainer, steps=1,
                             beta_start=None, beta_end=None)
    with pytest.raises(ValueError, match="frame_width"):
        ea.frame_attack(model, x2, gradient_explainer, frame_width=16, steps=1)

    def detached(model, x, target, **kwargs):
        return gradient_explainer(model, x, target).detach()

    with pytest.raises(ValueError, match="not differentiable"):
        ea.ghorbani_attack(model, x2, detached, steps=1, surrogate_beta=10)

    def per_image(model, x, target, **kwargs):
        return gradient_explainer(model, x, target, **kwargs).sum((1, 2, 3))

    with pytest.raises(ValueError, match="explainer must return"):
        ea.frame_attack(model, x2, per_image, steps=1)
