"""Sanity checks (Adebayo et al. 2018): re-initialised models and the model-randomisation test."""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from ..explainers.registry import Explainer
from ..maps.similarity import spearman

__all__ = ["randomize_parameters", "model_randomisation"]


def randomize_parameters(
    model: nn.Module, generator: torch.Generator, modules: Iterable[str] | None = None
) -> nn.Module:
    """A deep copy of ``model`` with re-initialised parameters (Adebayo et al. 2018); the caller's
    model is untouched.

    Every selected module is reset with its own ``reset_parameters()`` (the layer's default
    initialisation: Kaiming-uniform convolutions and linear layers; BatchNorm back to weight 1,
    bias 0 and fresh running statistics). ``modules``: names from ``model.named_modules()`` to
    randomise (with their submodules), for cascading randomisation; None = the whole model. The
    draws come from a seed taken from ``generator``, so a seeded generator gives the same copy;
    the global RNG state is restored afterwards. Raises if a selected parameter belongs to a
    module without ``reset_parameters``.
    """
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    clone = copy.deepcopy(model)
    named = dict(clone.named_modules())
    names = [""] if modules is None else list(modules)
    unknown = [name for name in names if name not in named]
    if unknown:
        raise ValueError(f"unknown module names {unknown}; pick names from model.named_modules()")
    selected: dict[int, tuple[str, nn.Module]] = {}
    for root in names:
        prefix = f"{root}." if root else ""
        for name, module in named[root].named_modules():
            selected.setdefault(id(module), (prefix + name if name else root, module))
    uncovered = [
        f"{name}.{pname}" if name else pname
        for name, module in selected.values()
        if not hasattr(module, "reset_parameters")
        for pname, _ in module.named_parameters(recurse=False)
    ]
    if uncovered:
        raise ValueError(
            f"cannot re-initialise parameters {uncovered}: their modules have no reset_parameters(); "
            f"randomise them yourself or leave those modules out with modules=[...]"
        )
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    cuda_devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda_devices), torch.no_grad():
        torch.manual_seed(seed)
        for _, module in selected.values():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return clone


def model_randomisation(
    explainer: Explainer, model: nn.Module, randomised_model: nn.Module, x: Tensor, target: Tensor | int,
    *, generator: torch.Generator | None = None, batch_size: int | None = None,
) -> Tensor:
    """Model-randomisation sanity check (Adebayo et al. 2018): Spearman correlation between the
    absolute, channel-summed maps of ``model`` and of ``randomised_model`` on the same x and
    target, (N,). Near 1 means the explanation ignores the learned parameters."""
    kwargs = {"generator": generator, "batch_size": batch_size}
    first = explainer(model, x, target, **kwargs).detach().abs().sum(1)
    second = explainer(randomised_model, x, target, **kwargs).detach().abs().sum(1)
    return spearman(first, second)
