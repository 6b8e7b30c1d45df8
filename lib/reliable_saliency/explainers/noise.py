"""The SmoothGrad family: gradients averaged (SmoothGrad), squared and averaged (SmoothGrad^2) or
their variance taken (VarGrad) over Gaussian copies of each image; copies share the batch axis."""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.batching import ImageNoise, reduce_rows, resolve_batch_size, rows_of
from ..core.options import integer, number
from .objective import Objective, graph_input, view_rows
from .registry import register

__all__ = ["smoothgrad", "smoothgrad_squared", "vargrad"]


def _noisy_gradients(objective, x, create_graph, generator, batch_size, samples, noise_level, seeds, reduce):
    """Gradients at ``x_i + sigma_i * eps`` with sigma_i = noise_level * (max x_i - min x_i),
    reduced over the samples of each image."""
    samples = integer("samples", samples)
    noise_level = number("noise_level", noise_level)
    batch_size = resolve_batch_size(batch_size, x)
    source = graph_input(x, create_graph)
    flat = source.flatten(1)
    sigma = noise_level * (flat.amax(dim=1) - flat.amin(dim=1))
    noise = ImageNoise(generator, x.shape[0], samples, x.shape[1:], device=x.device, dtype=x.dtype, seeds=seeds)

    def evaluate(start, stop):
        image, _ = rows_of(start, stop, samples, x.device)
        inputs = torch.addcmul(source[image], view_rows(sigma[image]), noise.rows(start, stop))
        return objective.input_gradient(inputs, objective.target[image], create_graph)

    return reduce_rows(x.shape[0], samples, batch_size, evaluate, reduce)


@register("smoothgrad")
def smoothgrad(
    model, x, target, *, create_graph=False, generator=None, batch_size=None, output="logit",
    samples=50, noise_level=0.15, seeds=None,
) -> Tensor:
    """SmoothGrad (Smilkov et al.): mean gradient over ``samples`` Gaussian perturbations with std
    ``noise_level * (max(x_i) - min(x_i))`` per image. Signed; shape of ``x``. ``seeds`` (one int
    per image) fixes each image's draws, so its map does not depend on the other images of the
    call or their order; without it, per-image seeds are drawn from ``generator``."""
    objective = Objective(model, x, target, output)
    return _noisy_gradients(
        objective, x, create_graph, generator, batch_size, samples, noise_level, seeds, lambda g: g.mean(dim=1)
    )


@register("smoothgrad_squared")
def smoothgrad_squared(
    model, x, target, *, create_graph=False, generator=None, batch_size=None, output="logit",
    samples=50, noise_level=0.15, seeds=None,
) -> Tensor:
    """SmoothGrad-Squared (Hooker et al.): mean of the squared gradients, noise as in :func:`smoothgrad`."""
    objective = Objective(model, x, target, output)
    return _noisy_gradients(
        objective, x, create_graph, generator, batch_size, samples, noise_level, seeds,
        lambda g: g.square().mean(dim=1),
    )


@register("vargrad")
def vargrad(
    model, x, target, *, create_graph=False, generator=None, batch_size=None, output="logit",
    samples=50, noise_level=0.15, seeds=None,
) -> Tensor:
    """VarGrad (Adebayo et al.): variance (1/S, not 1/(S-1)) of the gradients over the samples,
    noise as in :func:`smoothgrad`."""
    objective = Objective(model, x, target, output)
    integer("samples", samples, 2)
    return _noisy_gradients(
        objective, x, create_graph, generator, batch_size, samples, noise_level, seeds,
        lambda g: g.var(dim=1, correction=0),
    )
