# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 3. Decoys: saliency over perturbed copies that keep the representation (DANCE)
#
# Lu, Guo, Xing and Noble {cite}`lu2021dance` (ICML 2021) claim:
#
# 1. saliency maps suffer from **gradient saturation**, **adversarial perturbation** of the input
#    and **inter-feature dependence**, and their method addresses all three;
# 2. step 1 makes **decoys**, copies of the image that change one small patch as much as possible
#    while an intermediate representation stays (nearly) unchanged; step 2 keeps, for every
#    feature, the **range** of the base method's scores over the decoys;
# 3. in theory the score captures the **Hessian within the patch** (Theorem 1) and moves **no more
#    than the raw map** under an adversarial perturbation (Proposition 1);
# 4. in experiments, for the gradient, SmoothGrad and Integrated Gradients, decoys give **better
#    fidelity** and **lower sensitivity** under the three Ghorbani attacks, and **both steps are
#    needed** (ablations); the method is ill-defined on linear models (the range is zero there).
#
# The authors' code (TensorFlow 1) could not be reached; this is an **independent implementation
# from the paper's equations**, as far as is known the first in PyTorch. The appendix with the
# solver and its settings was not available either: every choice the paper leaves open is marked
# **[open]** below and in the library (`reliable_saliency.explainers.decoys`, `.dance`). The paper
# reports bar charts only, without numbers; this chapter measures each claim on CIFAR-10 images
# with intervals and adds what the paper lacks: controls for the sensitivity score (random noise of
# the same budget, and a plain blur of the base map as smooth as DANCE's), attacks aimed at the DANCE
# map itself, a linear model, a saturation toy and a numerical check of Theorem 1.

# %% tags=["parameters"]
profile: str = "smoke"  # smoke | book | paper
device: str = "auto"  # "auto", "cpu", "cuda" or "cuda:N"
seed: int = 0
main_images: int | None = None  # [1, 10000] CIFAR-10 test images of the fidelity and sensitivity tables (correct for the LeNet)
patch: int = 3  # [1, 32] decoy patch side in pixels (the paper: 3 x 3)
stride: int | None = None  # [1, ...] pixels between patch positions (the paper: not stated; 1 would be 900 positions on 32 x 32)
decoy_layer: str = "features.9"  # the representation kept by the decoys (LeNet's last spatial layer, the last max-pool)
decoy_eps: float = 0.1  # bound on ||F_l(x~) - F_l(x)||_inf, relative to max |F_l(x)| of the image
tau: float = 0.1  # [0, 1] per-pixel bound |x~ - x| in pixel units (images in [0, 1])
multiplier: float = 1.0  # initial penalty multiplier (raised x2 after every violating step)
decoy_steps: int | None = None  # [1, ...] sign-gradient steps of the decoy solver
sg_samples: int | None = None  # [1, ...] SmoothGrad samples (noise 0.15 of the range), with and without decoys
ig_steps: int | None = None  # [1, ...] Integrated Gradients steps (zero baseline), with and without decoys
attack_eps: float = 8 / 255  # [0, 1] Ghorbani attacks: L-inf budget in pixel units
attack_steps: int | None = None  # [1, ...] Ghorbani iterations (step 2.5 * eps / steps)
surrogate_beta: float = 10.0  # Softplus beta of the copy the attacks differentiate (the LeNet uses ReLU)
recompute_every: int | None = None  # [1, ...] attacks aimed at DANCE solve the decoys again every this many steps
auc_steps: int | None = None  # [1, ...] insertion / deletion steps
direct_images: int | None = None  # [1, 10000] first main images also attacked with SmoothGrad- and IG-aimed attacks
adaptive_images: int | None = None  # [1, 10000] first main images of the attacks aimed at the DANCE map itself
knob_images: int | None = None  # [1, 10000] first main images of the patch / stride / layer / multiplier study
dense_strides: list[int] | None = None  # [1, ...] denser patch grids checked in the knob study (the last on dense_images only)
dense_images: int | None = None  # [1, 10000] first knob images also explained with the densest stride
imagenet_images: int | None = None  # [0, 37] ImageNet val-37 images explained with the offline EfficientNet-Lite0
imagenet_stride: int | None = None  # [1, ...] patch stride on 224 x 224 ImageNet inputs
loop_images: int | None = None  # [1, 10000] first main images of the batched-versus-loop timing

# %%
# Sizes per profile. `book` runs in about an hour on a 2-core CPU (resumable: every heavy step is stored). A forward + input-gradient pass
# of the LeNet costs about 0.7 ms per image there; a decoy costs `decoy_steps` such passes (up to the layer)
# plus 2-4 checks, and the base explainer on it 1 (gradient), `sg_samples` or `ig_steps` passes, so the patch
# grid sets the price: stride 8 gives 25 positions (50 decoys, about 700 passes) per image, stride 1 900
# (1,800 decoys, about 26,000 passes, 18 s). Per main image, all maps on the clean, the noisy and the three
# attacked copies cost about 9,000 passes (6 s); an attack aimed at DANCE about 6,000 passes per objective
# plus a decoy solve every `recompute_every` steps (about 8 s per image and objective). Book estimate (from the
# last book run's section times): main 100 images 11 min, attacks aimed at SmoothGrad / IG 6 min, attacks aimed
# at DANCE 13 min, knobs 8 min plus stride 1 on 30 images (clean and attacked: about 18 min), the rest 2 min:
# about 60 minutes.
SIZES = {
    "smoke": dict(main_images=6, stride=16, decoy_steps=3, sg_samples=2, ig_steps=2, attack_steps=2, recompute_every=1,
                  auc_steps=8, direct_images=2, adaptive_images=2, knob_images=2, dense_strides=[8, 4], dense_images=1,
                  imagenet_images=1, imagenet_stride=112, loop_images=2),
    "book": dict(main_images=100, stride=8, decoy_steps=10, sg_samples=8, ig_steps=8, attack_steps=40, recompute_every=10,
                 auc_steps=16, direct_images=30, adaptive_images=30, knob_images=30, dense_strides=[3, 1], dense_images=30,
                 imagenet_images=2, imagenet_stride=48, loop_images=4),
    "paper": dict(main_images=1000, stride=3, decoy_steps=20, sg_samples=50, ig_steps=50, attack_steps=100,
                  recompute_every=5, auc_steps=32, direct_images=200, adaptive_images=100, knob_images=100,
                  dense_strides=[2, 1], dense_images=30, imagenet_images=8, imagenet_stride=8, loop_images=16),
}
import dataclasses
import os
import time
import warnings
from copy import deepcopy
from functools import partial
from dataclasses import replace
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display
from torch import nn

from reliable_saliency import data
from reliable_saliency.attacks import ghorbani_attack, random_sign_noise
from reliable_saliency.attacks.decoy_attack import RecomputedDecoys, blurred_explainer, objective_value, strength
from reliable_saliency.chapter import kit
from reliable_saliency.chapter.figures import map_grid
from reliable_saliency.chapter.rerun import rerun_box
from reliable_saliency.evaluation.selection import correctly_classified
from reliable_saliency.core.timing import PassCounter, bound_per_pass
from reliable_saliency.claims import interval_text
from reliable_saliency.core import inputs
from reliable_saliency.evaluation import deletion_auc, insertion_auc, saliency_fidelity, saliency_sensitivity
from reliable_saliency.evaluation.attribution_robustness import hessian_vector_product
from reliable_saliency.evaluation.saturation import RELEVANT, WEAK, SaturatedToy, block_ratio, toy_images
from reliable_saliency.explainers import dance, get_explainer
from reliable_saliency.explainers.dance import PAPER_POSTPROCESS
from reliable_saliency.explainers.decoys import constant_decoys, make_decoys
from reliable_saliency.maps import spearman, topk_intersection
from reliable_saliency.maps.postprocess import postprocess
from reliable_saliency.maps.smoothness import blurred_map, matched_sigma, roughness
from reliable_saliency.models import efficientnet_lite0
from reliable_saliency.training import zoo

ch = kit.setup("03_dance", globals(), SIZES, within={"direct_images": "main_images", "adaptive_images": "main_images",
                                                     "knob_images": "main_images", "loop_images": "main_images",
                                                     "dense_images": "knob_images"})
S, settings, run_device, run, ledger, cifar_test = ch.S, ch.settings, ch.device, ch.run, ch.ledger, ch.data
if min(S.direct_images, S.adaptive_images, S.knob_images) < 2:
    raise ValueError("the direct, adaptive and knob studies need at least 2 images each")
PAPER = "DANCE (Lu et al. 2021)"
section_seconds = {}

