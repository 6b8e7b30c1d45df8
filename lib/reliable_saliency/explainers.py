"""Saliency explainers with one signature, batched Monte-Carlo samples and differentiable maps.

Every explainer is called as::

    explain(model, x, target, *, create_graph=False, generator=None, batch_size=None, **options)

with ``x`` (N, C, H, W) normalised input and ``target`` an int or a LongTensor (N,). It returns a
map of the shape of ``x`` (Grad-CAM and RISE: (N, 1, H, W)). Samples and integration steps share
the batch axis in chunks of at most ``batch_size`` model inputs (:mod:`batching`); results do not
depend on ``batch_size``. With ``create_graph=True`` the map keeps its autograd graph, so it can be
differentiated w.r.t. ``x`` (when ``x`` requires grad) and the model's parameters (attacks on
explanations, training regularisers).

The caller's model is never modified: its mode and ``requires_grad`` flags are left as they are,
and hooks used by Grad-CAM, guided backprop and LRP are removed even when an error is raised. Input
checks (shape, NaN, range of ``model.input_space``, BatchNorm/Dropout in train mode, target range)
raise ``ValueError`` / ``TypeError`` with what to do.

Randomness (SmoothGrad family, RISE) comes from ``generator`` only (the global RNG when None).
Noise: one seed per image is drawn from it, and each image's samples come from a generator on
``x.device`` seeded with that seed (:class:`batching.ImageNoise`), so CPU and CUDA draws differ.
RISE masks are drawn up front on the generator's device and shared by all images.

The gradient family (gradient, grad_x_input, integrated_gradients, smoothgrad, smoothgrad_squared,
vargrad, guided_backprop, gradcam) takes ``output="logit" | "probability" | "log_probability"``:
the score of the target class that is differentiated.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .batching import ImageNoise, chunk_ranges, reduce_rows, resolve_batch_size, rows_of
from .inputs import check_images, check_model_ready, check_targets, input_space_of

__all__ = [
    "OUTPUTS",
    "IG_METHODS",
    "gradient",
    "grad_x_input",
    "integrated_gradients",
    "smoothgrad",
    "smoothgrad_squared",
    "vargrad",
    "gradcam",
    "guided_backprop",
    "lrp_epsilon",
    "rise",
    "make_baseline",
    "gaussian_blur",
    "ig_rule",
    "EXPLAINERS",
    "get_explainer",
]

OUTPUTS = ("logit", "probability", "log_probability")
IG_METHODS = ("midpoint", "trapezoid", "gauss_legendre")


# ----------------------------------------------------------------------------- shared machinery


class _Objective:
    """The model, the targets and the differentiated score; checks the target range once."""

    def __init__(self, model: nn.Module, x: Tensor, target, output: str = "logit"):
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        check_images(x, input_space_of(model))
        check_model_ready(model)
        self.model, self.output, self.n = model, output, x.shape[0]
        # Shape and dtype now; the class range once the first logits show the number of classes
        # (check_targets checks the range last, so a range error here means only negative indices).
        try:
            self.target = check_targets(target, x.shape[0], 2**62, x.device)
        except ValueError as error:
            if "class indices outside" not in str(error):
                raise
            self.target = torch.as_tensor(target, device=x.device).long().expand(x.shape[0])
        self._range_checked = False
        # Gradient rules (guided backprop, LRP) act only inside the first backward pass, not when a
        # create_graph map is differentiated again through the same graph.
        self.rules_active = False

    def scores(self, inputs: Tensor, target: Tensor) -> Tensor:
        """Per-row score (B,) of ``target`` for a batch of model inputs."""
        logits = self.model(inputs)
        if not isinstance(logits, Tensor) or logits.dim() != 2:
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(f"the model must return logits of shape (N, classes), got {shape}")
        if not self._range_checked:
            check_targets(self.target, self.n, logits.shape[1], logits.device)
            self._range_checked = True
        if self.output == "probability":
            logits = logits.softmax(dim=1)
        elif self.output == "log_probability":
            logits = logits.log_softmax(dim=1)
        return logits.gather(1, target[:, None])[:, 0]

    def input_gradient(self, inputs: Tensor, target: Tensor, create_graph: bool) -> Tensor:
        """d score / d inputs for a batch, in one autograd.grad call over the whole batch."""
        if not create_graph:
            inputs = inputs.detach()
        if not inputs.requires_grad:
            inputs = inputs.detach().requires_grad_(True)
        with torch.enable_grad():
            score = self.scores(inputs, target).sum()
            self.rules_active = True
            try:
                (grad,) = torch.autograd.grad(
                    score, inputs, create_graph=create_graph, allow_unused=True, materialize_grads=True
                )
            finally:
                self.rules_active = False
        return grad


def _int_option(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _float_option(name: str, value, minimum: float = 0.0, strict: bool = False) -> float:
    bad = not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
    if bad or value < minimum or (strict and value == minimum):
        relation = ">" if strict else ">="
        raise ValueError(f"{name} must be a finite number {relation} {minimum}, got {value!r}")
    return float(value)


def _source(x: Tensor, create_graph: bool) -> Tensor:
    """``x`` itself when the map must stay differentiable, otherwise a detached view."""
    return x if create_graph else x.detach()


def _batched_gradient(objective: _Objective, x: Tensor, create_graph: bool, batch_size: int) -> Tensor:
    pieces = [
        objective.input_gradient(x[a:b], objective.target[a:b], create_graph)
        for a, b in chunk_ranges(x.shape[0], batch_size)
    ]
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


def _view_rows(values: Tensor) -> Tensor:
    return values.view(-1, 1, 1, 1)


# ----------------------------------------------------------------------------- baselines


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Per-channel Gaussian blur of (N, C, H, W) with std ``sigma`` pixels: separable, radius
    ceil(3 sigma) capped at size - 1, reflect padding (``d c b | a b c d``, scipy's "mirror").
    The one blur of the library (IG's blur baseline, the deletion/insertion blur substrate).
    Differentiable."""
    sigma = _float_option("blur sigma", sigma, 0.0, strict=True)
    c, h, w = x.shape[1:]
    out = x
    for horizontal, size in ((True, w), (False, h)):
        radius = min(math.ceil(3 * sigma), size - 1)
        if radius == 0:
            continue
        offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
        kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
        kernel = kernel / kernel.sum()
        pad = (radius, radius, 0, 0) if horizontal else (0, 0, radius, radius)
        kernel = kernel.view(1, 1, 1, -1) if horizontal else kernel.view(1, 1, -1, 1)
        out = F.conv2d(F.pad(out, pad, mode="reflect"), kernel.expand(c, -1, -1, -1), groups=c)
    return out


