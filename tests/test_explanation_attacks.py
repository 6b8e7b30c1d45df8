"""Tests of explanation_attacks: Ghorbani, Dombrowski and paper E's frame attack on a small CNN
trained for a few seconds on a synthetic 4-class task (a bright 5x5 patch in one quadrant)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reliable_saliency import attacks as ea
from reliable_saliency import evaluation, maps
from reliable_saliency.core.inputs import SYNTHETIC
from reliable_saliency.models import to_softplus

EPS = 8 / 255
STEPS = 40
ALPHA = 1 / 255
SIZE = 32


def gradient_explainer(model, x, target, *, create_graph=False, generator=None, batch_size=None):
    """Plain gradient of the target logit (local stand-in for explainers.py)."""
    with torch.enable_grad():
        xg = x if x.requires_grad else x.detach().requires_grad_(True)
        score = model(xg).gather(1, target.view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(score, xg, create_graph=create_graph)
    return grad


def _synthetic(n: int, g: torch.Generator):
    x = 0.35 + 0.3 * torch.rand(n, 3, SIZE, SIZE, generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    top = (torch.randint(2, 11, (n,), generator=g) + 16 * (y // 2)).view(-1, 1, 1)
    left = (torch.randint(2, 11, (n,), generator=g) + 16 * (y % 2)).view(-1, 1, 1)
    rows, cols = torch.arange(SIZE).view(1, -1, 1), torch.arange(SIZE).view(1, 1, -1)
    inside = (rows >= top) & (rows < top + 5) & (cols >= left) & (cols < left + 5)
    colour = 0.6 + 0.4 * torch.rand(n, 3, 1, 1, generator=g)
    return torch.where(inside.unsqueeze(1), colour, x), y


@pytest.fixture(scope="module")
def trained():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    x_train, y_train = _synthetic(2048, g)
    x_test, y_test = _synthetic(64, g)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, 4),
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(100):
        idx = torch.randint(0, len(x_train), (64,), generator=g)
        loss = F.cross_entropy(model(SYNTHETIC.normalize(x_train[idx])), y_train[idx])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.zero_grad(set_to_none=True)
    model.eval()
    model.input_space = SYNTHETIC
    with torch.no_grad():
        accuracy = (model(SYNTHETIC.normalize(x_test)).argmax(1) == y_test).float().mean().item()
    assert accuracy > 0.95, f"test model too weak ({accuracy:.2f}); the attack tests need a good model"
    return model, SYNTHETIC.normalize(x_test[:8])


@pytest.fixture(scope="module")
def region():
    r = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    r[-4:, -4:] = True
    return r


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


def _real_map(model, x):
    with torch.no_grad():
        label = model(x).argmax(1)
    m = gradient_explainer(model, x, label).abs().sum(1)
    return m / m.flatten(1).sum(1).view(-1, 1, 1)


def _assert_in_ball(x_adv, x, eps):
    x01, adv01 = SYNTHETIC.denormalize(x), SYNTHETIC.denormalize(x_adv)
    assert x_adv.shape == x.shape
    assert float((adv01 - x01).abs().max()) <= eps + 1e-5
    assert float(adv01.min()) >= -1e-5 and float(adv01.max()) <= 1 + 1e-5


# ----------------------------------------------------------------------------- Ghorbani


@pytest.mark.parametrize("objective", ["topk", "mass_center", "targeted", "random"])
def test_ghorbani_stays_in_ball_keeps_label_and_reports_real_maps(trained, ghorbani, objective):
    model, x = trained
    result = ghorbani[objective]
    _assert_in_ball(result.x_adv, x, EPS)
    with torch.no_grad():
        clean_label = model(x).argmax(1)
        assert torch.equal(model(result.x_adv).argmax(1), clean_label)
    assert torch.equal(result.label, clean_label) and bool(result.label_kept.all())
    # maps are the real (ReLU) model's, normalised to sum 1, and the reported values match them
    torch.testing.assert_close(result.clean_map, _real_map(model, x))
    torch.testing.assert_close(result.adv_map, _real_map(model, result.x_adv), atol=1e-6, rtol=1e-4)
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
    _assert_in_ball(result.x_adv, x[:4], EPS)
    assert bool(result.label_kept.all()) and float(result.value.mean()) < 1
    torch.testing.assert_close(result.adv_map, _real_map(smooth, result.x_adv), atol=1e-6, rtol=1e-4)


def test_relu_model_without_surrogate_is_refused(trained):
    model, x = trained
    with pytest.raises(RuntimeError, match="surrogate_beta"):
        ea.ghorbani_attack(model, x[:2], gradient_explainer, steps=2)


# ----------------------------------------------------------------------------- Dombrowski, frame


def test_dombrowski_moves_map_towards_target(trained):
    model, x = trained
    target = _real_map(model, x).roll(1, dims=0)  # another image's map
    result = ea.dombrowski_attack(model, x, target, gradient_explainer, steps=50, lr=1e-2,
                                  map_weight=1e11 * (SIZE * SIZE / 224**2) ** 2)
    SYNTHETIC.check(result.x_adv, "x_adv")
    torch.testing.assert_close(result.adv_map, _real_map(model, result.x_adv), atol=1e-6, rtol=1e-4)
    before = ((result.clean_map - target) ** 2).flatten(1).mean(1)
    after = ((result.adv_map - target) ** 2).flatten(1).mean(1)
    assert bool((after < before).all())
    assert float((after / before).mean()) < 0.85
    assert bool(result.label_kept.all())
    assert result.loss_trace.shape == (50, len(x))


def test_frame_attack_raises_similarity_to_frame(trained):
    model, x = trained
    result = ea.frame_attack(model, x, gradient_explainer, eps=4 / 255, steps=40)
    _assert_in_ball(result.x_adv, x, 4 / 255)
    frame = ea.frame_target(SIZE, SIZE)
    assert int(frame.sum()) == SIZE * SIZE - (SIZE - 10) ** 2  # 5-pixel border on 32x32
    assert torch.equal(result.target_map, frame.expand(len(x), SIZE, SIZE))
    cos_clean = F.cosine_similarity(result.clean_map.flatten(1), frame.flatten().unsqueeze(0))
    cos_adv = F.cosine_similarity(result.adv_map.flatten(1), frame.flatten().unsqueeze(0))
    assert bool((cos_adv > cos_clean).all())
    assert float((cos_adv - cos_clean).mean()) > 0.03
    assert torch.equal(result.adv_map.flatten(1).amax(1), torch.ones(len(x)))  # max-normalised


def test_surrogate_paths_leave_callers_model_unchanged(trained, region):
    model, x = trained
    before = copy.deepcopy(model.state_dict())
    types = [type(m) for m in model.modules()]
    flags = [m.training for m in model.modules()]
    grads = [p.requires_grad for p in model.parameters()]
    ea.ghorbani_attack(model, x[:2], gradient_explainer, steps=2, surrogate_beta=10)
    ea.ghorbani_attack(model, x[:2], gradient_explainer, objective="targeted", region=region, steps=2,
                       surrogate_beta=10)
    ea.dombrowski_attack(model, x[:2], _real_map(model, x[2:4]), gradient_explainer, steps=3, lr=1e-2)
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


# ----------------------------------------------------------------------------- bad inputs


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
