"""Timing for the speed sections of the chapters and the arena: how many model inputs a call
evaluates and how long it takes, and the bound those inputs imply (the best measured time of a
plain forward + input-gradient pass per input).

    with PassCounter(model) as clock:
        masks = relex(model, x, target)
    clock.seconds, clock.passes                      # wall time (device synchronised), model inputs
    best = min(bound_per_pass(model, x).values())    # seconds per fwd+bwd input at the best batch size
    clock.seconds / (clock.passes * best)            # x the bound
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .options import integer

__all__ = ["PassCounter", "bound_per_pass"]


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_of(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


class PassCounter:
    """Context manager: counts the rows of every input the model's forward receives (a forward
    pre-hook, removed on exit, also on errors) and the wall time of the block, with the device
    synchronised at both ends. ``passes`` and ``seconds`` are set on exit (``passes`` also live)."""

    def __init__(self, model: nn.Module):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self.model, self.device = model, _device_of(model)
        self.passes, self.seconds = 0, float("nan")
        self._handle = None

    def _count(self, module, args) -> None:
        if args and isinstance(args[0], Tensor):
            self.passes += args[0].shape[0]

    def __enter__(self) -> PassCounter:
        if self._handle is not None:
            raise RuntimeError("this PassCounter is already counting; use a new one for a nested block")
        self.passes = 0
        self._handle = self.model.register_forward_pre_hook(self._count)
        _synchronise(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        try:
            _synchronise(self.device)
            self.seconds = time.perf_counter() - self._start
        finally:
            self._handle.remove()
            self._handle = None


def bound_per_pass(model: nn.Module, x: Tensor, batch_sizes: Sequence[int] = (16, 32, 64, 128),
                   rows: int = 512, repeats: int = 3) -> dict[int, float]:
    """Best seconds per input of a plain ``model(x)`` + ``autograd.grad`` w.r.t. the input, per
    batch size (about ``rows`` inputs per measurement, best of ``repeats`` after one warm-up).
    Inputs are ``x`` repeated to the batch size; the model's parameters get no gradients."""
    if not isinstance(x, Tensor) or x.dim() < 2 or x.shape[0] < 1:
        raise ValueError(f"x must be a batch of inputs (N, ...) with N >= 1, got {getattr(x, 'shape', x)!r}")
    sizes = [integer("batch_sizes", b) for b in batch_sizes]
    if not sizes:
        raise ValueError("batch_sizes must name at least one batch size")
    rows, repeats = integer("rows", rows), integer("repeats", repeats)
    device = x.device
    pool = x.detach()[torch.arange(max(sizes), device=device) % x.shape[0]]
    result = {}
    for b in sizes:
        inputs, batches, best = pool[:b], max(1, -(-rows // b)), float("inf")
        for _ in range(repeats + 1):  # the first round warms up
            _synchronise(device)
            start = time.perf_counter()
            for _ in range(batches):
                leaf = inputs.clone().requires_grad_(True)
                with torch.enable_grad():
                    torch.autograd.grad(model(leaf)[:, 0].sum(), leaf)
            _synchronise(device)
            best = min(best, (time.perf_counter() - start) / (batches * b))
        result[b] = best
    return result
