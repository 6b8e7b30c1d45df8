"""Choosing the images a chapter measures: seeded, reproducible, correctly classified."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..core.options import integer
from ..data import ImageSet

__all__ = ["correctly_classified"]


def correctly_classified(models: nn.Module | Sequence[nn.Module], images: ImageSet, n: int, *, seed: int,
                         device=None, batch_size: int = 500) -> ImageSet:
    """The first ``n`` images, in a seeded random order of ``images``, that every model in
    ``models`` classifies correctly (pass several models to compare them on the same images).
    Scans the order in chunks of ``batch_size`` and stops when ``n`` are found; raises if the
    whole set holds fewer."""
    integer("n", n)
    integer("batch_size", batch_size)
    models = [models] if isinstance(models, nn.Module) else list(models)
    if not models:
        raise ValueError("models must be a model or a non-empty list of models")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    kept: list[torch.Tensor] = []
    found = 0
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            index = order[start:start + batch_size]
            chunk = images.subset(index)
            x, y = chunk.normalized(device), chunk.labels.to(device)
            right = torch.ones_like(y, dtype=torch.bool)
            for model in models:
                right &= model(x).argmax(1) == y
            kept.append(index[right.cpu()])
            found += int(right.sum())
            if found >= n:
                break
    if found < n:
        raise ValueError(f"only {found} of {len(images)} images are classified correctly by all "
                         f"{len(models)} model(s); ask for at most {found}")
    return images.subset(torch.cat(kept)[:n])
