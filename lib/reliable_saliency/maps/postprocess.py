"""Named post-processing steps for saliency maps: per image, batched, torch only.

Maps have the batch axis first: (N, C, H, W) from explainers, (N, H, W) after a channel reduction;
percentile and normalisation steps work per image on any (N, ...) shape. Every step is
differentiable where the math allows (percentiles through ``kthvalue``, like a sort).

:func:`postprocess` applies a sequence of steps. Each step is a name from :data:`STEPS`, or a
``(name, {"option": value})`` pair for steps with options::

    postprocess(maps, ["absolute", "channel_max", ("divide_by_percentile", {"q": 99})])
    postprocess(maps, ["absolute", "times_input", "channel_sum"], x=x)   # |R| x input
    postprocess(maps, ["adversarial_measure_map"], x=space.denormalize(x))  # paper C's map r

Steps listed in :data:`NEEDS_INPUT` take the input batch as their second argument; ``postprocess``
passes its ``x`` to them (and raises when it is missing).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = [
    "percentile",
    "absolute",
    "channel_sum",
    "channel_max",
    "clip_percentile",
    "winsorize",
    "divide_by_percentile",
    "normalize_minmax",
    "normalize_sum",
    "times_input",
    "quantize_8bit",
    "adversarial_measure_map",
    "STEPS",
    "NEEDS_INPUT",
    "postprocess",
]


def _check_maps(m: Tensor, name: str = "maps", min_dim: int = 2) -> None:
    if not isinstance(m, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(m).__name__}")
    if m.dim() < min_dim:
        raise ValueError(f"{name} must have a batch axis first, shape (N, ...), got {tuple(m.shape)}")
    if not m.is_floating_point():
        raise TypeError(f"{name} must be a float tensor, got {m.dtype}")


def _check_q(q, low: float = 0.0) -> float:
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not low <= q <= 100:
        raise ValueError(f"percentile q must be a number in [{low:g}, 100], got {q!r}")
    return float(q)


def _per_image(values: Tensor, like: Tensor) -> Tensor:
    """(N,) -> (N, 1, ..., 1) broadcastable against ``like``."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def percentile(m: Tensor, q: float) -> Tensor:
    """The q-th percentile (0..100) of each image's values, (N,), with linear interpolation between
    order statistics (numpy's default method)."""
    _check_maps(m)
    q = _check_q(q)
    flat = m.flatten(1)
    position = q / 100 * (flat.shape[1] - 1)
    low = int(position)
    high = min(low + 1, flat.shape[1] - 1)
    lower = flat.kthvalue(low + 1, dim=1).values
    if high == low or position == low:
        return lower
    upper = flat.kthvalue(high + 1, dim=1).values
    return lower + (position - low) * (upper - lower)


def absolute(m: Tensor) -> Tensor:
    """Elementwise absolute value."""
    _check_maps(m)
    return m.abs()


def _channel_axis(m: Tensor, step: str) -> None:
    _check_maps(m)
    if m.dim() != 4:
        raise ValueError(f"{step} needs maps of shape (N, C, H, W) or (N, 1, H, W), got {tuple(m.shape)}")


def channel_sum(m: Tensor) -> Tensor:
    """Sum over the channel axis: (N, C, H, W) -> (N, H, W)."""
    _channel_axis(m, "channel_sum")
    return m.sum(dim=1)


def channel_max(m: Tensor) -> Tensor:
    """Maximum over the channel axis: (N, C, H, W) -> (N, H, W). Signed: apply ``absolute`` first
    for max |gradient| (Simonyan et al.)."""
    _channel_axis(m, "channel_max")
    return m.amax(dim=1)


def clip_percentile(m: Tensor, q: float = 99.0) -> Tensor:
    """Clip each image to [its (100 - q)-th, its q-th percentile] (both tails), q in [50, 100]."""
    q = _check_q(q, 50.0)
    low, high = percentile(m, 100 - q), percentile(m, q)
    return torch.minimum(torch.maximum(m, _per_image(low, m)), _per_image(high, m))


def winsorize(m: Tensor, q: float = 99.0) -> Tensor:
    """Clip only the top of each image at its q-th percentile."""
    return torch.minimum(m, _per_image(percentile(m, q), m))


def divide_by_percentile(m: Tensor, q: float = 99.0) -> Tensor:
    """Divide each image by its q-th percentile and clamp to [0, 1] (RelEx). Images whose
    percentile is not positive (for example all-zero maps) are only clamped."""
    scale = percentile(m, q)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return (m / _per_image(scale, m)).clamp(0.0, 1.0)


def normalize_minmax(m: Tensor) -> Tensor:
    """Rescale each image to [0, 1] by its min and max; constant images become 0."""
    _check_maps(m)
    flat = m.flatten(1)
    low, high = flat.amin(dim=1), flat.amax(dim=1)
    span = high - low
    span = torch.where(span > 0, span, torch.ones_like(span))
    return (m - _per_image(low, m)) / _per_image(span, m)


def normalize_sum(m: Tensor) -> Tensor:
    """Divide each image by its sum, so it sums to 1. Needs non-negative maps (apply ``absolute``
    first); all-zero images stay 0."""
    _check_maps(m)
    if bool((m < 0).any()):
        raise ValueError("normalize_sum needs non-negative maps; apply 'absolute' (or a ReLU) first")
    total = m.flatten(1).sum(dim=1)
    total = torch.where(total > 0, total, torch.ones_like(total))
    return m / _per_image(total, m)


