"""Batching on the batch axis (reliable_saliency.core.batching): chunked reductions and per-image
noise do not depend on the chunk size; the default batch size rule."""

from __future__ import annotations

import pytest
import torch

from helpers import gen
from reliable_saliency.core import batching


def test_reduce_rows_and_image_noise_are_chunk_invariant(rng):
    n, samples, shape = 3, 5, (2, 3)
    values = torch.randn((n * samples, 4), generator=rng)
    ref_noise = None
    for batch_size in (1, 2, 7, 15, 40):
        noise = batching.ImageNoise(gen(4), n, samples, shape, device="cpu", dtype=torch.float32)
        rows = []
        out = batching.reduce_rows(
            n, samples, batch_size,
            lambda a, b: rows.append(noise.rows(a, b)) or values[a:b],
            lambda block: block.sum(dim=1),
        )
        torch.testing.assert_close(out, values.view(n, samples, 4).sum(1), rtol=0, atol=0)
        full = torch.cat(rows)
        ref_noise = full if ref_noise is None else ref_noise
        torch.testing.assert_close(full, ref_noise, rtol=0, atol=0)
        assert len(noise._blocks) <= -(-batch_size // samples) + 1  # finished images are dropped
    seeds = torch.randint(0, 2**62, (n,), generator=gen(4)).tolist()
    expected = torch.cat([torch.randn((samples, *shape), generator=gen(s)) for s in seeds])
    torch.testing.assert_close(ref_noise, expected, rtol=0, atol=0)


def test_default_batch_size_rule():
    """CPU: a pixel budget kept within 8..32 inputs (benchmarks/batch_rule.py measured it)."""
    assert batching.default_batch_size(torch.zeros(1, 3, 32, 32)) == 32
    assert batching.default_batch_size(torch.zeros(1, 3, 16, 16)) == 32
    assert batching.default_batch_size(torch.zeros(1, 3, 64, 64)) == 32
    assert batching.default_batch_size(torch.zeros(1, 3, 128, 128)) == 16
    assert batching.default_batch_size(torch.zeros(1, 3, 224, 224)) == 8
    assert batching.default_batch_size(torch.zeros(1, 1, 28, 28)) == 32
    assert batching.default_batch_size(torch.zeros(1, 3, 1, 1)) == 32


def test_resolve_seeds_checks_given_seeds_or_draws_them_in_order():
    import pytest

    from reliable_saliency.core.batching import image_seeds, resolve_seeds

    drawn = resolve_seeds(None, torch.Generator().manual_seed(4), 3)
    assert drawn == image_seeds(torch.Generator().manual_seed(4), 3)
    assert resolve_seeds(torch.tensor([5, 6]), None, 2) == [5, 6]
    with pytest.raises(ValueError, match="either generator or seeds"):
        resolve_seeds([1, 2], torch.Generator(), 2)
    with pytest.raises(ValueError, match="sequence of 3 ints"):
        resolve_seeds([1, 2], None, 3)
    with pytest.raises(ValueError, match="seeds entry must be an int"):
        resolve_seeds([1, -2], None, 2)