def make_baseline(x: Tensor, baseline="zero", blur_sigma: float | None = None) -> Tensor:
    """A reference input of the shape of ``x`` (normalised space).

    ``"zero"``: zeros, i.e. the dataset-mean colour; ``"mean"``: each image's per-channel mean;
    ``"blur"``: ``x`` Gaussian-blurred with std ``blur_sigma`` pixels (default max(H, W) / 16);
    or a tensor broadcastable to ``x`` (same dtype and device).
    """
    if isinstance(baseline, Tensor):
        if baseline.dtype != x.dtype or baseline.device != x.device:
            raise ValueError(
                f"baseline tensor must match x in dtype and device ({x.dtype}, {x.device}), "
                f"got {baseline.dtype} on {baseline.device}"
            )
        try:
            shape = torch.broadcast_shapes(baseline.shape, x.shape)
        except RuntimeError:
            shape = None
        if shape != x.shape:
            raise ValueError(
                f"baseline tensor of shape {tuple(baseline.shape)} does not broadcast to x "
                f"{tuple(x.shape)}; use (C, H, W), (1, C, H, W) or (N, C, H, W)"
            )
        if not bool(torch.isfinite(baseline).all()):
            raise ValueError("baseline tensor contains NaN or infinite values")
        return baseline.expand_as(x)
    if baseline == "zero":
        return torch.zeros_like(x)
    if baseline == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    if baseline == "blur":
        sigma = max(x.shape[-2:]) / 16 if blur_sigma is None else blur_sigma
        return gaussian_blur(x, sigma)
    raise ValueError(f"baseline must be 'zero', 'mean', 'blur' or a tensor, got {baseline!r}")


# ----------------------------------------------------------------------------- gradient family


def gradient(
    model, x, target, *, create_graph=False, generator=None, batch_size=None, output="logit"
) -> Tensor:
    """Signed input gradient of the target score (Simonyan et al.), shape of ``x``."""
    objective = _Objective(model, x, target, output)
    batch_size = resolve_batch_size(batch_size, x)
    return _batched_gradient(objective, _source(x, create_graph), create_graph, batch_size)


