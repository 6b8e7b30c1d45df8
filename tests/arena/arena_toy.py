"""A toy arena for the tests: two tiny CNNs (ReLU and Softplus) trained in about a second on a
synthetic 4-class task (a bright 4 x 4 patch in one quadrant of a 16 x 16 image), and images both
classify correctly. Deterministic (seeded), so a subprocess rebuilds exactly the same toy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reliable_saliency.arena import arena_settings
from reliable_saliency.core.inputs import SYNTHETIC

SIZE = 16


def patches(n: int, g: torch.Generator):
    x = 0.35 + 0.3 * torch.rand(n, 3, SIZE, SIZE, generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    top = (torch.randint(1, 4, (n,), generator=g) + 8 * (y // 2)).view(-1, 1, 1)
    left = (torch.randint(1, 4, (n,), generator=g) + 8 * (y % 2)).view(-1, 1, 1)
    rows, cols = torch.arange(SIZE).view(1, -1, 1), torch.arange(SIZE).view(1, 1, -1)
    inside = (rows >= top) & (rows < top + 4) & (cols >= left) & (cols < left + 4)
    colour = 0.6 + 0.4 * torch.rand(n, 3, 1, 1, generator=g)
    return SYNTHETIC.normalize(torch.where(inside.unsqueeze(1), colour, x)), y


def tiny_cnn(activation) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), activation(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 8, 3, padding=1), activation(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(8 * 4 * 4, 16), activation(), nn.Linear(16, 4))


def toy_models() -> dict[str, nn.Module]:
    models = {}
    for i, (name, activation) in enumerate((("relu", nn.ReLU), ("soft", lambda: nn.Softplus(beta=3.0)))):
        torch.manual_seed(i)
        g = torch.Generator().manual_seed(10 + i)
        model = tiny_cnn(activation)
        optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(80):
            x, y = patches(64, g)
            loss = F.cross_entropy(model(x), y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        model.input_space = SYNTHETIC
        models[name] = model
    return models


def toy_data(models, n: int = 4):
    x, y = patches(64, torch.Generator().manual_seed(99))
    with torch.no_grad():
        right = torch.stack([m(x).argmax(1) == y for m in models.values()]).all(0)
    assert int(right.sum()) >= n, "toy models too weak"
    return x[right][:n], y[right][:n]


def toy_settings(**overrides):
    """The smoke profile on the toy's 16 x 16 images: shards of two images, the strength runs on the first two."""
    toy = dict(images=4, shard_size=2, strength_images=2, shapes_size=16, shapes_train=128, shapes_images=3,
               mask_search_grid=4, rise_grid=4, dance_stride=8)
    return arena_settings("smoke", **{**toy, **overrides})