# %% [markdown]
# ## The method in brief
#
# **Decoys.** For a patch $K$ (here `patch` x `patch` pixels, all channels) and a sign
# $s = \pm 1$, a decoy $\tilde x$ solves
#
# $$\max_{\tilde x}\ \|((\tilde x - x)\,s)^+\|_1 \quad \text{s.t.}\quad
#   \|F_l(\tilde x) - F_l(x)\|_\infty \le \epsilon,\ \ |\tilde x_i - x_i| \le \tau,\ \
#   \tilde x = x \text{ outside } K,\ \ \tilde x \in [0, 1]:$$
#
# the patch moves as far as it can in one direction while the layer-$l$ representation stays put.
# The patch slides over the image: $P$ positions, $2P$ decoys. **DANCE** runs the base method $E$
# on every decoy and keeps $Z_i = \max_k E(\tilde x^k)_i - \min_k E(\tilde x^k)_i$, then the
# paper's post-processing ($|\cdot|$, max over colour channels, winsorise at the 95th percentile,
# rescale to $[0, 1]$), which this chapter applies to **every** map it compares, the baselines
# included. The rescaling subtracts each map's minimum, $(\min(s, p_{95}) - \min s) / (p_{95} -
# \min s)$, as the authors' code does for its baselines (not $s / p$).
#
# Choices of this chapter and the library, fixed before any result was seen:
#
# - **[open] Solver.** The constraint is relaxed into a hinge penalty whose multiplier starts at
#   `multiplier` (the paper's "initial Lagrange multiplier") and doubles while violated; the patch
#   starts at the unconstrained optimum $s\tau$ and takes `decoy_steps` sign-gradient steps of
#   decaying size; each decoy keeps the best point that satisfies the constraint, and a decoy that
#   never does is **reported and left out**, never used.
# - **[open] $\epsilon$, $\tau$, layer.** $\epsilon$ = `decoy_eps` of the image's largest
#   representation entry (one value for every layer), $\tau$ = 0.1 of the pixel range (about 25/255),
#   the LeNet's last spatial layer (its last max-pool). The study near the end varies the layer,
#   the patch size, the stride and the initial multiplier, the knobs the paper calls uncritical.
# - **Patch grid.** The paper's 3 x 3 patch, but a **stride of `stride` pixels** at `book`: the
#   cost is twice the number of positions times the base method's cost, and stride 1 would be 1,800
#   decoys per image. The knob study compares denser grids, stride 1 included, with this one.
# - **Bases.** Gradient, SmoothGrad (`sg_samples` samples, noise 0.15 of the range) and IG
#   (`ig_steps` steps, zero baseline: the dataset's mean colour), the same settings with and without
#   decoys. Fewer samples and steps than usual on the decoys is the price of 50 decoys per image;
#   the raw methods use the same settings so that each pair differs only by the decoys.
# - **Readings.** Range over all $2P$ decoys is *the method* (reading (a)); the range of each
#   position's two decoys averaged over the positions covering a pixel (reading (b)) and the mean
#   over the decoys ("decoys + mean") are ablations, as is "constant + range": each patch replaced
#   by the image's mean colour, one decoy per position, no constraint.
# - **Fidelity** $SF(E, x) = -\log\big(F_c((E - \bar E) \odot x) / F_c(x)\big)$ (lower is better;
#   the paper's formula is partly garbled, this is its most consistent reading), with the product
#   taken in the normalised input (0 is the mean colour); beside it deletion (zero substrate, lower
#   is better) and insertion (blurred substrate, higher is better) AUC.
# - **Sensitivity** $SS = \|E(x) - E(\hat x)\|_2 / \|x - \hat x\|_2$ (lower is better), maps after the
#   post-processing, images in pixel units; all methods on the **same** $\hat x$. SS rewards any
#   smooth map, whatever it shows, so this chapter adds two controls the paper lacks. **Random
#   noise:** every map is also measured on the image plus sign noise of the attack's budget, and a
#   verdict uses the damage **beyond random**, SS under the attack minus SS under the noise, per
#   image. **A plain smoother:** "blur(E)" is $\sum_c |E|$ blurred with a Gaussian whose width is
#   chosen, on the clean images only, so that its maps are as smooth as DANCE(E)'s (by the mean
#   roughness, one minus the lag-1 autocorrelation of the map); for a sensitivity claim to hold,
#   DANCE must beat both E and blur(E). Beside SS, every table shows the **top-k intersection** of
#   the attacked map with the clean map (k = 10% of the pixels, on $\sum_c |E|$ before winsorising,
#   which would tie the top 5%), and a verdict on robustness uses the share of top-k pixels lost
#   beyond what the noise loses.

# %%
started = time.perf_counter()
natural = zoo.load_model("lenet_natural", settings.name, device=run_device, progress=False)
space = natural.input_space
images = correctly_classified(natural, cifar_test, S.main_images, seed=seed, device=run_device)
x, y = images.normalized(run_device), images.labels.to(run_device)
x01 = space.denormalize(x)
N, H = len(x), x.shape[-1]
K = max(1, round(0.0997 * H * H))
DECOYS = dict(layer=decoy_layer, patch=patch, stride=S.stride, eps=decoy_eps, tau=tau, steps=S.decoy_steps,
              multiplier=multiplier)
BASES = {"gradient": ("gradient", {}), "SmoothGrad": ("smoothgrad", {"samples": S.sg_samples}),
         "IG": ("integrated_gradients", {"steps": S.ig_steps, "baseline": "zero"})}
READINGS = {"range": "DANCE", "mean": "decoys + mean", "range_per_position": "per-position range"}
MAIN = [name for base in BASES for name in (base, f"DANCE({base})")]
SHARD = 10
generator = ch.generator


def paper_map(raw: torch.Tensor) -> torch.Tensor:
    """The paper's post-processing, as (N, 1, H, W) maps in [0, 1]."""
    return postprocess(raw.detach(), list(PAPER_POSTPROCESS)).unsqueeze(1)


def quiet_dance(*args, **kw):
    with warnings.catch_warnings():  # excluded decoys are counted in the decoy tables, not printed to stderr
        warnings.filterwarnings("ignore", message="DANCE: .* never satisfied")
        return dance(*args, **kw)


def binding(decoys, pixels) -> torch.Tensor:
    """Per image, the share of its valid decoys that the representation constraint held back: their
    deviation is below the box optimum (every patch entry moved by tau, or to the end of the range)."""
    h = pixels.shape[-1]
    columns = torch.nn.functional.unfold(pixels, decoys.patch)  # (N, C * patch^2, every top-left corner)
    at = columns[:, :, (decoys.positions[:, 0] * (h - decoys.patch + 1) + decoys.positions[:, 1]).to(pixels.device)]
    box = torch.stack([(1 - at).clamp(max=tau).sum(1), at.clamp(max=tau).sum(1)], -1)  # (N, P, 2): s = +1, -1
    held = (decoys.deviation < box.to(decoys.deviation.dtype) - 1e-4) & decoys.valid
    return held.flatten(1).double().sum(1) / decoys.valid.flatten(1).double().sum(1).clamp_min(1)


def decoy_stats(decoys, pixels) -> dict:
    """Per-image report of a decoy set (stored with the maps)."""
    valid = decoys.valid.flatten(1).double()
    return {"decoy satisfied": decoys.satisfied.flatten(1).double().mean(1),
            "decoy excluded": (1 - valid).sum(1), "decoy binding": binding(decoys, pixels),
            "decoy change": (decoys.change.flatten(1).double() * valid).sum(1) / valid.sum(1).clamp_min(1),
            "decoy deviation": (decoys.deviation.flatten(1).double() * valid).sum(1) / valid.sum(1).clamp_min(1)}


def explain_all(model, xs, ys, *, constant=True, bases=BASES, decoys=None):
    """Raw maps of every base, and over the decoys in all three readings (one run of the base on the
    decoys), plus 'constant + range'; decoys solved here unless given; per-image decoy report."""
    decoys = make_decoys(model, xs, **DECOYS) if decoys is None else decoys
    out = decoy_stats(decoys, space.denormalize(xs))
    cons = constant_decoys(model, xs, layer=decoy_layer, patch=patch, stride=S.stride, eps=decoy_eps) if constant else None
    for name, (base, options) in bases.items():
        out[name] = get_explainer(base, **options)(model, xs, ys, generator=generator()).detach()
        readings = quiet_dance(model, xs, ys, base=base, base_options=options, decoys=decoys, aggregate=list(READINGS),
                               generator=generator())
        for reading, label in READINGS.items():
            out[f"{label}({name})"] = readings[reading].detach()
        if constant:
            out[f"constant + range({name})"] = quiet_dance(model, xs, ys, base=base, base_options=options, decoys=cons,
                                                           generator=generator()).detach()
    return out


def stored_maps(step, xs, ys, **options):
    """explain_all over the images in shards of the result store (a killed run resumes)."""
    given = options.pop("decoys", None)

    def shard(a, b):
        part = None if given is None else dataclasses.replace(given, **{
            f.name: getattr(given, f.name)[a:b] for f in dataclasses.fields(given)
            if f.name in ("delta", "valid", "satisfied", "violation", "eps", "deviation", "change")})
        return explain_all(natural, xs[a:b], ys[a:b], decoys=part, **options)

    params = dict(DECOYS, sg=S.sg_samples, ig=S.ig_steps, bases=list(options.get("bases", BASES)),
                  constant=options.get("constant", True), images=xs.flatten().sum().item())
    out = ch.store.compute(step, shard, len(xs), params=params, shard_size=SHARD, progress=False)
    return {k: v.to(run_device) for k, v in out.items()}


def decoy_row(stats, label) -> dict:
    return {"decoys of": label, "satisfied": stats["decoy satisfied"].mean().item(),
            "constraint binding": stats["decoy binding"].mean().item(), "left out": int(stats["decoy excluded"].sum()),
            "mean |x~ - x| (pixels)": stats["decoy change"].mean().item(),
            "mean deviation (L1, pixels)": stats["decoy deviation"].mean().item()}


DECOY_FORMATS = {"satisfied": "{:.1%}", "constraint binding": "{:.1%}", "left out": "{:.0f}",
                 "mean |x~ - x| (pixels)": "{:.4f}", "mean deviation (L1, pixels)": "{:.3f}"}
with PassCounter(natural) as clean_decoy_clock:
    clean_decoys = make_decoys(natural, x, **DECOYS)
P = clean_decoys.positions.shape[0]
raw = {"clean": stored_maps("maps-clean", x, y, decoys=clean_decoys)}
decoy_rows = [decoy_row(raw["clean"], "clean images")]
section_seconds["decoys and maps, clean"] = time.perf_counter() - started
ch.table(pd.DataFrame(decoy_rows).set_index("decoys of"),
         f"The decoys of the {N} clean CIFAR-10 test images the LeNet classifies correctly (patch {patch} x {patch}, "
         f"stride {S.stride}: {P} positions, {2 * P} decoys per image): the share that satisfies the representation "
         "constraint, the share the constraint held back (the patch moved less than the box alone allows), the decoys "
         "left out, and how far they moved the patch (means over images).", formats=DECOY_FORMATS)

# %% [markdown]
# Where the constraint does not bind, a decoy is simply the patch pushed by $\tau$. Below: one
# image, a few of its decoys, and every method's map.

# %%
first = 0
show_positions = [0, P // 2, P - 1]
rows_shown = torch.tensor([(first * P + p) * 2 + s for p in show_positions for s in (0, 1)], device=run_device)
pictures = space.denormalize(clean_decoys.images(x, rows_shown)).clamp(0, 1)
fig, axes = plt.subplots(1, len(rows_shown) + 1, figsize=(7.0, 1.6))
axes[0].imshow(x01[first].clamp(0, 1).permute(1, 2, 0).cpu())  # denormalising leaves -3e-8: clamp for imshow
axes[0].set_title("image", fontsize=9)
for ax, picture, (p, s) in zip(axes[1:], pictures, [(p, s) for p in show_positions for s in ("+", "-")]):
    ax.imshow(picture.permute(1, 2, 0).cpu())
    r, c = clean_decoys.positions[p].tolist()
    ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), patch, patch, fill=False, edgecolor="cyan", linewidth=0.8))
    ax.set_title(f"pos. {p}, {s}", fontsize=9)
for ax in axes:
    ax.set_axis_off()
ch.figure(fig, "One clean image and its two decoys (s = +1 and -1) at three patch positions, the patch outlined in "
               "cyan: the decoys change only the patch, by at most tau per pixel.")
paper = {"clean": {name: paper_map(m) for name, m in raw["clean"].items() if not name.startswith("decoy ")}}
ch.figure(map_grid({"image": x01, **{name: paper["clean"][name][:, 0] for name in MAIN}}, count=3),
          "Three images (top row) and every base method's map without and with decoys (DANCE), after the paper's "
          "post-processing (bright: salient): compare each raw map with the DANCE map below it.")