def grad_x_input(
    model, x, target, *, create_graph=False, generator=None, batch_size=None, output="logit"
) -> Tensor:
    """Gradient times input (Shrikumar et al.), elementwise, shape of ``x``."""
    objective = _Objective(model, x, target, output)
    batch_size = resolve_batch_size(batch_size, x)
    source = _source(x, create_graph)
    return _batched_gradient(objective, source, create_graph, batch_size) * source


def ig_rule(steps: int, method: str = "midpoint", *, dtype=torch.float32, device="cpu"):
    """Path positions ``alphas`` and weights (summing to 1) of the IG integral over [0, 1].

    ``"midpoint"``: alphas (k + 1/2) / steps, weights 1 / steps (captum "riemann_middle");
    ``"trapezoid"``: alphas k / (steps - 1), weights 1 / (steps - 1) with the ends halved
    (captum's "riemann_trapezoid" uses weights 1 / steps, i.e. its result is ours * (steps - 1) / steps);
    ``"gauss_legendre"``: Gauss-Legendre nodes and weights (captum's default).
    """
    if method not in IG_METHODS:
        raise ValueError(f"IG method must be one of {IG_METHODS}, got {method!r}")
    steps = _int_option("steps", steps, 2 if method == "trapezoid" else 1)
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


def integrated_gradients(
    model, x, target, *, create_graph=False, generator=None, batch_size=None, output="logit",
    baseline="zero", steps=50, method="midpoint", blur_sigma=None,
) -> Tensor:
    """Integrated Gradients (Sundararajan et al.): ``(x - b) * sum_k w_k grad f(b + a_k (x - b))``.

    ``baseline``: see :func:`make_baseline`. ``method``: quadrature rule of :func:`ig_rule`
    (default midpoint Riemann sum with ``steps`` evaluations). Steps share the batch axis.
    """
    objective = _Objective(model, x, target, output)
    batch_size = resolve_batch_size(batch_size, x)
    alphas, weights = ig_rule(steps, method, dtype=x.dtype, device=x.device)
    source = _source(x, create_graph)
    base = make_baseline(source, baseline, blur_sigma)
    delta = source - base
    samples = alphas.shape[0]

    def evaluate(start, stop):
        image, step = rows_of(start, stop, samples, x.device)
        inputs = torch.addcmul(base[image], _view_rows(alphas[step]), delta[image])
        return objective.input_gradient(inputs, objective.target[image], create_graph)

    def reduce(block):  # (k, steps, C, H, W) -> (k, C, H, W)
        return torch.tensordot(block, weights, dims=([1], [0]))

    return delta * reduce_rows(x.shape[0], samples, batch_size, evaluate, reduce)


def _noisy_gradients(objective, x, create_graph, generator, batch_size, samples, noise_level, reduce):
    """Gradients at ``x_i + sigma_i * eps`` with sigma_i = noise_level * (max x_i - min x_i),
    reduced over the samples of each image."""
    samples = _int_option("samples", samples)
    noise_level = _float_option("noise_level", noise_level)
    batch_size = resolve_batch_size(batch_size, x)
    source = _source(x, create_graph)
    flat = source.flatten(1)
    sigma = noise_level * (flat.amax(dim=1) - flat.amin(dim=1))
    noise = ImageNoise(generator, x.shape[0], samples, x.shape[1:], device=x.device, dtype=x.dtype)

    def evaluate(start, stop):
        image, _ = rows_of(start, stop, samples, x.device)
        inputs = torch.addcmul(source[image], _view_rows(sigma[image]), noise.rows(start, stop))
        return objective.input_gradient(inputs, objective.target[image], create_graph)

    return reduce_rows(x.shape[0], samples, batch_size, evaluate, reduce)


def smoothgrad(
    model, x, target, *, create_graph=False, generator=None, batch_size=None, output="logit",
    samples=50, noise_level=0.15,
) -> Tensor:
    """SmoothGrad (Smilkov et al.): mean gradient over ``samples`` Gaussian perturbations with std
    ``noise_level * (max(x_i) - min(x_i))`` per image. Signed; shape of ``x``."""
    objective = _Objective(model, x, target, output)
    return _noisy_gradients(
        objective, x, create_graph, generator, batch_size, samples, noise_level, lambda g: g.mean(dim=1)
    )


