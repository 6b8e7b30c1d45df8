"""One vocabulary for checking arguments: each function returns the checked value or raises a
``ValueError`` / ``TypeError`` that names the argument, what it must be and what it got."""

from __future__ import annotations

import math
from collections.abc import Collection

import torch
from torch import Tensor

__all__ = ["integer", "number", "choice", "batch_size", "pixel_budget", "float_tensor"]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def integer(name: str, value, minimum: int = 1, maximum: int | None = None, what: str = "") -> int:
    """``value`` as an int in [minimum, maximum]; ``what`` says what the bound means."""
    if not _is_int(value) or value < minimum or (maximum is not None and value > maximum):
        span = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an int {span}{f' ({what})' if what else ''}, got {value!r}")
    return value


def number(name: str, value, minimum: float = 0.0, *, strict: bool = False,
           maximum: float | None = None) -> float:
    """``value`` as a finite float >= minimum (> with ``strict``) and <= maximum."""
    bad = not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
    if bad or value < minimum or (strict and value == minimum) or (maximum is not None and value > maximum):
        relation = ">" if strict else ">="
        upper = f" and <= {maximum}" if maximum is not None else ""
        raise ValueError(f"{name} must be a finite number {relation} {minimum}{upper}, got {value!r}")
    return float(value)


def choice(name: str, value, choices: Collection):
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}: {name} must be one of {list(choices)}")
    return value


def batch_size(value) -> int | None:
    """None (the library's measured default) or a positive int."""
    if value is not None and not (_is_int(value) and value >= 1):
        raise ValueError(f"batch_size must be a positive int or None, got {value!r}")
    return value


def pixel_budget(name: str, value, norm: str = "linf") -> float:
    """A perturbation budget in pixel units of images in [0, 1]. An L-inf budget above 1 can only
    be a budget in 0..255 units, so it is refused with the conversion."""
    bad = not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
    if bad or value < 0:
        raise ValueError(f"{name} must be >= 0 in pixel units (for example 8/255), got {value!r}")
    value = float(value)
    if norm == "linf" and value > 1:
        raise ValueError(
            f"{name} must be >= 0 in pixel units (for example 8/255), got {value}; an L-inf budget "
            f"above 1 exceeds the whole pixel range: did you mean {value:g}/255 = {value / 255:.4f}?"
        )
    return value


def float_tensor(name: str, value, finite: bool = True) -> Tensor:
    """``value`` if it is a floating-point tensor (with only finite entries when ``finite``)."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a float tensor, got {value.dtype}")
    if finite and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return value
