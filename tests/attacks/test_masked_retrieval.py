"""The adaptive attack on retrieval (reliable_saliency.attacks.masked_retrieval), on the small CNN of
the ``trained`` fixture (tests/attacks/conftest.py): invariants with constant masks (all ones:
exactly PGD on the cross-entropy; all zeros without the prediction term: no step), the eps ball
and the valid range, labels and checkpoints, the objective going up, and clear errors."""

import pytest
import torch

from helpers.attacks import ALPHA, EPS, assert_in_ball
from reliable_saliency.attacks import masked_retrieval_attack, pgd
from reliable_saliency.core.inputs import SYNTHETIC
from reliable_saliency.explainers import get_explainer
from reliable_saliency.maps.postprocess import postprocess


def ones_map(model, x, target, *, create_graph=False, generator=None, batch_size=None):
    """A map of ones that still depends on x (so it is 'differentiable' in unrolled mode)."""
    return torch.ones_like(x) + 0 * x


def zeros_map(model, x, target, *, create_graph=False, generator=None, batch_size=None):
    return 0 * x


def percentile_mask(m):
    return postprocess(m, ["absolute", "channel_sum", "divide_by_percentile"])


@pytest.mark.parametrize("mode", ["unrolled", "detached"])
def test_all_ones_mask_is_exactly_pgd_on_the_cross_entropy(trained, mode):
    # x * 1 = x: the objective is (prediction_weight + 1) * CE(f(x_adv), c), whose gradient sign
    # is PGD's; so are the projection and the step size.
    model, x = trained
    with torch.no_grad():
        label = model(x).argmax(1)
    result = masked_retrieval_attack(model, x, ones_map, eps=EPS, steps=6, alpha=ALPHA, mode=mode)
    expected = pgd(model, x, label, EPS, steps=6, alpha=ALPHA, random_start=False)
    torch.testing.assert_close(result.x_adv, expected, rtol=0, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(result.fooled, model(expected).argmax(1) != label)


def test_zero_mask_without_the_prediction_term_takes_no_step(trained):
    # x * 0 = 0 whatever x is: the masked cross-entropy is constant, its gradient zero, sign(0) = 0
    model, x = trained
    result = masked_retrieval_attack(model, x, zeros_map, eps=EPS, steps=4, alpha=ALPHA, prediction_weight=0.0)
    torch.testing.assert_close(result.x_adv, SYNTHETIC.normalize(SYNTHETIC.denormalize(x)), rtol=0, atol=0)
    # the masked term is the cross-entropy of the all-zero input, the same at every step
    assert torch.allclose(result.masked_trace, result.masked_trace[:1].expand_as(result.masked_trace))
    torch.testing.assert_close(result.loss_trace, result.masked_trace)


def test_unrolled_relex_stays_in_budget_and_keeps_labels_and_checkpoints(trained):
    model, x = trained
    x = x[:4]
    explainer = get_explainer("relex", iterations=2, samples=2)
    with torch.no_grad():
        clean = model(x).argmax(1)
    result = masked_retrieval_attack(model, x, explainer, eps=EPS, steps=3, alpha=2 * ALPHA, checkpoints=(0, 1, 3),
                                     generator=torch.Generator().manual_seed(0))
    assert_in_ball(result.x_adv, x, EPS)
    assert torch.equal(result.label, clean)
    assert sorted(result.checkpoints) == [0, 1, 3]
    torch.testing.assert_close(result.checkpoints[3], result.x_adv, rtol=0, atol=0)
    torch.testing.assert_close(result.checkpoints[0], SYNTHETIC.normalize(SYNTHETIC.denormalize(x)), rtol=0, atol=0)
    for iterate in result.checkpoints.values():
        assert_in_ball(iterate, x, EPS)
    assert result.loss_trace.shape == result.masked_trace.shape == (3, 4)
    assert bool((result.loss_trace >= result.masked_trace - 1e-6).all())  # CE >= 0 added on top
    # an explicit label is the one attacked
    other = (clean + 1) % 4
    again = masked_retrieval_attack(model, x, explainer, eps=EPS, steps=1, label=other,
                                    generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.label, other)


def test_the_attack_raises_the_masked_cross_entropy(trained):
    model, x = trained
    explain = get_explainer("gradient")
    # the synthetic task is easy (a bright patch): a larger budget shows the effect clearly
    result = masked_retrieval_attack(model, x, explain, eps=64 / 255, steps=20, alpha=8 / 255,
                                     normalise=percentile_mask, prediction_weight=0.0, checkpoints=(0, 20))

    def masked_ce(x_in):
        with torch.no_grad():
            label = result.label
        mask = percentile_mask(explain(model, x_in, label)).unsqueeze(1)
        with torch.no_grad():
            return torch.nn.functional.cross_entropy(model(x_in * mask), label, reduction="none")

    before, after = masked_ce(result.checkpoints[0]), masked_ce(result.x_adv)
    assert bool((after > before + 1.0).all())
    assert float(result.masked_trace[-1].mean()) > float(result.masked_trace[0].mean())


def test_detached_mode_takes_any_explainer_and_the_model_is_untouched(trained):
    model, x = trained
    flags = [p.requires_grad for p in model.parameters()]
    grads = [p.grad for p in model.parameters()]
    mode = model.training
    result = masked_retrieval_attack(model, x[:2], get_explainer("relex", iterations=2, samples=1), eps=EPS, steps=2,
                                     mode="detached", generator=torch.Generator().manual_seed(1))
    assert_in_ball(result.x_adv, x[:2], EPS)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert [p.grad for p in model.parameters()] == grads
    assert model.training == mode


def test_bad_inputs(trained):
    model, x = trained
    ok = dict(eps=EPS, steps=1)
    with pytest.raises(ValueError, match="eps"):
        masked_retrieval_attack(model, x, ones_map, eps=-0.1, steps=1)
    with pytest.raises(ValueError, match="/255"):
        masked_retrieval_attack(model, x, ones_map, eps=8, steps=1)
    with pytest.raises(ValueError, match="steps"):
        masked_retrieval_attack(model, x, ones_map, eps=EPS, steps=0)
    with pytest.raises(ValueError, match="mode"):
        masked_retrieval_attack(model, x, ones_map, mode="bpda", **ok)
    with pytest.raises(ValueError, match="prediction_weight"):
        masked_retrieval_attack(model, x, ones_map, prediction_weight=-1.0, **ok)
    with pytest.raises(ValueError, match="checkpoints"):
        masked_retrieval_attack(model, x, ones_map, checkpoints=(2,), **ok)
    with pytest.raises(ValueError, match="label"):
        masked_retrieval_attack(model, x, ones_map, label=torch.zeros(3, dtype=torch.long), **ok)
    with pytest.raises(ValueError, match="label"):
        masked_retrieval_attack(model, x, ones_map, label=9, **ok)
    with pytest.raises(TypeError, match="explainer"):
        masked_retrieval_attack(model, x, "relex", **ok)
    # a map that does not depend on x cannot be unrolled
    with pytest.raises(ValueError, match="detached"):
        masked_retrieval_attack(model, x, lambda m, xx, t, **kw: torch.ones_like(xx), **ok)
    # raw gradients are not masks
    with pytest.raises(ValueError, match="normalise"):
        masked_retrieval_attack(model, x, get_explainer("gradient"), **ok)
    with pytest.raises(ValueError, match="shape"):
        masked_retrieval_attack(model, x, ones_map, normalise=lambda m: m[:, :, :4], **ok)
