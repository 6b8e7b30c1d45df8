"""Models: the book's architectures, ImageNet classifiers, and Softplus copies of ReLU networks.
Trained models come from :mod:`..training.zoo`."""

from .architectures import (
    ARCHITECTURES, LeNet, MnistCNN, build, cifar_resnet18, efficientnet_lite0, torchvision_imagenet,
)
from .inpainter import DCGANDiscriminator, DCGANGenerator, build_dcgan, tanh_space, uniform_latents  # paper D
from .smoothing import to_softplus

__all__ = [
    "LeNet", "MnistCNN", "cifar_resnet18", "build", "ARCHITECTURES", "torchvision_imagenet",
    "efficientnet_lite0", "to_softplus",
]
