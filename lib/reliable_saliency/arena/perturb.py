"""One perturbation of the arena on a batch of images, through the library's attacks, aimed as
:func:`.routes.aim` says; the read-outs of its strength that the run itself gives.

Everything random is drawn per image from seeds that depend only on the image's number in the run
(:func:`.settings.image_seed`): the random sign noise, PGD's random start and the restarts of the
strength check loop over the images, so a shard's results do not depend on its other images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..attacks import dombrowski_attack, frame_attack, ghorbani_attack, masked_retrieval_attack, pgd, random_sign_noise
from ..models.smoothing import to_softplus
from .measures import goal_value, target_region, topk
from .routes import Aim
from .settings import ArenaSettings, image_seed

__all__ = ["AttackRun", "run_perturbation", "random_noise", "steps_of", "flat_images", "nan_vector", "RESTARTABLE"]

RESTARTABLE = ("pgd", "topk", "mass_center", "targeted", "masked_retrieval")  # attacks with a random start
_NAN = float("nan")


@dataclass
class AttackRun:
    """``x_adv`` (normalised); per image: ``label_kept``, the attack's goal read on its own map
    (``attack_value``: the map it differentiated, on the real model; NaN where it has none) and
    ``plateau``, the share of its effect that the second half of its steps added (NaN without a
    trace or where it had no effect)."""

    x_adv: Tensor
    label_kept: Tensor
    attack_value: Tensor
    plateau: Tensor
    no_gradient: Tensor | None = None  # (N,) bool: the attack had no gradient and did not move the images

    def __post_init__(self):
        if self.no_gradient is None:
            self.no_gradient = torch.zeros(self.x_adv.shape[0], dtype=torch.bool, device=self.x_adv.device)


def steps_of(perturbation: str, settings: ArenaSettings) -> int:
    """The profile's steps of ``perturbation`` (0 for the random noise)."""
    return {"random_sign": 0, "pgd": settings.pgd_steps, "topk": settings.ghorbani_steps,
            "mass_center": settings.ghorbani_steps, "targeted": settings.ghorbani_steps,
            "dombrowski": settings.dombrowski_steps, "frame": settings.frame_steps,
            "masked_retrieval": settings.retrieval_steps}[perturbation]


def nan_vector(n: int, like: Tensor | None = None, value: float = _NAN) -> Tensor:
    """(n,) float64 filled with ``value`` (NaN by default), on ``like``'s device (else the CPU)."""
    return torch.full((n,), value, dtype=torch.float64, device=None if like is None else like.device)