# %% [markdown]
# ## Fidelity
#
# Each method's maps on the same images: the paper's fidelity SF and the deletion and insertion
# AUC. The ablations (decoys + mean, the per-position range, constant + range) are listed under
# each base.

# %%
started = time.perf_counter()
interval = partial(interval_text, digits=3, seed=seed)  # "mean (95% interval)" for tables
fidelity = {name: saliency_fidelity(natural, x, m, y).cpu() for name, m in paper["clean"].items()}
deletion = {name: deletion_auc(natural, x, paper["clean"][name], y, substrate="zero", steps=S.auc_steps).cpu()
            for name in MAIN}
insertion = {name: insertion_auc(natural, x, paper["clean"][name], y, substrate="blur", blur_sigma=2.0,
                                 steps=S.auc_steps).cpu() for name in MAIN}
fidelity_table = pd.DataFrame([
    {"base": base, "method": "raw" if name == base else name.split("(")[0], "SF (lower better)": interval(fidelity[name]),
     "deletion AUC (lower better)": interval(deletion[name]) if name in deletion else None,
     "insertion AUC (higher better)": interval(insertion[name]) if name in insertion else None}
    for base in BASES for name in fidelity if name == base or name.endswith(f"({base})")]).set_index(["base", "method"])
section_seconds["fidelity"] = time.perf_counter() - started
ch.table(fidelity_table, f"Fidelity of every method on the {N} clean images: mean and 95% bootstrap interval; AUC with "
                         f"{S.auc_steps} steps of {H * H // S.auc_steps} pixels (insertion into the image blurred with a "
                         "2-pixel Gaussian).", missing="the AUC is measured for the raw methods and DANCE only")
fig, axes = plt.subplots(1, 3, figsize=(7.0, 2.4), sharey=True)
order = ["raw", "DANCE", "per-position range", "decoys + mean", "constant + range"]
for ax, base in zip(axes, BASES):
    names = [base if label == "raw" else f"{label}({base})" for label in order]
    means = [fidelity[n].mean().item() for n in names]
    errors = [1.96 * fidelity[n].std().item() / len(fidelity[n]) ** 0.5 for n in names]
    ax.errorbar(means, range(len(order)), xerr=errors, fmt="o", color="C0")
    ax.set_yticks(range(len(order)), order)
    ax.set_title(base, fontsize=10)
    ax.set_xlabel("SF (lower better)")
ax.invert_yaxis()
ch.figure(fig, f"Fidelity SF per base and method on {N} images (mean and a normal 95% interval; lower is better): "
               "compare each base's raw map (top) with DANCE and the ablations below it.")

# %%
main_setting = (f"{N} CIFAR-10 test images, the ReLU LeNet; patch {patch}, stride {S.stride} ({2 * P} decoys), its "
                f"last max-pool kept within eps {decoy_eps} (relative), tau {tau:.3f}, {S.decoy_steps} solver steps; "
                f"SmoothGrad {S.sg_samples} samples, IG {S.ig_steps} steps; paper post-processing; bootstrap over images")
ledger.test("B3.1", nan="omit", paper=PAPER,
            claim="[claim 4] Decoys improve fidelity: DANCE(E) has a lower SF than E, for the gradient, SmoothGrad and IG.",
            measured="SF of E minus SF of DANCE(E), per image (positive: DANCE better)", setting=main_setting,
            parts={base: (fidelity[base], fidelity[f"DANCE({base})"]) for base in BASES})
ledger.test("B3.2", nan="omit", paper=PAPER,
            claim="[claim 4] Decoys improve fidelity by deletion and insertion AUC.",
            measured="deletion AUC of E minus that of DANCE(E); insertion AUC of DANCE(E) minus that of E (per image; "
                     "positive: DANCE better)",
            setting=main_setting + f"; {S.auc_steps} AUC steps",
            parts={**{f"deletion, {base}": (deletion[base], deletion[f"DANCE({base})"]) for base in BASES},
                   **{f"insertion, {base}": (insertion[f"DANCE({base})"], insertion[base]) for base in BASES}})
display(Markdown(ledger.line("B3.1") + "  \n" + ledger.line("B3.2")))

# %% [markdown]
# ## Sensitivity under the three Ghorbani attacks
#
# The attacks of Ghorbani et al. {cite}`ghorbani2019fragile`, as the paper uses them: **top-k**
# (push the map off its clean top-k pixels; k = 10% of the pixels, the paper's 5,000 of 224 x 224),
# **targeted** (push the map into a region: [open] the bottom-right 8 x 8 pixels, one cell of a 4 x 4
# grid, for the paper's "bottom-right 4 x 4 region") and **mass centre** (move the map's centre
# of mass). Each is aimed at the raw **gradient** map through a Softplus(`surrogate_beta`) copy of
# the ReLU network, `attack_steps` sign steps from the clean image (one start, no restarts) in an
# L-inf ball of `attack_eps` that keep the label; then **every method is measured on the same
# attacked images** (the paper: "compare all methods on the same x^"). DANCE recomputes its decoys
# on each attacked image, as it would in use. For SmoothGrad and IG these images are transferred
# from the gradient; the next section attacks them directly. The random control is Ghorbani's
# one-shot sign noise of the full budget, with every map (and DANCE's decoys) recomputed on it.
#
# The control smoother's width is chosen first, on the clean maps alone: for each base, the
# Gaussian (from a fixed list of widths) whose blurred maps, after the same post-processing, are
# as smooth as DANCE's.

# %%
started = time.perf_counter()
SIGMAS = [0.5, 1.0, 1.5, 2.0, 3.0, 4.0]
sigma, smooth_rows = {}, []
for base in BASES:
    sigma[base], seen = matched_sigma(raw["clean"][base], paper["clean"][f"DANCE({base})"], SIGMAS, finish=paper_map)
    smooth_rows.append({"base": base, "roughness, raw": roughness(paper["clean"][base]).mean().item(),
                        "roughness, DANCE": roughness(paper["clean"][f"DANCE({base})"]).mean().item(),
                        "chosen blur width (pixels)": sigma[base], "roughness, blur": seen[sigma[base]]})
ch.table(pd.DataFrame(smooth_rows).set_index("base"),
         f"Roughness of the clean maps (mean over {N} images; 0 smooth, about 1 white noise) and the width of the "
         f"Gaussian, from {', '.join(f'{s:g}' for s in SIGMAS)} pixels, whose blur of the raw map comes closest to "
         "DANCE's roughness: the control smoother blur(E) of the sensitivity verdicts.",
         formats={"chosen blur width (pixels)": "{:g}"})


def add_blur(maps_raw):
    for base in BASES:
        if base in maps_raw:
            maps_raw[f"blur({base})"] = blurred_map(maps_raw[base], sigma[base])
    return maps_raw


