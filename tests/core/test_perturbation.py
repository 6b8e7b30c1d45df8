"""Perturbations in pixel space (reliable_saliency.core.perturbation)."""

import pytest
import torch

from reliable_saliency.core.inputs import CIFAR10
from reliable_saliency.core.perturbation import pixel_change


def test_pixel_change_in_pixel_units_per_image():
    x01 = torch.rand(3, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 0.5
    delta = torch.zeros_like(x01)
    delta[0, 1, 2, 3] = 4 / 255
    delta[1] = -2 / 255
    change = pixel_change(CIFAR10, CIFAR10.normalize(x01), CIFAR10.normalize(x01 + delta))
    torch.testing.assert_close(change["max"], torch.tensor([4 / 255, 2 / 255, 0.0]))
    torch.testing.assert_close(change["mean"], torch.tensor([4 / 255 / 48, 2 / 255, 0.0]))
    torch.testing.assert_close(change["l2"], torch.tensor([4 / 255, 2 / 255 * 48 ** 0.5, 0.0]))
    with pytest.raises(ValueError, match="same shape"):
        pixel_change(CIFAR10, x01, x01[:2])
