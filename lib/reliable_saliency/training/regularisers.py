"""Paper E's training regularisers on the input gradient: Hessian (Hutchinson), l2, cosd, l2 + cosd.

As in the authors' code (joshua840/RobustAGA), ``g(x)`` is the gradient of the *true-label logit*
with respect to the normalised input, taken with ``create_graph=True`` so the penalty trains the
parameters. Per example and step (one draw each, from the caller's generator):

- ``"hessian"``: ``lambda_hessian * mean_i ||H_i v_i||^2`` with ``v_i ~ N(0, I)`` and ``H_i`` the
  input Hessian of the true-label logit (a Hessian-vector product by double backprop; one
  Hutchinson draw, so ``E ||H v||^2 = ||H||_F^2``). Its parameter gradient is third order.
- ``"l2"`` / ``"cosd"`` / ``"l2_cosd"``: a neighbour ``x' = x + z`` with
  ``z = eps / std_c * U[-1, 1]^d`` (``eps`` in pixel units, 4/255 by default; not clipped to the
  valid range), ``g' = g(x')`` and ``lambda_l2 * mean_i ||g_i - g'_i||^2 + lambda_cos * mean_i
  (1 - cos(g_i, g'_i)) / 2``. The clean gradient ``g`` is detached by default (only ``g'`` is
  pulled towards it), as in the authors' default ``detach_source_grad=True``.

Cross-entropy and the clean gradient come from the same forward pass, as in the authors' step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.batching import draw
from ..core.inputs import InputSpace, check_images, check_targets
from ..core.options import choice, number, pixel_budget
from ..core.perturbation import space_or_raise

__all__ = ["REGULARISERS", "Regulariser", "RegularisedLoss", "regularised_loss", "penalty"]

REGULARISERS = ("none", "hessian", "l2", "cosd", "l2_cosd")
# The lambdas each kind uses; the others must stay 0 so a spec cannot say more than it does.
_USES = {"none": (), "hessian": ("lambda_hessian",), "l2": ("lambda_l2",), "cosd": ("lambda_cos",),
         "l2_cosd": ("lambda_l2", "lambda_cos")}


@dataclass(frozen=True)
class Regulariser:
    """Which penalty, its weights, the neighbour budget ``eps`` (pixel units) and whether the clean
    gradient is detached. ``Regulariser("l2_cosd", lambda_l2=0.01, lambda_cos=1.0)`` is paper E's
    LeNet setting; ``Regulariser("hessian", lambda_hessian=1e-3)`` its Hessian baseline."""

    kind: str = "none"
    lambda_l2: float = 0.0
    lambda_cos: float = 0.0
    lambda_hessian: float = 0.0
    eps: float = 4 / 255
    detach_clean: bool = True

    def __post_init__(self):
        choice("regulariser kind", self.kind, REGULARISERS)
        for name in ("lambda_l2", "lambda_cos", "lambda_hessian"):
            value = number(name, getattr(self, name))
            if value and name not in _USES[self.kind]:
                raise ValueError(
                    f"regulariser kind {self.kind!r} does not use {name} (got {value}); set it to 0 or "
                    f"choose the kind that uses it ({[k for k, u in _USES.items() if name in u]})"
                )
        pixel_budget("eps", self.eps)
        if not isinstance(self.detach_clean, bool):
            raise TypeError(f"detach_clean must be a bool, got {self.detach_clean!r}")

    @property
    def active(self) -> bool:
        return self.kind != "none"


@dataclass
class RegularisedLoss:
    """``loss = cross_entropy + penalty`` (scalars, differentiable), the clean ``logits`` and the
    unweighted per-example ``terms`` (N,): ``"hessian"`` ``||H v||^2``, ``"l2"`` ``||g - g'||^2``,
    ``"cosd"`` ``(1 - cos(g, g')) / 2`` (those the kind computes)."""

    loss: Tensor
    cross_entropy: Tensor
    penalty: Tensor
    logits: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)


def _true_logit_gradient(model: nn.Module, inputs: Tensor, y: Tensor, create_graph: bool,
                         logits: Tensor | None = None) -> Tensor:
    """d f_y / d inputs for every row; ``logits`` reuses a forward pass already made on ``inputs``."""
    if logits is None:
        logits = model(inputs)
    score = logits.gather(1, y[:, None]).sum()
    (grad,) = torch.autograd.grad(score, inputs, create_graph=create_graph, retain_graph=True)
    return grad


def _squared_norm(v: Tensor) -> Tensor:
    return v.flatten(1).square().sum(1)


def regularised_loss(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    regulariser: Regulariser | None,
    *,
    generator: torch.Generator | None = None,
    input_space: InputSpace | None = None,
) -> RegularisedLoss:
    """Cross-entropy of ``model`` on the normalised batch ``x`` (N, C, H, W) with labels ``y`` (N,),
    plus the penalty of ``regulariser`` (None = ``"none"``: plain cross-entropy, one forward pass).

    The random draws (``v`` for the Hessian, ``U[-1, 1]`` for the neighbour: one tensor of the shape
    of ``x`` per step) come from ``generator`` (on ``x``'s device; None = the global RNG). The
    neighbour's per-channel scale comes from ``input_space`` or ``model.input_space``. The model
    runs in whatever mode it is in (the training loop puts it in train mode).
    """
    regulariser = regulariser or Regulariser()
    if not isinstance(regulariser, Regulariser):
        raise TypeError(f"regulariser must be a Regulariser or None, got {type(regulariser).__name__}")
    # the explainers' input rules: NaN refused, raw [0, 1] pixels given to a normalised model warned about
    check_images(x, input_space or getattr(model, "input_space", None))
    if not regulariser.active:
        logits = model(x)
        ce = F.cross_entropy(logits, y)
        return RegularisedLoss(ce, ce, torch.zeros((), dtype=ce.dtype, device=ce.device), logits)
    y = check_targets(y, x.shape[0], None, x.device, "y")
    inputs = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(inputs)
        ce = F.cross_entropy(logits, y)
        if regulariser.kind == "hessian":
            grad = _true_logit_gradient(model, inputs, y, True, logits)
            v = draw(torch.randn, x.shape, generator=generator, device=x.device, dtype=x.dtype)
            (hv,) = torch.autograd.grad((grad * v).sum(), inputs, create_graph=True)
            terms = {"hessian": _squared_norm(hv)}
            total = regulariser.lambda_hessian * terms["hessian"].mean()
        else:
            space = space_or_raise(model, input_space)
            keep_graph = not regulariser.detach_clean
            grad = _true_logit_gradient(model, inputs, y, keep_graph, logits)
            if regulariser.detach_clean:
                grad = grad.detach()
            u = draw(torch.rand, x.shape, generator=generator, device=x.device, dtype=x.dtype)
            neighbour = (x.detach() + space.eps(regulariser.eps, x) * (2 * u - 1)).requires_grad_(True)
            grad_n = _true_logit_gradient(model, neighbour, y, True)
            terms, total = {}, ce.new_zeros(())
            if regulariser.kind in ("l2", "l2_cosd"):
                terms["l2"] = _squared_norm(grad - grad_n)
                total = total + regulariser.lambda_l2 * terms["l2"].mean()
            if regulariser.kind in ("cosd", "l2_cosd"):
                # F.cosine_similarity guards zero norms with eps 1e-8, as the authors' calc_cossim.
                terms["cosd"] = (1 - F.cosine_similarity(grad.flatten(1), grad_n.flatten(1), dim=1)) / 2
                total = total + regulariser.lambda_cos * terms["cosd"].mean()
    return RegularisedLoss(ce + total, ce, total, logits, terms)


def penalty(model: nn.Module, x: Tensor, y: Tensor, regulariser: Regulariser | None, *,
            generator: torch.Generator | None = None, input_space: InputSpace | None = None) -> Tensor:
    """The weighted penalty alone (scalar, differentiable w.r.t. the parameters); see
    :func:`regularised_loss`."""
    return regularised_loss(model, x, y, regulariser, generator=generator, input_space=input_space).penalty
