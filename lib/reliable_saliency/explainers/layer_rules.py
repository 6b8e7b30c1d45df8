"""Methods that act on layers through hooks: Grad-CAM, guided backpropagation, guided Grad-CAM,
LRP-epsilon."""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.batching import chunk_ranges, resolve_batch_size
from ..core.functional import functional_rule, operations
from ..core.hooks import forward_hooks, last_spatial_layer
from ..core.options import number
from ..models.smoothing import SmoothReLU6
from .objective import Objective, batched_gradient, graph_input
from .registry import register

__all__ = ["gradcam", "guided_backprop", "guided_gradcam", "lrp_epsilon"]


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


@register("gradcam")
def gradcam(
    model, x, target, *, create_graph=False, generator=None, batch_size=None, output="logit", layer=None,
    relu=True,
) -> Tensor:
    """Grad-CAM (Selvaraju et al.): ReLU(sum_k mean(dS/dA_k) A_k) at ``layer``, bilinearly upsampled
    (align_corners=False) to the input size. Returns (N, 1, H, W). ``relu=False`` leaves out the
    final ReLU (paper C's code does; its post-processing then takes the absolute value).

    ``layer``: a module of the model or its dotted name (``"features.6"``); it must run once per
    forward pass and output (N, K, h, w). Default: :func:`..core.hooks.last_spatial_layer` (call it
    to see which layer that is for a model).
    """
    objective = Objective(model, x, target, output)
    batch_size = resolve_batch_size(batch_size, x)
    layer_name, call = last_spatial_layer(model, x) if layer is None else (layer, None)
    module = _resolve_layer(model, layer_name)
    source = graph_input(x, create_graph)
    captured: list[Tensor] = []
    calls = [0]

    def capture(mod, args, out):
        calls[0] += 1
        if call is not None and calls[0] != call:
            return None
        if not isinstance(out, Tensor) or out.dim() != 4:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"gradcam layer must output a (N, K, h, w) tensor, got {shape}")
        if not out.requires_grad:  # no upstream graph (input and parameters frozen)
            out = out.detach().requires_grad_(True)
        captured.append(out)
        return out.clone()  # later in-place ops (ReLU(inplace=True)) must not change the captured A

    maps = []
    with forward_hooks([module], capture):
        for a, b in chunk_ranges(x.shape[0], batch_size):
            captured.clear()
            calls[0] = 0
            inputs = source[a:b]
            with torch.enable_grad():
                score = objective.scores(inputs, objective.target[a:b]).sum()
                if len(captured) != 1:
                    shown = layer_name if isinstance(layer_name, str) else type(module).__name__
                    raise ValueError(
                        f"gradcam layer {shown!r} ran {len(captured)} times in one forward pass; choose a "
                        f"module that runs exactly once (for example the block that contains it)"
                    )
                (activation,) = captured
                (grad,) = torch.autograd.grad(
                    score, activation, create_graph=create_graph, allow_unused=True, materialize_grads=True
                )
            if not create_graph:
                activation = activation.detach()
            weights = grad.mean(dim=(2, 3), keepdim=True)
            cam = (weights * activation).sum(dim=1, keepdim=True)
            cam = F.relu(cam) if relu else cam
            maps.append(F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False))
    captured.clear()
    return maps[0] if len(maps) == 1 else torch.cat(maps)


def _output_rule(model, objective: Objective, types, rule, what: str, prepare=None):
    """A context manager: forward hooks on modules of ``types`` that register ``rule(grad, kept)``
    as a gradient hook on their outputs, applied only while ``objective`` computes its input
    gradient. ``kept`` is the output itself, or ``prepare(output)`` computed in the forward pass: a
    new tensor, so a later in-place operation (``out += identity``, ``ReLU(inplace=True)`` in
    torchvision's ResNets) cannot change the values the rule reads."""
    modules = [m for m in model.modules() if isinstance(m, types)]
    if not modules:
        names = ", ".join(t.__name__ for t in types)
        raise ValueError(
            f"{what} found no {names} module in the model; functional calls (F.relu, F.conv2d) "
            f"cannot be hooked, use module layers"
        )

    def forward_hook(module, args, out):
        if isinstance(out, Tensor) and out.requires_grad:
            kept = out if prepare is None else prepare(out)  # keeps the graph: create_graph maps stay differentiable
            out.register_hook(lambda grad: rule(grad, kept) if objective.rules_active else None)

    return forward_hooks(modules, forward_hook)


