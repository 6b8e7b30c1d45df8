"""An adaptive attack on paper A's retrieval test: lose the clean class on ``x_adv`` *and* on
``x_adv`` masked by the explainer's own map of ``x_adv``.

RelEx (Lim et al. 2021) is judged by retrieval: ``argmax f(x_adv * m(x_adv)) == c``, the clean
prediction. The paper attacks the model (PGD) and other explainers, never the explainer whose
mask does the retrieving. This attack does, for any explainer of the library: per image it
maximises, with L-inf sign steps in pixel space (exact eps ball and valid range under per-channel
normalisation, as :func:`.predictions.pgd`)::

    prediction_weight * CE(f(x_adv), c)  +  CE(f(x_adv * M(x_adv)), c),   M = normalise(E(x_adv))

- ``mode="unrolled"``: the gradient goes through the map (``create_graph=True``): for RelEx,
  through a short unrolled run of its optimisation (pass few iterations and copies, e.g.
  ``get_explainer("relex", iterations=5, samples=4)``);
- ``mode="detached"``: the map is recomputed at every step but held constant in the gradient
  (BPDA / straight-through: the gradient flows only through ``x_adv`` in ``x_adv * M``), so any
  explainer, however long, can be used as it is.

Random explainers draw fresh noise at every step from ``generator`` (expectation over the
explainer's randomness, one draw per step). The caller's model is never modified.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.inputs import InputSpace, check_targets
from ..core.options import choice, integer, number, pixel_budget
from ..core.perturbation import project
from ..core.perturbation import random_start as draw_random_start
from ..explainers.registry import Explainer
from .common import prepare_attack, softplus_copy

__all__ = ["MODES", "MaskedRetrievalResult", "masked_retrieval_attack"]

MODES = ("unrolled", "detached")
_RANGE_SLACK = 1e-5


@dataclass
class MaskedRetrievalResult:
    """Outcome of :func:`masked_retrieval_attack`.

    ``x_adv``: the last iterate (normalised); ``label``: the clean class ``c`` the attack pushes
    away from (N,); ``fooled``: the real model no longer predicts ``c`` on ``x_adv``;
    ``loss_trace`` / ``masked_trace`` ``(steps, N)``: the attack objective and its masked
    cross-entropy term at each iterate, before its step, as seen through the attack's explainer;
    ``checkpoints``: step -> normalised iterate after that many steps (0 is the start).
    Retrieval itself is judged by the caller with the real explainer
    (:func:`..evaluation.retrieval`)."""

    x_adv: Tensor
    label: Tensor
    fooled: Tensor
    loss_trace: Tensor
    masked_trace: Tensor
    checkpoints: dict[int, Tensor] = field(default_factory=dict)


def _as_mask(m: Tensor, x: Tensor) -> Tensor:
    """A mask broadcastable over ``x`` (N, C, H, W): (N, H, W) -> (N, 1, H, W); checked."""
    if not isinstance(m, Tensor):
        raise TypeError(f"the (normalised) map must be a tensor, got {type(m).__name__}")
    if m.dim() == 3:
        m = m.unsqueeze(1)
    n, c, h, w = x.shape
    if m.dim() != 4 or m.shape[0] != n or m.shape[1] not in (1, c) or m.shape[2:] != (h, w):
        raise ValueError(
            f"the normalised map must have shape ({n}, {h}, {w}), ({n}, 1, {h}, {w}) or "
            f"({n}, {c}, {h}, {w}) to mask x {tuple(x.shape)}, got {tuple(m.shape)}"
        )
    low, high = float(m.detach().amin()), float(m.detach().amax())
    if low < -_RANGE_SLACK or high > 1 + _RANGE_SLACK:
        raise ValueError(
            f"masks must lie in [0, 1] (got min {low:.3g}, max {high:.3g}); pass normalise=, for "
            f"example postprocess steps ['absolute', 'channel_sum', 'divide_by_percentile']"
        )
    return m


def _checkpoints(values: Iterable[int], steps: int) -> list[int]:
    try:
        values = list(values)
    except TypeError:
        raise TypeError(f"checkpoints must be an iterable of step counts, got {values!r}") from None
    return sorted({integer("checkpoints", v, 0, steps, f"steps done, at most steps={steps}") for v in values})


def masked_retrieval_attack(
    model: nn.Module,
    x: Tensor,
    explainer: Explainer,
    *,
    eps: float = 8 / 255,
    steps: int = 40,
    alpha: float | None = None,
    label: Tensor | int | None = None,
    normalise: Callable[[Tensor], Tensor] | None = None,
    prediction_weight: float = 1.0,
    mode: str = "unrolled",
    random_start: bool = False,
    checkpoints: Iterable[int] = (),
    surrogate_beta: float | None = None,
    input_space: InputSpace | None = None,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
) -> MaskedRetrievalResult:
    """Attack the retrieval of ``label`` (default: the clean prediction) by ``explainer``'s masks.

    Each of ``steps`` iterations takes a sign step of ``alpha`` (pixel units; default
    ``2.5 * eps / steps``) up the objective of the module docstring, projected to the L-inf ball
    of ``eps`` around ``x`` and to ``[0, 1]``; ``random_start`` starts uniformly in the ball
    (``generator``). ``normalise`` maps the explainer's output to a mask in ``[0, 1]`` (shape of
    ``x``, (N, 1, H, W) or (N, H, W)); None means the output already is one (RelEx), which is
    checked. ``prediction_weight`` (>= 0) weighs the unmasked cross-entropy (0: attack only the
    masked input). ``surrogate_beta``: run the whole objective through a Softplus(beta) copy of
    the model (the label check of ``fooled`` uses the real model). ``generator`` and
    ``batch_size`` are passed to the explainer (and the random start draws from ``generator``
    first). ``checkpoints``: step counts (0..steps) at which to keep the iterate.
    """
    choice("mode", mode, MODES)
    eps = pixel_budget("eps", eps)
    steps = integer("steps", steps)
    alpha = 2.5 * eps / steps if alpha is None else number("alpha (pixel units)", alpha, 0.0, strict=True)
    prediction_weight = number("prediction_weight", prediction_weight)
    if not callable(explainer):
        raise TypeError(f"explainer must be callable like explain(model, x, target, ...), got {explainer!r}")
    if normalise is not None and not callable(normalise):
        raise TypeError(f"normalise must be a callable map -> mask in [0, 1] or None, got {normalise!r}")
    saved_at = _checkpoints(checkpoints, steps)
    space, predicted = prepare_attack(model, x, input_space)
    n = x.shape[0]
    if label is None:
        label = predicted
    else:
        with torch.no_grad():
            classes = model(x[:1]).shape[1]
        label = check_targets(label, n, classes, x.device, "label")
    attack_model = model
    if surrogate_beta is not None:
        attack_model = softplus_copy(model, surrogate_beta, "surrogate_beta", "surrogate_beta=None")[0]
    finish = normalise if normalise is not None else (lambda m: m)

    def objective(delta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Gradient of the objective w.r.t. ``delta``, the objective and its masked term (N,)."""
        with torch.enable_grad():
            d = delta.clone().requires_grad_(True)
            x_in = space.normalize(x01 + d)
            if mode == "unrolled":
                raw = explainer(attack_model, x_in, label, create_graph=True, generator=generator,
                                batch_size=batch_size)
                if not (isinstance(raw, Tensor) and raw.requires_grad):
                    raise ValueError(
                        "mode='unrolled' needs a map that is differentiable w.r.t. x with "
                        "create_graph=True; this explainer's is not: use mode='detached'"
                    )
            else:
                raw = explainer(attack_model, x_in.detach(), label, create_graph=False, generator=generator,
                                batch_size=batch_size)
                raw = raw.detach() if isinstance(raw, Tensor) else raw
            mask = _as_mask(finish(raw), x_in)
            masked = F.cross_entropy(attack_model(x_in * mask), label, reduction="none")
            total = masked
            if prediction_weight > 0:
                total = total + prediction_weight * F.cross_entropy(attack_model(x_in), label, reduction="none")
            (grad,) = torch.autograd.grad(total.sum(), d)
        return grad, total.detach(), masked.detach()

    x01 = space.denormalize(x.detach())
    delta = draw_random_start(x01, eps, "linf", generator) if random_start else torch.zeros_like(x01)
    delta = project(delta, x01, eps, "linf")
    kept = {0: space.normalize(x01 + delta).detach()} if 0 in saved_at else {}
    totals, maskeds = [], []
    for t in range(1, steps + 1):
        grad, total, masked = objective(delta)
        totals.append(total)
        maskeds.append(masked)
        delta = project(delta + alpha * grad.nan_to_num(0.0).sign(), x01, eps, "linf").detach()
        if t in saved_at:
            kept[t] = space.normalize(x01 + delta).detach()
    x_adv = space.normalize(x01 + delta).detach()
    with torch.no_grad():
        fooled = model(x_adv).argmax(1) != label
    return MaskedRetrievalResult(x_adv=x_adv, label=label, fooled=fooled, loss_trace=torch.stack(totals),
                                 masked_trace=torch.stack(maskeds), checkpoints=kept)
