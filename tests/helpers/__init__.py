"""Helpers shared by several test modules (plain functions and classes, not fixtures; the fixtures
live in the conftest.py files). ``tests/`` is on ``sys.path`` because ``tests/conftest.py`` is
imported from there (pytest's default ``prepend`` import mode), so test modules import these as
``from helpers import gen`` or ``from helpers.explainers import tiny_cnn``.

- :mod:`helpers` (here): seeded generators, state comparison, JPEG folders on disk.
- :mod:`helpers.explainers`: tiny double-precision models and images for the explainer tests.
- :mod:`helpers.evaluation`: a small Softplus CNN and a checked gradient explainer for the
  evaluation tests.
- :mod:`helpers.attacks`: sizes, budgets, the plain gradient explainer and map checks for the
  tests of attacks on explanations.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def write_jpeg_folder(root: Path, classes, per_class: int, size: int = 32, seed: int = 0) -> None:
    """An ImageFolder of random JPEGs: root/<class>/<index>.jpg."""
    import torchvision.io as io

    generator = torch.Generator().manual_seed(seed)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=generator)
            io.write_jpeg(image, str(root / name / f"{i:04d}.jpg"), quality=90)
