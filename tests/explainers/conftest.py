"""Fixtures of the explainer tests."""

from __future__ import annotations

import pytest
import torch

from helpers.explainers import images, tiny_cnn


@pytest.fixture
def cnn_case(rng):
    return tiny_cnn(), images(rng), torch.tensor([0, 3, 4])
