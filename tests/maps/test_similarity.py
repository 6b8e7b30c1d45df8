"""Similarity measures (reliable_saliency.maps.similarity) against scipy, scikit-image and
hand-computed cases; the differentiable measures pass gradcheck."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage, stats
from skimage.metrics import structural_similarity

from helpers import gen
from reliable_saliency import maps


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
    a = torch.tensor([[[5.0, 4, 3, 2, 1, 0]]])  # one 1 x 6 map
    assert maps.topk_intersection(a, a, 3).item() == 1.0
    assert maps.topk_intersection(a, a.flip(2), 3).item() == 0.0
    assert maps.topk_intersection(a, a.flip(2), 4).item() == 0.5  # {0,1,2,3} & {5,4,3,2}
    # ties: lower index first -> Top_2([1,1,1,0]) = {0, 1}; Top_2([0,1,1,0]) = {1, 2}
    tied = torch.tensor([[[1.0, 1, 1, 0]]])
    assert maps.topk_intersection(tied, torch.tensor([[[0.0, 1, 1, 0]]]), 2).item() == 0.5
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


# -------------------------------------------------------------------------------- gradients


def test_differentiable_metrics_pass_gradcheck():
    a = torch.rand(2, 7, 7, generator=gen(27), dtype=torch.float64, requires_grad=True)
    b = torch.rand(2, 7, 7, generator=gen(28), dtype=torch.float64)
    for fn in (maps.pearson, maps.cosine, maps.mse, maps.center_of_mass_shift,
               lambda p, q: maps.ssim(p, q, window_size=5, data_range=1.0)):
        assert torch.autograd.gradcheck(lambda t: fn(t, b), (a,))