add_blur(raw["clean"])
paper["clean"].update({f"blur({b})": paper_map(raw["clean"][f"blur({b})"]) for b in BASES})
summed = {"clean": {name: m.abs().sum(1) for name, m in raw["clean"].items() if not name.startswith("decoy ")}}
region = torch.zeros(H, H, dtype=torch.bool)
region[-H // 4:, -H // 4:] = True
ALPHA = 2.5 * attack_eps / S.attack_steps
OBJECTIVES = {"top-k": "topk", "targeted": "targeted", "mass centre": "mass_center"}
MEASURES = {"topk": "topk_intersection", "targeted": "region_mass", "mass_center": "center_shift"}
gradient_explainer = get_explainer("gradient")


def stored_attack(step, xs, objective, make_explainer):
    """A Ghorbani attack in shards of the result store; make_explainer(a, b) gives the explainer of images a..b-1."""
    def shard(a, b):
        explain = make_explainer(a, b)
        r = ghorbani_attack(natural, xs[a:b], explain, objective=objective, eps=attack_eps, alpha=ALPHA,
                            steps=S.attack_steps, k=K, region=region if objective == "targeted" else None,
                            surrogate_beta=surrogate_beta, generator=generator())
        return {"x_adv": r.x_adv, "value": r.value, "clean_value": r.clean_value, "label_kept": r.label_kept.double(),
                "trace": r.trace.T, "recomputed": torch.full((b - a,), float(getattr(explain, "recomputed", 0)))}

    params = dict(objective=objective, eps=attack_eps, steps=S.attack_steps, beta=surrogate_beta, k=K,
                  images=xs.flatten().sum().item(), decoys=DECOYS, every=S.recompute_every)
    out = ch.store.compute(step, shard, len(xs), params=params, shard_size=SHARD, progress=False)
    found = {k: v.to(run_device) for k, v in out.items()}
    found["trace"] = found["trace"].T  # (steps + 1, N), as the attack reports it
    return SimpleNamespace(**found, measure=MEASURES[objective])


def measure(label, maps_raw, x_adv01, names=None):
    """SS (paper maps) and top-k intersection (sum_c |E|) of each map on an image set against the clean maps."""
    n = len(x_adv01)
    names = [m for m in maps_raw if not m.startswith("decoy ")] if names is None else names
    paper[label] = {m: paper_map(maps_raw[m]) for m in names}
    summed[label] = {m: maps_raw[m].abs().sum(1) for m in names}
    ss = {m: saliency_sensitivity(paper["clean"][m][:n], paper[label][m], x01[:n], x_adv01).cpu() for m in names}
    kept = {m: topk_intersection(summed["clean"][m][:n], summed[label][m], K).cpu() for m in names}
    return ss, kept


noisy, noise_kept = random_sign_noise(natural, x, eps=attack_eps, generator=generator())
raw["noise"] = add_blur(stored_maps("maps-noise", noisy, y))
SS, KEPT, attacked, attack_rows = {}, {}, {}, []
SS["noise"], KEPT["noise"] = measure("noise", raw["noise"], space.denormalize(noisy))
decoy_rows.append(decoy_row(raw["noise"], "images + random sign noise"))
for label, objective in OBJECTIVES.items():
    result = stored_attack(f"attack-gradient-{objective}", x, objective, lambda a, b: gradient_explainer)
    raw[label] = add_blur(stored_maps(f"maps-{objective}", result.x_adv, y, constant=objective == "topk"))
    a01 = space.denormalize(result.x_adv)
    attacked[label] = SimpleNamespace(result=result, x01=a01)
    SS[label], KEPT[label] = measure(label, raw[label], a01)
    decoy_rows.append(decoy_row(raw[label], f"{label}-attacked images"))
    moved = (a01 - x01).abs()
    attack_rows.append({"images": f"{label} attack", "measure on the raw gradient": MEASURES[objective].replace("_", " "),
                        "clean": result.clean_value.mean().item(), "attacked": result.value.mean().item(),
                        "label kept": result.label_kept.mean().item(),
                        "mean |change| (/255)": 255 * moved.mean().item(), "max |change| (/255)": 255 * moved.amax().item()})
moved = (space.denormalize(noisy) - x01).abs()
attack_rows.append({"images": "random sign noise", "measure on the raw gradient": "topk intersection", "clean": 1.0,
                    "attacked": KEPT["noise"]["gradient"].mean().item(), "label kept": noise_kept.double().mean().item(),
                    "mean |change| (/255)": 255 * moved.mean().item(), "max |change| (/255)": 255 * moved.amax().item()})
section_seconds["attacks, noise and their maps"] = time.perf_counter() - started
ch.table(pd.DataFrame(attack_rows).set_index("images"),
         f"The attacks aimed at the raw gradient ({S.attack_steps} steps of {ALPHA * 255:.2f}/255 from the clean image, one "
         f"start, eps {attack_eps * 255:.0f}/255, k = {K}) and the random control, on {N} images: the attack's own measure "
         "on the gradient map (top-k intersection: lower is stronger; region mass and centre shift in pixels: higher is "
         "stronger), the share of images that keep their label, and the perturbation's size.",
         formats={"label kept": "{:.0%}", "mean |change| (/255)": "{:.2f}", "max |change| (/255)": "{:.2f}"})
ch.table(pd.DataFrame(decoy_rows[1:]).set_index("decoys of"),
         "DANCE's decoys recomputed on the perturbed images (as for the clean images above).", formats=DECOY_FORMATS)


# %%
def beyond(label, name, n=None):
    """SS under an image set minus SS under the random noise, per image (the damage beyond random)."""
    n = len(SS[label][name]) if n is None else n
    return SS[label][name][:n] - SS["noise"][name][:n]


def lost(label, name, n=None):
    """Top-k pixels lost beyond random: intersection under the noise minus under the attack, per image."""
    n = len(KEPT[label][name]) if n is None else n
    return KEPT["noise"][name][:n] - KEPT[label][name][:n]


METHODS = {"raw": "{}", "DANCE": "DANCE({})", "blur": "blur({})"}
ss_table = pd.DataFrame([
    {"base": base, "method": label, "SS, noise": interval(SS["noise"][pattern.format(base)]),
     **{f"beyond noise, {a}": interval(beyond(a, pattern.format(base))) for a in OBJECTIVES}}
    for base in BASES for label, pattern in METHODS.items()]).set_index(["base", "method"])
kept_table = pd.DataFrame([
    {"base": base, "method": label, "noise": interval(KEPT["noise"][pattern.format(base)]),
     **{f"{a} attack": interval(KEPT[a][pattern.format(base)]) for a in OBJECTIVES}}
    for base in BASES for label, pattern in METHODS.items()]).set_index(["base", "method"])
ch.table(ss_table, f"Sensitivity SS (lower is better) on {N} images, mean and 95% bootstrap interval: under the random "
                   "noise, and under each attack minus under the noise (the damage beyond random, per image), for each "
                   "base raw, with decoys and blurred as smooth as DANCE; all methods on the same images.")
ch.table(kept_table, f"The share of each map's clean top-{K} pixels (sum over channels, before winsorising) still in its "
                     f"top {K} on the perturbed images (higher: the map survived; chance {K / (H * H):.2f}).")
fig, axes = plt.subplots(1, 3, figsize=(7.0, 2.6), sharey=True)
for ax, label in zip(axes, OBJECTIVES):
    for offset, (method, pattern) in zip((-0.2, 0.0, 0.2), METHODS.items()):
        values = [beyond(label, pattern.format(b)) for b in BASES]
        ax.errorbar(np.arange(3) + offset, [v.mean().item() for v in values],
                    yerr=[1.96 * v.std().item() / len(v) ** 0.5 for v in values], fmt="o", label=method)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xticks(range(3), list(BASES), fontsize=9)
    ax.set_title(f"{label} attack", fontsize=10)
axes[0].set_ylabel("SS beyond noise")
axes[-1].legend(fontsize=9, frameon=False)
ch.figure(fig, f"The damage beyond random noise, SS under each attack minus SS under the noise (mean and normal 95% "
               f"interval, {N} images; lower is better): DANCE against its raw base and against the base blurred as "
               "smooth as DANCE.")

# %%
attack_setting = (main_setting + f"; Ghorbani attacks aimed at the raw gradient (Softplus beta {surrogate_beta:g} "
                  f"surrogate), eps {attack_eps * 255:.0f}/255, {S.attack_steps} steps, one start, k {K}, region "
                  f"bottom-right {H // 4}x{H // 4}; decoys recomputed on the attacked and the noisy images; random control: "
                  "one-shot sign noise of the full budget")
ledger.test("B3.3", nan="omit", paper=PAPER,
            claim="[claims 3, 4] Decoys lower the sensitivity SS under the three Ghorbani attacks, for the gradient, "
                  "SmoothGrad and IG (the same attacked images for all methods), beyond what random noise does and more "
                  "than a plain blur of the base map as smooth as DANCE's.",
            measured="damage beyond random (SS under the attack minus SS under sign noise of the same budget) of E, or of "
                     "blur(E), minus that of DANCE(E), per image (positive: DANCE moves less)", setting=attack_setting,
            parts={f"{label}, {base}, vs {other}": (beyond(label, pattern.format(base)), beyond(label, f"DANCE({base})"))
                   for label in OBJECTIVES for base in BASES for other, pattern in (("raw", "{}"), ("blur", "blur({})"))},
            caveats=["Before this book's controls, this claim was tested against the raw map alone; a smooth map has a "
                     "small SS whatever it shows, so DANCE must now beat a blur of the same smoothness as well."])
display(Markdown(ledger.line("B3.3")))

# %% [markdown]
# ## Ablations: both steps, and the two readings of the range
#
# The paper's ablations replace one step at a time: constant perturbations instead of decoys
# (constant + range) and the mean over the decoys instead of the range (decoys + mean). Reading
# (b), the per-position range, is the paper's alternative reading of step 2, not an ablation; the
# book checks separately whether it does better than reading (a), the chapter's method (with a
# stride larger than the patch it scores only the pixels a patch covers). SS here is the damage
# beyond random under the top-k attack.

# %%
ablation_parts = {}
for base in BASES:
    for ablation in ("constant + range", "decoys + mean"):
        ablation_parts[f"SF, vs {ablation}, {base}"] = (fidelity[f"{ablation}({base})"], fidelity[f"DANCE({base})"])
        ablation_parts[f"SS top-k, vs {ablation}, {base}"] = (beyond("top-k", f"{ablation}({base})"),
                                                              beyond("top-k", f"DANCE({base})"))
ablation_table = pd.DataFrame([
    {"base": base, "method": label, "SF": interval(fidelity[f"{label}({base})"]),
     "SS top-k, beyond noise": interval(beyond("top-k", f"{label}({base})")),
     "top-k kept, top-k attack": interval(KEPT["top-k"][f"{label}({base})"])}
    for base in BASES for label in ("DANCE", "per-position range", "constant + range", "decoys + mean")]
).set_index(["base", "method"])
ch.table(ablation_table, f"DANCE (reading (a)), reading (b) and the two ablations on {N} images (mean and 95% interval; "
                         "SF and SS lower is better, top-k kept higher is better).")
covered = float(clean_decoys.cover(H, H).bool().any(0).double().mean())  # share of pixels inside some patch
readings_parts = {}
for base in BASES:
    readings_parts[f"SF, {base}"] = (fidelity[f"DANCE({base})"], fidelity[f"per-position range({base})"])
    readings_parts[f"SS top-k, {base}"] = (beyond("top-k", f"DANCE({base})"), beyond("top-k", f"per-position range({base})"))
ledger.test("B3.11", nan="omit", paper="this book (DANCE's two readings)",
            claim="Reading (b) of step 2, the range over each position's two decoys averaged over the positions, scores "
                  "better than reading (a), the range over all decoys (this chapter's method), in SF and SS, for every base.",
            measured="SF (or SS beyond random under the top-k attack) of reading (a) minus that of reading (b), per image "
                     "(positive: reading (b) better)", setting=attack_setting, parts=readings_parts,
            caveats=[f"With a stride ({S.stride}) larger than the patch ({patch}), reading (b) scores only the pixels some "
                     f"patch covers ({covered:.0%} of them here) and gives every other pixel zero: its map cannot move "
                     "outside the patches, an advantage in SS and in top-k survival built into the coarse grid."])
b_better = ledger.claims[-1].verdict == "holds"
ledger.test("B3.4", nan="omit", paper=PAPER,
            claim="[claim 4] Both steps are needed: decoys + range beats constant perturbations + range and decoys + mean, "
                  "in fidelity and sensitivity.",
            measured="SF (or SS beyond random under the top-k attack) of the ablation minus that of DANCE, per image "
                     "(positive: DANCE better)", setting=attack_setting, parts=ablation_parts,
            caveats=["DANCE is reading (a), the range over all decoys; B3.11 tests whether reading (b), the per-position "
                     "range, does better: " + ("it does, in SF and SS for every base, so the ablations are measured against "
                                               "the weaker reading" if b_better else
                                               "it is not shown to do better on every base and measure")])
display(Markdown(ledger.line("B3.4") + "  \n" + ledger.line("B3.11")))

# %% [markdown]
# ## Attacks aimed at SmoothGrad and IG themselves
#
# Above, SmoothGrad and IG were measured on images attacked through the gradient. Here, on the
# first `direct_images` images, each of the three attacks is aimed at the raw SmoothGrad or IG map
# (the attack differentiates the same number of samples / steps as the explainer, through the
# Softplus copy), and the base, DANCE over it and its blur are measured on the images attacked
# through the base, beyond the same random noise as above.

# %%
started = time.perf_counter()
nd = S.direct_images
xd, yd = x[:nd], y[:nd]
direct_rows, direct_parts = [], {}
for base in ("SmoothGrad", "IG"):
    name, options = BASES[base]
    for label, objective in OBJECTIVES.items():
        result = stored_attack(f"attack-{name}-{objective}", xd, objective,
                               lambda a, b, name=name, options=options: get_explainer(name, **options))
        key = f"{label}, aimed at {base}"
        raw[key] = add_blur(stored_maps(f"maps-{name}-{objective}", result.x_adv, yd, bases={base: BASES[base]},
                                        constant=False))
        x_adv01 = space.denormalize(result.x_adv)
        SS[key], KEPT[key] = measure(key, raw[key], x_adv01, names=[base, f"DANCE({base})", f"blur({base})"])
        for method, pattern in METHODS.items():
            direct_rows.append({"attack": f"{label} on {base}", "method": method,
                                "SS beyond noise": interval(beyond(key, pattern.format(base), nd)),
                                "top-k kept": interval(KEPT[key][pattern.format(base)]),
                                "max |change| (/255)": 255 * (x_adv01 - x01[:nd]).abs().amax().item()})
        for other, pattern in (("raw", "{}"), ("blur", "blur({})")):
            direct_parts[f"{label}, {base}, vs {other}"] = (beyond(key, pattern.format(base), nd),
                                                            beyond(key, f"DANCE({base})", nd))
section_seconds["attacks aimed at SmoothGrad and IG"] = time.perf_counter() - started
ch.table(pd.DataFrame(direct_rows).set_index(["attack", "method"]),
         f"Attacks aimed at SmoothGrad and IG themselves ({S.attack_steps} steps, one start) on the first {nd} images: each "
         "base raw, with decoys (recomputed on the attacked image) and blurred, SS beyond the random noise (lower is "
         "better) and the share of clean top-k pixels kept (higher is better).", formats={"max |change| (/255)": "{:.1f}"})
ledger.test("B3.5", nan="omit", paper=PAPER,
            claim="[claims 3, 4] Decoys lower SS for SmoothGrad and IG also under attacks aimed at those maps themselves, "
                  "beyond random noise and more than a blur of the base map as smooth as DANCE's.",
            measured="damage beyond random (SS under the attack through E minus SS under sign noise) of E, or of blur(E), "
                     "minus that of DANCE(E), per image (positive: DANCE moves less)",
            setting=(f"first {nd} main images; attacks as above, aimed at E (SmoothGrad {S.sg_samples} samples, IG "
                     f"{S.ig_steps} steps), all three maps on the same attacked images; " + main_setting.split("; ", 1)[1]),
            parts=direct_parts)
display(Markdown(ledger.line("B3.5")))

# %% [markdown]
# ## Attacks aimed at the DANCE map itself
#
# The paper attacks only the raw maps. Here each of the three attacks is aimed at
# **DANCE(gradient)** on the first `adaptive_images` images: it differentiates the range of the
# gradient over the decoys through the Softplus copy. The decoys come out of an optimisation
# without a useful gradient, so the attack treats them as constants in its backward pass (BPDA,
# Athalye et al. 2018) and **solves them again at its current image every `recompute_every`
# steps** with the real network (it starts from the clean image's decoys); DANCE is then measured
# as it would be used, with decoys solved afresh on the attacked image. The blurred gradient, the
# control smoother, is attacked through its own map the same way (same budget and steps), and the
# raw gradient's numbers are those of the attacks aimed at it above.
#
# **Full strength** is declared before any verdict, per objective: the attack has levelled off
# (the second half of its steps added at most 10% of its total effect to the best point of the
# first half) and it reached the real method (the freshly solved DANCE map moved at least 75% as
# far as the map the attack optimised: a shortfall of at most 25%). A robustness verdict from an
# attack below that reads *inconclusive*.

# %%
started = time.perf_counter()
na = S.adaptive_images
xa, ya = x[:na], y[:na]
adaptive_rows, adaptive_parts, weak = [], {}, []


def dance_attacker(a, b):
    clean_part = dataclasses.replace(clean_decoys, **{
        f.name: getattr(clean_decoys, f.name)[a:b] for f in dataclasses.fields(clean_decoys)
        if f.name in ("delta", "valid", "satisfied", "violation", "eps", "deviation", "change")})
    return RecomputedDecoys(natural, clean_part, every=S.recompute_every, **DECOYS)


blur_attacker = blurred_explainer(gradient_explainer, sigma["gradient"])
for label, objective in OBJECTIVES.items():
    on_dance = stored_attack(f"adaptive-dance-{objective}", xa, objective, dance_attacker)
    fresh = stored_maps(f"maps-adaptive-{objective}", on_dance.x_adv, ya, bases={"gradient": BASES["gradient"]},
                        constant=False)
    key = f"{label}, aimed at DANCE"
    SS[key], KEPT[key] = measure(key, fresh, space.denormalize(on_dance.x_adv), names=["DANCE(gradient)"])
    real = objective_value(objective, summed["clean"]["DANCE(gradient)"][:na], summed[key]["DANCE(gradient)"], k=K,
                           region=region if objective == "targeted" else None)
    power = strength(on_dance, real)
    on_blur = stored_attack(f"adaptive-blur-{objective}", xa, objective, lambda a, b: blur_attacker)
    key_blur = f"{label}, aimed at the blur"
    blur_maps = {"blur(gradient)": blurred_map(gradient_explainer(natural, on_blur.x_adv, ya), sigma["gradient"])}
    SS[key_blur], KEPT[key_blur] = measure(key_blur, blur_maps, space.denormalize(on_blur.x_adv), names=["blur(gradient)"])
    power_blur = strength(on_blur, on_blur.value)
    for target, result, p, k_ss, name in (("DANCE(gradient)", on_dance, power, key, "DANCE(gradient)"),
                                          ("blur(gradient)", on_blur, power_blur, key_blur, "blur(gradient)"),
                                          ("raw gradient", attacked[label].result, None, label, "gradient")):
        adaptive_rows.append({"attack": label, "aimed at": target, "plateau": p["plateau"] if p else None,
                              "shortfall": p["shortfall"] if p else None,
                              "SS beyond noise": interval(beyond(k_ss, name, na)), "top-k kept": interval(KEPT[k_ss][name][:na]),
                              "max |change| (/255)": 255 * (space.denormalize(result.x_adv[:na]) - x01[:na]).abs().amax().item()})
    for p, who in ((power, "DANCE"), (power_blur, "blur")):
        if p["plateau"] > 0.1 or p["shortfall"] > 0.25:
            weak.append(f"{label} on {who}: plateau {p['plateau']:.2f}, shortfall {p['shortfall']:.2f}")
    for other, ss_other, kept_other in (("raw gradient", beyond(label, "gradient", na), lost(label, "gradient", na)),
                                        ("blur", beyond(key_blur, "blur(gradient)", na), lost(key_blur, "blur(gradient)", na))):
        adaptive_parts[f"SS, {label}, vs {other}"] = (ss_other, beyond(key, "DANCE(gradient)", na))
        adaptive_parts[f"top-k lost, {label}, vs {other}"] = (kept_other, lost(key, "DANCE(gradient)", na))
    recomputed = int(on_dance.recomputed[0].item())
section_seconds["attacks aimed at DANCE"] = time.perf_counter() - started
ch.table(pd.DataFrame(adaptive_rows).set_index(["attack", "aimed at"]),
         f"Each map under the attacks aimed at it ({S.attack_steps} steps, one start, eps {attack_eps * 255:.0f}/255; on "
         f"DANCE the decoys solved again {recomputed} times along the way), first {na} images: the strength checks "
         "(plateau and shortfall, as shares of the attack's effect: at most 0.10 and 0.25), SS beyond the random noise "
         "(lower is better) and the share of clean top-k pixels kept (higher is better), with the largest change.",
         missing="the raw gradient's attack optimised the real map itself: no strength check needed beyond the one of "
                 "the attacks above", formats={"max |change| (/255)": "{:.1f}"})
ledger.test("B3.6", nan="omit", paper=PAPER + "; adaptive attack: this book",
            claim="[claim 3, Proposition 1] DANCE(gradient) moves less than the raw gradient and than a blur of it as "
                  "smooth as DANCE even under attacks aimed at DANCE itself (each map attacked through itself, same "
                  "budget), by SS and by the top-k pixels it keeps, beyond random noise.",
            measured="damage beyond random of the other map minus that of DANCE(gradient), per image, as SS (under the "
                     "attack minus under the noise) and as top-k pixels lost (under the attack minus under the noise); "
                     "positive: DANCE moves less",
            setting=(f"first {na} main images; the three Ghorbani attacks aimed at DANCE(gradient), decoys held constant "
                     f"in the backward pass and solved again every {S.recompute_every} steps (BPDA), {S.attack_steps} steps, "
                     f"eps {attack_eps * 255:.0f}/255, Softplus beta {surrogate_beta:g}; DANCE measured with decoys solved on "
                     f"the attacked image; blur(gradient) (Gaussian, {sigma['gradient']:g} px) attacked through itself"),
            parts=adaptive_parts, below_strength="; ".join(weak), weakness_favours="holds",
            caveats=["Until this book's corrections, only the top-k attack with the clean image's decoys was run, and "
                     "the verdict read SS alone: a smaller SS can hide a map that loses most of its top pixels."])
display(Markdown(ledger.line("B3.6")))

# %% [markdown]
# ## Controls: a linear model, a saturated model, and Theorem 1
#
# **Linear model.** The gradient of a linear model is constant, so every decoy gets the same map and
# the range is zero (the paper: DANCE is ill-defined there). A linear softmax classifier on the same
# images, with decoys at its only "layer", its logits.
#
# **Saturation toy.** The paper's first motivation: where the output saturates, the gradient
# vanishes on the features that matter. A toy on 8 x 8 one-channel inputs: class 1's logit is
# $5 \tanh(\textstyle\sum_{\text{top-left } 4\times4} x - 10)$ (the evidence, saturated on the test
# images, whose top-left block is 1) plus a weak feature of the bottom-right block, which DANCE
# should rank below the evidence. The first version of this chapter made the weak feature linear,
# $0.1 \sum x$, and used $\tau = 1$: a linear feature has the same gradient on every decoy, so
# DANCE gives it **zero by construction** (the reported ratio was a division by that zero), and
# $\tau = 1$ lets a decoy pull the evidence out of saturation. The verdict is now judged on a weak
# feature the model uses **non-linearly**, $0.1 (\sum x)^2 / 16$ (the same gradient, 0.1 per pixel,
# at the block's typical sum, but curvature), at the book's $\tau$ = `tau`; the old setting is
# shown beside it. The decoys keep the tanh output within `decoy_eps`.
#
# **Theorem 1.** With the gradient as base and small decoys, $E(\tilde x^k) \approx g + H d_k$, so
# $Z_i \approx \max_k (H d_k)_i - \min_k (H d_k)_i$: the range is the Hessian acting within the
# patch. Checked with Hessian-vector products (one per decoy, all decoys on the batch axis),
# shrinking the decoys by a factor $a$ from 1 to 0.001. It is read two ways, each a claim:
#
# - **As a theorem** (B3.9): for a twice-differentiable network the relative error must fall at
#   least linearly in $a$ (a first-order statement). The book's **Softplus(3) LeNet** (chapter 6's
#   cross-entropy model, the only trained network here with a Hessian) max-pools, and a max-pool
#   is not differentiable where two inputs of a window tie, so the theorem is checked on copies of
#   it whose max-pools are replaced by a smooth one (the softmax-weighted mean of each 2 x 2
#   window at temperature $T$; the smaller $T$, the nearer the max-pool: their agreement with the
#   trained model's predictions is shown), on all three of $T$ = 1, 0.1, 0.03. A tiny Softplus CNN
#   with random weights is the check of the check (the test must pass where the theorem's
#   assumptions hold exactly).
# - **As an explanation of the maps DANCE computes** (B3.12): at $a = 1$, the decoys' own size, on
#   the networks DANCE is run on, the Hessian term should describe the measured range: the
#   Softplus(3) LeNet as trained (max-pools), and the **ReLU LeNet** that every other claim uses,
#   whose Hessian is zero almost everywhere (piecewise linear), so that there Theorem 1 predicts a
#   zero range: whatever DANCE shows on it comes from decoys that cross activation boundaries.
#
# The first version of this chapter judged the theorem itself on the max-pool model and found it
# did not hold; the error there grows as the decoys shrink, which is the max-pool's ties, not the
# theorem (a referee's reading; the max-pool numbers stay in the table).

# %%
started = time.perf_counter()
controls = {}
linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * H * H, 10)).eval()
torch.nn.init.normal_(linear[1].weight, std=0.01, generator=torch.Generator().manual_seed(seed))
linear = linear.to(run_device)
linear.input_space = space
nl = min(N, 8)
linear_z = quiet_dance(linear, x[:nl], y[:nl], layer="1", patch=patch, stride=S.stride, eps=decoy_eps, tau=tau,
                       steps=S.decoy_steps).detach()
