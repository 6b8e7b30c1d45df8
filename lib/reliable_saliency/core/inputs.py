"""Input spaces (normalisation constants, valid ranges, eps conversion) and input validation.

Every model in the library takes *normalised* input ``(x01 - mean) / std``. An :class:`InputSpace`
holds the constants in one place, converts pixel-unit budgets (``8/255``) into per-channel
normalised units, and knows the valid range of each channel. Models built by the library carry
their space as ``model.input_space`` so explainers and attacks can check and clamp inputs.
"""

from __future__ import annotations

import warnings

from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "InputSpace",
    "CIFAR10",
    "MNIST",
    "IMAGENET",
    "EFFICIENTNET_LITE",
    "SYNTHETIC",
    "input_space_of",
    "check_images",
    "check_not_empty",
    "check_model_input",
    "check_targets",
    "check_model_ready",
]


@dataclass(frozen=True)
class InputSpace:
    """Per-channel affine normalisation ``x = (x01 - mean) / std`` of images in ``[0, 1]``."""

    name: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self):
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise ValueError(f"InputSpace {self.name!r}: mean and std need equal length, std > 0")

    @property
    def channels(self) -> int:
        return len(self.mean)

    def _column(self, values: tuple[float, ...], like: Tensor) -> Tensor:
        return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 images in [0, 255] or floats in [0, 1], shape (N, C, H, W) -> normalised floats."""
        if images.dtype == torch.uint8:
            images = images.float() / 255.0
        elif not images.is_floating_point():
            raise TypeError(f"normalize expects uint8 or float images, got {images.dtype}")
        return (images - self._column(self.mean, images)) / self._column(self.std, images)

    def denormalize(self, x: Tensor) -> Tensor:
        """Normalised input -> images in [0, 1] (not clamped)."""
        return x * self._column(self.std, x) + self._column(self.mean, x)

    def lower(self, like: Tensor) -> Tensor:
        """Smallest valid normalised value per channel, shape (1, C, 1, 1)."""
        return (0.0 - self._column(self.mean, like)) / self._column(self.std, like)

    def upper(self, like: Tensor) -> Tensor:
        """Largest valid normalised value per channel, shape (1, C, 1, 1)."""
        return (1.0 - self._column(self.mean, like)) / self._column(self.std, like)

    def clamp(self, x: Tensor) -> Tensor:
        return torch.maximum(torch.minimum(x, self.upper(x)), self.lower(x))

    def eps(self, eps_pixels: float, like: Tensor) -> Tensor:
        """A budget in pixel units (for example 8/255) -> per-channel normalised units (1, C, 1, 1)."""
        if eps_pixels < 0:
            raise ValueError(f"eps must be >= 0 in pixel units (for example 8/255), got {eps_pixels}")
        return eps_pixels / self._column(self.std, like)

    def check(self, x: Tensor, name: str = "x", atol: float = 1e-4) -> None:
        """Raise if ``x`` has values outside this space's valid range."""
        if x.shape[1] != self.channels:
            raise ValueError(
                f"{name} has {x.shape[1]} channels but input space {self.name!r} has {self.channels}"
            )
        low, high = self.lower(x) - atol, self.upper(x) + atol
        if bool(((x < low) | (x > high)).any()):
            raise ValueError(
                f"{name} has values outside the valid range of input space {self.name!r} "
                f"(min {x.min().item():.3f}, max {x.max().item():.3f}). Did you forget to normalise "
                f"with input_space.normalize(images), or normalise twice?"
            )


