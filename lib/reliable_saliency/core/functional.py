"""The functional calls a forward pass makes, seen through a ``TorchFunctionMode``: which
activations and normalisations run (by name, with the innermost module that ran them), so that a
layer rule can refuse a model it has no rule for, and apply its rule to functional calls (DenseNet's
``F.relu``) that no module hook sees."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .hooks import probed

__all__ = ["ACTIVATIONS", "operations", "functional_rule"]

# torch functions (and tensor methods) a rule may need to know about, by a reader's name
ACTIVATIONS: dict[Callable, str] = {
    F.relu: "relu", torch.relu: "relu", torch.relu_: "relu", Tensor.relu: "relu", Tensor.relu_: "relu",
    F.relu6: "relu6", F.hardtanh: "hardtanh", F.softplus: "softplus", F.silu: "silu", F.hardswish: "hardswish",
    F.gelu: "gelu", F.mish: "mish", F.elu: "elu", F.selu: "selu", F.celu: "celu", F.leaky_relu: "leaky_relu",
    F.hardsigmoid: "hardsigmoid", torch.sigmoid: "sigmoid", Tensor.sigmoid: "sigmoid", F.sigmoid: "sigmoid",
    torch.tanh: "tanh", Tensor.tanh: "tanh", F.layer_norm: "layer_norm", F.group_norm: "group_norm",
    F.multi_head_attention_forward: "attention", F.scaled_dot_product_attention: "attention",
}


@contextmanager
def _module_stack(model: nn.Module):
    """The names of the modules running right now (innermost last), kept by pre- and post-hooks."""
    stack: list[str] = []

    def leave(module, args, out) -> None:  # returns None: the module's output stays as it is
        stack.pop()

    handles = []
    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(lambda m, a, name=name: stack.append(name or "model")))
        handles.append(module.register_forward_hook(leave))
    try:
        yield stack
    finally:
        for handle in handles:
            handle.remove()


class _Watch(TorchFunctionMode):
    def __init__(self, stack: list[str], on_call: Callable[[str, str, object], object]):
        super().__init__()
        self.stack, self.on_call = stack, on_call

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = ACTIVATIONS.get(func)
        if name is not None:
            self.on_call(name, self.stack[-1] if self.stack else "model", out, args, kwargs or {})
        return out


def operations(model: nn.Module, x: Tensor) -> list[tuple[str, str]]:
    """``(operation, module)`` for every watched call of a no-grad forward pass of ``x[:1]``, in
    order; the module is the innermost one running (``"model"``: the model's own forward). Probed
    once per model and input shape (:func:`..core.hooks.probed`)."""
    def probe() -> tuple[tuple[str, str], ...]:
        seen: list[tuple[str, str]] = []
        with _module_stack(model) as stack, _Watch(stack, lambda name, where, *_: seen.append((name, where))), \
                torch.no_grad():
            model(x[:1].detach())
        return tuple(seen)

    return list(probed(model, x, "operations", probe))


@contextmanager
def functional_rule(model: nn.Module, names: set[str], skip: tuple[type, ...], rule: Callable[[Tensor, tuple, dict], None]):
    """Call ``rule(output, args, kwargs)`` for every call of an operation in ``names`` that runs
    outside a module of the ``skip`` types (those have module hooks of their own)."""
    skipped = {name for name, module in model.named_modules() if isinstance(module, skip)}

    def on_call(name, where, out, args, kwargs):
        if name in names and where not in skipped and isinstance(out, Tensor):
            rule(out, args, kwargs)

    with _module_stack(model) as stack, _Watch(stack, on_call):
        yield
