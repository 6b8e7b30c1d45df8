"""A small DCGAN (Radford et al. 2016) for semantic inpainting (Yeh et al. 2017), as paper D uses it
to regenerate the salient region of an image.

The layout follows the authors' TensorFlow code (their 64 x 64 model, scaled to 32 x 32 CIFAR-10):
the generator maps z (100 numbers, uniform in [-1, 1]) by a linear layer to 4 x 4 feature maps,
then doubles the resolution with 5 x 5 stride-2 transposed convolutions (BatchNorm + ReLU, tanh at
the end); the discriminator halves it with 5 x 5 stride-2 convolutions (LeakyReLU 0.2, BatchNorm
after the first) down to 4 x 4 and ends in one linear logit. Images live in the tanh space
``2 * pixel - 1`` (:func:`tanh_space`); trained models come from :mod:`..training.gan`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..core.inputs import InputSpace
from ..core.options import integer

__all__ = ["DCGANGenerator", "DCGANDiscriminator", "build_dcgan", "tanh_space", "uniform_latents"]


def tanh_space(channels: int = 3) -> InputSpace:
    """The GAN's image space: ``2 * pixel - 1`` per channel (mean 0.5, std 0.5)."""
    return InputSpace(f"gan_tanh_{channels}ch", (0.5,) * channels, (0.5,) * channels)


def uniform_latents(n: int, latent_size: int, generator: torch.Generator | None = None, *, device=None,
                    dtype=torch.float32) -> Tensor:
    """``n`` latent codes uniform in [-1, 1), shape (n, latent_size), as in the authors' code."""
    return torch.rand((n, latent_size), generator=generator, device=device, dtype=dtype) * 2 - 1


def _stages(size: int) -> int:
    """Stride-2 stages between 4 x 4 and ``size`` x ``size`` (size = 4 * 2^k, k >= 1)."""
    stages = round(math.log2(size / 4)) if size >= 8 else 0
    if stages < 1 or 4 * 2**stages != size:
        raise ValueError(f"size must be 4 * 2^k pixels with k >= 1 (8, 16, 32, 64, ...), got {size!r}")
    return stages


def _init(module: nn.Module) -> None:
    """The authors' initialisation: conv kernels N(0, 0.02) truncated at 2 std, linear weights
    truncated N(0, sqrt(3 / (fan_in + fan_out))), zero biases, BatchNorm scale 1."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.trunc_normal_(m.weight, std=0.02, a=-0.04, b=0.04)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            std = math.sqrt(3.0 / (m.in_features + m.out_features))
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    """z (N, latent_size) -> images (N, channels, size, size) in the tanh space [-1, 1]."""

    def __init__(self, latent_size: int = 100, width: int = 64, channels: int = 3, size: int = 32):
        super().__init__()
        self.latent_size = integer("latent_size", latent_size)
        width, channels, stages = integer("width", width), integer("channels", channels), _stages(size)
        top = width * 2 ** (stages - 1)
        self.top = top
        self.project = nn.Linear(latent_size, top * 16)
        layers: list[nn.Module] = [nn.BatchNorm2d(top), nn.ReLU()]
        for i in range(stages):
            cin = top // 2**i
            last = i == stages - 1
            cout = channels if last else cin // 2
            layers.append(nn.ConvTranspose2d(cin, cout, 5, stride=2, padding=2, output_padding=1))
            layers += [nn.Tanh()] if last else [nn.BatchNorm2d(cout), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.output_space = tanh_space(channels)
        _init(self)

    def forward(self, z: Tensor) -> Tensor:
        if z.dim() != 2 or z.shape[1] != self.latent_size:
            raise ValueError(f"z must have shape (N, {self.latent_size}), got {tuple(z.shape)}")
        return self.body(self.project(z).view(-1, self.top, 4, 4))


class DCGANDiscriminator(nn.Module):
    """Images (N, channels, size, size) in the tanh space -> realness logits (N,)."""

    def __init__(self, width: int = 64, channels: int = 3, size: int = 32):
        super().__init__()
        width, channels, stages = integer("width", width), integer("channels", channels), _stages(size)
        layers: list[nn.Module] = []
        cin = channels
        for i in range(stages):
            cout = width * 2**i
            layers.append(nn.Conv2d(cin, cout, 5, stride=2, padding=2))
            if i > 0:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.LeakyReLU(0.2))
            cin = cout
        self.body = nn.Sequential(*layers, nn.Flatten(), nn.Linear(cin * 16, 1))
        self.input_space = tanh_space(channels)
        _init(self)

    def forward(self, images: Tensor) -> Tensor:
        return self.body(images)[:, 0]


def build_dcgan(latent_size: int = 100, width: int = 64, channels: int = 3,
                size: int = 32) -> tuple[DCGANGenerator, DCGANDiscriminator]:
    """A freshly initialised generator and discriminator, in eval mode."""
    return (DCGANGenerator(latent_size, width, channels, size).eval(),
            DCGANDiscriminator(width, channels, size).eval())
