"""Shared fixtures: seeded generators, the offline data root, an isolated cache, tiny datasets.

They serve every test folder (tests/core, tests/explainers, ...); folder-specific fixtures live in
that folder's conftest.py, and shared plain helpers in the :mod:`helpers` package next to this file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(os.environ.get("RELIABLE_SALIENCY_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))

# Test models are tiny: one intra-op thread is fastest and avoids OpenMP threads waiting on each
# other on a shared 2-core machine (measured: 20-100 s vs 6 s for the explainer tests).
torch.set_num_threads(1)

# The helpers hold assertions (e.g. helpers.attacks.assert_in_ball): rewrite them like test code.
pytest.register_assert_rewrite("helpers")


@pytest.fixture
def rng() -> torch.Generator:
    """A seeded CPU generator, fresh for every test."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def shared_data(monkeypatch) -> Path:
    """Point the library at the offline data in ../shared/data (skip if it is not there)."""
    if not (SHARED_DATA / "cifar10-jpeg").is_dir():
        pytest.skip(f"offline data not found at {SHARED_DATA}")
    monkeypatch.setenv("RELIABLE_SALIENCY_DATA", str(SHARED_DATA.resolve()))
    return SHARED_DATA


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """A private cache directory, so tests never read or write the user's checkpoints."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("RELIABLE_SALIENCY_CACHE", str(cache))
    return cache


@pytest.fixture
def tiny_cifar_root(tmp_path, monkeypatch) -> Path:
    """A data root holding a tiny CIFAR-10-shaped JPEG copy (4 train, 2 test images per class)."""
    from helpers import write_jpeg_folder
    from reliable_saliency.data import CIFAR10_CLASSES

    root = tmp_path / "data"
    write_jpeg_folder(root / "cifar10-jpeg" / "train", CIFAR10_CLASSES, 4, seed=0)
    write_jpeg_folder(root / "cifar10-jpeg" / "test", CIFAR10_CLASSES, 2, seed=1)
    monkeypatch.setenv("RELIABLE_SALIENCY_DATA", str(root))
    return root