linear_g = get_explainer("gradient")(linear, x[:nl], y[:nl]).detach()
controls["linear"] = (linear_z.abs().max() / linear_g.abs().max()).item()

toy_x = toy_images(16, seed)
toy_t = torch.ones(16, dtype=torch.long)
toy_rows, toy_ratio = [], {}
for weak_kind, toy_tau in (("quadratic", tau), ("linear", tau), ("linear", 1.0)):
    toy = SaturatedToy(weak_kind).eval()
    maps_toy = {"gradient": get_explainer("gradient")(toy, toy_x, toy_t).abs()[:, 0],
                "DANCE(gradient)": quiet_dance(toy, toy_x, toy_t, layer="squash", patch=3, stride=1, eps=decoy_eps,
                                               tau=toy_tau, steps=S.decoy_steps)[:, 0].detach()}
    with torch.no_grad():
        drop = {name: (toy(toy_x)[:, 1] - toy(toy_x * ~mask)[:, 1]).abs().mean().item()
                for name, mask in (("relevant", RELEVANT), ("weak", WEAK))}
    for method, m in maps_toy.items():
        ratio = block_ratio(m)
        toy_ratio[weak_kind, toy_tau, method] = ratio
        toy_rows.append({"weak feature, tau": f"{weak_kind}, {toy_tau:g}", "method": method,
                         "relevant block": m[:, RELEVANT].mean().item(), "weak block": m[:, WEAK].mean().item(),
                         "relevant / weak (median)": ratio.median().item(),
                         "logit drop: relevant / weak": f"{drop['relevant']:.2f} / {drop['weak']:.2f}"})
