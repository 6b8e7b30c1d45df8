"""Tests of reliable_saliency.metrics against independent references (scipy, scikit-image,
captum, Quantus) and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage, stats
from skimage.metrics import structural_similarity
from torch import nn

from reliable_saliency import evaluation, maps
from reliable_saliency.core.inputs import SYNTHETIC, check_images, check_targets


def gradient_explainer(model, x, target, *, create_graph=False, generator=None, batch_size=None):
    """Plain gradient of the selected logits (the explainers module is tested separately)."""
    target = check_targets(target, x.shape[0], model(x[:1]).shape[1], x.device)
    check_images(x, getattr(model, "input_space", None))
    x = x.detach().requires_grad_(True)
    selected = model(x).gather(1, target.unsqueeze(1)).sum()
    (grad,) = torch.autograd.grad(selected, x, create_graph=create_graph)
    return grad


def tiny_cnn(seed=0, channels=3, size=8, classes=5):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1), nn.Softplus(), nn.Flatten(), nn.Linear(4 * size * size, classes)
    )
    return model.eval()


class Quadratic(nn.Module):
    """logit_c(x) = 0.5 * sum(a_c * x^2) + sum(b_c * x): input gradient a_c * x + b_c (exact)."""

    def __init__(self, a, b):
        super().__init__()
        self.a, self.b = nn.Parameter(a), nn.Parameter(b)  # (K, C, H, W)

    def forward(self, x):
        x = x.unsqueeze(1)
        return (0.5 * self.a * x * x + self.b * x).flatten(2).sum(2)


class KeptWeight(nn.Module):
    """For inputs whose channel 0 is 1 (kept) or 0 (removed): p(class 0) = sum of w over kept pixels."""

    def __init__(self, w):
        super().__init__()
        self.register_buffer("w", w)

    def forward(self, x):
        p = (x[:, 0] * self.w).flatten(1).sum(1).clamp(1e-12, 1 - 1e-12)
        return torch.stack([p.log(), (1 - p).log()], 1)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------- similarity


def test_spearman_matches_scipy_with_ties():
    g = gen(1)
    a = torch.randint(0, 5, (4, 6, 6), generator=g).double()  # many ties
    b = torch.randint(0, 4, (4, 6, 6), generator=g).double() + 0.1 * a
    ours = maps.spearman(a, b)
    ref = [stats.spearmanr(a[i].flatten(), b[i].flatten()).statistic for i in range(4)]
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-12)
    ours32 = maps.spearman(a.float(), b.float())
    assert ours32.dtype == torch.float32
    np.testing.assert_allclose(ours32.numpy(), ref, atol=1e-5)


def test_pearson_cosine_mse_match_references():
    g = gen(2)
    a = torch.randn(3, 2, 5, 5, generator=g, dtype=torch.float64)
    b = a + torch.randn(3, 2, 5, 5, generator=g, dtype=torch.float64)
    fa, fb = a.flatten(1).numpy(), b.flatten(1).numpy()
    ref = [stats.pearsonr(fa[i], fb[i]).statistic for i in range(3)]
    np.testing.assert_allclose(maps.pearson(a, b).numpy(), ref, atol=1e-12)
    from scipy.spatial.distance import cosine as cosine_distance

    ref = [1 - cosine_distance(fa[i], fb[i]) for i in range(3)]
    np.testing.assert_allclose(maps.cosine(a, b).numpy(), ref, atol=1e-12)
    np.testing.assert_allclose(maps.mse(a, b).numpy(), ((fa - fb) ** 2).mean(1), atol=1e-12)
    # identical maps: exactly 1 (paper E's quirk gave (n-1)/n)
    assert torch.equal(maps.pearson(a, a), torch.ones(3, dtype=torch.float64))


def test_undefined_correlations_are_nan():
    a = torch.randn(2, 4, 4, generator=gen(3))
    b = a.clone()
    b[0] = 0.7  # constant map
    assert torch.isnan(maps.pearson(a, b)[0]) and not torch.isnan(maps.pearson(a, b)[1])
    assert torch.isnan(maps.spearman(a, b)[0]) and maps.spearman(a, b)[1] == 1
    b[0] = 0.0
    assert torch.isnan(maps.cosine(a, b)[0])


def test_topk_intersection_hand_cases_and_ties():
    a = torch.tensor([[5.0, 4, 3, 2, 1, 0]])
    assert maps.topk_intersection(a, a, 3).item() == 1.0
    assert maps.topk_intersection(a, a.flip(1), 3).item() == 0.0
    assert maps.topk_intersection(a, a.flip(1), 4).item() == 0.5  # {0,1,2,3} & {5,4,3,2}
    # ties: lower index first -> Top_2([1,1,1,0]) = {0, 1}; Top_2([0,1,1,0]) = {1, 2}
    tied = torch.tensor([[1.0, 1, 1, 0]])
    assert maps.topk_intersection(tied, torch.tensor([[0.0, 1, 1, 0]]), 2).item() == 0.5
    # random maps against numpy's stable argsort
    g = gen(4)
    x, y = torch.randn(5, 7, 7, generator=g), torch.randn(5, 7, 7, generator=g)
    ref = [
        len(set(np.argsort(-x[i].flatten().numpy(), kind="stable")[:10])
            & set(np.argsort(-y[i].flatten().numpy(), kind="stable")[:10])) / 10
        for i in range(5)
    ]
    np.testing.assert_allclose(maps.topk_intersection(x, y, 10).numpy(), ref)


@pytest.mark.parametrize("k", [0, 17, 2.0, True])
def test_topk_rejects_bad_k(k):
    with pytest.raises(ValueError, match="k must be"):
        maps.topk_intersection(torch.rand(2, 4, 4), torch.rand(2, 4, 4), k)


def test_pair_metrics_validate_inputs():
    with pytest.raises(ValueError, match="same shape"):
        maps.spearman(torch.rand(2, 4, 4), torch.rand(2, 4, 5))
    bad = torch.rand(2, 4, 4)
    bad[1, 2, 2] = float("nan")
    for fn in (maps.pearson, maps.spearman, maps.cosine, maps.mse, maps.ssim):
        with pytest.raises(ValueError, match="NaN"):
            fn(torch.rand(2, 4, 4), bad)
    with pytest.raises(ValueError, match="batch axis"):
        maps.mse(torch.rand(5), torch.rand(5))


# ----------------------------------------------------------------------------------------- SSIM


def smooth_maps(seed, n=3, size=16):
    g = gen(seed)
    m = torch.rand(n, size, size, generator=g, dtype=torch.float64)
    return torch.from_numpy(ndimage.gaussian_filter(m.numpy(), (0, 1, 1)))


@pytest.mark.parametrize("data_range", [None, 1.0])
def test_ssim_matches_skimage_11x11(data_range):
    a = smooth_maps(5)
    b = a + 0.05 * torch.randn(a.shape, generator=gen(6), dtype=torch.float64)
    ours = maps.ssim(a, b, data_range=data_range)
    ref = []
    for i in range(a.shape[0]):
        both = torch.cat([a[i], b[i]])
        r = data_range if data_range is not None else float(both.max() - both.min())
        ref.append(structural_similarity(a[i].numpy(), b[i].numpy(), gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False, data_range=r, win_size=11))
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-10)


def test_ssim_7x7_matches_skimage_and_scipy_reference():
    a, b = smooth_maps(7), smooth_maps(8)
    # skimage truncates its Gaussian at 3.5 sigma: sigma 0.8 gives its 7-tap window
    ref = [structural_similarity(a[i].numpy(), b[i].numpy(), gaussian_weights=True, sigma=0.8,
                                 use_sample_covariance=False, data_range=1.0, win_size=7) for i in range(3)]
    ours = maps.ssim(a, b, window_size=7, sigma=0.8, data_range=1.0)
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-10)

    # paper E's 7x7 window with sigma 1.5: SSIM formula written out on scipy's Gaussian filter
    def filt(t):
        return ndimage.gaussian_filter(t, 1.5, truncate=2.0, mode="reflect")[3:-3, 3:-3]

    ref = []
    for i in range(3):
        x, y = a[i].numpy(), b[i].numpy()
        ux, uy = filt(x), filt(y)
        vx, vy, vxy = filt(x * x) - ux**2, filt(y * y) - uy**2, filt(x * y) - ux * uy
        c1, c2 = 0.01**2, 0.03**2
        ref.append((((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))).mean())
    ours = maps.ssim(a, b, window_size=7, sigma=1.5, data_range=1.0)
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-10)
    np.testing.assert_allclose(maps.ssim(a, a, window_size=7).numpy(), 1.0, atol=1e-12)


def test_ssim_rejects_bad_windows_and_channel_maps():
    with pytest.raises(ValueError, match="odd"):
        maps.ssim(torch.rand(1, 8, 8), torch.rand(1, 8, 8), window_size=6)
    with pytest.raises(ValueError, match="larger than"):
        maps.ssim(torch.rand(1, 8, 8), torch.rand(1, 8, 8), window_size=11)
    with pytest.raises(ValueError, match="channel_sum"):
        maps.ssim(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))


# --------------------------------------------------------------------------------- localisation


def test_center_of_mass_hand_cases_and_scipy():
    m = torch.zeros(3, 6, 8)
    m[0, 2, 5] = 3.0
    m[1, 0, 0] = m[1, 2, 4] = 1.0
    m[2] = torch.rand(6, 8, generator=gen(9))
    com = maps.center_of_mass(m)
    assert com[0].tolist() == [2.0, 5.0] and com[1].tolist() == [1.0, 2.0]
    np.testing.assert_allclose(com[2].numpy(), ndimage.center_of_mass(m[2].numpy()), atol=1e-5)
    shift = maps.center_of_mass_shift(m[:2], m[1:])
    np.testing.assert_allclose(shift.numpy(), [np.hypot(1, 3), np.hypot(*(com[2] - com[1]).numpy())], atol=1e-5)
    assert torch.isnan(maps.center_of_mass(torch.zeros(1, 4, 4))).all()
    with pytest.raises(ValueError, match="non-negative"):
        maps.center_of_mass(-m)


def test_pointing_game_hand_cases():
    m = torch.zeros(3, 6, 6)
    m[0, 1, 1] = 1  # inside (0, 0, 2, 2)
    m[1, 2, 2] = 1  # on the exclusive end -> outside
    m[2] = 1.0  # constant: first maximum (0, 0)
    boxes = torch.tensor([[0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 1, 1]])
    assert maps.pointing_game(m, boxes).tolist() == [True, False, True]
    with pytest.raises(ValueError, match="box 1"):
        maps.pointing_game(m, torch.tensor([[0, 0, 2, 2], [3, 0, 3, 2], [0, 0, 1, 1]]))
    with pytest.raises(TypeError, match="integer"):
        maps.pointing_game(m, boxes.float())


def test_box_iou_hand_cases():
    m = torch.zeros(2, 8, 8)
    m[0, 2:5, 3:7] = 1.0  # predicted box (2, 3, 5, 7), area 12
    m[0, 7, 0] = 0.4  # below 0.5 * max, inside 0.3 * max
    m[1] = 0.0
    boxes = torch.tensor([[3, 3, 6, 7], [0, 0, 8, 8]])  # area 12, overlap rows 3-4 x cols 3-6 = 8
    iou = maps.box_iou(m, boxes, threshold=0.5)
    assert iou[0].item() == pytest.approx(8 / 16) and torch.isnan(iou[1])
    # at 0.3 the pixel (7, 0) joins: predicted box (2, 0, 8, 7), area 42, overlap 12
    assert maps.box_iou(m[:1], boxes[:1], threshold=0.3).item() == pytest.approx(12 / 42)
    with pytest.raises(ValueError, match="threshold"):
        maps.box_iou(m, boxes, threshold=0.0)


# ------------------------------------------------------------------------ deletion / insertion


@pytest.mark.parametrize("steps", [8, 5])
def test_deletion_and_insertion_closed_form(steps):
    h = w = 4
    d = h * w
    weights = torch.rand(h, w, generator=gen(10), dtype=torch.float64)
    weights /= weights.sum()
    model = KeptWeight(weights).eval()
    x = torch.ones(3, 2, h, w, dtype=torch.float64)
    maps = torch.stack([weights, -weights, torch.rand(h, w, generator=gen(11), dtype=torch.float64)])
    del_auc, del_curve = evaluation.deletion_auc(model, x, maps, 0, steps=steps, return_curve=True)
    ins_auc, ins_curve = evaluation.insertion_auc(model, x, maps, 0, substrate="zero", steps=steps, return_curve=True)
    counts = np.arange(steps + 1) * d // steps
    for i in range(3):
        order = np.argsort(-maps[i].flatten().numpy(), kind="stable")
        mass = np.concatenate([[0.0], np.cumsum(weights.flatten().numpy()[order])])[counts]
        np.testing.assert_allclose(del_curve[i].numpy(), 1 - mass, atol=1e-9)
        np.testing.assert_allclose(ins_curve[i].numpy(), mass, atol=1e-9)
        np.testing.assert_allclose(del_auc[i].item(), np.trapezoid(1 - mass, counts / d), atol=1e-9)
        np.testing.assert_allclose(ins_auc[i].item(), np.trapezoid(mass, counts / d), atol=1e-9)
    # deleting by the true weights is the best order, by their negation the worst
    assert del_auc[0] < del_auc[2] < del_auc[1] and ins_auc[0] > ins_auc[2] > ins_auc[1]


@pytest.mark.parametrize("substrate, sigma", [("zero", 5.0), ("mean", 5.0), ("blur", 1.0), ("blur", 5.0)])
def test_curve_endpoints_and_substrates(substrate, sigma):
    model = tiny_cnn(1)
    x = torch.randn(2, 3, 8, 8, generator=gen(12))
    maps = torch.rand(2, 8, 8, generator=gen(13))
    target = torch.tensor([1, 3])
    if substrate == "zero":
        base = np.zeros(x.shape, dtype=np.float32)
    elif substrate == "mean":
        base = np.broadcast_to(x.mean((2, 3), keepdim=True).numpy(), x.shape)
    else:  # torch 'reflect' padding is scipy's 'mirror'; radius ceil(3 sigma) capped at 7 on 8x8
        radius = min(int(np.ceil(3 * sigma)), 7)
        truncate = (radius + 0.25) / sigma  # scipy's radius int(truncate * sigma + 0.5)
        base = ndimage.gaussian_filter(x.numpy(), (0, 0, sigma, sigma), mode="mirror", truncate=truncate)
    with torch.no_grad():
        p_x = model(x).softmax(1)[[0, 1], target]
        p_base = model(torch.as_tensor(np.ascontiguousarray(base), dtype=torch.float32)).softmax(1)[[0, 1], target]
    _, dc = evaluation.deletion_auc(model, x, maps, target, substrate=substrate, blur_sigma=sigma, return_curve=True)
    _, ic = evaluation.insertion_auc(model, x, maps, target, substrate=substrate, blur_sigma=sigma, return_curve=True)
    assert dc.shape == ic.shape == (2, 9)
    torch.testing.assert_close(dc[:, 0], p_x)
    torch.testing.assert_close(dc[:, -1], p_base, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ic[:, 0], p_base, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ic[:, -1], p_x)


def test_curves_do_not_depend_on_batch_size():
    model = tiny_cnn(2)
    x = torch.randn(3, 3, 8, 8, generator=gen(14))
    maps = torch.rand(3, 8, 8, generator=gen(15))
    full = evaluation.deletion_auc(model, x, maps, 2, steps=16, return_curve=True)
    chunked = evaluation.deletion_auc(model, x, maps.unsqueeze(1), 2, steps=16, batch_size=7, return_curve=True)
    torch.testing.assert_close(full, chunked)


def test_deletion_curve_matches_quantus_pixel_flipping():
    import quantus

    model = tiny_cnn(3, size=6)
    x = torch.randn(2, 3, 6, 6, generator=gen(16))
    maps = torch.rand(2, 6, 6, generator=gen(17))
    target = torch.tensor([0, 4])
    _, curve = evaluation.deletion_auc(model, x, maps, target, steps=36, return_curve=True)
    # Quantus flips features (channel entries) of the map broadcast over channels: 3 per pixel
    metric = quantus.PixelFlipping(
        features_in_step=3, perturb_baseline=0.0, normalise=False, disable_warnings=True
    )
    ref = metric(model=model, x_batch=x.numpy(), y_batch=target.numpy(), a_batch=maps.unsqueeze(1).numpy(),
                 softmax=True, device="cpu")
    np.testing.assert_allclose(curve[:, 1:].numpy(), np.array(ref), atol=1e-5)


def test_curves_validate_inputs():
    model, x, maps = tiny_cnn(0), torch.randn(2, 3, 8, 8), torch.rand(2, 8, 8)
    with pytest.raises(ValueError, match="unknown substrate"):
        evaluation.deletion_auc(model, x, maps, 0, substrate="noise")
    with pytest.raises(ValueError, match="to match x"):
        evaluation.insertion_auc(model, x, maps[:, :4], 0)
    with pytest.raises(ValueError, match="steps"):
        evaluation.deletion_auc(model, x, maps, 0, steps=65)
    bad = maps.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        evaluation.deletion_auc(model, x, bad, 0)
    with pytest.raises(ValueError, match="channel_sum"):
        evaluation.deletion_auc(model, x, torch.rand(2, 3, 8, 8), 0)
    training_bn = nn.Sequential(nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(128, 3))
    with pytest.raises(ValueError, match="eval"):
        evaluation.insertion_auc(training_bn, x, maps, 0)


# ------------------------------------------------------------------------------------ retrieval


def test_retrieval_matches_direct_computation():
    model = tiny_cnn(4)
    x = torch.randn(4, 3, 8, 8, generator=gen(18))
    clean = torch.tensor([0, 1, 2, 3])
    for maps in (torch.rand(4, 8, 8, generator=gen(19)), torch.rand(4, 1, 8, 8, generator=gen(20)),
                 torch.rand(4, 3, 8, 8, generator=gen(21))):
        masked = x * (maps.unsqueeze(1) if maps.dim() == 3 else maps)
        with torch.no_grad():
            p = model(masked).softmax(1)
        hit, prob = evaluation.retrieval(model, x, maps, clean, batch_size=3)
        assert hit.dtype == torch.bool and torch.equal(hit, p.argmax(1) == clean)
        torch.testing.assert_close(prob, p[torch.arange(4), clean])
    with torch.no_grad():
        pred = model(x).argmax(1)
    assert evaluation.retrieval(model, x, torch.ones(4, 8, 8), pred)[0].all()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        evaluation.retrieval(model, x, 2 * torch.ones(4, 8, 8), pred)
    with pytest.raises(ValueError, match="to match"):
        evaluation.retrieval(model, x, torch.ones(4, 2, 8, 8), pred)


# ------------------------------------------------------------------------------ max-sensitivity


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


# ------------------------------------------------------------------------- model randomisation


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


def test_differentiable_metrics_pass_gradcheck():
    a = torch.rand(2, 7, 7, generator=gen(27), dtype=torch.float64, requires_grad=True)
    b = torch.rand(2, 7, 7, generator=gen(28), dtype=torch.float64)
    for fn in (maps.pearson, maps.cosine, maps.mse, maps.center_of_mass_shift,
               lambda p, q: maps.ssim(p, q, window_size=5, data_range=1.0)):
        assert torch.autograd.gradcheck(lambda t: fn(t, b), (a,))