def smoothgrad_squared(
    model, x, target, *, create_graph=False, generator=None, batch_size=None, output="logit",
    samples=50, noise_level=0.15,
) -> Tensor:
    """SmoothGrad-Squared (Hooker et al.): mean of the squared gradients, noise as in :func:`smoothgrad`."""
    objective = _Objective(model, x, target, output)
    return _noisy_gradients(
        objective, x, create_graph, generator, batch_size, samples, noise_level,
        lambda g: g.square().mean(dim=1),
    )


def vargrad(
    model, x, target, *, create_graph=False, generator=None, batch_size=None, output="logit",
    samples=50, noise_level=0.15,
) -> Tensor:
    """VarGrad (Adebayo et al.): variance (1/S, not 1/(S-1)) of the gradients over the samples,
    noise as in :func:`smoothgrad`."""
    objective = _Objective(model, x, target, output)
    _int_option("samples", samples, 2)
    return _noisy_gradients(
        objective, x, create_graph, generator, batch_size, samples, noise_level,
        lambda g: g.var(dim=1, correction=0),
    )


# ----------------------------------------------------------------------------- hook-based methods


def _resolve_layer(model: nn.Module, layer) -> nn.Module:
    if isinstance(layer, str):
        try:
            return model.get_submodule(layer)
        except AttributeError:
            raise ValueError(
                f"model has no submodule {layer!r}; use a dotted name from model.named_modules(), "
                f"for example {[n for n, _ in model.named_modules() if n][-3:]}"
            ) from None
    if isinstance(layer, nn.Module):
        if not any(layer is m for m in model.modules()):
            raise ValueError("layer is a module that is not part of the model")
        return layer
    raise TypeError(f"layer must be an nn.Module of the model or a dotted name, got {type(layer).__name__}")


def _last_spatial_layer(model: nn.Module, x: Tensor) -> nn.Module:
    """The leaf module whose 4-D output with H*W > 1 comes last in a forward pass of x[:1]."""
    last: list[nn.Module] = []

    def record(module, args, out):
        if isinstance(out, Tensor) and out.dim() == 4 and out.shape[2] * out.shape[3] > 1:
            last.append(module)

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(record) for m in leaves]
    try:
        with torch.no_grad():
            model(x[:1].detach())
    finally:
        for h in handles:
            h.remove()
    if not last:
        raise ValueError("gradcam found no layer with a spatial (N, C, h, w) output; pass layer=")
    return last[-1]


def gradcam(
    model, x, target, *, create_graph=False, generator=None, batch_size=None, output="logit", layer=None,
) -> Tensor:
    """Grad-CAM (Selvaraju et al.): ReLU(sum_k mean(dS/dA_k) A_k) at ``layer``, bilinearly upsampled
    (align_corners=False) to the input size. Returns (N, 1, H, W).

    ``layer``: a module of the model or its dotted name (``"features.6"``); it must run once per
    forward pass and output (N, K, h, w). Default: the last leaf module with a spatial output.
    """
    objective = _Objective(model, x, target, output)
    batch_size = resolve_batch_size(batch_size, x)
    module = _last_spatial_layer(model, x) if layer is None else _resolve_layer(model, layer)
    source = _source(x, create_graph)
    captured: list[Tensor] = []

    def capture(mod, args, out):
        if not isinstance(out, Tensor) or out.dim() != 4:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"gradcam layer must output a (N, K, h, w) tensor, got {shape}")
        if not out.requires_grad:  # no upstream graph (input and parameters frozen)
            out = out.detach().requires_grad_(True)
        captured.append(out)
        return out.clone()  # later in-place ops (ReLU(inplace=True)) must not change the captured A

    maps = []
    handle = module.register_forward_hook(capture)
    try:
        for a, b in chunk_ranges(x.shape[0], batch_size):
            captured.clear()
            inputs = source[a:b]
            with torch.enable_grad():
                score = objective.scores(inputs, objective.target[a:b]).sum()
                if len(captured) != 1:
                    raise ValueError(
                        f"gradcam layer ran {len(captured)} times in one forward pass; choose a module "
                        f"that runs exactly once (for example the block that contains it)"
                    )
                (activation,) = captured
                (grad,) = torch.autograd.grad(
                    score, activation, create_graph=create_graph, allow_unused=True, materialize_grads=True
                )
            if not create_graph:
                activation = activation.detach()
            weights = grad.mean(dim=(2, 3), keepdim=True)
            cam = F.relu((weights * activation).sum(dim=1, keepdim=True))
            maps.append(F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False))
    finally:
        handle.remove()
        captured.clear()
    return maps[0] if len(maps) == 1 else torch.cat(maps)


