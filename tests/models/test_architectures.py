"""The book's architectures and ImageNet classifiers (reliable_saliency.models.architectures)."""

import torch

from reliable_saliency import models


def test_architectures_output_shapes():
    for name, shape in (("lenet", (2, 3, 32, 32)), ("resnet18", (2, 3, 32, 32)), ("mnist_cnn", (2, 1, 28, 28))):
        assert models.build(name)(torch.zeros(shape)).shape == (2, 10)


def test_efficientnet_lite0_offline():
    model = models.efficientnet_lite0()
    assert model.input_space.name == "efficientnet-lite" and not model.training
    assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)