ch.table(pd.DataFrame(toy_rows).set_index(["weak feature, tau", "method"]),
         f"The saturation toy (16 images): mean |score| on the relevant and the weak block, their ratio per image "
         "(median; above 1: the relevant block ranked first; inf where the weak block scores exactly zero) and how much "
         f"deleting each block moves the logit. The verdict row is the first pair (the non-linear weak feature at tau "
         f"{tau:g}); the linear rows are the first version's setting.", formats={"relevant block": "{:.3g}",
                                                                                  "weak block": "{:.3g}",
                                                                                  "relevant / weak (median)": "{:.3g}"})
display(Markdown(f"**Linear model:** largest |Z| over {nl} images is {controls['linear']:.1e} of the largest |gradient| "
                 "entry."))


# %%
def smooth_cnn():
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Softplus(beta=2.0), nn.AvgPool2d(2),
                         nn.Conv2d(8, 8, 3, padding=1), nn.Softplus(beta=2.0), nn.Flatten(),
                         nn.Linear(8 * (H // 2) ** 2, 10)).to(run_device).double().eval()


class SmoothMaxPool(nn.Module):
    """A twice-differentiable stand-in for a 2 x 2 max-pool: the softmax-weighted mean of each window at
    ``temperature`` (the max-pool as it goes to 0)."""

    def __init__(self, temperature: float):
        super().__init__()
        self.temperature = temperature

    def forward(self, z):
        windows = z.unfold(2, 2, 2).unfold(3, 2, 2).flatten(-2)
        return (torch.softmax(windows / self.temperature, dim=-1) * windows).sum(-1)


def smooth_pooled(model, temperature):
    """A copy of ``model`` with every max-pool replaced by :class:`SmoothMaxPool` (same weights)."""
    smooth = deepcopy(model)
    for name, module in list(smooth.named_modules()):
        if isinstance(module, nn.MaxPool2d):
            if module.kernel_size not in (2, (2, 2)) or module.stride not in (2, (2, 2)):
                raise ValueError(f"smooth_pooled handles 2 x 2 max-pools of stride 2, not {module}")
            parent, _, child = name.rpartition(".")
            setattr(smooth.get_submodule(parent), child, SmoothMaxPool(temperature))
    return smooth


def theorem_check(model, xs, ys, layer, scales=(1.0, 0.1, 0.01, 0.001)):
    """Relative error of the first-order prediction max_k (H d_k) - min_k (H d_k) of the gradient's range."""
    decoys = make_decoys(model, xs, layer=layer, patch=patch, stride=S.stride, eps=decoy_eps, tau=tau,
                         steps=S.decoy_steps)
    n, p, s = decoys.valid.shape
    rows = []
    for a in scales:
        scaled = dataclasses.replace(decoys, delta=a * decoys.delta)
        actual = quiet_dance(model, xs, ys, decoys=scaled).detach()
        images = scaled.images(xs)  # (n * p * s, C, H, W): x + a d_k
        directions = images - xs.repeat_interleave(p * s, 0)
        hd = hessian_vector_product(model, xs.repeat_interleave(p * s, 0), ys.repeat_interleave(p * s),
                                    directions).detach().view(n, p * s, *xs.shape[1:])
        valid = scaled.valid.flatten(1).view(n, p * s, 1, 1, 1)
        predicted = hd.masked_fill(~valid, -torch.inf).amax(1) - hd.masked_fill(~valid, torch.inf).amin(1)
        error = (actual - predicted).flatten(1).norm(dim=1) / actual.flatten(1).norm(dim=1)
        rows.append({"scale a": a, "relative error (median)": error.median().item(),
                     "relative error (max)": error.max().item()})
    return pd.DataFrame(rows)


sp3 = zoo.load_model("lenet_sp3_ce", settings.name, device=run_device, progress=False).double()
nt = min(N, 4)
TRAINED, TINY = "Softplus(3) LeNet (trained, max-pools)", "tiny Softplus CNN (random weights)"
TEMPERATURES = (1.0, 0.1, 0.03)
SMOOTH = {t: f"Softplus(3) LeNet, smooth max-pools T = {t:g}" for t in TEMPERATURES}
with torch.no_grad():  # how close each smooth copy is to the trained model: prediction agreement on the main images
    sp3_labels = sp3(x.double()).argmax(1)
    agreement = {t: (smooth_pooled(sp3, t)(x.double()).argmax(1) == sp3_labels).double().mean().item()
                 for t in TEMPERATURES}
theorem = pd.concat([theorem_check(sp3, x[:nt].double(), y[:nt], decoy_layer).assign(model=TRAINED),
                     *(theorem_check(smooth_pooled(sp3, t), x[:nt].double(), y[:nt], decoy_layer).assign(model=SMOOTH[t])
                       for t in TEMPERATURES),
                     theorem_check(smooth_cnn(), x[:nt].double(), y[:nt], "4").assign(model=TINY)])
ties = []  # max-pool windows of the trained LeNet whose two largest inputs are exactly equal (flat image regions)
hooks = [module.register_forward_hook(lambda module, args, out: ties.append(
    args[0].unfold(2, 2, 2).unfold(3, 2, 2).flatten(-2).topk(2, dim=-1).values.diff(dim=-1).eq(0).double().mean()))
    for module in sp3.modules() if isinstance(module, nn.MaxPool2d)]
with torch.no_grad():
    sp3(x[:nt].double())
for hook in hooks:
    hook.remove()
tie_share = float(torch.stack(ties).mean()) if ties else 0.0
relu_direction = clean_decoys.images(x, torch.arange(2 * P * nt, device=run_device)) - x[:nt].repeat_interleave(2 * P, 0)
relu_hessian = hessian_vector_product(natural, x[:nt].repeat_interleave(2 * P, 0), y[:nt].repeat_interleave(2 * P),
                                      relu_direction).detach().abs().max().item()
relu_range = paper["clean"]["DANCE(gradient)"][:nt].amax().item()
relu_error = theorem_check(deepcopy(natural).double(), x[:nt].double(), y[:nt], decoy_layer,
                           scales=(1.0,))["relative error (median)"].iloc[0]
# the limit: log-log slope of the median error over the two smallest scales; the decoys' own size: a = 1
slopes = {m: np.polyfit(np.log(g["scale a"].iloc[-2:]), np.log(g["relative error (median)"].iloc[-2:]), 1)[0]
          for m, g in theorem.groupby("model")}
at_size = {m: g["relative error (median)"].iloc[0] for m, g in theorem.groupby("model")}
section_seconds["controls and Theorem 1"] = time.perf_counter() - started
ch.table(theorem.set_index(["model", "scale a"]),
         f"Theorem 1 on {nt} images in float64: the relative error of the Hessian term against the measured range as "
         "the decoys shrink by a (median and largest over images). Log-log slope of the median between the two smallest "
         "scales: " + "; ".join(f"{m}: {slopes[m]:.2f}, error at a = 1: {at_size[m]:.2f}" for m in slopes) + ". The "
         "smooth copies agree with the trained model's prediction on " + ", ".join(
             f"{agreement[t]:.0%} (T = {t:g})" for t in TEMPERATURES) + f" of the {N} main images.",
         formats={"relative error (median)": "{:.2e}", "relative error (max)": "{:.2e}"})
display(Markdown(
    f"The trained Softplus LeNet max-pools: {tie_share:.1%} of its pooling windows on these images hold an exact tie (flat "
    "image regions give equal activations), where the gradient jumps under any perturbation, however small, so its error "
    "does not fall as the decoys shrink; the theorem assumes a twice-differentiable network, as the tiny CNN (average "
    f"pools) and the smooth copies are. On the **ReLU LeNet**, the largest entry of H d_k over the {2 * P * nt} decoys of "
    f"these images is {relu_hessian:.1e}, while its DANCE maps are not flat: the Hessian term of Theorem 1 describes none "
    "of them."))

# %%
ledger.record("B3.7", paper=PAPER, verdict="holds" if controls["linear"] < 1e-6 else "does not hold",
              claim="[claim 4] On a linear model the range is zero (the method is ill-defined there).",
              measured="largest |Z| relative to the largest |gradient| entry",
              reason="holds if below 1e-6 (float rounding)", numbers={"relative max |Z|": controls["linear"]},
              setting=f"{nl} CIFAR-10 images, a linear softmax classifier with random weights, decoys on its logits")
fair = {m: float(toy_ratio["quadratic", tau, m].median()) for m in ("gradient", "DANCE(gradient)")}
ledger.record("B3.8", paper=PAPER, verdict="holds" if fair["gradient"] < 1 < fair["DANCE(gradient)"] else "does not hold",
              claim="[claim 1] Where the output saturates the gradient vanishes on the relevant features; the decoy "
                    "range does not.",
              measured="median over images of (mean |score| on the relevant block) / (mean on a weak feature the model "
                       "uses non-linearly)",
              reason="holds if the gradient ranks the weak feature above the relevant block (ratio below 1) and DANCE "
                     "the relevant block above it (ratio above 1), at the book's tau",
              numbers={**{f"median ratio, {m}": v for m, v in fair.items()},
                       **{f"median ratio, {m}, linear weak feature, tau {t:g}": float(toy_ratio["linear", t, m].median())
                          for t in (tau, 1.0) for m in ("gradient", "DANCE(gradient)")}},
              setting=f"saturation toy, 16 images of 8 x 8, weak feature 0.1 (sum)^2 / 16; patch 3, stride 1, tau {tau:g}, "
                      f"eps {decoy_eps} at the tanh",
              caveats=["The first version compared against a linear weak feature, which the decoy range scores zero by "
                       "construction, at tau 1; that setting is kept in the numbers for comparison."])
FIRST_ORDER, DESCRIBES = 0.9, 0.5  # the slope a first-order statement needs; the error at which the term describes
check_works = slopes[TINY] >= FIRST_ORDER and at_size[TINY] <= DESCRIBES
smooth_holds = all(slopes[SMOOTH[t]] >= FIRST_ORDER for t in TEMPERATURES)
theorem_setting = f"{nt} images, float64, patch {patch}, stride {S.stride}, Hessian-vector products by double backward"
ledger.record("B3.9", paper=PAPER, verdict=("inconclusive" if not check_works else
                                            "holds" if smooth_holds else "does not hold"),
              claim="[claim 3, Theorem 1] With the gradient as base, the decoy range is the Hessian term within the "
                    "patch (to first order), for a twice-differentiable network.",
              measured="relative error of max_k (H d_k) - min_k (H d_k) against the measured range, as the decoys "
                       "shrink by a",
              reason=f"judged on the trained Softplus(3) LeNet's weights with its max-pools made smooth (T = "
                     f"{', '.join(f'{t:g}' for t in TEMPERATURES)}): holds if on every copy the median relative error "
                     f"falls at least linearly as a -> 0 (log-log slope >= {FIRST_ORDER:g} over the two smallest scales: "
                     "the theorem's first-order statement); the same test on a tiny Softplus CNN must pass, or the check "
                     "itself is in doubt (inconclusive)",
              numbers={**{f"slope, {m}": float(slopes[m]) for m in (*SMOOTH.values(), TINY, TRAINED)},
                       **{f"prediction agreement with the trained model, T = {t:g}": agreement[t] for t in TEMPERATURES}},
              setting=theorem_setting,
              caveats=["The trained model itself max-pools, which the theorem does not cover (its error grows as the "
                       "decoys shrink: the ties); whether the Hessian term describes the maps DANCE computes on the "
                       "book's networks is B3.12."])
describes = at_size[TRAINED] <= DESCRIBES and relu_error <= DESCRIBES
ledger.record("B3.12", paper=PAPER, verdict="holds" if describes else "does not hold",
              claim="[claim 3, as an explanation of DANCE] The Hessian term of Theorem 1 describes the range DANCE "
                    "computes on the networks it is run on, at the decoys' own size.",
              measured="median relative error of max_k (H d_k) - min_k (H d_k) against the measured range at a = 1",
              reason=f"holds if at most {DESCRIBES:g} on both the Softplus(3) LeNet as trained (max-pools) and the ReLU "
                     "LeNet of every other claim (whose Hessian is zero almost everywhere: there the term predicts a "
                     "zero range, a relative error of 1 against the range DANCE shows)",
              numbers={f"median error at a=1, {TRAINED}": float(at_size[TRAINED]),
                       "median error at a=1, ReLU LeNet": float(relu_error),
                       "largest |H d_k|, ReLU LeNet": relu_hessian, "largest DANCE score, ReLU LeNet": relu_range,
                       "max-pool windows with an exact tie, Softplus(3) LeNet": tie_share,
                       **{f"median error at a=1, {SMOOTH[t]}": float(at_size[SMOOTH[t]]) for t in TEMPERATURES}},
              setting=theorem_setting,
              caveats=["On the ReLU LeNet the part fails by construction (a piecewise-linear network has no Hessian "
                       "term, whatever its decoys do), yet the paper runs DANCE on ReLU networks (VGG16); the Softplus "
                       f"part is the informative one, at a median error of {at_size[TRAINED]:.2f} against the bound "
                       f"{DESCRIBES:g}.",
                       "Not a statistical test: the errors are medians over the few images of the table. The smooth "
                       "copies' errors at a = 1 (in the numbers) show how the error at the decoys' own size changes as "
                       "the pooling nears the trained model's max-pool (smaller T)."])
display(Markdown("  \n".join(ledger.line(i) for i in ("B3.7", "B3.8", "B3.9", "B3.12"))))

# %% [markdown]
# ## Patch size, stride, layer and initial multiplier
#
# The paper calls DANCE insensitive to its knobs (patch size, layer, initial multiplier). The first
# version of this chapter tested that as "every variant still beats the raw gradient", which a
# variant can do while giving a different map. Here it is tested as **insensitivity**: on the first
# `knob_images` images, DANCE(gradient) is recomputed with one knob changed at a time (the patch,
# the layer, the multiplier, the denser grids of `dense_strides`, and two tighter representation
# bounds, `decoy_eps` / 3 and / 10, as the paper's value is not known), on the clean images and on
# the images of the top-k attack above (decoys solved on them), and each variant must
#
# - **agree with the book setting's map** more than the book setting's map agrees with its own base:
#   per image, the Spearman correlation of the variant's map with the default DANCE map minus that
#   of the default DANCE map with the raw gradient map (a knob that changes the map as much as
#   dropping the decoys does is not one the method is insensitive to);
# - keep its **SF and SS within ±10%** of the default's mean (two one-sided tests per measure, per-image
#   differences; SS under the top-k attack).
#
# The random control and the blur are not needed here: every variant is the same method on the
# same images, compared with its own default; the blurred gradient's SS on these images is shown
# for scale. The densest grid, stride 1 (1,800 decoys per image, 36 times the book setting's
# cost), runs on the first `dense_images` images only (30 at `book`); under 30 images its parts are
# shown but do not decide.

# %%
started = time.perf_counter()
nk = S.knob_images
xk, yk, xk_adv = x[:nk], y[:nk], attacked["top-k"].result.x_adv[:nk]
xk_adv01 = space.denormalize(xk_adv)
VARIANTS = {
    "patch 2": {"patch": 2}, "patch 4": {"patch": 4},
    **{f"stride {v}": {"stride": v} for v in S.dense_strides},
    "layer: 2nd ReLU": {"layer": "features.3"}, "layer: 4th ReLU": {"layer": "features.8"},
    "multiplier 0.1": {"multiplier": 0.1}, "multiplier 10": {"multiplier": 10.0},
    f"eps {decoy_eps / 3:.3g}": {"eps": decoy_eps / 3}, f"eps {decoy_eps / 10:.3g}": {"eps": decoy_eps / 10},
}
default = {"clean": paper["clean"]["DANCE(gradient)"][:nk], "attacked": paper["top-k"]["DANCE(gradient)"][:nk]}
sf_default = fidelity["DANCE(gradient)"][:nk]
ss_default = SS["top-k"]["DANCE(gradient)"][:nk]
base_agreement = spearman(default["clean"], paper["clean"]["gradient"][:nk]).cpu()
knob_rows, knob_parts = [], {}
knob_rows.append({"variant": "book setting", "images": nk, "decoys / image": 2 * P, "satisfied": 1.0, "Spearman": 1.0,
                  "top-k agreement": 1.0, "SF": sf_default.mean().item(), "SS top-k": ss_default.nanmean().item()})
for variant, change in VARIANTS.items():
    n_v = S.dense_images if change.get("stride") == S.dense_strides[-1] else nk
    options = {**DECOYS, **change}

    def shard(a, b, options=options):
        out = {}
        for tag, xs in (("clean", xk), ("attacked", xk_adv)):
            decoys = make_decoys(natural, xs[a:b], **options)
            out[tag] = quiet_dance(natural, xs[a:b], yk[a:b], decoys=decoys).detach()
            out[f"{tag} satisfied"] = decoys.satisfied.flatten(1).double().mean(1)
            out[f"{tag} decoys"] = torch.full((b - a,), float(decoys.valid[0].numel()))
        return out

    got = ch.store.compute(f"knob-{variant.replace(' ', '_').replace(':', '')}", shard, n_v,
                           params={**options, "images": xk[:n_v].flatten().sum().item()}, shard_size=SHARD, progress=False)
    z = {tag: paper_map(got[tag].to(run_device)) for tag in ("clean", "attacked")}
    agreement = spearman(z["clean"], default["clean"][:n_v]).cpu()
    top_agree = topk_intersection(got["clean"].to(run_device).abs().sum(1), summed["clean"]["DANCE(gradient)"][:n_v], K).cpu()
    sf = saliency_fidelity(natural, xk[:n_v], z["clean"], yk[:n_v]).cpu()
    ss = saliency_sensitivity(z["clean"], z["attacked"], x01[:n_v], xk_adv01[:n_v]).cpu()
    knob_rows.append({"variant": variant, "images": n_v, "decoys / image": int(got["clean decoys"][0]),
                      "satisfied": got["clean satisfied"].mean().item(), "Spearman": agreement.mean().item(),
                      "top-k agreement": top_agree.mean().item(), "SF": sf.mean().item(), "SS top-k": ss.nanmean().item()})
    tol_sf, tol_ss = 0.1 * abs(sf_default.mean().item()), 0.1 * ss_default.nanmean().item()
    knob_parts[f"{variant}: agreement beyond the base"] = (agreement, base_agreement[:n_v])
    knob_parts[f"{variant}: SF not 10% higher"] = (sf_default[:n_v] + tol_sf, sf)
    knob_parts[f"{variant}: SF not 10% lower"] = (sf, sf_default[:n_v] - tol_sf)
    knob_parts[f"{variant}: SS not 10% higher"] = (ss_default[:n_v] + tol_ss, ss)
    knob_parts[f"{variant}: SS not 10% lower"] = (ss, ss_default[:n_v] - tol_ss)
section_seconds["knobs"] = time.perf_counter() - started
unmoved = int(ss_default.isnan().sum())  # SS is undefined where the attack left the image unchanged
ss_scope = (f" SS over the {nk - unmoved} of {nk} images the top-k attack moved (an image it left unchanged has no SS: "
            "its change per unit of input change is 0 / 0)." if unmoved else "")
ch.table(pd.DataFrame(knob_rows).set_index("variant"),
         f"DANCE(gradient) with one knob changed, first {nk} images (stride {S.dense_strides[-1]}: first {S.dense_images}), "
         f"means over images: agreement with the book setting's map (Spearman; top-k agreement, chance "
         f"{K / (H * H):.2f}), SF, and SS under the top-k attack. For scale: the book setting's map agrees with the raw "
         f"gradient's at Spearman {base_agreement.mean():.2f}; the raw gradient's SS there is "
         f"{SS['top-k']['gradient'][:nk].nanmean():.2f}, its blur's {SS['top-k']['blur(gradient)'][:nk].nanmean():.2f}."
         + ss_scope,
         formats={"satisfied": "{:.0%}", "images": "{:.0f}", "decoys / image": "{:.0f}"})
ledger.test("B3.10", nan="omit", paper=PAPER,
            claim="[claim 4] DANCE is insensitive to patch size, layer and initial multiplier (here: and to the patch "
                  "stride and the representation bound): each variant's maps agree with the default's and its SF and SS "
                  "stay within 10% of the default's.",
            measured="per image: Spearman of the variant's map with the default DANCE map minus Spearman of the default "
                     "with the raw gradient; the default's SF (SS) +- 10% of its mean against the variant's, one side each "
                     "(positive: within)",
            setting=(f"first {nk} main images (stride {S.dense_strides[-1]}: first {S.dense_images}); one knob changed at a "
                     "time from " + main_setting.split("; ", 1)[1] + "; SS under the top-k attack aimed at the raw gradient, "
                     "decoys solved on the attacked images"),
            parts=knob_parts,
            caveats=["The first version tested this claim as 'every variant still beats the raw gradient'; that is a "
                     "claim about the variants' quality, not about insensitivity.",
                     "The 10% tolerance is this book's choice; the paper gives none."])
display(Markdown(ledger.line("B3.10")))

# %% [markdown]
# ## ImageNet: what the maps look like on a larger network
#
# The paper's qualitative figure is on ImageNet. The offline EfficientNet-Lite0 on the first
# `imagenet_images` genuine validation images it classifies correctly: the gradient and
# DANCE(gradient) with the paper's 3 x 3 patch at a stride of `imagenet_stride` pixels, decoys
# keeping the output of the last block's batch norm (the representation before the head's
# activation: the shared activation module runs many times). No claim is judged on these.

# %%
started = time.perf_counter()
lite = efficientnet_lite0().to(run_device).eval()
val37 = replace(data.load_imagenet("val-37"), input_space=inputs.EFFICIENTNET_LITE)
chosen = correctly_classified(lite, val37, S.imagenet_images, seed=seed, device=run_device)
xi, yi = chosen.normalized(run_device), chosen.labels.to(run_device)
zi, decoys_i = quiet_dance(lite, xi, yi, layer="_bn1", patch=patch, stride=S.imagenet_stride, eps=decoy_eps, tau=tau,
                           steps=S.decoy_steps, postprocess="paper", return_decoys=True, batch_size=32)
gi = paper_map(get_explainer("gradient")(lite, xi, yi))
section_seconds["ImageNet"] = time.perf_counter() - started
ch.figure(map_grid({"image": chosen.input_space.denormalize(xi), "gradient": gi[:, 0], "DANCE(gradient)": zi.detach()[:, 0]},
                   count=S.imagenet_images),
          f"EfficientNet-Lite0 on {len(xi)} ImageNet validation image(s): the gradient and DANCE(gradient) with "
          f"{decoys_i.valid[0].numel()} decoys per image ({decoys_i.satisfied_fraction:.0%} satisfy the constraint). The "
          f"coarse {S.imagenet_stride}-pixel patch grid shows as a blocky pattern in the DANCE map.")

# %% [markdown]
# ## Speed
#
# DANCE costs the decoys (`decoy_steps` forward + input-gradient passes up to the layer each, then 1
# to 7 forward passes to check and repair) plus the base method on every decoy. The library solves
# **all positions of all images as one batched problem** and runs the base method on all decoys of
# a group of images at once. Timed here, in the same run, on the first `loop_images` images: the
# batched call, a loop over patch positions (one position's two decoys per call, as a direct
# transcription of the paper's per-patch problem would run), and the bound: the model passes times
# the best measured time of a plain forward + input-gradient pass. Passes are counted at the model's
# input; a decoy step stops at the layer, so it counts as a pass but costs a little less.

# %%
started = time.perf_counter()
nloop = S.loop_images
xl, yl = x[:nloop], y[:nloop]
load_before = os.getloadavg()
bound = bound_per_pass(natural, x, rows=512 if profile != "smoke" else 64, repeats=3 if profile != "smoke" else 1)
per_pass = min(bound.values())
with PassCounter(natural) as batched_clock:
    batched = quiet_dance(natural, xl, yl, **DECOYS).detach()
positions = clean_decoys.positions
with PassCounter(natural) as loop_clock:
    pieces = [make_decoys(natural, xl, **{**DECOYS, "positions": positions[p:p + 1]}) for p in range(P)]
    looped_decoys = dataclasses.replace(
        pieces[0], positions=positions, **{name: torch.cat([getattr(piece, name) for piece in pieces], 1)
                                           for name in ("delta", "valid", "satisfied", "violation", "deviation", "change")})
    looped = quiet_dance(natural, xl, yl, decoys=looped_decoys).detach()
gap = (looped - batched).abs().max().item()
per_image_passes = batched_clock.passes / nloop
speed = pd.DataFrame([
    {"run": f"batched, {2 * P} decoys per image", "seconds": batched_clock.seconds, "passes": batched_clock.passes},
    {"run": f"loop over the {P} positions", "seconds": loop_clock.seconds, "passes": loop_clock.passes},
    {"run": f"bound: passes x {per_pass * 1e3:.3f} ms", "seconds": batched_clock.passes * per_pass,
     "passes": batched_clock.passes}]).set_index("run")
speed["ms / image"] = 1e3 * speed["seconds"] / nloop
speed["x bound"] = speed["seconds"] / (speed["passes"] * per_pass)
section_seconds["speed"] = time.perf_counter() - started
ch.table(speed, f"DANCE(gradient) on {nloop} images: one batched call, a loop over patch positions, and the bound (passes "
                "times the best plain pass).", formats={"passes": "{:.0f}", "seconds": "{:.2f}", "ms / image": "{:.0f}",
                                                        "x bound": "{:.2f}"})
display(Markdown(
    f"DANCE(gradient) costs **{per_image_passes:.0f} passes per image** ({2 * P} decoys x ({S.decoy_steps} solver "
    f"steps + checks) + {2 * P} gradient passes). The loop over positions takes "
    f"**{loop_clock.seconds / batched_clock.seconds:.1f}x** the time of the batched call; largest difference between "
    f"their maps {gap:.1e}. torch threads {torch.get_num_threads()}, load average {load_before[0]:.1f} before and "
    f"{os.getloadavg()[0]:.1f} after."))
ch.table(pd.DataFrame({"section": list(section_seconds), "seconds": list(section_seconds.values())}).set_index("section"),
         "The wall time of each section of this run (a section read back from the result store takes seconds).",
         formats={"seconds": "{:.1f}"})

# %% [markdown]
# ## What this chapter found
#
# Computed from the claims ledger (also written to `book/claims/03_dance.json`). Reading notes:
#
# - All methods are compared after the paper's post-processing; its 95th-percentile winsorising
#   and rescaling also decide how much a map can move, so SS compares maps on one scale.
# - The sensitivity verdicts (B3.3, B3.5, B3.6) use the damage beyond random sign noise of the same
#   budget and require DANCE to beat a blur of the base map as smooth as DANCE's, as well as the
#   raw map; B3.6 also counts the top-k pixels a map keeps, and reads *inconclusive* if an attack
#   aimed at DANCE is not shown to be at full strength.
# - The stride of the patch grid is this book's (the paper does not state it); B3.10 compares
#   denser grids with it.
# - Theorem 1 is judged as a theorem on networks it covers (B3.9: the trained Softplus LeNet's
#   weights with smooth pools) and, apart, as an account of the maps DANCE computes on the book's
#   max-pool and ReLU LeNets (B3.12); the first version judged the theorem on the max-pool model.

# %%
verdict_of = {c.id: c.verdict for c in ledger.claims}
paper_ids = [c.id for c in ledger.claims if not c.paper.startswith("this book")]
held = [i for i in paper_ids if verdict_of[i] == "holds"]
failed = [i for i in paper_ids if verdict_of[i] == "does not hold"]
open_ = [i for i in paper_ids if verdict_of[i] == "inconclusive"]
sens = {i: verdict_of[i] for i in ("B3.3", "B3.5", "B3.6")}
ledger.bottom_line(
    f"Of the paper's {len(paper_ids)} claims tested here, {len(held)} held ({', '.join(held) or 'none'}), {len(failed)} did "
    f"not ({', '.join(failed) or 'none'}) and {len(open_)} stayed inconclusive ({', '.join(open_) or 'none'}). "
    "Against the controls this book added (damage beyond random noise, a blur of the base map as smooth as DANCE's, "
    "attacks aimed at DANCE itself with its decoys solved again along the way), the sensitivity claims read: "
    + ", ".join(f"{i} {v}" for i, v in sens.items()) + ". "
    f"On the saturation toy with a weak feature used non-linearly, DANCE's median relevant/weak ratio is "
    f"{fair['DANCE(gradient)']:.3g} against the gradient's {fair['gradient']:.3g}. Theorem 1 as a first-order statement "
    f"{ {'inconclusive': 'is inconclusive'}.get(verdict_of['B3.9'], verdict_of['B3.9'])} on smooth networks (B3.9); as an account of the maps DANCE computes (B3.12) its Hessian term "
    f"leaves a median error of {at_size[TRAINED]:.2f} on the trained Softplus LeNet at the decoys' own size and is zero "
    "on the ReLU LeNet. Reading (b) of "
    "the range " + ("beats the chapter's reading (a) in SF and SS for every base" if b_better else
                    "is not shown to beat the chapter's reading (a) on every base and measure") + " (B3.11).")
ledger.save()
display(Markdown(ledger.summary(items=False)))
display(ledger.cards())
rerun_box(run, {"lenet_natural": natural, "lenet_sp3_ce": sp3})
