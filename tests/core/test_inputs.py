"""Input spaces (reliable_saliency.core.inputs): normalisation round trip, per-channel eps, range checks."""

import pytest
import torch

from reliable_saliency.core import inputs


def test_input_space_round_trip_and_eps():
    images = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    x = inputs.CIFAR10.normalize(images)
    assert torch.allclose(inputs.CIFAR10.denormalize(x), images / 255.0, atol=1e-6)
    eps = inputs.CIFAR10.eps(8 / 255, x).flatten()
    assert torch.allclose(eps, torch.tensor([8 / 255 / s for s in inputs.CIFAR10.std]))
    inputs.CIFAR10.check(x)
    with pytest.raises(ValueError, match="outside the valid range"):
        inputs.CIFAR10.check(inputs.CIFAR10.normalize(x))  # normalised twice
