"""The arena's controls: maps that know nothing a method should know, called like any explainer.

- :func:`random_map`: uniform noise from a per-image seed; depends neither on the image nor on the
  model, so no perturbation can move it (perfect stability by construction) and every faithfulness
  number it gets is chance.
- :func:`edge_map`: the Sobel gradient magnitude of the [0, 1] image, summed over channels; depends
  on the image only (the model is used for nothing but its input space), so it passes for an
  explanation on natural images and fails the model-randomisation check by construction.
- :func:`smoothed_gradient`: a plain Gaussian smoother of ``sum_c |gradient|``, the same blur
  (:func:`..maps.smoothness.blurred_map`) the chapters use as the control smoother: a method gets
  credit for stability only beyond what blurring the base map gives.

All three have the library's explainer signature and return (N, 1, H, W); the edge map and the
smoothed gradient are differentiable w.r.t. ``x`` (``create_graph=True``), so attacks aim at them
like at any map. The random map is not: it does not depend on ``x``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.batching import resolve_seeds
from ..core.inputs import check_images, input_space_of
from ..attacks.decoy_attack import blurred_explainer
from ..core.options import number
from ..explainers import get_explainer

__all__ = ["CONTROLS", "random_map", "edge_map", "sobel_magnitude", "smoothed_gradient"]

_SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def random_map(model: nn.Module, x: Tensor, target, *, create_graph=False, generator=None, batch_size=None,
               seeds=None) -> Tensor:
    """Uniform [0, 1) noise (N, 1, H, W), image ``i``'s from a CPU generator seeded with ``seeds[i]``
    (else seeds drawn in order from ``generator``): the same map for an image in any call, whatever
    the image's pixels or the model. ``create_graph`` is accepted and has nothing to keep."""
    seeds = resolve_seeds(seeds, generator, x.shape[0])
    h, w = x.shape[-2:]
    maps = [torch.rand((1, h, w), generator=torch.Generator().manual_seed(s)) for s in seeds]
    return torch.stack(maps).to(device=x.device, dtype=x.dtype)


def sobel_magnitude(images: Tensor) -> Tensor:
    """``sum_c sqrt(Gx^2 + Gy^2)`` of images (N, C, H, W) with the 3 x 3 Sobel kernels (the border
    replicated, which for one pixel is scipy's ``mode="reflect"``), (N, 1, H, W). Differentiable;
    a tiny constant under the square root keeps the gradient finite on flat regions."""
    n, c, h, w = images.shape
    kx = _SOBEL.to(device=images.device, dtype=images.dtype)
    kernels = torch.stack([kx, kx.T]).unsqueeze(1)  # (2, 1, 3, 3): d/dcol, d/drow
    padded = F.pad(images.reshape(n * c, 1, h, w), (1, 1, 1, 1), mode="replicate")
    g = F.conv2d(padded, kernels)  # (N C, 2, H, W); a correlation: the sign does not matter here
    magnitude = (g.square().sum(1) + 1e-12).sqrt() - 1e-6
    return magnitude.view(n, c, h, w).sum(1, keepdim=True)


def edge_map(model: nn.Module, x: Tensor, target, *, create_graph=False, generator=None, batch_size=None) -> Tensor:
    """The Sobel magnitude (:func:`sobel_magnitude`) of the [0, 1] image ``model.input_space``
    gives back from ``x`` (the normalised input itself when the model has no input space), (N, 1, H, W).
    No model pass: the same map for every model with the same input space."""
    space = input_space_of(model)
    source = x if create_graph else x.detach()
    if space is not None:
        check_images(source.detach(), space)
        source = space.denormalize(source)
    return sobel_magnitude(source)


def smoothed_gradient(model: nn.Module, x: Tensor, target, *, create_graph=False, generator=None,
                      batch_size=None, sigma: float = 1.0) -> Tensor:
    """``blurred_map(gradient, sigma)`` (through :func:`..attacks.decoy_attack.blurred_explainer`):
    ``sum_c |d logit_target / d x|`` blurred with a Gaussian of ``sigma`` pixels
    (:func:`..core.references.gaussian_blur`), (N, 1, H, W); with ``create_graph`` differentiable
    like the gradient itself (a ReLU model needs a Softplus copy for that)."""
    smoother = blurred_explainer(get_explainer("gradient"), number("sigma", sigma))
    return smoother(model, x, target, create_graph=create_graph, batch_size=batch_size)


CONTROLS = {"random_map": random_map, "edge_map": edge_map, "smoothed_gradient": smoothed_gradient}
