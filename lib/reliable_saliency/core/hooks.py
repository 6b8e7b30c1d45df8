"""Hooks as context managers: whatever happens inside the ``with`` block, they come off."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["forward_hooks", "leaf_modules"]


@contextmanager
def forward_hooks(modules: Iterable[nn.Module], hook: Callable) -> Iterator[None]:
    """Register ``hook`` as a forward hook on every module for the duration of the block."""
    handles = [module.register_forward_hook(hook) for module in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def leaf_modules(model: nn.Module) -> list[nn.Module]:
    """Modules without children, in registration order."""
    return [m for m in model.modules() if next(m.children(), None) is None]
