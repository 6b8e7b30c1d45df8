"""The chapters' timing helper (reliable_saliency.core.timing): inputs counted exactly, the hook
removed on exit and on errors, and the bound measured per batch size."""

import math

import pytest
import torch
from torch import nn

from reliable_saliency.core.timing import PassCounter, bound_per_pass


def small_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 5))


def test_pass_counter_counts_every_input_row_and_the_time():
    model = small_model()
    with torch.no_grad(), PassCounter(model) as clock:
        model(torch.zeros(3, 3, 2, 2))
        model(torch.zeros(5, 3, 2, 2))
        assert clock.passes == 8
    assert clock.passes == 8 and clock.seconds >= 0 and math.isfinite(clock.seconds)
    assert not model._forward_pre_hooks  # the hook is gone
    with torch.no_grad():
        model(torch.zeros(2, 3, 2, 2))
    assert clock.passes == 8


def test_pass_counter_removes_its_hook_on_errors_and_refuses_nesting():
    model = small_model()
    with pytest.raises(RuntimeError, match="boom"):
        with PassCounter(model):
            raise RuntimeError("boom")
    assert not model._forward_pre_hooks
    clock = PassCounter(model)
    with clock, pytest.raises(RuntimeError, match="already counting"):
        clock.__enter__()
    assert not model._forward_pre_hooks
    with pytest.raises(TypeError, match="nn.Module"):
        PassCounter(lambda x: x)


def test_bound_per_pass_measures_each_batch_size_and_leaves_parameters_alone():
    model = small_model()
    bound = bound_per_pass(model, torch.randn(4, 3, 2, 2), batch_sizes=(2, 8), rows=16, repeats=1)
    assert sorted(bound) == [2, 8]
    assert all(0 < seconds < 1 for seconds in bound.values())
    assert all(p.grad is None for p in model.parameters())


def test_bound_per_pass_bad_inputs():
    model = small_model()
    with pytest.raises(ValueError, match="batch_sizes"):
        bound_per_pass(model, torch.randn(4, 3, 2, 2), batch_sizes=())
    with pytest.raises(ValueError, match="batch_sizes"):
        bound_per_pass(model, torch.randn(4, 3, 2, 2), batch_sizes=(0,))
    with pytest.raises(ValueError, match="x must be"):
        bound_per_pass(model, torch.randn(0, 12))
