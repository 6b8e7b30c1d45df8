"""The one argument-checking vocabulary (reliable_saliency.core.options)."""

import math

import pytest
import torch

from reliable_saliency.core import options


def test_integer_and_number_accept_valid_values_and_name_the_argument():
    assert options.integer("steps", 3) == 3
    assert options.integer("k", 5, 1, 5, "pixels") == 5
    assert options.number("lr", 2, 0.0, strict=True) == 2.0 and isinstance(options.number("lr", 2), float)
    for bad in (0, -1, 2.5, True, "3", None):
        with pytest.raises(ValueError, match=r"steps must be an int >= 1"):
            options.integer("steps", bad)
    with pytest.raises(ValueError, match=r"k must be an int in \[1, 5\] \(pixels\), got 6"):
        options.integer("k", 6, 1, 5, "pixels")
    for bad in (-0.1, math.nan, math.inf, True, "1"):
        with pytest.raises(ValueError, match="lr must be a finite number >= 0"):
            options.number("lr", bad)
    with pytest.raises(ValueError, match="> 0"):
        options.number("lr", 0.0, strict=True)
    with pytest.raises(ValueError, match="<= 1"):
        options.number("p", 1.5, maximum=1.0)


def test_choice_batch_size_and_float_tensor():
    assert options.choice("norm", "l2", ("linf", "l2")) == "l2"
    with pytest.raises(ValueError, match=r"unknown norm 'l1': norm must be one of \['linf', 'l2'\]"):
        options.choice("norm", "l1", ("linf", "l2"))
    assert options.batch_size(None) is None and options.batch_size(7) == 7
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="batch_size must be a positive int or None"):
            options.batch_size(bad)
    t = torch.zeros(2)
    assert options.float_tensor("maps", t) is t
    with pytest.raises(TypeError, match="maps must be a torch.Tensor"):
        options.float_tensor("maps", [0.0])
    with pytest.raises(TypeError, match="float tensor"):
        options.float_tensor("maps", torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        options.float_tensor("maps", torch.tensor([math.nan]))
    assert options.float_tensor("maps", torch.tensor([math.nan]), finite=False).isnan().all()


def test_pixel_budget_refuses_budgets_given_in_0_255_units():
    assert options.pixel_budget("eps", 8 / 255) == pytest.approx(8 / 255)
    assert options.pixel_budget("eps", 3.0, norm="l2") == 3.0  # an L2 budget may exceed 1
    with pytest.raises(ValueError, match=r"did you mean 8/255 = 0\.0314\?"):
        options.pixel_budget("eps", 8)
    for bad in (-1 / 255, math.nan, "8/255"):
        with pytest.raises(ValueError, match=r"eps must be >= 0 in pixel units \(for example 8/255\)"):
            options.pixel_budget("eps", bad)