def _with_output_hooks(model, objective: _Objective, types, rule, what: str):
    """Forward hooks on modules of ``types`` that register ``rule(grad, output)`` as a gradient
    hook on their outputs, applied only while ``objective`` computes its input gradient."""
    modules = [m for m in model.modules() if isinstance(m, types)]
    if not modules:
        names = ", ".join(t.__name__ for t in types)
        raise ValueError(
            f"{what} found no {names} module in the model; functional calls (F.relu, F.conv2d) "
            f"cannot be hooked, use module layers"
        )

    def forward_hook(module, args, out):
        if isinstance(out, Tensor) and out.requires_grad:
            out.register_hook(lambda grad: rule(grad, out) if objective.rules_active else None)

    return [m.register_forward_hook(forward_hook) for m in modules]


def guided_backprop(
    model, x, target, *, create_graph=False, generator=None, batch_size=None, output="logit"
) -> Tensor:
    """Guided backpropagation (Springenberg et al.): the gradient with negative gradients zeroed at
    the output of every ``nn.ReLU`` (and ``nn.Softplus``, for smoothed models) module. Shape of ``x``."""
    objective = _Objective(model, x, target, output)
    batch_size = resolve_batch_size(batch_size, x)
    handles = _with_output_hooks(model, objective, (nn.ReLU, nn.Softplus), _guided_rule, "guided_backprop")
    try:
        return _batched_gradient(objective, _source(x, create_graph), create_graph, batch_size)
    finally:
        for h in handles:
            h.remove()


def _guided_rule(grad: Tensor, out: Tensor) -> Tensor:
    return grad.clamp(min=0)


_LRP_LINEAR = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.modules.batchnorm._BatchNorm,
)


def lrp_epsilon(
    model, x, target, *, create_graph=False, generator=None, batch_size=None, epsilon=1e-6
) -> Tensor:
    """LRP with the epsilon rule (Bach et al.) in every linear layer, relevance of the target logit.

    Each Linear / Conv / AvgPool / BatchNorm layer with output z redistributes relevance
    ``R_in = a * W^T (R_out / (z + epsilon * sign(z)))`` (sign(0) = +1; biases absorb relevance);
    ReLU and max-pooling pass relevance like the gradient (winner takes all), as in zennit.
    Implemented as gradient times input with the gradient at each such layer scaled by
    ``z / (z + epsilon * sign(z))``; with a tiny epsilon it equals grad_x_input on ReLU networks.
    """
    objective = _Objective(model, x, target, "logit")
    batch_size = resolve_batch_size(batch_size, x)
    epsilon = _float_option("epsilon", epsilon)

    def epsilon_rule(grad, z):
        return grad * (z / torch.where(z >= 0, z + epsilon, z - epsilon))

    handles = _with_output_hooks(model, objective, _LRP_LINEAR, epsilon_rule, "lrp_epsilon")
    try:
        source = _source(x, create_graph)
        return _batched_gradient(objective, source, create_graph, batch_size) * source
    finally:
        for h in handles:
            h.remove()


# ----------------------------------------------------------------------------- RISE


