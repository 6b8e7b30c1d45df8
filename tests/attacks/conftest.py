"""Fixtures of the tests of attacks on explanations: a small CNN trained for a few seconds on a
synthetic 4-class task (a bright 5x5 patch in one quadrant), and a target region. Package scope:
the model is trained once for all test modules of tests/attacks (the tests leave it unchanged)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers.attacks import SIZE
from reliable_saliency.core.inputs import SYNTHETIC


def _synthetic(n: int, g: torch.Generator):
    x = 0.35 + 0.3 * torch.rand(n, 3, SIZE, SIZE, generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    top = (torch.randint(2, 11, (n,), generator=g) + 16 * (y // 2)).view(-1, 1, 1)
    left = (torch.randint(2, 11, (n,), generator=g) + 16 * (y % 2)).view(-1, 1, 1)
    rows, cols = torch.arange(SIZE).view(1, -1, 1), torch.arange(SIZE).view(1, 1, -1)
    inside = (rows >= top) & (rows < top + 5) & (cols >= left) & (cols < left + 5)
    colour = 0.6 + 0.4 * torch.rand(n, 3, 1, 1, generator=g)
    return torch.where(inside.unsqueeze(1), colour, x), y


@pytest.fixture(scope="package")
def trained():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    x_train, y_train = _synthetic(2048, g)
    x_test, y_test = _synthetic(64, g)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, 4),
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(100):
        idx = torch.randint(0, len(x_train), (64,), generator=g)
        loss = F.cross_entropy(model(SYNTHETIC.normalize(x_train[idx])), y_train[idx])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.zero_grad(set_to_none=True)
    model.eval()
    model.input_space = SYNTHETIC
    with torch.no_grad():
        accuracy = (model(SYNTHETIC.normalize(x_test)).argmax(1) == y_test).float().mean().item()
    assert accuracy > 0.95, f"test model too weak ({accuracy:.2f}); the attack tests need a good model"
    return model, SYNTHETIC.normalize(x_test[:8])


@pytest.fixture(scope="package")
def region():
    r = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    r[-4:, -4:] = True
    return r
