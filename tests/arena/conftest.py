"""Fixtures of the arena tests: the toy arena (two tiny CNNs, four images; :mod:`arena_toy`) and
its full table, computed once for all test modules of tests/arena (package scope)."""

from __future__ import annotations

import pytest

from arena_toy import toy_data, toy_models, toy_settings
from reliable_saliency.arena import run_arena


@pytest.fixture(scope="package")
def toy():
    models = toy_models()
    x, y = toy_data(models)
    return models, x, y


@pytest.fixture(scope="package")
def toy_run(toy, tmp_path_factory):
    """The whole toy arena (every explainer, perturbation and measure) and where its store lives."""
    models, x, y = toy
    root = tmp_path_factory.mktemp("arena")
    table = run_arena(toy_settings(), root=root, key="toy", models=models, data=(x, y))
    return table, root