CIFAR10 = InputSpace("cifar10", (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
MNIST = InputSpace("mnist", (0.1307,), (0.3081,))
IMAGENET = InputSpace("imagenet", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# EfficientNet-Lite's own scaling (x*255 - 127) / 128, written as a mean/std normalisation.
EFFICIENTNET_LITE = InputSpace("efficientnet-lite", (127 / 255,) * 3, (128 / 255,) * 3)
SYNTHETIC = InputSpace("synthetic", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def input_space_of(model: nn.Module, input_space: InputSpace | None = None) -> InputSpace | None:
    """The explicit ``input_space`` if given, else ``model.input_space`` if the model has one."""
    return input_space if input_space is not None else getattr(model, "input_space", None)


def check_images(x: Tensor, space: InputSpace | None = None, name: str = "x") -> None:
    """Raise a clear error unless ``x`` is a finite float batch (N, C, H, W), N >= 1, inside ``space``.

    Rule for raw pixels: when ``space``'s normalised range reaches below 0 in every channel (every
    mean/std normalisation of natural images), a batch whose values all lie in [0, 1] is almost
    surely unnormalised pixels, and a ``UserWarning`` says to pass ``space.normalize(x)``. It is a
    warning, not an error, because a bright normalised image can lie in [0, 1] too."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(
            f"{name} must have shape (N, C, H, W), got {tuple(x.shape)}; add a batch axis with "
            f"x.unsqueeze(0) for a single image"
        )
    check_not_empty(x, name)
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a float tensor (normalised input), got {x.dtype}")
    if space is None:
        ok = bool(torch.isfinite(x).all())
    else:
        if x.shape[1] != space.channels:
            space.check(x, name)  # raises the channel error
        # one fused test (NaN and inf fail it too); the detailed message only on failure
        ok = bool(((x >= space.lower(x) - 1e-4) & (x <= space.upper(x) + 1e-4)).all())
    if not ok:
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} contains NaN or infinite values")
        space.check(x, name)
    if space is not None and bool(space.lower(x).max() < 0):
        if bool(((x >= 0) & (x <= 1)).all()):
            warnings.warn(
                f"{name} lies entirely in [0, 1], like raw pixels, but the model takes {space.name}-normalised "
                f"input (its range reaches {float(space.lower(x).max()):.2f}); if these are pixels, pass "
                f"model.input_space.normalize({name})", UserWarning, stacklevel=3,
            )


def check_not_empty(t: Tensor, name: str = "x") -> None:
    """The one error for an empty batch, used by every explainer, attack and measure."""
    if t.dim() == 0 or t.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(t.shape)}); pass at least one image")


def check_model_input(model: nn.Module, x: Tensor, name: str = "x") -> None:
    """``check_images`` against the model's input space, the model in eval mode, and the model
    and ``x`` on the same device."""
    parameter = next(iter(model.parameters()), None)
    if isinstance(x, Tensor) and parameter is not None and parameter.device != x.device:
        raise ValueError(
            f"the model is on {parameter.device} but {name} is on {x.device}; move one of them "
            f"(for example {name}.to(next(model.parameters()).device))"
        )
    check_images(x, input_space_of(model), name)
    check_model_ready(model)


def check_targets(target: Tensor | int, n: int, num_classes: int | None, device, name: str = "target") -> Tensor:
    """Targets as a LongTensor of shape (n,) on ``device``; raise on wrong type, shape or range.
    ``num_classes=None`` checks type and shape only (the range once the classes are known)."""
    if isinstance(target, int) and not isinstance(target, bool):
        target = torch.full((n,), target, dtype=torch.long)
    if not isinstance(target, Tensor):
        raise TypeError(f"{name} must be an int or a LongTensor of shape ({n},), got {type(target)}")
    if target.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"{name} must hold integer class indices, got {target.dtype}")
    if target.dim() == 0:
        target = target.expand(n)
    if target.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match the batch, got {tuple(target.shape)}")
    if num_classes is not None and n and bool(((target < 0) | (target >= num_classes)).any()):
        raise ValueError(
            f"{name} has class indices outside [0, {num_classes}) "
            f"(got min {int(target.min())}, max {int(target.max())})"
        )
    return target.to(device=device, dtype=torch.long)


STOCHASTIC_NAMES = ("Dropout", "DropPath", "StochasticDepth", "DropBlock")  # timm, torchvision and others


def _stochastic_kind(module: nn.Module) -> str | None:
    """What makes ``module`` random or stateful in training mode, or None."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return "BatchNorm"
    if isinstance(module, nn.modules.dropout._DropoutNd):
        return "Dropout"
    if isinstance(module, nn.MultiheadAttention) and module.dropout > 0:
        return "attention dropout"
    name = type(module).__name__
    return next((kind for kind in STOCHASTIC_NAMES if kind in name), None)


def check_model_ready(model: nn.Module) -> None:
    """Raise if a module that is random or stateful in training mode is in training mode: batch norm
    (it would update its running statistics), dropout of any kind, attention dropout, stochastic
    depth / drop path (torchvision's ``StochasticDepth``, timm's ``DropPath``). Explanations of such
    a model would differ between two identical calls. The library never switches the caller's
    model itself."""
    for name, module in model.named_modules():
        kind = _stochastic_kind(module)
        if kind is not None and module.training:
            raise ValueError(
                f"model has a {kind} layer in training mode ({name or type(module).__name__}); "
                f"call model.eval() before explaining or attacking it"
            )
