"""Putting Monte-Carlo samples and integration steps on the batch axis, in chunks.

Explainers that evaluate the model on ``S`` variants of each of ``N`` images (SmoothGrad noise,
IG path points, RISE masks) lay the ``N * S`` variants out as *rows*: row ``r`` is sample
``r % S`` of image ``r // S``. :func:`reduce_rows` evaluates the rows in chunks of at most
``batch_size`` model inputs and reduces each image's ``S`` results as soon as they are complete,
so memory stays bounded by one chunk plus one image's samples.

Randomness never depends on the chunk size: :class:`ImageNoise` draws one seed per image from the
caller's generator up front and generates all ``S`` samples of an image at once from a generator
seeded with it, whatever chunks the rows are later cut into.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "CPU_PIXEL_BUDGET",
    "CPU_BATCH_RANGE",
    "CUDA_PIXEL_BUDGET",
    "default_batch_size",
    "resolve_batch_size",
    "chunk_ranges",
    "rows_of",
    "reduce_rows",
    "image_seeds",
    "resolve_seeds",
    "ImageNoise",
]

# CPU: model inputs per pass from a pixel budget, kept between 8 and 32 inputs. Measured on the
# project's 2-core CPU (benchmarks/batch_rule.py, results in benchmarks/results/): the time per input
# falls until 8-32 inputs share a pass at every size from 32 to 224 px (one 224-px input per pass
# costs 1.4-1.5x the best), and 64 or more 32-px inputs (32 or more 224-px ones) get slower again.
CPU_PIXEL_BUDGET = 64 * 64 * 64
CPU_BATCH_RANGE = (8, 32)
# CUDA: 1024 CIFAR inputs, 20 ImageNet (224x224) inputs per pass; conservative, so that a
# create_graph pass of a CIFAR ResNet-18 still fits in GPU memory (not measured on a GPU yet).
CUDA_PIXEL_BUDGET = 1024 * 32 * 32


def default_batch_size(x: Tensor) -> int:
    """Model inputs per forward pass for images like ``x`` (N, C, H, W). CPU: ``64 * 64 * 64``
    pixels divided by ``H * W``, kept within 8..32 (32 inputs up to 64 x 64, 16 of 128 x 128, 8 of
    224 x 224); CUDA: ``1024 * 32 * 32`` pixels divided by ``H * W``, at least 1."""
    pixels = max(1, x.shape[-2] * x.shape[-1])
    if x.device.type == "cuda":
        return max(1, CUDA_PIXEL_BUDGET // pixels)
    low, high = CPU_BATCH_RANGE
    return min(high, max(low, CPU_PIXEL_BUDGET // pixels))


def resolve_batch_size(batch_size: int | None, x: Tensor) -> int:
    """``batch_size`` checked (a positive int), or :func:`default_batch_size` when None."""
    if batch_size is None:
        return default_batch_size(x)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"batch_size must be a positive int (model inputs per pass) or None, got {batch_size!r}"
        )
    return batch_size


def chunk_ranges(total: int, batch_size: int):
    """``(start, stop)`` pairs covering ``range(total)`` in steps of ``batch_size``."""
    for start in range(0, total, batch_size):
        yield start, min(start + batch_size, total)


def rows_of(start: int, stop: int, samples: int, device) -> tuple[Tensor, Tensor]:
    """Image and sample indices (LongTensors) of rows ``start..stop-1`` with ``samples`` per image."""
    rows = torch.arange(start, stop, device=device)
    return rows // samples, rows % samples


def reduce_rows(
    n: int,
    samples: int,
    batch_size: int,
    evaluate: Callable[[int, int], Tensor],
    reduce: Callable[[Tensor], Tensor],
) -> Tensor:
    """Evaluate ``N * S`` rows in chunks and reduce each image's samples.

    ``evaluate(start, stop)`` returns the per-row results (stop - start, ...) of rows
    ``start..stop-1`` (one model pass of at most ``batch_size`` inputs). ``reduce(block)`` maps the
    complete results of ``k`` images, shape (k, S, ...), to (k, ...). Each image's block holds the
    same rows in the same order whatever ``batch_size`` is, so the reduction does not depend on it.
    Autograd graphs of the results are kept (for ``create_graph``). Returns (N, ...).
    """
    if n < 1 or samples < 1:
        raise ValueError(f"need at least one image and one sample, got n={n}, samples={samples}")
    outputs, pending, done = [], [], 0
    for start, stop in chunk_ranges(n * samples, batch_size):
        pending.append(evaluate(start, stop))
        complete = stop // samples
        if complete == done:
            continue
        rows = pending[0] if len(pending) == 1 else torch.cat(pending)
        used = (complete - done) * samples
        outputs.append(reduce(rows[:used].unflatten(0, (complete - done, samples))))
        pending = [rows[used:]] if used < rows.shape[0] else []
        done = complete
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


def image_seeds(generator: torch.Generator | None, n: int) -> list[int]:
    """``n`` seeds drawn from ``generator`` (the global RNG when None), one per image."""
    device = generator.device if generator is not None else "cpu"
    return torch.randint(0, 2**62, (n,), generator=generator, device=device).tolist()


def draw(sampler, shape, *, generator: torch.Generator | None, device, dtype: torch.dtype) -> Tensor:
    """``sampler`` (``torch.rand``, ``torch.randn``) drawn in float32 and cast to ``dtype``: one
    random stream whatever the dtype, so a float64 run uses the same draws as a float32 run and the
    two differ only by rounding."""
    return sampler(shape, generator=generator, device=device, dtype=torch.float32).to(dtype)


def resolve_seeds(seeds, generator: torch.Generator | None, n: int) -> list[int]:
    """One seed per image: ``seeds`` checked (a sequence or tensor of ``n`` non-negative ints, so
    an image explained alone, or in any call, gets its own draws), else ``n`` seeds drawn in order
    from ``generator`` (:func:`image_seeds`). Giving both is an error."""
    from collections.abc import Sequence

    from .options import integer

    if seeds is None:
        return image_seeds(generator, n)
    if generator is not None:
        raise ValueError("pass either generator or seeds (one per image), not both")
    if isinstance(seeds, Tensor):
        seeds = seeds.tolist()
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or len(seeds) != n:
        raise ValueError(f"seeds must be a sequence of {n} ints (one per image), got {seeds!r}")
    return [integer("seeds entry", seed, 0, 2**63 - 1, "one per image") for seed in seeds]


class ImageNoise:
    """Per-image standard-normal noise of shape (S, *shape), independent of the chunking.

    Image ``i``'s samples all come from one ``torch.randn`` call on a generator (on ``device``)
    seeded with the ``i``-th of :func:`resolve_seeds` (the caller's per-image ``seeds``, else drawn
    from ``generator``). Blocks are generated when first needed and
    dropped once rows have moved past the image, so rows must be requested in increasing order.
    """

    def __init__(self, generator: torch.Generator | None, n: int, samples: int, shape, *, device, dtype,
                 seeds=None):
        self.seeds = resolve_seeds(seeds, generator, n)
        self.samples, self.shape = samples, tuple(shape)
        self.device, self.dtype = torch.device(device), dtype
        self._blocks: dict[int, Tensor] = {}

    def block(self, image: int) -> Tensor:
        """All S noise samples of one image, (S, *shape)."""
        if image not in self._blocks:
            gen = torch.Generator(device=self.device).manual_seed(self.seeds[image])
            self._blocks[image] = draw(torch.randn, (self.samples, *self.shape), generator=gen,
                                       device=self.device, dtype=self.dtype)
        return self._blocks[image]

    def rows(self, start: int, stop: int) -> Tensor:
        """Noise of rows ``start..stop-1`` (row r: sample r % S of image r // S), (stop-start, *shape)."""
        first, last = start // self.samples, (stop - 1) // self.samples
        for image in [i for i in self._blocks if i < first]:
            del self._blocks[image]
        pieces = []
        for image in range(first, last + 1):
            lo = max(start - image * self.samples, 0)
            hi = min(stop - image * self.samples, self.samples)
            pieces.append(self.block(image)[lo:hi])
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)