# Activations a layer rule has no rule for (guided backpropagation is defined for ReLU-like units;
# the library's LRP passes relevance through ReLU-like units and max-pooling only, as zennit does).
_NOT_RELU_LIKE = {"silu", "hardswish", "gelu", "mish", "elu", "selu", "celu", "leaky_relu", "hardsigmoid", "sigmoid",
                  "tanh", "hardtanh"}
_GUIDED_MODULES = (nn.ReLU, nn.ReLU6, nn.Softplus, SmoothReLU6)  # the last: the smooth surrogate of ReLU6


def _refuse_unsupported(model, x, what: str, unsupported: set[str], allowed: tuple[type, ...],
                        advice: str) -> list[tuple[str, str]]:
    """Raise if a forward pass runs an operation in ``unsupported`` outside a module of ``allowed``
    (ReLU6 runs hardtanh inside its module: that one is fine); else the operations seen."""
    inside = {name or "model" for name, module in model.named_modules() if isinstance(module, allowed)}
    seen = operations(model, x)
    bad = [(op, where) for op, where in seen if op in unsupported and where not in inside]
    if bad:
        shown = ", ".join(f"{op} (in {where})" for op, where in dict.fromkeys(bad).keys())
        raise ValueError(f"{what} has no rule for {shown}; {advice}")
    return seen


@register("guided_backprop")
def guided_backprop(
    model, x, target, *, create_graph=False, generator=None, batch_size=None, output="logit"
) -> Tensor:
    """Guided backpropagation (Springenberg et al.): the gradient with negative gradients zeroed at
    the output of every ReLU-like unit: ``nn.ReLU``, ``nn.ReLU6`` (MobileNets), ``nn.Softplus`` and
    ``SmoothReLU6`` (smoothed models and the attacks' surrogates) modules, and functional ``relu`` / ``relu6`` / ``softplus`` calls in a
    model's own forward (DenseNet's last ReLU). A model with another activation (SiLU, Hardswish,
    GELU, sigmoid gates, ...) is refused: guided backpropagation has no rule for it. Shape of ``x``."""
    objective = Objective(model, x, target, output)  # checks the inputs first
    batch_size = resolve_batch_size(batch_size, x)
    seen = _refuse_unsupported(model, x, "guided_backprop", _NOT_RELU_LIKE, _GUIDED_MODULES,
                               "guided backpropagation is defined for ReLU-like activations only; use the gradient, "
                               "SmoothGrad or Integrated Gradients on this model")

    def guide(out, args, kwargs):
        if out.requires_grad:
            out.register_hook(lambda grad: _guided_rule(grad, out) if objective.rules_active else None)

    has_modules = any(isinstance(m, _GUIDED_MODULES) for m in model.modules())
    if not has_modules and not any(op in ("relu", "relu6", "softplus") for op, _ in seen):
        raise ValueError("guided_backprop found no ReLU, ReLU6 or Softplus unit (module or functional call) in "
                         "the model: there is nothing to guide")
    hooks = _output_rule(model, objective, _GUIDED_MODULES, _guided_rule, "guided_backprop") if has_modules \
        else nullcontext()
    with hooks, functional_rule(model, {"relu", "relu6", "softplus"}, _GUIDED_MODULES, guide):
        return batched_gradient(objective, graph_input(x, create_graph), create_graph, batch_size)