def _upsampling_matrix(n_in: int, n_out: int, *, device, dtype) -> Tensor:
    """(n_out, n_in) linear-interpolation weights resizing n_in samples to n_out with half-pixel
    centres and mirror edges (skimage ``resize(order=1, mode="reflect")``, as in the RISE code)."""
    u = (torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5
    if n_in > 1:
        period = 2 * (n_in - 1)
        u = torch.remainder(u.abs(), period)
        u = torch.where(u > n_in - 1, period - u, u)
    else:
        u = torch.zeros_like(u)
    low = u.floor().long().clamp(max=n_in - 1)
    frac = u - low
    high = (low + 1).clamp(max=n_in - 1)
    rows = torch.arange(n_out)
    matrix = torch.zeros((n_out, n_in), dtype=torch.float64)
    matrix.index_put_((rows, low), 1 - frac, accumulate=True)
    matrix.index_put_((rows, high), frac, accumulate=True)
    return matrix.to(device=device, dtype=dtype)


def rise(
    model, x, target, *, create_graph=False, generator=None, batch_size=None,
    masks=4000, grid_size=7, p=0.5, baseline="zero", blur_sigma=None,
) -> Tensor:
    """RISE (Petsiuk et al.): ``sum_m P(target | masked_m(x)) M_m / (masks * p)``. Returns (N, 1, H, W).

    As in the authors' code: ``grids = torch.rand((masks, s, s), generator=generator) < p`` with
    ``s = grid_size``, then shifts ``torch.randint(0, ceil(H / s), (masks,))`` and likewise for W
    (drawn up front, on the generator's device); each grid is bilinearly upsampled to
    ``(s + 1) * ceil(H / s)`` x ``(s + 1) * ceil(W / s)`` pixels (skimage ``resize(order=1,
    mode="reflect")``) and cropped to H x W at its shift. Masked pixels take the ``baseline`` value
    (:func:`make_baseline`; default zero = the dataset-mean colour, as in the authors' code):
    ``masked = baseline + M * (x - baseline)``. The same masks are used for every image; rows of
    (image, mask) pairs share the batch axis.
    """
    objective = _Objective(model, x, target, "probability")
    batch_size = resolve_batch_size(batch_size, x)
    masks = _int_option("masks", masks)
    s = _int_option("grid_size", grid_size)
    p = _float_option("p", p, 0.0, strict=True)
    if p > 1:
        raise ValueError(f"p must be in (0, 1], got {p}")
    n, (h, w) = x.shape[0], x.shape[-2:]
    cell = (math.ceil(h / s), math.ceil(w / s))
    gen_device = generator.device if generator is not None else torch.device("cpu")
    grids = torch.rand((masks, s, s), generator=generator, device=gen_device) < p
    shifts = [torch.randint(0, c, (masks,), generator=generator, device=gen_device) for c in cell]
    grids = grids.to(device=x.device, dtype=x.dtype)
    shift_h, shift_w = (t.to(x.device) for t in shifts)
    up_h = _upsampling_matrix(s, (s + 1) * cell[0], device=x.device, dtype=x.dtype)
    up_w = _upsampling_matrix(s, (s + 1) * cell[1], device=x.device, dtype=x.dtype)
    span_h, span_w = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    source = _source(x, create_graph)
    base = make_baseline(source, baseline, blur_sigma)
    delta = source - base
    saliency = torch.zeros((n, 1, h, w), device=x.device, dtype=x.dtype)
    with torch.set_grad_enabled(create_graph):
        for start, stop in chunk_ranges(n * masks, batch_size):
            image, index = rows_of(start, stop, masks, x.device)
            rows = up_h[shift_h[index, None] + span_h]  # (B, H, s)
            cols = up_w[shift_w[index, None] + span_w]  # (B, W, s)
            mask = torch.bmm(torch.bmm(rows, grids[index]), cols.transpose(1, 2)).unsqueeze(1)
            inputs = torch.addcmul(base[image], mask, delta[image])
            prob = objective.scores(inputs, objective.target[image])
            saliency = saliency.index_add(0, image, _view_rows(prob) * mask)
    return saliency / (masks * p)


# ----------------------------------------------------------------------------- registry

EXPLAINERS: dict[str, Callable[..., Tensor]] = {
    "gradient": gradient,
    "grad_x_input": grad_x_input,
    "integrated_gradients": integrated_gradients,
    "smoothgrad": smoothgrad,
    "smoothgrad_squared": smoothgrad_squared,
    "vargrad": vargrad,
    "gradcam": gradcam,
    "guided_backprop": guided_backprop,
    "lrp_epsilon": lrp_epsilon,
    "rise": rise,
}

_COMMON = ("create_graph", "generator", "batch_size")


def get_explainer(name: str, **options) -> Callable[..., Tensor]:
    """The explainer ``name`` with ``options`` bound, as ``explain(model, x, target, *,
    create_graph=False, generator=None, batch_size=None, **more_options)``. Options are checked
    against the explainer's parameters now; options given at call time override bound ones."""
    if name not in EXPLAINERS:
        raise KeyError(f"unknown explainer {name!r}; choose one of {sorted(EXPLAINERS)}")
    function = EXPLAINERS[name]
    accepted = [
        p.name for p in inspect.signature(function).parameters.values()
        if p.kind is p.KEYWORD_ONLY and p.name not in _COMMON
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"explainer {name!r} has no option(s) {unknown}; its options are {accepted}")

    def explain(model, x, target, *, create_graph=False, generator=None, batch_size=None, **more):
        return function(
            model, x, target, create_graph=create_graph, generator=generator, batch_size=batch_size,
            **{**options, **more},
        )

    explain.__name__ = explain.__qualname__ = name
    explain.__doc__ = function.__doc__
    return explain