def _second_half_share(trace: Tensor, maximise: bool) -> Tensor:
    """Per image: what the second half of the steps added to the best of the first half, as a
    share of the whole run's improvement over its start. ``trace`` (steps + 1, N), start first."""
    trace = trace.double()
    best = trace.amax(0) if maximise else trace.amin(0)
    first = trace[: (trace.shape[0] - 1) // 2 + 1]
    best_first = first.amax(0) if maximise else first.amin(0)
    total = (best - trace[0]).abs()
    return torch.where(total > 0, (best - best_first).abs() / total.clamp_min(1e-300), torch.full_like(total, _NAN))


def _per_image(function, x: Tensor, label: Tensor, index, stream: str, settings: ArenaSettings):
    """``function(x_i, label_i, generator_i)`` for each image with its own seeded generator, stacked."""
    out = []
    for i, image in enumerate(index):
        generator = torch.Generator(device=x.device).manual_seed(image_seed(settings.seed, int(image), stream))
        out.append(function(x[i:i + 1], label[i:i + 1], generator))
    return out


def random_noise(model: nn.Module, x: Tensor, label: Tensor, settings: ArenaSettings, index, budget=None,
                 stream: str = "noise") -> tuple[Tensor, Tensor]:
    """Ghorbani's random baseline per image: ``x + eps_i sign(N(0, I))`` in pixel space, clipped,
    drawn again (up to 10 times) while it changes the label; ``budget`` (N,) per-image eps (default
    the profile's eps). Returns the noisy images and whether each kept its label."""
    eps = [settings.eps] * len(x) if budget is None else [float(b) for b in budget]
    noisy, kept = [], []
    for i, image in enumerate(index):
        if eps[i] <= 0:
            noisy.append(x[i:i + 1].detach())
            kept.append(torch.ones(1, dtype=torch.bool, device=x.device))
            continue
        generator = torch.Generator(device=x.device).manual_seed(image_seed(settings.seed, int(image), stream))
        xi, ki = random_sign_noise(model, x[i:i + 1], eps=min(eps[i], 1.0), generator=generator)
        noisy.append(xi)
        kept.append(ki)
    return torch.cat(noisy), torch.cat(kept)


def flat_images(perturbation: str, aimed: Aim, model: nn.Module, x: Tensor, label: Tensor) -> Tensor:
    """Per image (N,) bool: the map the attack differentiates has exactly zero gradient at the start
    (the gradient of ``<map(x), w>``, ``w`` a fixed random weight, through the model the attack
    differentiates), so no objective of that map can move the image. The library's own check
    (``raise_if_flat``) looks at the whole batch; this one is per image. ``aimed`` must be a fresh
    :class:`.routes.Aim` (DANCE's BPDA map counts its calls). False for the perturbations aimed at
    nothing and for the attack on retrieval (its objective reads the image directly as well)."""
    n = x.shape[0]
    if aimed.explainer is None or perturbation in ("random_sign", "pgd", "masked_retrieval"):
        return torch.zeros(n, dtype=torch.bool)
    attack_model = to_softplus(model, aimed.beta) if aimed.beta else model
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        raw = aimed.explainer(attack_model, xg, label, create_graph=True)
        weight = torch.randn(raw.shape, generator=torch.Generator().manual_seed(0), dtype=raw.dtype).to(raw.device)
        grad, = torch.autograd.grad((raw * weight).sum(), xg, allow_unused=True)
    if grad is None:
        return torch.ones(n, dtype=torch.bool)
    return grad.detach().flatten(1).eq(0).all(1).cpu()


def run_perturbation(perturbation: str, aimed: Aim, model: nn.Module, x: Tensor, label: Tensor,
                     settings: ArenaSettings, index, *, steps: int | None = None, restart: bool = False,
                     target_maps: Tensor | None = None) -> AttackRun:
    """:func:`_run`; an attack whose gradient is exactly zero for every image of the batch (the
    library refuses to step: a surrogate without second derivative, a mask search whose chains did
    not move) leaves the images where they are, flagged in ``no_gradient``."""
    try:
        return _run(perturbation, aimed, model, x, label, settings, index, steps=steps, restart=restart,
                    target_maps=target_maps)
    except RuntimeError as error:
        if "attack gradient is exactly zero" not in str(error):
            raise
    n = x.shape[0]
    with torch.no_grad():
        kept = model(x).argmax(1) == label
    return AttackRun(x.detach(), kept, nan_vector(n, x), nan_vector(n, x), torch.ones(n, dtype=torch.bool, device=x.device))


def _run(perturbation: str, aimed: Aim, model: nn.Module, x: Tensor, label: Tensor,
         settings: ArenaSettings, index, *, steps: int | None = None, restart: bool = False,
         target_maps: Tensor | None = None) -> AttackRun:
    """Run ``perturbation`` on images ``x`` (their numbers in the run: ``index``) aimed as ``aimed``
    says, with the profile's steps (or ``steps``: the strength check doubles them) and, with
    ``restart``, from a random point of the eps ball (per-image seeds). ``target_maps``: Dombrowski's
    target, the pixel maps of other images."""
    n = x.shape[0]
    s = settings
    steps = steps_of(perturbation, s) if steps is None else steps
    if perturbation == "random_sign":
        noisy, kept = random_noise(model, x, label, s, index)
        return AttackRun(noisy, kept, nan_vector(n, x), nan_vector(n, x))
    if perturbation == "pgd":
        stream = "pgd-restart" if restart else "pgd"
        x_adv = torch.cat(_per_image(lambda xi, yi, g: pgd(model, xi, yi, s.eps, steps=steps, generator=g),
                                     x, label, index, stream, s))
        with torch.no_grad():
            kept = model(x_adv).argmax(1) == label
        return AttackRun(x_adv, kept, nan_vector(n, x), nan_vector(n, x))
    if aimed.explainer is None:
        raise ValueError(f"{perturbation} cannot be aimed here: {aimed.route}")
    h, w = x.shape[-2:]
    if perturbation in ("topk", "mass_center", "targeted"):
        options = dict(objective=perturbation, eps=s.eps, alpha=s.ghorbani_alpha(), steps=steps, k=topk(h, w),
                       region=target_region(h, w, x.device) if perturbation == "targeted" else None,
                       surrogate_beta=aimed.beta)
        if restart:  # one image at a time: the random start draws from the image's own generator
            results = _per_image(lambda xi, yi, g: ghorbani_attack(model, xi, aimed.explainer, random_start=True,
                                                                   generator=g, **options), x, label, index,
                                 "ghorbani-restart", s)
            x_adv = torch.cat([r.x_adv for r in results])
            return AttackRun(x_adv, torch.cat([r.label_kept for r in results]),
                             torch.cat([r.value.double() for r in results]), nan_vector(n, x))
        r = ghorbani_attack(model, x, aimed.explainer, **options)
        return AttackRun(r.x_adv, r.label_kept, r.value.double(),
                         _second_half_share(r.trace, r.measure != "topk_intersection"))
    if perturbation in ("dombrowski", "frame"):
        if perturbation == "dombrowski":
            scale = (h * w / 224**2) ** 2  # the paper's balance of the two terms at h x w (attack docstring)
            betas = dict(beta_start=aimed.beta, beta_end=10 * aimed.beta) if aimed.beta else \
                dict(beta_start=None, beta_end=None)
            # twice the steps at half the step size (the strength check): the same distance to travel,
            # so a change measures convergence, not a larger budget
            r = dombrowski_attack(model, x, target_maps + 1e-12, aimed.explainer, steps=steps,
                                  lr=s.dombrowski_lr(steps), map_weight=1e11 * scale, **betas)
            value = goal_value("dombrowski", r.clean_map, r.adv_map, target_maps)
        else:
            r = frame_attack(model, x, aimed.explainer, eps=s.eps, steps=steps, lr=4 * s.eps / s.frame_steps,
                             surrogate_beta=aimed.beta)
            value = goal_value("frame", r.clean_map, r.adv_map)
        return AttackRun(r.x_adv, r.label_kept, value.double(), _second_half_share(r.loss_trace, maximise=False))
    if perturbation == "masked_retrieval":
        options = dict(eps=s.eps, steps=steps, alpha=2.5 * s.eps / s.retrieval_steps, normalise=aimed.normalise,
                       mode=aimed.mode, surrogate_beta=aimed.beta)
        if restart:
            results = _per_image(lambda xi, yi, g: masked_retrieval_attack(
                model, xi, aimed.explainer, random_start=True, generator=g, **options), x, label, index,
                "retrieval-restart", s)
            x_adv = torch.cat([r.x_adv for r in results])
            seen = torch.cat([r.masked_trace[-1] for r in results]).neg().exp()
            return AttackRun(x_adv, ~torch.cat([r.fooled for r in results]), seen.double(), nan_vector(n, x))
        r = masked_retrieval_attack(model, x, aimed.explainer, **options)
        return AttackRun(r.x_adv, ~r.fooled, r.masked_trace[-1].neg().exp().double(),
                         _second_half_share(r.loss_trace, maximise=True))
    raise ValueError(f"unknown perturbation {perturbation!r}")
