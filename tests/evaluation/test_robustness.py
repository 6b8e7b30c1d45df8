"""Max-sensitivity (reliable_saliency.evaluation.robustness) against captum and Quantus, with the
hard bound of a quadratic model; seeding, clamping to the input space and the l2 ball."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from helpers import gen
from helpers.evaluation import gradient_explainer
from reliable_saliency import evaluation
from reliable_saliency.core.inputs import SYNTHETIC


class Quadratic(nn.Module):
    """logit_c(x) = 0.5 * sum(a_c * x^2) + sum(b_c * x): input gradient a_c * x + b_c (exact)."""

    def __init__(self, a, b):
        super().__init__()
        self.a, self.b = nn.Parameter(a), nn.Parameter(b)  # (K, C, H, W)

    def forward(self, x):
        x = x.unsqueeze(1)
        return (0.5 * self.a * x * x + self.b * x).flatten(2).sum(2)


def quadratic_model(seed=22, classes=3):
    g = gen(seed)
    a = torch.rand(classes, 3, 8, 8, generator=g) + 0.5
    b = torch.randn(classes, 3, 8, 8, generator=g)
    return Quadratic(a, b).eval()


def captum_explain(model):
    def explain(inputs, target):  # captum passes and expects tuples, and runs under no_grad
        inputs = inputs[0] if isinstance(inputs, tuple) else inputs
        with torch.enable_grad():
            return (gradient_explainer(model, inputs, target),)

    return explain


def quantus_explain(model, inputs, targets, **kwargs):
    return gradient_explainer(model, torch.as_tensor(inputs), torch.as_tensor(targets)).numpy()


def test_max_sensitivity_zero_for_constant_gradient():
    from captum.metrics import sensitivity_max

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)).eval()
    x, target = torch.randn(3, 3, 8, 8, generator=gen(23)), torch.tensor([0, 1, 3])
    ours = evaluation.max_sensitivity(gradient_explainer, model, x, target, radius=0.3, generator=gen(0))
    assert torch.equal(ours, torch.zeros(3))
    ref = sensitivity_max(captum_explain(model), x, target=target, perturb_radius=0.3)
    assert torch.equal(ref, torch.zeros(3))
    import quantus

    np.random.seed(0)
    ref = quantus.MaxSensitivity(nr_samples=5, lower_bound=0.3, disable_warnings=True)(
        model=model, x_batch=x.numpy(), y_batch=target.numpy(), a_batch=None, explain_func=quantus_explain,
        device="cpu",
    )
    assert np.array_equal(ref, np.zeros(3))


def test_max_sensitivity_matches_captum_and_quantus_in_distribution():
    import quantus
    from captum.metrics import sensitivity_max

    model = quadratic_model()
    x, target = torch.randn(2, 3, 8, 8, generator=gen(24)), torch.tensor([0, 2])
    radius, samples, seeds = 0.2, 10, 8
    ours = torch.stack([
        evaluation.max_sensitivity(
            gradient_explainer, model, x, target, radius=radius, samples=samples, generator=gen(s)
        )
        for s in range(seeds)
    ])
    captum_runs, quantus_runs = [], []
    metric = quantus.MaxSensitivity(nr_samples=samples, lower_bound=radius, disable_warnings=True)
    for s in range(seeds):
        torch.manual_seed(s)
        captum_runs.append(sensitivity_max(captum_explain(model), x, target=target, perturb_radius=radius,
                                           n_perturb_samples=samples))
        np.random.seed(s)
        quantus_runs.append(metric(model=model, x_batch=x.numpy(), y_batch=target.numpy(), a_batch=None,
                                   explain_func=quantus_explain, device="cpu"))
    captum_runs = torch.stack(captum_runs)
    quantus_runs = torch.tensor(np.array(quantus_runs), dtype=torch.float32)
    # E(x + d) - E(x) = a_y * d exactly: hard bound ||a_y||_2 * radius / ||E(x)||
    grad_norm = gradient_explainer(model, x, target).flatten(1).norm(dim=1)
    bound = model.a[target].flatten(1).norm(dim=1) * radius / grad_norm
    for runs in (ours, captum_runs, quantus_runs):
        assert (runs <= bound).all() and (runs > 0.4 * bound).all()
    # ||a * d|| concentrates (192 terms): means over seeds agree within a few percent
    torch.testing.assert_close(ours.mean(0), captum_runs.mean(0), rtol=0.03, atol=0)
    torch.testing.assert_close(ours.mean(0), quantus_runs.mean(0), rtol=0.03, atol=0)
    # and sit just above the root-mean-square value radius * ||a|| / sqrt(3) / ||E(x)||
    rms = bound / np.sqrt(3)
    assert ((ours.mean(0) > rms) & (ours.mean(0) < 1.2 * rms)).all()


def test_max_sensitivity_seeded_clamped_and_l2():
    model = quadratic_model()
    model.input_space = SYNTHETIC  # valid range [-2, 2]
    x = SYNTHETIC.normalize(torch.rand(2, 3, 8, 8, generator=gen(25)))
    x[:, :, 0, 0] = 2.0  # on the range boundary: unclamped noise would leave it
    target = torch.tensor([1, 2])
    # gradient_explainer checks its inputs against model.input_space: passes only if clamped
    first = evaluation.max_sensitivity(gradient_explainer, model, x, target, radius=0.1, generator=gen(5))
    again = evaluation.max_sensitivity(
        gradient_explainer, model, x, target, radius=0.1, generator=gen(5), batch_size=4
    )
    assert torch.equal(first, again)
    per_channel = SYNTHETIC.eps(8 / 255, x)
    sens = evaluation.max_sensitivity(gradient_explainer, model, x, target, radius=per_channel, generator=gen(5))
    assert sens.shape == (2,) and (sens > 0).all()
    # identity-gradient model: E(x + d) - E(x) = d, so the l2 ball bounds the numerator by radius
    ident = Quadratic(torch.ones(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)).eval()
    sens = evaluation.max_sensitivity(
        gradient_explainer, ident, x, 0, radius=0.5, norm="l2", samples=20, generator=gen(6)
    )
    top = (sens * x.flatten(1).norm(dim=1)).tolist()
    assert all(0.45 < v <= 0.5 + 1e-6 for v in top)
    with pytest.raises(ValueError, match="norm"):
        evaluation.max_sensitivity(gradient_explainer, model, x, target, radius=0.1, norm="l1")
    with pytest.raises(ValueError, match="radius"):
        evaluation.max_sensitivity(gradient_explainer, model, x, target, radius=-0.1)


def test_saliency_sensitivity_is_map_change_per_input_change():
    x = torch.rand(3, 3, 4, 4, generator=gen(40))
    step = torch.zeros_like(x)
    step[0, 0, 0, 0], step[1] = 0.5, 0.01  # image 2 is not moved
    a, b = torch.rand(3, 1, 4, 4, generator=gen(41)), torch.rand(3, 1, 4, 4, generator=gen(42))
    got = evaluation.saliency_sensitivity(a, b, x, x + step)
    torch.testing.assert_close(got[:2], (a - b)[:2].flatten(1).norm(dim=1) / step[:2].flatten(1).norm(dim=1))
    assert torch.isnan(got[2])
    with pytest.raises(ValueError, match="must"):
        evaluation.saliency_sensitivity(a, b[:2], x, x)
