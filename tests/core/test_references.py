"""Reference inputs (reliable_saliency.core.references): the blur baseline against scipy, also as
an integrated-gradients baseline."""

from __future__ import annotations

import numpy as np
import torch

from helpers.explainers import Linear, images
from reliable_saliency import explainers
from reliable_saliency.core import references


def test_blur_baseline_matches_scipy(rng):
    from scipy.ndimage import gaussian_filter

    x = images(rng, 2, 3, 9, 7)
    got = references.make_baseline(x, "blur", blur_sigma=1.0)
    ref = gaussian_filter(x.numpy(), sigma=(0, 0, 1.0, 1.0), mode="mirror", truncate=3.0)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-12)
    weight = torch.randn((2, 3 * 9 * 7), generator=rng, dtype=torch.float64)
    linear_model = Linear(weight, torch.zeros(2, dtype=torch.float64))
    ig = explainers.integrated_gradients(linear_model, x, 1, baseline="blur", blur_sigma=1.0, steps=2)
    w = linear_model.weight[1].detach().view(1, 3, 9, 7)
    np.testing.assert_allclose(ig.detach().numpy(), ((x.numpy() - ref) * w.numpy()), rtol=1e-10, atol=1e-12)
