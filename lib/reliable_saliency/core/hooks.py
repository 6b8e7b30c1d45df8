"""Hooks as context managers: whatever happens inside the ``with`` block, they come off."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch
from torch import Tensor, nn

__all__ = ["forward_hooks", "leaf_modules", "last_spatial_layer", "probed"]

T = TypeVar("T")
_PROBES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {structure: result}


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


def probed(model: nn.Module, x: Tensor, what: str, probe: Callable[[], T]) -> T:
    """``probe()``, a forward pass of ``x[:1]`` that reads the model's structure, remembered per model
    while its modules (names, objects, types, training flags), the input's shape, dtype and device
    and the active torch function modes stay the same. A probe costs one image's forward pass per
    call, which a loop of small calls (an attack's steps) would otherwise pay every time. Errors are
    not kept."""
    structure = (what, tuple((name, id(m), type(m), m.training) for name, m in model.named_modules()),
                 tuple(x.shape[1:]), x.dtype, x.device,
                 tuple(type(mode) for mode in torch.overrides._get_current_function_mode_stack()))
    memo = _PROBES.setdefault(model, {})
    if structure not in memo:
        memo[structure] = probe()
    return memo[structure]


def last_spatial_layer(model: nn.Module, x: Tensor) -> tuple[str, int | None]:
    """The layer Grad-CAM and the decoys use by default, as ``(name, call)``: the module that produced the last
    spatial (N, C, h, w), h*w > 1, output of a forward pass of ``x[:1]``, innermost among the
    modules that returned that same tensor in its final state and ran once (``call`` None). On a
    plain CNN that is the last spatial leaf (the last ReLU); on a torchvision ResNet, whose ReLU
    module runs twice per block and works in place, the last block (``layer4.1``). When only a
    module that runs several times produced it (EfficientNet-Lite's shared swish), ``call`` says
    which of its calls (1-based) Grad-CAM reads.

    Refused (ValueError): a model that turns its last spatial output into a token sequence
    (N, T, D), T > 1 (a vision transformer: the last spatial layer is the patch embedding, the
    first layer, and a "Grad-CAM" there says nothing about the transformer); pass ``layer=`` with a
    reshape of the token maps, or use a gradient-based method. Probed once per model and input
    shape (:func:`probed`)."""
    return probed(model, x, "last_spatial_layer", lambda: _find_last_spatial_layer(model, x))


def _find_last_spatial_layer(model: nn.Module, x: Tensor) -> tuple[str, int | None]:
    names = {module: name for name, module in model.named_modules() if name}
    runs: dict[nn.Module, int] = {}
    order: list[tuple[nn.Module, Tensor, int, int]] = []  # module, output, its version, call
    tokens_after: list[str] = []  # modules with a token-sequence output after the last spatial one

    def record(module, args, out):
        runs[module] = runs.get(module, 0) + 1
        if isinstance(out, Tensor) and out.dim() == 4 and out.shape[2] * out.shape[3] > 1:
            order.append((module, out, out._version, runs[module]))
            tokens_after.clear()
        elif isinstance(out, Tensor) and out.dim() == 3 and out.shape[1] > 1 and order:
            tokens_after.append(names[module])

    with forward_hooks(list(names), record), torch.no_grad():
        model(x[:1].detach())
    if not order:
        raise ValueError("found no layer with a spatial (N, C, h, w) output; pass layer=")
    if tokens_after:
        raise ValueError(
            f"the last spatial layer ({names[order[-1][0]]}) is followed by token-sequence layers "
            f"({', '.join(tokens_after[:3])}{', ...' if len(tokens_after) > 3 else ''}): this looks like a vision "
            f"transformer, whose only spatial layer is the patch embedding. A default Grad-CAM or decoy layer there "
            f"would say nothing about the transformer; pass layer= (with a reshape of the token maps) or use a "
            f"gradient-based explainer")
    last = order[-1][1]
    # in-place operations keep the tensor but change it: only outputs recorded in the final state count
    final = [(module, call) for module, out, version, call in order if out is last and version == last._version]
    final = final or [(module, call) for module, out, _, call in order if out is last]  # changed afterwards
    once = [module for module, _ in final if runs[module] == 1]
    if once:
        return names[once[0]], None
    module, call = final[0]
    return names[module], call
