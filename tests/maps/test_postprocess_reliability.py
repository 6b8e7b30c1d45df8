"""Paper C's map post-processing (the ``adversarial_measure_map`` and ``quantize_8bit`` steps)
against a numpy transcription of the authors' pipeline and torchvision's 8-bit PNG writer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reliable_saliency.maps import postprocess as pp


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(31)


def authors_reference(maps: np.ndarray, image: np.ndarray, quantize: bool) -> np.ndarray:
    """Per image: |R|, clamp to [0, 99th percentile], times the [0, 1] image, channel sum,
    min-max, and the 8-bit rounding of torchvision's save_image."""
    out = []
    for m, x in zip(maps, image):
        m = np.abs(m)
        m = np.clip(m, 0, np.percentile(m, 99))
        s = (m * x).sum(0)
        s = (s - s.min()) / (s.max() - s.min())
        out.append(np.floor(np.clip(s * 255 + 0.5, 0, 255)) / 255 if quantize else s)
    return np.stack(out)


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("quantize", [False, True])
def test_adversarial_measure_map_matches_the_authors(rng, channels, quantize):
    maps = torch.randn(3, channels, 9, 7, generator=rng, dtype=torch.float64)
    image = torch.rand(3, 3, 9, 7, generator=rng, dtype=torch.float64)
    got = pp.adversarial_measure_map(maps, image, quantize=quantize)
    ref = authors_reference(maps.numpy(), image.numpy(), quantize)
    assert got.shape == (3, 9, 7)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12, atol=1e-12)
    via_steps = pp.postprocess(maps, [("adversarial_measure_map", {"quantize": quantize})], x=image)
    torch.testing.assert_close(via_steps, got, rtol=0, atol=0)
    spelled_out = pp.postprocess(
        maps, ["absolute", ("winsorize", {"q": 99}), "times_input", "channel_sum", "normalize_minmax"]
        + (["quantize_8bit"] if quantize else []), x=image,
    )
    torch.testing.assert_close(spelled_out, got, rtol=0, atol=1e-15)


def test_per_image_and_per_pixel_maps(rng):
    maps = torch.rand(4, 6, 6, generator=rng, dtype=torch.float64)
    image = torch.rand(4, 3, 6, 6, generator=rng, dtype=torch.float64)
    batched = pp.adversarial_measure_map(maps, image, q=90)
    for i in range(4):
        alone = pp.adversarial_measure_map(maps[i : i + 1], image[i : i + 1], q=90)
        torch.testing.assert_close(batched[i : i + 1], alone, rtol=0, atol=0)
    one_channel = pp.adversarial_measure_map(maps.unsqueeze(1), image, q=90)
    torch.testing.assert_close(batched, one_channel, rtol=0, atol=0)
    assert bool((batched.amin((1, 2)) == 0).all() and (batched.amax((1, 2)) == 1).all())
    constant = pp.adversarial_measure_map(torch.ones(2, 3, 4, 4), torch.full((2, 3, 4, 4), 0.5))
    assert bool((constant == 0).all())
    # without an image: the authors' image-free ``map`` output
    image_free = pp.normalize_minmax(pp.winsorize(maps.abs(), 99))
    torch.testing.assert_close(pp.adversarial_measure_map(maps), image_free)


def test_quantize_8bit_matches_torchvision_png(rng, tmp_path):
    from PIL import Image
    from torchvision.utils import save_image

    m = torch.rand(1, 1, 16, 16, generator=rng)
    m[0, 0, 0, :4] = torch.tensor([0.0, 1.0, 0.5 / 255, 254.5 / 255])  # rounding edges
    save_image(m[0], tmp_path / "map.png")
    stored = np.asarray(Image.open(tmp_path / "map.png").convert("L"), dtype=np.float64) / 255
    np.testing.assert_allclose(pp.quantize_8bit(m)[0, 0].double().numpy(), stored, rtol=0, atol=1e-6)
    assert torch.equal(pp.quantize_8bit(torch.tensor([[-0.5, 1.5]])), torch.tensor([[0.0, 1.0]]))


def test_steps_that_need_the_input(rng):
    maps = torch.randn(2, 3, 4, 4, generator=rng)
    assert set(pp.NEEDS_INPUT) == {"times_input", "adversarial_measure_map"}
    assert {"quantize_8bit", "adversarial_measure_map"} <= set(pp.STEPS)
    with pytest.raises(ValueError, match="'adversarial_measure_map' step needs the input batch.*denormalize"):
        pp.postprocess(maps, ["adversarial_measure_map"])
    normalised = torch.randn(2, 3, 4, 4, generator=rng)
    with pytest.raises(ValueError, match="denormalize"):
        pp.postprocess(maps, ["adversarial_measure_map"], x=normalised)
    with pytest.raises(ValueError, match="shape of x"):
        pp.adversarial_measure_map(maps, torch.rand(2, 1, 4, 4))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        pp.adversarial_measure_map(torch.rand(2, 16))
