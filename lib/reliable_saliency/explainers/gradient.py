"""The gradient family: plain gradient, gradient x input, Integrated Gradients."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..core.batching import reduce_rows, resolve_batch_size, rows_of
from ..core.options import integer
from ..core.references import make_baseline
from .objective import Objective, batched_gradient, graph_input, view_rows
from .registry import register

__all__ = ["IG_METHODS", "gradient", "grad_x_input", "ig_rule", "integrated_gradients"]

IG_METHODS = ("midpoint", "trapezoid", "gauss_legendre")



@register("gradient")
def gradient(
    model, x, target, *, create_graph=False, generator=None, batch_size=None, output="logit"
) -> Tensor:
    """Signed input gradient of the target score (Simonyan et al.), shape of ``x``."""
    objective = Objective(model, x, target, output)
    batch_size = resolve_batch_size(batch_size, x)
    return batched_gradient(objective, graph_input(x, create_graph), create_graph, batch_size)


@register("grad_x_input")
def grad_x_input(
    model, x, target, *, create_graph=False, generator=None, batch_size=None, output="logit"
) -> Tensor:
    """Gradient times input (Shrikumar et al.), elementwise, shape of ``x``."""
    objective = Objective(model, x, target, output)
    batch_size = resolve_batch_size(batch_size, x)
    source = graph_input(x, create_graph)
    return batched_gradient(objective, source, create_graph, batch_size) * source


def ig_rule(steps: int, method: str = "midpoint", *, dtype=torch.float32, device="cpu"):
    """Path positions ``alphas`` and weights (summing to 1) of the IG integral over [0, 1].

    ``"midpoint"``: alphas (k + 1/2) / steps, weights 1 / steps (captum "riemann_middle");
    ``"trapezoid"``: alphas k / (steps - 1), weights 1 / (steps - 1) with the ends halved
    (captum's "riemann_trapezoid" uses weights 1 / steps, i.e. its result is ours * (steps - 1) / steps);
    ``"gauss_legendre"``: Gauss-Legendre nodes and weights (captum's default).
    """
    if method not in IG_METHODS:
        raise ValueError(f"IG method must be one of {IG_METHODS}, got {method!r}")
    steps = integer("steps", steps, 2 if method == "trapezoid" else 1)
    if method == "midpoint":
        alphas = (torch.arange(steps, dtype=torch.float64) + 0.5) / steps
        weights = torch.full((steps,), 1.0 / steps, dtype=torch.float64)
    elif method == "trapezoid":
        alphas = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
        weights = torch.full((steps,), 1.0 / (steps - 1), dtype=torch.float64)
        weights[0] = weights[-1] = 0.5 / (steps - 1)
    else:
        nodes, w = np.polynomial.legendre.leggauss(steps)
        alphas, weights = torch.from_numpy((nodes + 1) / 2), torch.from_numpy(w / 2)
    return alphas.to(device=device, dtype=dtype), weights.to(device=device, dtype=dtype)


@register("integrated_gradients")
def integrated_gradients(
    model, x, target, *, create_graph=False, generator=None, batch_size=None, output="logit",
    baseline="zero", steps=50, method="midpoint", blur_sigma=None,
) -> Tensor:
    """Integrated Gradients (Sundararajan et al.): ``(x - b) * sum_k w_k grad f(b + a_k (x - b))``.

    ``baseline``: see :func:`make_baseline`. ``method``: quadrature rule of :func:`ig_rule`
    (default midpoint Riemann sum with ``steps`` evaluations). Steps share the batch axis.
    """
    objective = Objective(model, x, target, output)
    batch_size = resolve_batch_size(batch_size, x)
    alphas, weights = ig_rule(steps, method, dtype=x.dtype, device=x.device)
    source = graph_input(x, create_graph)
    base = make_baseline(source, baseline, blur_sigma)
    delta = source - base
    samples = alphas.shape[0]

    def evaluate(start, stop):
        image, step = rows_of(start, stop, samples, x.device)
        inputs = torch.addcmul(base[image], view_rows(alphas[step]), delta[image])
        return objective.input_gradient(inputs, objective.target[image], create_graph)

    def reduce(block):  # (k, steps, C, H, W) -> (k, C, H, W)
        return torch.tensordot(block, weights, dims=([1], [0]))

    return delta * reduce_rows(x.shape[0], samples, batch_size, evaluate, reduce)
