"""The registry of explainers: each method registers itself next to its definition with
``@register("name")``; :func:`get_explainer` binds options and checks them against the method.

Every explainer has one signature::

    explain(model, x, target, *, create_graph=False, generator=None, batch_size=None, **options)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Protocol

from torch import Tensor

__all__ = ["Explainer", "EXPLAINERS", "register", "get_explainer"]


class Explainer(Protocol):
    """Anything called like an explainer of the library."""

    def __call__(self, model, x: Tensor, target, *, create_graph: bool = False, generator=None,
                 batch_size: int | None = None, **options) -> Tensor: ...


EXPLAINERS: dict[str, Callable[..., Tensor]] = {}

_COMMON = ("create_graph", "generator", "batch_size")


def register(name: str) -> Callable[[Callable[..., Tensor]], Callable[..., Tensor]]:
    """Decorator adding an explainer to :data:`EXPLAINERS` under ``name`` (unique)."""

    def add(function: Callable[..., Tensor]) -> Callable[..., Tensor]:
        if name in EXPLAINERS:
            raise ValueError(f"an explainer named {name!r} is already registered")
        missing = [p for p in _COMMON if p not in inspect.signature(function).parameters]
        if missing:
            raise TypeError(f"explainer {name!r} must accept the keyword arguments {missing}")
        EXPLAINERS[name] = function
        return function

    return add


def get_explainer(name: str, **options) -> Callable[..., Tensor]:
    """The explainer ``name`` with ``options`` bound, as ``explain(model, x, target, *,
    create_graph=False, generator=None, batch_size=None, **more_options)``. Options are checked
    against the explainer's parameters now; options given at call time override bound ones."""
    if name not in EXPLAINERS:
        raise KeyError(f"unknown explainer {name!r}; choose one of {sorted(EXPLAINERS)}")
    function = EXPLAINERS[name]
    accepted = [
        p.name for p in inspect.signature(function).parameters.values()
        if p.kind is p.KEYWORD_ONLY and p.name not in _COMMON
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"explainer {name!r} has no option(s) {unknown}; its options are {accepted}")

    def explain(model, x, target, *, create_graph=False, generator=None, batch_size=None, **more):
        return function(
            model, x, target, create_graph=create_graph, generator=generator, batch_size=batch_size,
            **{**options, **more},
        )

    explain.__name__ = explain.__qualname__ = name
    explain.__doc__ = function.__doc__
    return explain
