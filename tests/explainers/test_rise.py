"""RISE (reliable_saliency.explainers.rise) against a reference built with skimage, and its
expected value on models whose saliency is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from helpers import gen
from helpers.explainers import images, tiny_cnn
from reliable_saliency import explainers


@pytest.mark.parametrize("s", [2, 3])
def test_rise_matches_reference_built_with_skimage(rng, s):
    """Masks as in the authors' code (skimage resize order=1, mode='reflect', then crop), from the
    documented draws; weighting by softmax probability, normalised by masks * p."""
    from skimage.transform import resize

    model = tiny_cnn()
    x, t = images(rng, 2, 3, 8, 8), torch.tensor([1, 4])
    masks, p = 20, 0.4
    g = gen(9)
    grids = (torch.rand((masks, s, s), generator=g) < p).numpy().astype(np.float64)
    cell = int(np.ceil(8 / s))
    shift_h = torch.randint(0, cell, (masks,), generator=g).numpy()
    shift_w = torch.randint(0, cell, (masks,), generator=g).numpy()
    ref_masks = np.stack([
        resize(grids[m], ((s + 1) * cell, (s + 1) * cell), order=1, mode="reflect", anti_aliasing=False)[
            shift_h[m] : shift_h[m] + 8, shift_w[m] : shift_w[m] + 8]
        for m in range(masks)
    ])
    with torch.no_grad():
        masked = x[:, None] * torch.from_numpy(ref_masks)[None, :, None]  # (N, M, C, H, W)
        probs = torch.softmax(model(masked.flatten(0, 1)), dim=1).view(2, masks, -1)
    probs = probs[torch.arange(2), :, t].numpy()  # (N, M)
    ref = np.einsum("nm,mhw->nhw", probs, ref_masks)[:, None] / (masks * p)
    got = explainers.rise(model, x, t, masks=masks, grid_size=s, p=p, generator=gen(9), batch_size=7)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-12)


class ConstantModel(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1) + 0 * x.flatten(1)[:, :1]


def test_rise_of_a_constant_model_is_the_constant(rng):
    """E[M] = p per pixel, so sum_m c M_m / (masks p) -> c; 6 standard errors (std of M <= 1/2)."""
    logits = torch.tensor([[0.3, -1.0, 2.0]], dtype=torch.float64)
    c = torch.softmax(logits, dim=1)[0, 2].item()
    masks, p = 3000, 0.5
    model = ConstantModel(logits)
    got = explainers.rise(model, images(rng, 1), 2, masks=masks, grid_size=3, p=p, generator=rng)
    assert abs(got.mean().item() - c) < 0.02 * c
    assert (got - c).abs().max().item() < 6 * c * 0.5 / (p * masks**0.5)


class ReadsOnePixel(nn.Module):
    """P(class 0) = the (masked) input value at one pixel."""

    def __init__(self, row, col):
        super().__init__()
        self.row, self.col = row, col

    def forward(self, x):
        v = x[:, 0, self.row, self.col].clamp(1e-6, 1 - 1e-6)
        return torch.stack([v.log(), (1 - v).log()], dim=1)


def test_rise_points_at_the_pixel_the_model_reads(rng):
    """saliency(b) = mean_m M_m(a) M_m(b) / p peaks at the read pixel a (up to Monte-Carlo noise
    and the slight non-stationarity of the shifted masks: argmax within one pixel of a) and is p
    where M(b) is independent of M(a)."""
    x = torch.ones((1, 1, 16, 16), dtype=torch.float64)
    for row, col in ((3, 12), (13, 2)):
        sal = explainers.rise(ReadsOnePixel(row, col), x, 0, masks=1500, grid_size=4, generator=rng)[0, 0]
        peak_row, peak_col = divmod(int(sal.flatten().argmax()), 16)
        assert abs(peak_row - row) <= 1 and abs(peak_col - col) <= 1
        assert sal[row, col] >= 0.97 * sal.max()
        # pixels > 2 upsampled cells (2 * 5 px) away depend on other grid cells: E[M(a) M(b)] / p = p
        far = sal[(torch.arange(16)[:, None] - row).abs().maximum((torch.arange(16) - col).abs()) >= 11]
        assert abs(far.mean().item() - 0.5) < 0.04 and far.max() < sal[row, col] - 0.1
