"""RelEx (Lim, Lee, Kim, CVPR 2021): a per-channel mask learned on a fresh batch of noisy copies of
the image every iteration, so that it keeps the target class alive in its neighbourhood.

All images of a call are optimised at once: every iteration evaluates ``2 * samples`` rows per image
(the keep pass ``x~ * m`` of each noisy copy, then the delete pass ``x~ * (1 - m)``), and the rows
of all images share the batch axis in chunks of at most ``batch_size`` model inputs
(:func:`..core.batching.reduce_rows`). Each image has its own random stream, so an image's mask
depends neither on the chunk size nor on the other images of the call.
"""

from __future__ import annotations


import torch
from torch import Tensor

from ..core.batching import draw, image_seeds, reduce_rows, resolve_batch_size, resolve_seeds, rows_of
from ..core.inputs import check_targets
from ..core.options import batch_size as check_batch_size
from ..core.options import float_tensor, integer, number
from .objective import Objective, graph_input, view_rows
from .registry import register

__all__ = ["relex", "relex_loss", "RELEX_EPS"]

RELEX_EPS = 1e-7  # inside the delete term's log, as in the authors' code


def _row_terms(log_p: Tensor, delete: Tensor, lambda2: float) -> Tensor:
    """Per-row loss terms from ``log f_c``: ``-log f_c`` on keep rows and
    ``-lambda2 * log(1 - f_c + 1e-7)`` on delete rows (``delete``: bool, per row)."""
    dropped = -lambda2 * torch.log(1 - log_p.exp() + RELEX_EPS)
    return torch.where(delete, dropped, -log_p)


def relex_loss(model, x_noisy: Tensor, mask: Tensor, target, lambda1: float = 1e-4,
               lambda2: float = 1.0) -> Tensor:
    """The RelEx objective of each image, shape (N,)::

        mean_s [ -log f_c(x~_s * m) - lambda2 * log(1 - f_c(x~_s * (1 - m)) + 1e-7) ] + lambda1 * sum |m|

    ``x_noisy``: (N, S, C, H, W) noisy copies; ``mask``: (N, C, H, W); ``target``: int or (N,).
    ``f_c`` is the softmax probability of the target (``-log f_c`` via ``log_softmax``). All
    ``2 * N * S`` rows go through the model in one pass (meant for checks and small batches); the
    result is differentiable w.r.t. ``mask``, ``x_noisy`` and the model's parameters.
    """
    float_tensor("x_noisy", x_noisy)
    float_tensor("mask", mask)
    if x_noisy.dim() != 5 or mask.shape != (x_noisy.shape[0], *x_noisy.shape[2:]):
        raise ValueError(
            f"x_noisy must be (N, S, C, H, W) and mask (N, C, H, W), got {tuple(x_noisy.shape)} "
            f"and {tuple(mask.shape)}"
        )
    lambda1, lambda2 = number("lambda1", lambda1), number("lambda2", lambda2)
    n, s = x_noisy.shape[:2]
    target = check_targets(target, n, None, x_noisy.device)
    m = mask[:, None]
    inputs = torch.cat([(x_noisy * m).flatten(0, 1), (x_noisy * (1 - m)).flatten(0, 1)])
    logits = model(inputs)
    check_targets(target, n, logits.shape[1], logits.device)
    rows = torch.cat([target.repeat_interleave(s)] * 2)
    log_p = logits.log_softmax(dim=1).gather(1, rows[:, None])[:, 0]
    delete = torch.arange(2 * n * s, device=log_p.device) >= n * s
    terms = _row_terms(log_p, delete, lambda2).view(2, n, s)
    return terms.sum(dim=0).mean(dim=1) + lambda1 * mask.abs().flatten(1).sum(dim=1)


class _ImageStreams:
    """One generator per image (on ``device``, seeded with that image's seed). Image ``i`` draws
    ``init_scale * rand(C, H, W)`` (the initial mask) first, then one ``randn(samples, C, H, W)``
    block per iteration when its rows are first needed; rows are requested in increasing order."""

    def __init__(self, seeds: list[int], samples: int, shape, *, device, dtype):
        self.generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
        self.samples, self.shape, self.device, self.dtype = samples, tuple(shape), device, dtype
        self._blocks: dict[int, Tensor] = {}

    def initial_masks(self, scale: float) -> Tensor:
        return scale * torch.stack([
            draw(torch.rand, self.shape, generator=g, device=self.device, dtype=self.dtype)
            for g in self.generators
        ])

    def _noise(self, image: int) -> Tensor:
        return draw(torch.randn, (self.samples, *self.shape), generator=self.generators[image],
                    device=self.device, dtype=self.dtype)

    def new_iteration(self) -> None:
        self._blocks.clear()

    def rows(self, start: int, stop: int, rows_per_image: int) -> Tensor:
        """Noise of rows ``start..stop-1``: row ``r`` is copy ``(r % rows_per_image) % samples`` of
        image ``r // rows_per_image`` (keep and delete rows of a copy share its noise)."""
        first, last = start // rows_per_image, (stop - 1) // rows_per_image
        for image in [i for i in self._blocks if i < first]:
            del self._blocks[image]
        pieces = []
        for image in range(first, last + 1):
            if image not in self._blocks:
                self._blocks[image] = self._noise(image)
            lo = max(start - image * rows_per_image, 0)
            hi = min(stop - image * rows_per_image, rows_per_image)
            copies = torch.arange(lo, hi, device=self.device) % self.samples
            pieces.append(self._blocks[image][copies])
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


