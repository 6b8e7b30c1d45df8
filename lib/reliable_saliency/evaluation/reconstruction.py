"""Paper D's reconstruction: regenerate a region of each image with a DCGAN by semantic inpainting
(Yeh et al. 2017) and ask whether the classifier keeps its class on the variations.

The region to regenerate (the *hole*, True where pixels are regenerated) comes from a saliency map
(:func:`salient_region`) or a control of the same area (:func:`salient_region` with ``least=True``,
:func:`shifted_region`). :func:`inpaint` searches latent codes z whose generated image matches the
context around the hole and looks real to the discriminator, many z per image at once on the batch
axis, and pastes the generated hole into the untouched context. :func:`class_retention` is the
share of variations classified as the target. The GAN comes from ``training.gan.load_gan`` (this
package sits below ``training``, so the caller passes it in).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.batching import chunk_ranges, image_seeds, resolve_batch_size
from ..core.inputs import InputSpace, check_images, check_model_ready, check_targets
from ..core.options import float_tensor, integer, number
from ..models.inpainter import uniform_latents

__all__ = ["context_weights", "salient_region", "shifted_region", "inpaint", "Inpainting", "class_retention"]


def _hole(hole: Tensor, x: Tensor) -> Tensor:
    """``hole`` as a bool (N, 1, H, W) matching ``x`` (N, C, H, W)."""
    if not isinstance(hole, Tensor):
        raise TypeError(f"hole must be a bool tensor (N, 1, H, W), got {type(hole).__name__}")
    if hole.dim() == 3:
        hole = hole[:, None]
    if hole.shape != (x.shape[0], 1, *x.shape[-2:]):
        raise ValueError(f"hole must have shape {(x.shape[0], 1, *x.shape[-2:])} (True = regenerate), "
                         f"got {tuple(hole.shape)}")
    if hole.dtype != torch.bool:
        if not bool(((hole == 0) | (hole == 1)).all()):
            raise ValueError("hole must be bool or hold only 0 and 1 (1 = regenerate)")
        hole = hole != 0
    return hole.to(x.device)


def _symmetric_index(n: int, before: int, after: int, device) -> Tensor:
    """Indices of positions -before .. n + after - 1 mirrored into [0, n) with the edge repeated
    (``d c b a | a b c d | d c``, scipy's ``boundary="symm"``), for any padding width."""
    u = torch.remainder(torch.arange(-before, n + after, device=device), 2 * n)
    return torch.where(u >= n, 2 * n - 1 - u, u)


def context_weights(hole: Tensor, kernel_size: int = 7) -> Tensor:
    """Yeh et al.'s context weights ``W = M * box(1 - M)`` (M = 1 on context pixels): the share of
    hole pixels in the ``kernel_size`` square around each context pixel, 0 in the hole. The box sum
    is scipy's ``convolve2d(..., mode="same", boundary="symm")`` of the authors' code (n = 70 at
    224 x 224, 15 at 64 x 64; 7 suits 32 x 32). ``hole`` (N, 1, H, W) bool -> float (N, 1, H, W)."""
    k = integer("kernel_size", kernel_size)
    if not isinstance(hole, Tensor) or hole.dim() != 4 or hole.shape[1] != 1:
        raise ValueError(f"hole must be a (N, 1, H, W) tensor, got {getattr(hole, 'shape', hole)!r}")
    h, w = hole.shape[-2:]
    holes = hole.float() if not hole.is_floating_point() else hole
    rows = _symmetric_index(h, k // 2, (k - 1) // 2, hole.device)
    cols = _symmetric_index(w, k // 2, (k - 1) // 2, hole.device)
    padded = holes[:, :, rows][:, :, :, cols]
    return (1 - holes) * F.avg_pool2d(padded, k, stride=1)


def salient_region(maps: Tensor, fraction: float, *, least: bool = False,
                   generator: torch.Generator | None = None) -> Tensor:
    """The ``round(fraction * H * W)`` pixels of each map with the highest values (the lowest with
    ``least``), as a bool hole (N, 1, H, W). Ties (for example the zeros of a ReLU-normalised map)
    are broken at random by ``generator``, never by pixel position. ``maps``: (N, 1, H, W) or (N, H, W)."""
    float_tensor("maps", maps)
    if maps.dim() == 3:
        maps = maps[:, None]
    if maps.dim() != 4 or maps.shape[1] != 1:
        raise ValueError(f"maps must be per-pixel (N, 1, H, W) or (N, H, W), got {tuple(maps.shape)}")
    fraction = number("fraction", fraction, 0.0, strict=True, maximum=1.0)
    n, pixels = maps.shape[0], maps.shape[-2] * maps.shape[-1]
    count = max(1, round(fraction * pixels))
    device = generator.device if generator is not None else torch.device("cpu")
    shuffle = torch.rand((n, pixels), generator=generator, device=device).argsort(dim=1).to(maps.device)
    values = maps.flatten(1).gather(1, shuffle)
    order = values.argsort(dim=1, descending=not least, stable=True)[:, :count]
    hole = torch.zeros((n, pixels), dtype=torch.bool, device=maps.device)
    hole.scatter_(1, shuffle.gather(1, order), True)
    return hole.view_as(maps)


def shifted_region(hole: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """A control of the same shape and area: each image's hole rolled (wrapping round the edges) by
    a random offset, uniform over all H x W offsets."""
    if not isinstance(hole, Tensor) or hole.dim() != 4:
        raise ValueError(f"hole must be a (N, 1, H, W) tensor, got {getattr(hole, 'shape', hole)!r}")
    device = generator.device if generator is not None else torch.device("cpu")
    h, w = hole.shape[-2:]
    dy = torch.randint(0, h, (hole.shape[0],), generator=generator, device=device).tolist()
    dx = torch.randint(0, w, (hole.shape[0],), generator=generator, device=device).tolist()
    return torch.stack([hole[i].roll((dy[i], dx[i]), dims=(-2, -1)) for i in range(hole.shape[0])])


class Inpainting(NamedTuple):
    images: Tensor  # (N, S, C, H, W) reconstructions in x's space: context of x, generated hole
    generated: Tensor  # (N, S, C, H, W) the whole generated images G(z), in x's space
    latents: Tensor  # (N, S, latent) the final z
    loss: Tensor  # (N, S) contextual + perceptual_weight * perceptual loss at the final z


def inpaint(
    gan_generator: nn.Module, gan_discriminator: nn.Module, x: Tensor, hole: Tensor, *,
    input_space: InputSpace, samples: int = 64, iterations: int = 1000, lr: float = 0.01,
    momentum: float = 0.9, perceptual_weight: float = 0.005, kernel_size: int = 7,
    generator: torch.Generator | None = None, batch_size: int | None = None, return_details: bool = False,
) -> Tensor | Inpainting:
    """Semantic inpainting (Yeh et al.) of the ``hole`` of each image of ``x`` (N, C, H, W, in
    ``input_space``), ``samples`` variations per image. Returns (N, S, C, H, W) reconstructions in
    ``input_space`` whose context pixels are exactly those of ``x`` (``torch.where``, no round trip);
    with ``return_details`` an :class:`Inpainting`.

    As in the authors' code: z starts uniform in [-1, 1]; each z minimises
    ``sum W * |G(z) - y| + perceptual_weight * BCE(D(G(z)), 1)`` (``W`` :func:`context_weights`, y
    and G(z) in the GAN's space ``2 * pixel - 1``) by Nesterov momentum
    (``v' = m v - lr g; z += -m v + (1 + m) v'``), then z is clipped to [-1, 1]. Each z gets the
    perceptual term at its full weight, as the gradient of their code gives it. Departures: both
    nets run in eval mode (theirs used batch statistics of the 64 z), and the result is taken at
    the final z (theirs at the z before the last step). Images are mapped to the GAN's [-1, 1] as
    in their 64-pixel notebook (their 224-pixel notebook feeds ResNet-preprocessed pixels to a
    [-1, 1] GAN); their script's settings differ again (perceptual weight 0.1, 10,000 iterations, no
    context weights).

    Each image's initial z come from its own seed (drawn in order from ``generator``); the rows
    (image, z) share the batch axis in chunks of at most ``batch_size``, each chunk optimised for
    all iterations, so results do not depend on ``batch_size``. Neither net is modified.
    """
    if not isinstance(input_space, InputSpace):
        raise TypeError(f"input_space must be the InputSpace of x (for example classifier.input_space), "
                        f"got {type(input_space).__name__}")
    check_images(x, input_space)
    hole = _hole(hole, x)
    for name, net in (("gan_generator", gan_generator), ("gan_discriminator", gan_discriminator)):
        if not isinstance(net, nn.Module):
            raise TypeError(f"{name} must be an nn.Module, got {type(net).__name__}")
        check_model_ready(net)
    latent_size = getattr(gan_generator, "latent_size", None)
    if not isinstance(latent_size, int):
        raise ValueError("gan_generator must have an int attribute latent_size (models.DCGANGenerator has)")
    samples, iterations = integer("samples", samples), integer("iterations", iterations, 0)
    lr, momentum = number("lr", lr, 0.0, strict=True), number("momentum", momentum, 0.0, maximum=1.0)
    perceptual_weight = number("perceptual_weight", perceptual_weight)
    if not isinstance(return_details, bool):
        raise ValueError(f"return_details must be True or False, got {return_details!r}")
    weights = context_weights(hole, kernel_size)
    batch_size = resolve_batch_size(batch_size, x)
    dtype = next(gan_generator.parameters()).dtype
    z_all = torch.cat([
        uniform_latents(samples, latent_size, torch.Generator(device=x.device).manual_seed(seed),
                        device=x.device, dtype=dtype)
        for seed in image_seeds(generator, x.shape[0])
    ])
    y_all = (2 * input_space.denormalize(x.detach()) - 1).to(dtype)
    outputs = {key: [] for key in ("images", "generated", "latents", "loss")}
    for start, stop in chunk_ranges(x.shape[0] * samples, batch_size):
        image = torch.arange(start, stop, device=x.device) // samples
        z, y, w = z_all[start:stop], y_all[image], weights[image].to(dtype)

        def loss_of(z):
            out = gan_generator(z)
            contextual = (w * (out - y).abs()).flatten(1).sum(1)
            return contextual + perceptual_weight * F.softplus(-gan_discriminator(out).view(-1)), out

        velocity = torch.zeros_like(z)
        for _ in range(iterations):
            z = z.detach().requires_grad_(True)
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(loss_of(z)[0].sum(), z)
            with torch.no_grad():
                previous, velocity = velocity, momentum * velocity - lr * grad
                z = (z - momentum * previous + (1 + momentum) * velocity).clamp(-1, 1)
        with torch.no_grad():
            loss, out = loss_of(z.detach())
            fill = input_space.normalize((out.to(x.dtype) + 1) / 2)
            outputs["images"].append(torch.where(hole[image], fill, x.detach()[image]))
            outputs["generated"].append(fill)
            outputs["latents"].append(z.detach())
            outputs["loss"].append(loss)
    result = {key: torch.cat(value).unflatten(0, (x.shape[0], samples)) for key, value in outputs.items()}
    return Inpainting(**result) if return_details else result["images"]


def class_retention(model: nn.Module, reconstructions: Tensor, target, *, batch_size: int | None = None) -> Tensor:
    """Share of each image's variations (N, S, C, H, W) that ``model`` classifies as ``target``
    (int or (N,)): paper D's "classification accuracy" of the reconstructions. Returns (N,)."""
    float_tensor("reconstructions", reconstructions)
    if reconstructions.dim() != 5:
        raise ValueError(f"reconstructions must be (N, S, C, H, W), got {tuple(reconstructions.shape)}")
    check_model_ready(model)
    n, s = reconstructions.shape[:2]
    target = check_targets(target, n, None, reconstructions.device)
    rows = reconstructions.flatten(0, 1)
    batch_size = resolve_batch_size(batch_size, rows)
    with torch.no_grad():
        predicted = torch.cat([model(rows[a:b]).argmax(dim=1) for a, b in chunk_ranges(rows.shape[0], batch_size)])
    return (predicted.view(n, s) == target[:, None]).to(reconstructions.dtype).mean(dim=1)