def times_input(m: Tensor, x: Tensor) -> Tensor:
    """``m * x`` elementwise, for maps of the shape of ``x`` (N, C, H, W) or (N, 1, H, W).
    After ``absolute`` this is "|R| x input"."""
    _check_maps(m)
    if not isinstance(x, Tensor):
        raise TypeError(f"times_input needs the input batch x as a tensor, got {type(x).__name__}")
    if m.shape != x.shape and not (m.dim() == 4 and m.shape[1] == 1 and m.shape[0] == x.shape[0]
                                   and m.shape[2:] == x.shape[2:]):
        raise ValueError(
            f"times_input needs maps of the shape of x {tuple(x.shape)} or (N, 1, H, W), got "
            f"{tuple(m.shape)}; apply it before channel reductions"
        )
    return m * x


def quantize_8bit(m: Tensor) -> Tensor:
    """Round to multiples of 1/255 as an 8-bit image file stores them (torchvision's ``save_image``:
    ``floor(clamp(255 m + 0.5, 0, 255)) / 255``); values are clamped to [0, 1] first. Piecewise
    constant, so its gradient is zero almost everywhere."""
    _check_maps(m)
    return torch.floor((m * 255 + 0.5).clamp(0.0, 255.0)) / 255


def adversarial_measure_map(m: Tensor, image: Tensor | None = None, q: float = 99.0,
                            quantize: bool = False) -> Tensor:
    """The map ``r`` in [0, 1] that paper C's reliability measure consumed (the authors' code):
    ``|R|`` clipped at its q-th percentile (per image, over all entries), times the **[0, 1]
    image** (``input_space.denormalize(x)``, not the normalised input), summed over channels,
    min-max normalised per image, and with ``quantize`` rounded to 8 bits (the authors saved the
    maps as 8-bit PNGs). Maps (N, C, H, W) or (N, 1, H, W) (broadcast against the image), or
    per-pixel (N, H, W); returns (N, H, W). ``image=None`` skips the multiplication (the authors'
    image-free ``map`` output); :func:`postprocess` always passes its ``x``."""
    _check_maps(m)
    if m.dim() == 3:
        m = m.unsqueeze(1)
    _channel_axis(m, "adversarial_measure_map")
    m = winsorize(m.abs(), q)
    if image is not None:
        if not isinstance(image, Tensor) or not image.is_floating_point():
            raise TypeError("adversarial_measure_map needs the [0, 1] image batch as a float tensor")
        low, high = float(image.min()), float(image.max())
        if low < -1e-4 or high > 1 + 1e-4:
            raise ValueError(
                f"adversarial_measure_map multiplies by the [0, 1] image, got values in [{low:.3f}, "
                f"{high:.3f}]; pass input_space.denormalize(x), not the normalised input"
            )
        m = times_input(m, image)
    m = normalize_minmax(m.sum(dim=1))
    return quantize_8bit(m) if quantize else m


STEPS: dict[str, Callable[..., Tensor]] = {
    "absolute": absolute,
    "channel_sum": channel_sum,
    "channel_max": channel_max,
    "clip_percentile": clip_percentile,
    "winsorize": winsorize,
    "divide_by_percentile": divide_by_percentile,
    "normalize_minmax": normalize_minmax,
    "normalize_sum": normalize_sum,
    "times_input": times_input,
    "quantize_8bit": quantize_8bit,
    "adversarial_measure_map": adversarial_measure_map,
}

# Steps that take the input batch (``postprocess``'s ``x``) as their second argument, and what it is.
NEEDS_INPUT: dict[str, str] = {
    "times_input": "the input batch x",
    "adversarial_measure_map": "the [0, 1] image batch (input_space.denormalize(x))",
}


def postprocess(maps: Tensor, steps: Sequence, x: Tensor | None = None) -> Tensor:
    """Apply ``steps`` in order. Each step is a name from :data:`STEPS` or a ``(name, options)``
    pair with a dict of keyword options (``("winsorize", {"q": 99.5})``). ``x`` is passed to the
    steps in :data:`NEEDS_INPUT` (``times_input``, ``adversarial_measure_map``)."""
    if isinstance(steps, str):
        raise TypeError(f"steps must be a sequence of step names, got the string {steps!r}; use [{steps!r}]")
    if not isinstance(steps, (list, tuple)):
        raise TypeError(
            f"steps must be a list of step names or (name, options) pairs, got {type(steps).__name__}"
        )
    for step in steps:
        if isinstance(step, str):
            name, options = step, {}
        elif (isinstance(step, tuple) and len(step) == 2 and isinstance(step[0], str)
              and isinstance(step[1], dict)):
            name, options = step
        else:
            raise TypeError(f"each step must be a name or a (name, options-dict) pair, got {step!r}")
        if name not in STEPS:
            raise ValueError(f"unknown post-processing step {name!r}; choose from {sorted(STEPS)}")
        if name in NEEDS_INPUT:
            if x is None:
                raise ValueError(
                    f"the {name!r} step needs the input batch ({NEEDS_INPUT[name]}): "
                    f"postprocess(maps, steps, x=...)"
                )
            maps = STEPS[name](maps, x, **options)
        else:
            maps = STEPS[name](maps, **options)
    return maps