def _mask_gradient_rows(objective, inputs, target, delete, lambda2, create_graph) -> Tensor:
    """d(loss terms)/d(inputs) of a chunk of rows (one model pass)."""
    if not create_graph:
        inputs = inputs.detach()
    if not inputs.requires_grad:
        inputs = inputs.detach().requires_grad_(True)
    with torch.enable_grad():
        terms = _row_terms(objective.scores(inputs, target), delete, lambda2)
        (grad,) = torch.autograd.grad(
            terms.sum(), inputs, create_graph=create_graph, allow_unused=True, materialize_grads=True
        )
    return grad


@register("relex")
def relex(
    model, x, target, *, create_graph=False, generator=None, batch_size=None,
    iterations=50, samples=50, noise_level=0.1, lambda1=1e-4, lambda2=1.0, lr=0.1, momentum=0.99,
    init_scale=0.01, seeds=None,
) -> Tensor:
    """RelEx mask (Lim et al. 2021), per channel and pixel, in [0, 1], shape of ``x``.

    Minimises, for each image, :func:`relex_loss` with ``samples`` fresh noisy copies
    ``x~ = x + noise_level * (max x - min x) * eps`` per iteration (max/min over the normalised
    image; not clamped to the valid range; masking multiplies the normalised input, so a
    masked-out pixel is the dataset mean).
    As in the authors' code (``JBNU-VL/RelEx``, ``relex.py``): the L1 term is the *sum* of
    ``|m|`` over all C*H*W entries, added to every copy's loss, and copies are *averaged*;
    ``m0 ~ init_scale * U[0, 1)``; each iteration the mask gradient ``g`` of an image is divided
    by its own L2 norm, then SGD with momentum (``v = momentum * v + g / |g|``, ``v`` starting at 0;
    ``m = clamp(m - lr * v, 0, 1)``). Defaults are the authors': 50 iterations, 50 copies,
    lambda1 1e-4 (tuned for 3x224x224 masks: rescale for 32x32), lambda2 1, lr 0.1, momentum 0.99.
    Cost: ``2 * samples * iterations`` model passes (forward + input gradient) per image.

    ``target``: the class kept by the mask, as given (the book passes the clean image's prediction,
    also when explaining an adversarial image, like the authors). Randomness: one seed per image
    (``seeds``, else drawn in order from ``generator`` with :func:`..core.batching.image_seeds`);
    image ``i``'s generator (on ``x.device``) draws ``m0`` then one ``randn(samples, C, H, W)`` per
    iteration. So image ``i`` gets the same mask alone (``seeds=[s_i]``) as in any call, and the
    first ``k`` images of a call get the same masks as the call on ``x[:k]`` with the same generator.
    Draws are made in float32 whatever the dtype (:func:`..core.batching.draw`), so float32 and
    float64 masks differ only by rounding, which the optimisation amplifies (mean |difference| below
    1e-3 on a LeNet, tested; with dtype-dependent draws it was about 0.05). Masks are identical
    across chunk sizes only where the model's per-row
    arithmetic does not depend on the batch size (CPU here, float64 everywhere); cuDNN picks
    kernels per batch size and may be nondeterministic.

    ``create_graph=True`` unrolls the optimisation: the mask is differentiable w.r.t. ``x`` (through
    the noise scale, the copies and every update) and the model's parameters. Memory and time grow
    with ``iterations * samples * N`` (every pass is kept, and differentiating the mask costs a
    double backward of each): use a short run (a few iterations and copies) for adaptive attacks.
    Deviations: ``-log f_c`` uses ``log_softmax`` (same value, no underflow); an image whose mask
    gradient is exactly zero takes no new gradient step (the authors' code divides by zero).
    """
    objective = Objective(model, x, target, "log_probability")
    iterations = integer("iterations", iterations)
    samples = integer("samples", samples)
    noise_level, lambda1 = number("noise_level", noise_level), number("lambda1", lambda1)
    lambda2, lr = number("lambda2", lambda2), number("lr", lr, strict=True)
    momentum = number("momentum", momentum, maximum=1.0)
    init_scale = number("init_scale", init_scale, maximum=1.0)
    batch_size = resolve_batch_size(check_batch_size(batch_size), x)
    n, per_image = x.shape[0], 2 * samples
    streams = _ImageStreams(resolve_seeds(seeds, generator, n), samples, x.shape[1:],
                            device=x.device, dtype=x.dtype)
    source = graph_input(x, create_graph)
    flat = source.flatten(1)
    sigma = noise_level * (flat.amax(dim=1) - flat.amin(dim=1))
    mask = streams.initial_masks(init_scale)
    velocity = torch.zeros_like(mask)
    tiny = torch.finfo(x.dtype).tiny

    def evaluate(start, stop):
        image, row = rows_of(start, stop, per_image, x.device)
        delete = row >= samples
        noisy = torch.addcmul(source[image], view_rows(sigma[image]), streams.rows(start, stop, per_image))
        kept = torch.where(view_rows(delete), 1 - mask[image], mask[image])
        grad = _mask_gradient_rows(objective, noisy * kept, objective.target[image], delete, lambda2,
                                   create_graph)
        return torch.where(view_rows(delete), -noisy, noisy) * grad  # d term / d m, per row

    def reduce(block):  # (k, 2 * samples, C, H, W): mean over copies of keep + delete terms
        return block.sum(dim=1) / samples

    with torch.set_grad_enabled(create_graph):
        for _ in range(iterations):
            streams.new_iteration()
            grad = reduce_rows(n, per_image, batch_size, evaluate, reduce) + lambda1 * mask.sign()
            norm = grad.flatten(1).norm(dim=1).clamp_min(tiny)
            velocity = momentum * velocity + grad / view_rows(norm)
            mask = (mask - lr * velocity).clamp(0.0, 1.0)
    return mask