def _guided_rule(grad: Tensor, out: Tensor) -> Tensor:
    return grad.clamp(min=0)


@register("guided_gradcam")
def guided_gradcam(
    model, x, target, *, create_graph=False, generator=None, batch_size=None, output="logit", layer=None,
) -> Tensor:
    """Guided Grad-CAM (Selvaraju et al.): guided backpropagation times the Grad-CAM map of ``layer``
    (bilinearly upsampled to the input size, as :func:`gradcam`), the one-channel map broadcast over
    the input's channels. Shape of ``x``; captum's ``GuidedGradCam`` with
    ``interpolate_mode="bilinear"``. ``layer`` as in :func:`gradcam`."""
    common = dict(create_graph=create_graph, batch_size=batch_size, output=output)
    cam = gradcam(model, x, target, layer=layer, **common)
    return guided_backprop(model, x, target, **common) * cam


_LRP_LINEAR = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.modules.batchnorm._BatchNorm,
)


@register("lrp_epsilon")
def lrp_epsilon(
    model, x, target, *, create_graph=False, generator=None, batch_size=None, epsilon=1e-6
) -> Tensor:
    """LRP with the epsilon rule (Bach et al.) in every linear layer, relevance of the target logit.

    Each Linear / Conv / AvgPool / BatchNorm layer with output z redistributes relevance
    ``R_in = a * W^T (R_out / (z + epsilon * sign(z)))`` (sign(0) = +1; biases absorb relevance);
    ReLU and max-pooling pass relevance like the gradient (winner takes all), as in zennit.
    Implemented as gradient times input with the gradient at each such layer scaled by
    ``z / (z + epsilon * sign(z))``; with a tiny epsilon it equals grad_x_input on ReLU networks.
    Linear operations that are not modules (a residual ``out += identity``, a functional pooling)
    get the z-rule: relevance in proportion to each input's contribution, as zennit gives with its
    ResNet canonizer and a Sum rule. A model with a unit that has no LRP rule here (SiLU,
    Hardswish, GELU, sigmoid gates, Softplus, layer or group norm, attention) is refused: the map
    would be gradient x input in disguise (relevance conservation 0.00-0.05 on such networks). Each
    layer's ratio is taken in the forward pass, so a later in-place operation does not change the
    values the rule reads (tested on torchvision ResNets).
    """
    objective = Objective(model, x, target, "logit")  # checks the inputs first
    batch_size = resolve_batch_size(batch_size, x)
    _refuse_unsupported(model, x, "lrp_epsilon", _NOT_RELU_LIKE | {"softplus", "layer_norm", "group_norm", "attention"},
                        (nn.ReLU, nn.ReLU6),
                        "its rules cover linear layers, batch norm, pooling and ReLU-like units (as zennit's "
                        "epsilon composite does); the map would be gradient x input in disguise. Use "
                        "grad_x_input or Integrated Gradients, or zennit with rules written for these layers")
    epsilon = number("epsilon", epsilon)

    def ratio(z):
        # z / (z + epsilon * sign(z)) = |z| / (|z| + epsilon), sign(0) = +1 (the ratio is 0 there),
        # taken in the forward pass: a new tensor (no copy of z to keep), then one product per layer
        # in the backward pass. Without a graph to keep, the temporaries are updated in place (the
        # rule's cost is memory traffic).
        if z.requires_grad and create_graph:
            magnitude = z.abs()
            return magnitude / (magnitude + epsilon)
        magnitude = z.detach().abs()
        return torch.div(magnitude, magnitude + epsilon, out=magnitude)

    def epsilon_rule(grad, kept):  # one backward per forward (no retain_graph without create_graph): kept is free
        return grad * kept if create_graph else kept.mul_(grad)

    with _output_rule(model, objective, _LRP_LINEAR, epsilon_rule, "lrp_epsilon", prepare=ratio):
        source = graph_input(x, create_graph)
        return batched_gradient(objective, source, create_graph, batch_size) * source
