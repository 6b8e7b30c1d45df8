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
# # 2. RelEx: saliency masks learned on noisy copies
#
# Lim, Lee and Kim {cite}`lim2021relex` (CVPR 2021) claim, in their abstract:
#
# 1. an explanation is *reliable* if it identifies the input features relevant to the output for
#    the input **and its neighbouring points**;
# 2. assuming a locally smooth loss landscape, such locally smooth explanations can be learned
#    from a batch of noisy copies of the input with L1 regularisation of the map (RelEx);
# 3. RelEx's maps "retrieve the original classes of adversarial examples" crafted against
#    naturally and adversarially trained models, significantly better than previous methods;
# 4. this comes from identifying features relevant for the input and its neighbours.
#
# This chapter tests each claim on the book's two CIFAR-10 LeNets (one trained naturally, one with
# FGSM adversarial training, see chapter 0), on a hundred test images where the paper shows one
# ImageNet image, and on a few ImageNet validation images with EfficientNet-Lite0. It adds what the
# paper lacks: ablations that separate "optimised to keep the class" from "noise + L1" (RelEx
# optimises its mask to keep the clean class, so part of its advantage is there by construction,
# and the claims where that happens say so), and an **adaptive attack on RelEx itself** (the paper
# attacks the model and the other explainers, never RelEx).

# %% tags=["parameters"]
profile: str = "smoke"  # smoke | book | paper
device: str = "auto"  # "auto", "cpu", "cuda" or "cuda:N"
seed: int = 0
main_images: int | None = None  # [1, 10000] test images of the main table, correct for both models (None: from SIZES below)
sweep_images: int | None = None  # [1, 10000] first main images used by the eps sweep and the ablations
transfer_images: int | None = None  # [1, 10000] first main images attacked with Ghorbani's top-k attack (transfer to RelEx)
check_images: int | None = None  # [1, 10000] first images of the FGSM-trained model also explained at the authors' settings
same_seed_images: int | None = None  # [1, 10000] first main images explained at x_adv with x's noise too (and at x with x_adv's)
attack_images: int | None = None  # [1, 10000] first main images attacked adaptively
relex_iterations: int | None = None  # [1, ...] RelEx iterations (the authors: 50), kept in the reduced RelEx
relex_samples: int | None = None  # [1, ...] noisy copies per iteration at the authors' settings (50)
reduced_samples: int | None = None  # [1, ...] noisy copies per iteration of the reduced RelEx
sg_samples: int | None = None  # [1, ...] SmoothGrad samples (the authors: 50, as RelEx's copies)
ig_steps: int | None = None  # [1, ...] Integrated Gradients steps (the authors: 100)
pgd_steps: int | None = None  # [1, ...] PGD iterations (the authors: 40 of 0.01 in normalised units)
sweep_eps: list[float] | None = None  # normalised PGD eps of the sweep (None: the paper's list; smoke: three of them)
main_eps: float = 8 / 255  # [0, 1] PGD budget of the main table, pixel units
ghorbani_steps: int | None = None  # [1, ...] iterations of the Ghorbani top-k attack (RelEx paper: 100)
ghorbani_samples: int = 4  # [1, ...] SmoothGrad samples / IG steps inside the Ghorbani attack's gradient
adaptive_steps: int | None = None  # [1, ...] sign steps of the adaptive attack (iterates kept at 1/4, 1/2 and all of them)
adaptive_unroll: list[tuple[int, int]] | None = None  # [(iterations, copies), ...] of the unrolled RelEx inside the attack, shortest first
adaptive_detached: tuple[int, int] | None = None  # [1, ...] (iterations, copies) of the RelEx held constant in the detached (BPDA) attack
lambda1_values: list[float] | None = None  # lambda1 values of the sweep besides 0, the authors' 1e-4 and its per-entry rescaling
imagenet_images: int | None = None  # [1, 32] ImageNet val-37 images (correct for EfficientNet-Lite0) explained under PGD at the authors' settings
imagenet_clean_images: int | None = None  # [1, 32] first of them also explained clean at the authors' settings
imagenet_relex: tuple[int, int] | None = None  # [1, ...] (iterations, copies) of RelEx on EfficientNet-Lite0 (the authors: 50, 50)
imagenet_sweep: list[tuple[int, int]] | None = None  # [1, ...] cheaper (iterations, copies) of RelEx on the first ImageNet images
imagenet_sweep_images: int | None = None  # [1, 32] first ImageNet images of that sweep (PGD)
imagenet_baselines: tuple[int, int] | None = None  # [1, ...] (SmoothGrad samples, IG steps) on EfficientNet-Lite0
loop_images: int | None = None  # [1, 10000] images explained one at a time, in the authors' style, in the speed section
relex_group: int = 8  # [1, ...] images per RelEx call (per-image seeds: the maps do not depend on it; smaller calls stay in the CPU caches)

# %%
import os
import re
import time
from dataclasses import replace
from types import SimpleNamespace

import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import Markdown, display

from reliable_saliency import data, maps
from reliable_saliency.attacks import ghorbani_attack, masked_retrieval_attack, pgd, random_sign_noise
from reliable_saliency.chapter import kit
from reliable_saliency.chapter.figures import map_grid
from reliable_saliency.chapter.rerun import rerun_box
from reliable_saliency.evaluation.selection import correctly_classified
from reliable_saliency.core.timing import PassCounter, bound_per_pass
from reliable_saliency.core import inputs
from reliable_saliency.core.batching import image_seeds
from reliable_saliency.evaluation import deletion_auc, retrieval
from reliable_saliency.evaluation.retrieval_checks import budgeted_retrieval, clean_share_of_gap
from reliable_saliency.explainers import get_explainer, relex
from reliable_saliency.maps.postprocess import postprocess
from reliable_saliency.models import efficientnet_lite0
from reliable_saliency.training import zoo

# Sizes per profile. `book` must stay near an hour on a 2-core CPU, where RelEx at the authors'
# settings costs about 4 s per CIFAR-10 image and about 225 s per ImageNet image: the authors'
# settings run on the natural model's main table and on 4 ImageNet images, every reduction is stated
# where it is used and checked against the full settings, and every RelEx run goes through the result
# store, so a killed book run resumes where it stopped.
SIZES = {
    "smoke": dict(main_images=6, sweep_images=4, transfer_images=3, check_images=2, same_seed_images=2,
                  attack_images=3, relex_iterations=4, relex_samples=3, reduced_samples=2, sg_samples=3, ig_steps=4,
                  pgd_steps=3, sweep_eps=[0.07, 8.0],
                  ghorbani_steps=2, adaptive_steps=4, adaptive_unroll=[(1, 1), (2, 1)], adaptive_detached=(3, 1),
                  lambda1_values=[], imagenet_images=1, imagenet_clean_images=1, imagenet_relex=(2, 1),
                  imagenet_sweep=[(1, 1)], imagenet_sweep_images=1, imagenet_baselines=(1, 1), loop_images=1),
    "book": dict(main_images=100, sweep_images=50, transfer_images=24, check_images=4, same_seed_images=16,
                 attack_images=24, relex_iterations=50, relex_samples=50, reduced_samples=2, sg_samples=50,
                 ig_steps=100, pgd_steps=40, sweep_eps=[0.07, 0.1, 0.3, 1.0, 2.0, 4.0, 8.0],
                 ghorbani_steps=100, adaptive_steps=40, adaptive_unroll=[(2, 2), (5, 2)], adaptive_detached=(50, 1),
                 lambda1_values=[1e-3, 2e-2], imagenet_images=16, imagenet_clean_images=2, imagenet_relex=(50, 50),
                 imagenet_sweep=[(20, 5), (50, 5), (50, 20)], imagenet_sweep_images=2,
                 imagenet_baselines=(20, 32), loop_images=2),
    "paper": dict(main_images=1000, sweep_images=200, transfer_images=200, check_images=50, same_seed_images=200,
                  attack_images=100, relex_iterations=50, relex_samples=50, reduced_samples=10, sg_samples=50,
                  ig_steps=100, sweep_eps=[0.07, 0.1, 0.3, 1.0, 2.0, 4.0, 8.0],
                  pgd_steps=40, ghorbani_steps=100, adaptive_steps=80, adaptive_unroll=[(2, 4), (5, 4), (10, 4)],
                  adaptive_detached=(50, 4), lambda1_values=[1e-3, 2e-2], imagenet_images=32,
                  imagenet_clean_images=32, imagenet_relex=(50, 50),
                  imagenet_sweep=[(20, 5), (50, 5), (50, 10), (50, 20), (100, 50)], imagenet_sweep_images=8,
                  imagenet_baselines=(50, 100), loop_images=8),
}
ch = kit.setup("02_relex", globals(), SIZES, other_data="ImageNet validation images (bundled offline)",
               within={"attack_images": "sweep_images", "sweep_images": "main_images",
                       "same_seed_images": "main_images", "check_images": "main_images",
                       "transfer_images": "main_images", "imagenet_clean_images": "imagenet_images",
                       "imagenet_sweep_images": "imagenet_images"})
S, settings, run_device, run, ledger, cifar_test = ch.S, ch.settings, ch.device, ch.run, ch.ledger, ch.data
PAPER = "RelEx (Lim et al. 2021)"

# %% [markdown]
# **Sizes.** The box above lists every size of this run. At the `book` profile (a 2-core CPU, about
# an hour) RelEx runs at the authors' settings (50 iterations x 50 copies, 5,000 image-passes per
# image) on the natural LeNet's main table (clean and PGD images), on the first images of the
# FGSM-trained LeNet (a check), and on the ImageNet images. Everything else uses the *reduced*
# RelEx, the same 50 iterations with fewer copies per iteration, whose agreement with the authors'
# settings is measured below. The `paper` profile (meant for a GPU) runs the authors' ImageNet
# setting on 32 images.

# %% [markdown]
# ## The method in brief
#
# RelEx learns a mask $m \in [0,1]^{C \times H \times W}$ (one value per channel and pixel) for the
# class $c$ predicted on the **clean** image, kept when an adversarial image is explained. Each
# iteration draws fresh noisy copies $\tilde x_i = x + \epsilon_i$, $\epsilon_i \sim N(0, s^2)$,
# $s = 0.1\,(\max x - \min x)$ over the normalised image, and takes one step on
#
# $$L(m) = \frac1N \sum_i \Big[-\log f_c(\tilde x_i \odot m) - \lambda_2 \log\big(1 - f_c(\tilde x_i \odot (1-m)) + 10^{-7}\big)\Big] + \lambda_1 \lVert m \rVert_1 ,$$
#
# keep (the masked-in evidence supports $c$) and delete (the rest does not), with $f_c$ the softmax
# probability. Masking multiplies the *normalised* input, so a masked-out pixel becomes the dataset's
# mean colour. Optimiser (the authors' code): $m_0 \sim U[0, 0.01)$, SGD with learning rate 0.1 and
# momentum 0.99 on the gradient divided by its L2 norm, clamp to [0, 1] after each step, 50
# iterations of 50 copies: 5,000 image-passes per explained image. The library's RelEx optimises
# all images of a call together (their copies share the batch axis), one random stream per image.
#
# The baselines, as in the authors' code: plain gradient of the logit; SmoothGrad of the softmax
# probability with the same noise level (0.1 of the range) and as many samples as RelEx's copies;
# Integrated Gradients with a zero baseline (normalised space) and 100 steps, of the target logit
# (the authors' code differentiates the mean over all classes' logits, which we take for a slip);
# Grad-CAM at the last convolution. Maps are `|s|` summed over channels, divided by their 99th
# percentile and clamped to [0, 1] (Grad-CAM: min-max); RelEx's mask is used as it is.
#
# **Retrieval** (the paper's test): is `argmax f(x_adv * map(x_adv))` the clean class? The paper's
# figures also give `f_c(x_adv * map(x_adv))`, the *masked probability* below.
#
# **Noise.** RelEx and SmoothGrad draw random noise. A map of a perturbed image is computed here as a
# user would compute it, with its own noise: x and x_adv get independent noise seeds (RelEx: one seed
# per image and state; SmoothGrad: one generator per state). The stability section also shows the
# favourable case, the same noise for both, which the first version of this chapter used.

# %%
natural = zoo.load_model("lenet_natural", settings.name, device=run_device, progress=False)
robust = zoo.load_model("lenet_fgsm", settings.name, device=run_device, progress=False)
NAT, FGSM = "natural LeNet", "FGSM-trained LeNet"
MODELS = {NAT: natural, FGSM: robust}
images = correctly_classified(list(MODELS.values()), cifar_test, S.main_images, seed=seed, device=run_device)
x, y = images.normalized(run_device), images.labels.to(run_device)  # y: the clean prediction of both models
relex_seeds = image_seeds(torch.Generator().manual_seed(seed), len(x))  # noise of the clean images' maps
adv_seeds = image_seeds(torch.Generator().manual_seed(seed + 1), len(x))  # independent noise for x_adv's maps
ADV_NOISE = seed + 1  # SmoothGrad's generator for perturbed images (seed: clean images)
H = x.shape[-1]
K = max(1, round(0.02 * H * H))  # top-k: 2% of the pixels, as 1000 of 224 x 224
FULL = dict(iterations=S.relex_iterations, samples=S.relex_samples)
REDUCED = dict(iterations=S.relex_iterations, samples=S.reduced_samples)
RELEX_FULL = f"RelEx {S.relex_iterations}x{S.relex_samples}"
RELEX_REDUCED = f"RelEx {S.relex_iterations}x{S.reduced_samples}"
BASELINES = {
    "gradient": get_explainer("gradient"),
    "SmoothGrad": get_explainer("smoothgrad", samples=S.sg_samples, noise_level=0.1, output="probability"),
    "IG": get_explainer("integrated_gradients", steps=S.ig_steps, baseline="zero"),
    "Grad-CAM": get_explainer("gradcam"),
}
space = natural.input_space
display(Markdown(f"{len(x)} CIFAR-10 test images that both LeNets classify correctly; top-k with k = {K} of "
                 f"{H * H} pixels; RelEx at the authors' settings is written {RELEX_FULL} (iterations x copies), and "
                 f"the reduced RelEx (the same iterations, fewer copies) {RELEX_REDUCED}."))

# %% [markdown]
# ### The paper's eps in pixels
#
# The paper gives PGD budgets in *normalised* units of ImageNet (std about 0.226): 0.07, 0.1, 0.3, 1,
# 2, 4, 8, with steps of 0.01 and 40 iterations (cleverhans, random start). A pixel budget is the
# normalised one times the std, so on CIFAR-10 we convert with CIFAR-10's mean std and use the same
# relative step (0.01 normalised, scaled by 40 / `pgd_steps` when fewer steps run). Budgets above
# the whole pixel range (1.0) are capped: from eps 2 on the random start mostly replaces the image by
# uniform noise. The main table adds the usual CIFAR-10 budget, 8/255.

# %%
STD = sum(inputs.CIFAR10.std) / 3
EPS_NORMALISED = [0.07, 0.1, 0.3, 1.0, 2.0, 4.0, 8.0]
ALPHA = 0.01 * STD * 40 / S.pgd_steps
MAIN_EPS_NORMALISED = main_eps / STD


def pixel_eps(normalised: float) -> float:
    return min(normalised * STD, 1.0)


ch.table(pd.DataFrame({
    "normalised (paper)": EPS_NORMALISED,
    "pixels x 255": [e * STD * 255 for e in EPS_NORMALISED],
    "used (x 255, capped at 255)": [pixel_eps(e) * 255 for e in EPS_NORMALISED],
}), f"The paper's PGD budgets converted to CIFAR-10 pixels (std {STD:.3f}); from eps 2 on the budget exceeds "
    "the pixel range and is capped.", digits=2, index=False)


# %%
def authors_pgd(model, xs, ys, eps: float):
    """The authors' PGD: random start, `pgd_steps` sign steps of 0.01 (normalised) x 40 / pgd_steps."""
    return pgd(model, xs, ys, min(eps, 1.0), steps=S.pgd_steps, alpha=ALPHA, generator=ch.generator())


def paper_maps(model, xs, target, methods, relex_options=None, seeds=None, timings=None, step=None,
               noise_seed=None):
    """{method: (pixel map (N, H, W) for stability and AUCs, retrieval mask in [0, 1])} with the
    paper's normalisations. RelEx draws its noise from `seeds` (one per image), SmoothGrad from a
    generator seeded with `noise_seed` (default: the chapter's seed). RelEx maps go through the result
    store under `step` (a killed run resumes; torchrun workers share them)."""
    out = {}
    for name in methods:
        with PassCounter(model) as clock:
            if name.startswith("RelEx"):  # groups of relex_group images; each image keeps its own seed
                def explain(a, b, name=name):
                    return relex(model, xs[a:b], target[a:b], seeds=None if seeds is None else seeds[a:b],
                                 **relex_options)

                key = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{step}-{name}")
                raw = ch.store.compute(key, explain, len(xs), shard_size=relex_group, progress=False,
                                       params={"options": relex_options, "seeds": seeds}).to(xs.device)
                out[name] = (raw.sum(1), raw)
            else:
                generator = torch.Generator(device=run_device).manual_seed(seed if noise_seed is None else noise_seed)
                raw = BASELINES[name](model, xs, target, generator=generator).detach()
                if name == "Grad-CAM":
                    out[name] = (raw[:, 0], postprocess(raw[:, 0], ["normalize_minmax"]))
                else:
                    pixel = postprocess(raw, ["absolute", "channel_sum"])
                    out[name] = (pixel, postprocess(pixel, ["divide_by_percentile"]))
        if timings is not None:
            timings.append({"method": name, "model": model_label(model), "images": len(xs),
                            "seconds": clock.seconds, "passes": clock.passes})
    return out


def model_label(model) -> str:
    return next((k for k, v in MODELS.items() if v is model), "EfficientNet-Lite0")


def retrieve(model, xs, masks, target):
    hit, p = retrieval(model, xs, masks, target)
    return hit.float().cpu(), p.cpu()


def fooled_only(values, fooled):
    """Per-image values where PGD changed the prediction, NaN elsewhere (the ledger drops and counts them)."""
    return torch.where(fooled.cpu(), values.double().cpu(), torch.tensor(float("nan"), dtype=torch.float64))


def span(values) -> str:
    """'a to b' (the range of the finite values, two decimals), or one number when they are all alike."""
    values = [float(v) for v in values if float(v) == float(v)]
    if not values:
        return "none (no image to measure)"
    return f"{min(values):.2f}" if max(values) - min(values) < 0.005 else f"{min(values):.2f} to {max(values):.2f}"


# %% [markdown]
# ## The main table: retrieval under PGD
#
# Both models are attacked with the authors' PGD {cite}`madry2018towards` at eps = 8/255 (0.156 in
# normalised units) on the same images. The natural LeNet's images are explained by RelEx at the
# **authors' settings** (50 iterations x 50 copies); the FGSM-trained LeNet's by the **reduced
# RelEx** (the same 50 iterations, fewer copies per iteration; checked against the authors'
# settings on its first images), which the eps sweep and the ablations also use on both models:
# RelEx at the authors' settings on both models would not fit the book's CPU budget. Clean maps give
# retrieval at eps 0, the stability measures and the deletion / preservation AUCs.

# %%
main, timings, relex_clock = {}, [], {}
for model_name, model in MODELS.items():
    started = time.perf_counter()
    x_adv = authors_pgd(model, x, y, main_eps)
    with torch.no_grad():
        fooled = (model(x_adv).argmax(1) != y).cpu()
    clean = paper_maps(model, x, y, BASELINES, timings=timings)
    adv = paper_maps(model, x_adv, y, BASELINES, timings=timings, noise_seed=ADV_NOISE)
    # the reduced RelEx: on all images of the FGSM-trained model (claim A2.2), on the sweep images of the natural one
    n = S.main_images if model is robust else S.sweep_images
    clean.update(paper_maps(model, x[:n], y[:n], [RELEX_REDUCED], REDUCED, relex_seeds[:n], timings,
                            step=f"main-{model_name}-clean"))
    adv.update(paper_maps(model, x_adv[:n], y[:n], [RELEX_REDUCED], REDUCED, adv_seeds[:n], timings,
                          step=f"main-{model_name}-pgd"))
    if model is natural:  # the authors' settings; timed for the speed section
        with PassCounter(model) as relex_clock["main"]:
            clean.update(paper_maps(model, x, y, [RELEX_FULL], FULL, relex_seeds, step=f"main-{model_name}-clean"))
            adv.update(paper_maps(model, x_adv, y, [RELEX_FULL], FULL, adv_seeds, step=f"main-{model_name}-pgd"))
    else:  # the authors' settings on a subset only, to check the reduction
        n = S.check_images
        clean[f"{RELEX_FULL} (check)"] = paper_maps(model, x[:n], y[:n], [RELEX_FULL], FULL, relex_seeds[:n],
                                                    step=f"check-{model_name}-clean")[RELEX_FULL]
        adv[f"{RELEX_FULL} (check)"] = paper_maps(model, x_adv[:n], y[:n], [RELEX_FULL], FULL, adv_seeds[:n],
                                                  step=f"check-{model_name}-pgd")[RELEX_FULL]
    main[model_name] = SimpleNamespace(x_adv=x_adv, fooled=fooled, clean=clean, adv=adv,
                                       seconds=time.perf_counter() - started)


# %%
def per_image_table(model_name: str) -> pd.DataFrame:
    """One row per (method, image): retrieval at eps 0 and under PGD, stability, AUCs (clean maps)."""
    model, r = MODELS[model_name], main[model_name]
    rows = []
    for method in r.clean:
        n = len(r.clean[method][0])
        (pixel, mask), (pixel_adv, mask_adv) = r.clean[method], r.adv[method]
        hit0, p0 = retrieve(model, x[:n], mask, y[:n])
        hit, p = retrieve(model, r.x_adv[:n], mask_adv, y[:n])
        if model is natural:  # the AUC claims are about the natural model
            deletion = deletion_auc(model, x[:n], pixel, y[:n], substrate="zero").cpu()
            preservation = deletion_auc(model, x[:n], -pixel, y[:n], substrate="zero").cpu()  # least salient first
        else:
            deletion = preservation = torch.full((n,), float("nan"))
        rows.append(pd.DataFrame({
            "model": model_name, "method": method, "image": range(n), "fooled": r.fooled[:n].numpy(),
            "retrieval, clean": hit0.numpy(), "retrieval, PGD": hit.numpy(), "masked p, PGD": p.numpy(),
            f"top-{K} intersection": maps.topk_intersection(pixel, pixel_adv, K).cpu().numpy(),
            "Spearman": maps.spearman(pixel, pixel_adv).cpu().numpy(),
            "deletion AUC": deletion.numpy(), "preservation AUC": preservation.numpy()}))
    return pd.concat(rows)


per_image = pd.concat([per_image_table(name) for name in MODELS])
fooled_rows = per_image[per_image["fooled"]]
summary = per_image.groupby(["model", "method"], sort=False).agg(
    images=("image", "size"), **{"retrieval at eps 0": ("retrieval, clean", "mean")})
summary["retrieval under PGD (fooled only)"] = fooled_rows.groupby(["model", "method"], sort=False)[
    "retrieval, PGD"].mean()
summary["images"] = summary["images"].astype(int)
summary["masked p under PGD"] = per_image.groupby(["model", "method"], sort=False)["masked p, PGD"].mean()
fooled_share = {name: main[name].fooled.float().mean().item() for name in MODELS}
ch.table(summary, f"Retrieval of the clean class, without an attack (eps 0: clean image, clean map) and under "
         f"PGD at eps {main_eps * 255:.0f}/255 ({S.pgd_steps} steps of {ALPHA * 255:.2f}/255, random start; "
         f"over the images whose prediction PGD changed: "
         + ", ".join(f"{fooled_share[m]:.0%} for the {m}" for m in MODELS)
         + "). RelEx optimises its mask to keep the clean class, so its retrieval at eps 0 is high by "
         "construction; the baselines' maps are not optimised for it.", missing="no image was fooled",
         formats={"images": "{:,.0f}"})


# %%
def values(model_name, method, column, fooled=False):
    rows = per_image[(per_image["model"] == model_name) & (per_image["method"] == method)]
    v = torch.tensor(rows[column].to_numpy(), dtype=torch.float64)
    return fooled_only(v, torch.tensor(rows["fooled"].to_numpy())) if fooled else v


def gap_caveats(model_name: str, relex_name: str) -> list[str]:
    """What part of RelEx's retrieval gap over each baseline exists without any attack."""
    relex0 = values(model_name, relex_name, "retrieval, clean")
    relex_pgd = values(model_name, relex_name, "retrieval, PGD", True)
    base0 = {b: values(model_name, b, "retrieval, clean")[:len(relex0)] for b in BASELINES}
    share = {b: clean_share_of_gap(relex0, base0[b], relex_pgd,
                                   values(model_name, b, "retrieval, PGD", True)[:len(relex0)]) for b in BASELINES}
    return [f"Without any attack the baselines' masks retrieve {span(v.mean() for v in base0.values())} of the clean "
            f"images and RelEx's {relex0.mean():.2f}: of RelEx's gap under PGD, "
            + ", ".join(f"{share[b]:.0%} against {b}" for b in BASELINES)
            + " is already there at eps 0, where no attack acted.",
            "By construction: RelEx's mask is optimised so that x * m keeps the clean class, which is what retrieval "
            "checks; A2.9 and A2.10 measure how much of that needs none of the paper's ingredients."]


main_setting = (f"{S.main_images} CIFAR-10 test images correct for both models; PGD eps {main_eps * 255:.0f}/255, "
                f"{S.pgd_steps} steps, random start; seed {seed}; only images whose prediction PGD changed")
ledger.test("A2.1", nan="omit", paper=PAPER,
    claim="RelEx retrieves the clean class of PGD adversarial examples more often than the other explainers "
          "(naturally trained model).",
    measured=f"retrieval hit (1/0) of {RELEX_FULL} minus that of each baseline, per image",
    setting=main_setting + f", {NAT}",
    parts={f"vs {b}": (values(NAT, RELEX_FULL, "retrieval, PGD", True), values(NAT, b, "retrieval, PGD", True))
           for b in BASELINES},
    caveats=gap_caveats(NAT, RELEX_FULL))
ledger.test("A2.2", nan="omit", paper=PAPER,
    claim="RelEx retrieves the clean class of PGD adversarial examples more often than the other explainers "
          "(adversarially trained model).",
    measured=f"retrieval hit of the reduced {RELEX_REDUCED} (agreement with {RELEX_FULL} below) minus that of "
             "each baseline, per image",
    setting=main_setting + f", {FGSM}",
    parts={f"vs {b}": (values(FGSM, RELEX_REDUCED, "retrieval, PGD", True), values(FGSM, b, "retrieval, PGD", True))
           for b in BASELINES},
    caveats=gap_caveats(FGSM, RELEX_REDUCED))
display(Markdown(ledger.line("A2.1") + "  \n" + ledger.line("A2.2")))

# %% [markdown]
# ### Does the reduced RelEx agree with the authors' settings?
#
# The reduced RelEx keeps the 50 iterations and draws fewer copies per iteration (momentum 0.99
# averages the gradient over iterations anyway). It is compared with RelEx at the authors' settings
# on the same images and the same noise seeds: on the first `sweep_images` images of the natural
# LeNet (the ones the sweep and the ablations use), and on the first `check_images` of the
# FGSM-trained one.

# %%
def agreement(model_name: str, full: str, n: int) -> dict:
    model, r = MODELS[model_name], main[model_name]
    row = {"model": model_name, "images": n}
    for state, xs, pack in (("clean", x[:n], r.clean), ("PGD", r.x_adv[:n], r.adv)):
        hit_full, _ = retrieve(model, xs, pack[full][1][:n], y[:n])
        hit_red, _ = retrieve(model, xs, pack[RELEX_REDUCED][1][:n], y[:n])
        row[f"retrieval agrees, {state}"] = (hit_full == hit_red).float().mean().item()
        row[f"retrieval full / reduced, {state}"] = f"{hit_full.mean():.2f} / {hit_red.mean():.2f}"
        row[f"top-{K} overlap, {state}"] = maps.topk_intersection(pack[full][0][:n], pack[RELEX_REDUCED][0][:n],
                                                                  K).mean().item()
    return row


agreement_table = pd.DataFrame([agreement(NAT, RELEX_FULL, S.sweep_images),
                                agreement(FGSM, f"{RELEX_FULL} (check)", S.check_images)]).set_index("model")
ch.table(agreement_table, f"The reduced {RELEX_REDUCED} against {RELEX_FULL} on the same images and noise seeds: "
         f"how often their retrieval agrees, both retrieval rates, and the overlap of their top-{K} pixels.")

# %% [markdown]
# ## Map stability
#
# Top-k intersection and Spearman correlation between the channel-summed map of the clean image
# and that of its PGD version, on all main images of the natural LeNet (stability needs no
# successful attack). Each map draws its own noise (independent seeds for x and x_adv): that is how
# a user computes a map, and the verdicts use it. With the *same* noise for x and x_adv (common
# random numbers) RelEx and SmoothGrad look more stable than they are; on the first
# `same_seed_images` images both are computed, next to the seed floor: two maps of the same clean
# image that differ only in their noise.

# %%
n_same = S.same_seed_images
r = main[NAT]
with PassCounter(natural) as same_seed_clock:
    same = {  # x_adv explained with x's noise; x explained with x_adv's noise (the seed floor)
        "same noise": {**paper_maps(natural, r.x_adv[:n_same], y[:n_same], [RELEX_FULL], FULL, relex_seeds[:n_same],
                                    step="same-seed-pgd"),
                       **paper_maps(natural, r.x_adv[:n_same], y[:n_same], ["SmoothGrad"])},
        "clean, other noise": {**paper_maps(natural, x[:n_same], y[:n_same], [RELEX_FULL], FULL, adv_seeds[:n_same],
                                            step="same-seed-floor"),
                               **paper_maps(natural, x[:n_same], y[:n_same], ["SmoothGrad"], noise_seed=ADV_NOISE)}}
rows = []
for method in (RELEX_FULL, "SmoothGrad"):
    clean_pixel = r.clean[method][0][:n_same]
    for label, other in (("x_adv, independent noise (the verdicts)", r.adv[method][0][:n_same]),
                         ("x_adv, the same noise as x", same["same noise"][method][0]),
                         ("x again, other noise (seed floor)", same["clean, other noise"][method][0])):
        rows.append({"method": method, "second map": label,
                     f"top-{K} intersection": maps.topk_intersection(clean_pixel, other, K).mean().item(),
                     "Spearman": maps.spearman(clean_pixel, other).nanmean().item()})
seed_table = pd.DataFrame(rows).set_index(["method", "second map"])
ch.table(seed_table, f"How much the noise seeds decide map stability ({NAT}, first {n_same} main images, PGD eps "
         f"{main_eps * 255:.0f}/255): the clean map against the map of x_adv with independent noise, with the same "
         f"noise as x, and against a second clean map with other noise.")
same_gain = {m: seed_table.loc[(m, "x_adv, the same noise as x"), f"top-{K} intersection"]
             - seed_table.loc[(m, "x_adv, independent noise (the verdicts)"), f"top-{K} intersection"]
             for m in (RELEX_FULL, "SmoothGrad")}
floor = seed_table.loc[(RELEX_FULL, "x again, other noise (seed floor)"), f"top-{K} intersection"]

# %%
stability_setting = main_setting.replace("; only images whose prediction PGD changed", "; all images") + \
    f", {NAT}; independent noise seeds for x and x_adv (RelEx and SmoothGrad)"
seed_caveat = (f"With the same noise for x and x_adv (the first version of this chapter) the top-{K} intersection "
               f"would be {same_gain[RELEX_FULL]:+.3f} higher for RelEx and {same_gain['SmoothGrad']:+.3f} for "
               f"SmoothGrad (first {n_same} images); two clean RelEx maps with different noise share only "
               f"{floor:.3f} of their top pixels.")
ledger.test("A2.3", nan="omit", paper=PAPER,
    claim="RelEx maps change less under PGD than the other explainers' maps (top-k intersection).",
    measured=f"top-{K} intersection of map(x) and map(x_adv), {RELEX_FULL} minus each baseline, per image",
    setting=stability_setting,
    parts={f"vs {b}": (values(NAT, RELEX_FULL, f"top-{K} intersection"), values(NAT, b, f"top-{K} intersection"))
           for b in BASELINES},
    caveats=[seed_caveat])
ledger.test("A2.4", nan="omit", paper=PAPER,
    claim="RelEx maps change less under PGD than the other explainers' maps (Spearman rank correlation).",
    measured=f"Spearman of map(x) and map(x_adv), {RELEX_FULL} minus each baseline, per image (NaN: constant map)",
    setting=stability_setting,
    parts={f"vs {b}": (values(NAT, RELEX_FULL, "Spearman"), values(NAT, b, "Spearman")) for b in BASELINES})
display(Markdown(ledger.line("A2.3") + "  \n" + ledger.line("A2.4")))

# %%
count = min(4, settings.figure_images)
shown = {"image": space.denormalize(x[:count]), "PGD": space.denormalize(r.x_adv[:count])}
for method in [RELEX_FULL, *BASELINES]:
    shown[f"{method}, clean"] = r.clean[method][0][:count]
    shown[f"{method}, PGD"] = r.adv[method][0][:count]
ch.figure(map_grid(shown, count), f"The first {count} main images of the {NAT}, their PGD versions (eps "
          f"{main_eps * 255:.0f}/255) and each method's channel-summed map of both (brighter: more salient). A stable "
          "map looks alike in its clean and PGD rows.")

# %% [markdown]
# ## Retrieval versus eps
#
# The paper's eps list (`sweep_eps`; the smoke profile runs three of them) on the first
# `sweep_images` main images of both models, plus eps 0 (the clean maps) and 8/255 (the main
# table). RelEx runs reduced here (agreement above); SmoothGrad keeps its `sg_samples` samples.
# Rates are over all images (the paper's figure follows one image at every eps, whether or not PGD
# changed its prediction); the fraction PGD fooled is drawn too.

# %%
n_sweep = S.sweep_images
sweep_methods = list(BASELINES) + [RELEX_REDUCED]
records = []


def add_records(model_name, eps_norm, xs_adv, pack, fooled):
    model = MODELS[model_name]
    for method in sweep_methods:
        hit, p = retrieve(model, xs_adv, pack[method][1][:n_sweep], y[:n_sweep])
        records.append(pd.DataFrame({"model": model_name, "method": method, "eps (normalised)": eps_norm,
                                     "retrieval": hit.numpy(), "masked p": p.numpy(), "fooled": fooled.numpy(),
                                     "image": range(n_sweep)}))


for model_name, model in MODELS.items():
    add_records(model_name, 0.0, x[:n_sweep], main[model_name].clean, torch.zeros(n_sweep, dtype=torch.bool))
    add_records(model_name, round(MAIN_EPS_NORMALISED, 3), main[model_name].x_adv[:n_sweep], main[model_name].adv,
                main[model_name].fooled[:n_sweep])
    for eps_norm in S.sweep_eps:
        xs_adv = authors_pgd(model, x[:n_sweep], y[:n_sweep], pixel_eps(eps_norm))
        with torch.no_grad():
            fooled = (model(xs_adv).argmax(1) != y[:n_sweep]).cpu()
        pack = paper_maps(model, xs_adv, y[:n_sweep], sweep_methods, REDUCED, adv_seeds[:n_sweep],
                          step=f"sweep-{model_name}-eps{eps_norm}", noise_seed=ADV_NOISE)
        add_records(model_name, eps_norm, xs_adv, pack, fooled)
sweep = pd.concat(records)
sweep_means = sweep.groupby(["model", "method", "eps (normalised)"], sort=False)[
    ["retrieval", "masked p", "fooled"]].mean().reset_index()
EPS_TICKS = [0.0, 0.07, 0.3, 1.0, 8.0]

fig, axes = plt.subplots(2, 2, figsize=(7, 5.6), sharex=True, sharey=True)
for row, measure in enumerate(["retrieval", "masked p"]):
    for col, model_name in enumerate(MODELS):
        ax = axes[row, col]
        part = sweep_means[sweep_means["model"] == model_name].sort_values("eps (normalised)")
        for method in sweep_methods:
            line = part[part["method"] == method]
            ax.plot(line["eps (normalised)"], line[measure], marker="o", ms=3, label=method)
        if measure == "retrieval":
            fooled_line = part[part["method"] == RELEX_REDUCED]
            ax.plot(fooled_line["eps (normalised)"], fooled_line["fooled"], color="grey", ls="--", label="PGD fooled")
            ax.set_title(model_name)
        ax.set_xscale("symlog", linthresh=0.05)
        ax.set_xticks(EPS_TICKS, [f"{e:g}" for e in EPS_TICKS])
        ax.set_ylim(-0.03, 1.03)
        ax.set_ylabel({"retrieval": "retrieval rate", "masked p": "mean f_c(x_adv * map)"}[measure] if col == 0 else "")
        ax.set_xlabel("PGD eps (normalised)" if row == 1 else "")
handles, labels = axes[0, 0].get_legend_handles_labels()
fig.legend(handles, labels, loc="lower center", ncol=3, bbox_to_anchor=(0.5, -0.08), frameon=False)
fig.tight_layout(rect=(0, 0.06, 1, 1))
ch.figure(fig, f"Retrieval rate (top) and masked probability of the clean class (bottom) against the PGD budget, "
          f"{n_sweep} images per point, eps in the paper's normalised units (x {STD:.3f} = pixels). Over the eps, "
          f"RelEx's retrieval is " + " and ".join(
              f"{span(sweep_means[(sweep_means['model'] == m) & (sweep_means['method'] == RELEX_REDUCED)]['retrieval'])}"
              f" on the {m}" for m in MODELS) + ", its masked probability " + " and ".join(
              f"{span(sweep_means[(sweep_means['model'] == m) & (sweep_means['method'] == RELEX_REDUCED)]['masked p'])}"
              for m in MODELS) + " (the paper: 0.999 on a natural ResNet-50).")

# %%
methods_wide = sweep_means.pivot_table(index=["model", "eps (normalised)"], columns="method", values="masked p",
                                       sort=False)[sweep_methods].sort_index()
methods_wide.insert(0, "PGD fooled", sweep_means.groupby(["model", "eps (normalised)"])["fooled"].first())
ch.table(methods_wide, f"Mean masked probability of the clean class, f_c(x_adv * map(x_adv)), per model and eps "
         f"(normalised units), first {n_sweep} main images, with the share of images PGD fooled.", digits=2)


# %%
def sweep_values(model_name, method, eps_norm, column):
    rows = sweep[(sweep["model"] == model_name) & (sweep["method"] == method) & (sweep["eps (normalised)"] == eps_norm)]
    return torch.tensor(rows[column].to_numpy(), dtype=torch.float64)


sweep_setting = (f"first {n_sweep} main images, {RELEX_REDUCED} (reduced; agreement above), PGD {S.pgd_steps} "
                 f"steps, eps in normalised units x {STD:.3f} = pixels; all images; independent noise for each eps")
PAPER_FIGURE = {NAT: "natural ResNet-50: RelEx 0.999 at every eps, SmoothGrad 0.846, 0.516, 0.212, 0.179, 0.007 "
                     "at eps 0, 0.07, 0.1, 0.3, 1",
                FGSM: "robust ResNet-50: RelEx 0.967 falling to 0.835, SmoothGrad 0.252 falling to 4.5e-4"}
for claim_id, model_name in (("A2.7", NAT), ("A2.14", FGSM)):
    levels = [sweep_values(model_name, RELEX_REDUCED, e, "masked p").mean() for e in S.sweep_eps]
    sg_levels = [sweep_values(model_name, "SmoothGrad", e, "masked p").mean() for e in S.sweep_eps]
    ledger.test(claim_id, nan="omit", paper=PAPER,
        claim=f"On the {model_name}, at every eps of the paper the masked probability of the clean class stays higher "
              f"with RelEx than with SmoothGrad (the paper's figure, one image, {PAPER_FIGURE[model_name]}).",
        measured="f_c(x_adv * map(x_adv)), RelEx minus SmoothGrad, per image",
        setting=sweep_setting + f", {model_name}",
        parts={f"eps {e:g}": (sweep_values(model_name, RELEX_REDUCED, e, "masked p"),
                              sweep_values(model_name, "SmoothGrad", e, "masked p")) for e in S.sweep_eps},
        caveats=[f"RelEx's own masked probability here is {span(levels)} over the eps (SmoothGrad's "
                 f"{span(sg_levels)}); the claim tested is the comparison, not the paper's level.",
                 "By construction: RelEx's keep term maximises f_c(x * m) on noisy copies of the very image it "
                 "explains, the quantity measured here."])
display(Markdown(ledger.line("A2.7") + "  \n" + ledger.line("A2.14")))

# %% [markdown]
# ## Transfer: Ghorbani's top-k attack aimed at SmoothGrad and IG
#
# As in the paper, the attack on explanations {cite}`ghorbani2019fragile` targets the baselines
# (here SmoothGrad and IG, top-k objective, k = 2% of the pixels, eps 8/255, sign steps of 0.5/255,
# labels kept, gradients through a Softplus(10) copy of the ReLU LeNet with `ghorbani_samples`
# samples or steps inside the attack) and every explainer's map is measured at the resulting images.
# RelEx is never the attacked explainer, so for RelEx this is *transfer*: the fair comparison for it
# is with the other maps that were not attacked either. The baseline attack is one shot of sign
# noise of the full budget.

# %%
n_transfer = S.transfer_images
xs, ys = x[:n_transfer], y[:n_transfer]
transfer_methods = list(BASELINES) + [RELEX_REDUCED]
clean_pixel = {m: main[NAT].clean[m][0][:n_transfer] for m in transfer_methods}
attack_alpha = min(0.5 / 255 * 100 / S.ghorbani_steps, main_eps)
attacked = {"random sign noise": random_sign_noise(natural, xs, eps=main_eps, generator=ch.generator())[0]}
for target_name, explainer in {
        "SmoothGrad": get_explainer("smoothgrad", samples=ghorbani_samples, noise_level=0.1, output="probability"),
        "IG": get_explainer("integrated_gradients", steps=ghorbani_samples, baseline="zero")}.items():
    result = ghorbani_attack(natural, xs, explainer, objective="topk", eps=main_eps, alpha=attack_alpha,
                             steps=S.ghorbani_steps, k=K, surrogate_beta=10.0, generator=ch.generator())
    attacked[f"top-k on {target_name}"] = result.x_adv
transfer, rows, attack_rows = {}, [], []
for attack_name, xs_adv in attacked.items():
    pack = paper_maps(natural, xs_adv, ys, transfer_methods, REDUCED, adv_seeds[:n_transfer],
                      step=f"transfer-{attack_name}", noise_seed=ADV_NOISE)
    change = (space.denormalize(xs_adv) - space.denormalize(xs)).abs().flatten(1)
    with torch.no_grad():
        kept = (natural(xs_adv).argmax(1) == ys).float().mean().item()
    attack_rows.append(f"{attack_name}: labels kept {kept:.0%}, mean change {255 * change.mean().item():.1f}/255")
    for method in transfer_methods:
        transfer[attack_name, method] = maps.topk_intersection(clean_pixel[method], pack[method][0], K).cpu()
        rows.append({"attack": attack_name, "method": method,
                     f"top-{K} intersection": transfer[attack_name, method].mean().item(),
                     "Spearman": maps.spearman(clean_pixel[method], pack[method][0]).nanmean().item(),
                     "attacked": method in attack_name})
transfer_table = pd.DataFrame(rows).set_index(["attack", "method"])
ch.table(transfer_table, f"Map of the clean image against the map of the attacked image, first {n_transfer} main "
         f"images of the {NAT} (eps {main_eps * 255:.0f}/255, at most {main_eps * 255:.0f}/255 per pixel; "
         + "; ".join(attack_rows) + "). 'attacked' marks the map the attack aimed at.")

# %%
unattacked = {}
for t in ("SmoothGrad", "IG"):
    others = {m: transfer[f"top-k on {t}", m].mean().item() for m in BASELINES if m != t}
    best = max(others, key=others.get)
    unattacked[t] = (f"under the attack on {t}, {best} (not attacked either) keeps {others[best]:.3f} of its top "
                     f"pixels against RelEx's {transfer[f'top-k on {t}', RELEX_REDUCED].mean():.3f}")
ledger.test("A2.8", nan="omit", paper=PAPER,
    claim="Under Ghorbani's top-k attack aimed at SmoothGrad or IG, RelEx's map keeps more of its top pixels "
          "than the attacked explainer's map (transfer).",
    measured=f"top-{K} intersection with the clean map, RelEx minus the attacked explainer, per image",
    setting=(f"first {n_transfer} main images, {NAT}, eps {main_eps * 255:.0f}/255, {S.ghorbani_steps} steps of "
             f"{attack_alpha * 255:.2f}/255, {ghorbani_samples} samples/steps in the attack, {RELEX_REDUCED}; "
             + "; ".join(attack_rows)),
    parts={f"attack on {t}": (transfer[f"top-k on {t}", RELEX_REDUCED], transfer[f"top-k on {t}", t])
           for t in ("SmoothGrad", "IG")},
    caveats=["Built in: RelEx is the one map compared here that was not attacked; against the other maps that were "
             "not attacked either, " + "; ".join(unattacked.values()) + "."])
display(Markdown(ledger.line("A2.8")))

# %% [markdown]
# ## Ablations: "optimised to keep the class" versus "noise + L1"
#
# RelEx's mask is *optimised* so that `x * m` keeps the clean class, which is exactly what
# retrieval checks; the baselines are not. The ablations remove one ingredient at a time, on the
# natural LeNet, the first `sweep_images` images, clean and under the main table's PGD:
#
# - `lambda1 = 0` (no L1), `lambda2 = 0` (no delete term);
# - *one copy* per iteration (noise kept), *no noise* (one copy: with zero noise all copies are
#   the same image, so one copy is exact), and *optimisation only*: no noise and no L1, a plain
#   per-image mask optimisation for the clean class;
# - a lambda1 sweep: the authors' 1e-4 was tuned for 3 x 224 x 224 masks; the same weight per mask
#   entry on 3 x 32 x 32 is 1e-4 x 224² / 32² = 4.9e-3 (*per entry*).
#
# Each ablation keeps the 50 iterations and the reduced number of copies unless it says otherwise.
# SmoothGrad with the same noise level is the "noise, no optimisation" reference. A last control asks
# what a retrieval by a RelEx mask can show at all: the reduced RelEx is run (on both models) on the
# *clean* images for a class the model does not predict there (the next class index), and we check
# whether the masked image is then classified as that wrong class.
#
# **Retrieval at a fixed area.** Every RelEx variant retrieves the clean class of every attacked
# image (a ceiling: a test that cannot move). So that retrieval can tell the variants apart, every
# map is also held to the same area: its most salient pixels are kept (all channels), the rest set
# to the mean colour, and retrieval is asked of that. The area is fixed by a rule set before the
# measurement: the share of the image that the authors' RelEx mask itself keeps (the mean of the
# mask at the authors' settings over these clean images), in whole pixels.

# %%
xs, ys = x[:n_sweep], y[:n_sweep]
x_adv_s = main[NAT].x_adv[:n_sweep]
fooled_s = main[NAT].fooled[:n_sweep]
SCALED_LAMBDA1 = 1e-4 * 224 * 224 / (H * H)  # the authors' weight per mask entry
lambda1_sweep = sorted(set(S.lambda1_values) | {SCALED_LAMBDA1})
AUTHORS, REDUCED_LABEL, PER_ENTRY = f"{RELEX_FULL} (authors)", f"{RELEX_REDUCED} (reduced)", \
    f"lambda1 = {SCALED_LAMBDA1:.2g} (per entry)"
ablations = {
    AUTHORS: None, REDUCED_LABEL: None,
    "lambda1 = 0": dict(lambda1=0.0), "lambda2 = 0": dict(lambda2=0.0),
    "one copy": dict(samples=1), "no noise (one copy)": dict(samples=1, noise_level=0.0),
    "optimisation only": dict(samples=1, noise_level=0.0, lambda1=0.0),
    **{(PER_ENTRY if v == SCALED_LAMBDA1 else f"lambda1 = {v:g}"): dict(lambda1=v) for v in lambda1_sweep},
}
ablation_maps = {}
for label, change in ablations.items():
    if change is None:  # from the main table
        method = RELEX_FULL if label == AUTHORS else RELEX_REDUCED
        ablation_maps[label] = [tuple(t[:n_sweep] for t in pack[method]) for pack in (main[NAT].clean, main[NAT].adv)]
    else:
        options = {**REDUCED, **change}
        ablation_maps[label] = [paper_maps(natural, xx, ys, ["RelEx"], options, seeds, step=f"ablation-{label}-{state}")[
            "RelEx"] for xx, seeds, state in ((xs, relex_seeds[:n_sweep], "clean"), (x_adv_s, adv_seeds[:n_sweep], "pgd"))]
ablation_maps["SmoothGrad"] = [tuple(t[:n_sweep] for t in pack["SmoothGrad"]) for pack in (main[NAT].clean,
                                                                                              main[NAT].adv)]
BUDGET = max(1, round(ablation_maps[AUTHORS][0][1].mean().item() * H * H))
BUDGETED = f"retrieval at {BUDGET} pixels (fooled)"
ablation_values, rows = {}, []
for label, ((pixel, mask), (pixel_adv, mask_adv)) in ablation_maps.items():
    hit, p = retrieve(natural, x_adv_s, mask_adv, ys)
    budget_hit = budgeted_retrieval(natural, x_adv_s, pixel_adv, ys, BUDGET)[0].float().cpu()
    v = {"retrieval (fooled)": fooled_only(hit, fooled_s), BUDGETED: fooled_only(budget_hit, fooled_s),
         "masked p": p, f"top-{K} intersection": maps.topk_intersection(pixel, pixel_adv, K).cpu(),
         "Spearman": maps.spearman(pixel, pixel_adv).cpu(),
         "preservation AUC": deletion_auc(natural, xs, -pixel, ys).cpu(),
         "deletion AUC": deletion_auc(natural, xs, pixel, ys).cpu(),
         "mask mean": mask.flatten(1).mean(1).cpu()}
    ablation_values[label] = v
    rows.append({"variant": label, **{k: t.double().nanmean().item() for k, t in v.items()}})
ablation_table = pd.DataFrame(rows).set_index("variant")
ch.table(ablation_table, f"The ablations on the first {n_sweep} main images of the {NAT} (PGD eps "
         f"{main_eps * 255:.0f}/255 fooled {fooled_s.float().mean():.0%} of them; retrieval is over those). "
         f"Retrieval at {BUDGET} pixels keeps each map's {BUDGET} most salient pixels of {H * H} (the area of the "
         f"authors' mask). Stability: map of x against map of x_adv, independent noise; AUCs on the clean images.")

wrong, wrong_hit, control = (ys + 1) % 10, {}, []
for model_name, model in MODELS.items():
    wrong_mask = ch.store.compute(re.sub(r"[^A-Za-z0-9_.-]+", "_", f"wrong-class-{model_name}"),
                                  lambda a, b, model=model: relex(model, xs[a:b], wrong[a:b],
                                                                  seeds=relex_seeds[a:b], **REDUCED),
                                  n_sweep, shard_size=relex_group, progress=False, params=REDUCED).to(xs.device)
    wrong_hit[model_name], wrong_p = retrieve(model, xs, wrong_mask, wrong)
    control.append(f"on the {model_name}, for {wrong_hit[model_name].mean():.0%} of the images (mean masked "
                   f"probability {wrong_p.mean():.3f}, mask mean {wrong_mask.mean():.3f})")
display(Markdown(f"**Control.** {RELEX_REDUCED} asked for a wrong class on the clean images makes the masked image "
                 "look like that class " + "; ".join(control) + "."))

# %%
fig, axes = plt.subplots(1, 2, figsize=(7, 4.4), sharey=True)
order = list(ablation_table.index)[::-1]
for ax, column in zip(axes, [BUDGETED, f"top-{K} intersection"]):
    ax.barh(order, ablation_table.loc[order, column], color="#4c72b0")
    ax.set_xlim(0, 1)
    ax.set_title(column.replace(" (fooled)", ""), fontsize=11)
fig.tight_layout()
ch.figure(fig, f"What each ablation keeps: retrieval of the clean class through each map's {BUDGET} most salient "
          f"pixels (left; without the budget every RelEx variant retrieves "
          f"{span(ablation_table.loc[[v for v in ablation_table.index if v != 'SmoothGrad'], 'retrieval (fooled)'])}) "
          f"and the stability of the map under PGD (right, top-{K} intersection with independent noise).")

# %% [markdown]
# Four claims are read from the ablations, each stated before it was measured:
#
# - *by construction*: if the plain per-image mask optimisation (no noise, no L1) already retrieves
#   better than every baseline, the retrieval advantage does not need the paper's ingredients;
# - *what retrieval shows*: if a RelEx mask asked for a wrong class makes the clean image look like
#   that class for most images, a mask's "retrieval" is a property of the optimisation (a mask
#   is a large, multiplicative perturbation), not evidence that the class was in the image;
# - paper claim 2 (noise + L1 make maps locally smooth): noise should raise stability (one copy
#   with noise vs no noise, both one copy) and L1 too, at the authors' lambda1 and at its per-entry
#   rescaling (each against lambda1 = 0);
# - paper claim 4 (the retrieval comes from features relevant for the neighbours): noise should
#   raise retrieval (one copy vs no noise), and noise + L1 together (reduced RelEx vs optimisation
#   only). Measured with plain retrieval every variant sits at the ceiling, so claim 4 is judged by
#   retrieval at the fixed area above (a change of logic from the first version of this chapter,
#   which judged the ceiling and read it as "does not hold").

# %%
ablation_setting = (f"first {n_sweep} main images, {NAT}, PGD eps {main_eps * 255:.0f}/255; RelEx "
                    f"{S.relex_iterations} iterations, {S.reduced_samples} copies unless one copy; independent "
                    f"noise for x and x_adv")
best_baseline = max(BASELINES, key=lambda b: values(NAT, b, "retrieval, PGD", True)[:n_sweep].nanmean().item())
opt_only = ablation_values["optimisation only"]
ledger.test("A2.9", nan="omit", paper="book (ablation of RelEx)",
    claim="A plain per-image mask optimisation for the clean class (no noise, no L1) already retrieves the clean "
          "class better than the best baseline: much of RelEx's advantage is there by construction.",
    measured=f"retrieval hit, optimisation only minus the best baseline on these images ({best_baseline}), per image",
    setting=ablation_setting + "; images whose prediction PGD changed",
    parts={f"vs {best_baseline}": (opt_only["retrieval (fooled)"],
                                   values(NAT, best_baseline, "retrieval, PGD", True)[:n_sweep])})
ledger.test("A2.10", nan="omit", paper="book (control for retrieval)",
    claim="A RelEx mask optimised for a class the model does not predict makes most clean images look like that "
          "class: a mask's retrieval does not show that the evidence for the class was in the image.",
    measured=f"argmax f(x * m) == the wrong class (1/0) for {RELEX_REDUCED} asked for class (clean + 1) mod 10, "
             "clean images, per image",
    setting=f"first {n_sweep} main images, clean",
    parts=wrong_hit, threshold=0.5)
stability = f"top-{K} intersection"
ledger.test("A2.11", nan="omit", paper=PAPER,
    claim="Learning from noisy copies with L1 makes the maps locally smooth: each ingredient raises map "
          "stability under PGD (claim 2).",
    measured=f"top-{K} intersection of map(x) and map(x_adv): with minus without the ingredient, per image",
    setting=ablation_setting,
    parts={"noise (one copy vs no noise)": (ablation_values["one copy"][stability],
                                            ablation_values["no noise (one copy)"][stability]),
           "L1, authors' 1e-4 (reduced vs lambda1 = 0)": (ablation_values[REDUCED_LABEL][stability],
                                                          ablation_values["lambda1 = 0"][stability]),
           f"L1, per entry {SCALED_LAMBDA1:.2g} (vs lambda1 = 0)": (ablation_values[PER_ENTRY][stability],
                                                                    ablation_values["lambda1 = 0"][stability])},
    caveats=["The authors' lambda1 = 1e-4 was tuned for 3 x 224 x 224 masks; on 3 x 32 x 32 it weighs the L1 term "
             f"49 times less per entry, so the per-entry rescaling {SCALED_LAMBDA1:.2g} is tested too (a change "
             "from the first version of this chapter, which tested 1e-4 only)."])
ledger.test("A2.12", nan="omit", paper=PAPER,
    claim="RelEx's retrieval comes from features relevant for the input's neighbours: noise (and L1) raise "
          "retrieval beyond what optimising for the class gives (claim 4).",
    measured=f"retrieval hit under PGD through each map's {BUDGET} most salient pixels (the area of the authors' "
             "mask), with minus without the ingredients, per image",
    setting=ablation_setting + "; images whose prediction PGD changed",
    parts={"noise (one copy vs no noise)": (ablation_values["one copy"][BUDGETED],
                                            ablation_values["no noise (one copy)"][BUDGETED]),
           "noise + L1 (reduced vs optimisation only)": (ablation_values[REDUCED_LABEL][BUDGETED],
                                                         opt_only[BUDGETED])},
    caveats=[f"Without an area budget every RelEx variant retrieves "
             f"{span(ablation_table.loc[[v for v in ablation_table.index if v != 'SmoothGrad'], 'retrieval (fooled)'])}"
             " of these images: a ceiling with no power. The budget (the area the authors' mask keeps) was fixed by "
             "that rule before it was measured, not chosen among several."])
display(Markdown("  \n".join(ledger.line(i) for i in ("A2.9", "A2.10", "A2.11", "A2.12"))))

# %% [markdown]
# ## Deletion and preservation
#
# On the clean images of the natural LeNet, pixels are replaced by 0 in normalised space (the
# dataset's mean colour), 32 pixels per step on 32 x 32 (the paper: 224 per step on 224 x 224), and
# the probability of the clean class is tracked. *Deletion* removes the most salient pixels first
# (lower area is better); *preservation*, as in the authors' evaluation code, removes the **least**
# salient first (higher is better). Both favour RelEx by construction: its keep term maximises
# `f_c(x * m)` on this very substrate (preservation keeps the pixels the mask keeps), and its delete
# term minimises `f_c(x * (1 - m))`, the class left once the mask's pixels are removed (deletion).
# The ablation without the delete term (`lambda2 = 0`) shows how much of the deletion score that term
# buys.

# %%
auc_rows = per_image[per_image["model"] == NAT].groupby("method", sort=False)[
    ["deletion AUC", "preservation AUC"]].agg(["mean", "sem"])
fig, axes = plt.subplots(1, 2, figsize=(7, 3.4), sharey=True)
for ax, measure, better in zip(axes, ["deletion AUC", "preservation AUC"], ["lower", "higher"]):
    ax.barh(auc_rows.index[::-1], auc_rows[(measure, "mean")][::-1], xerr=1.96 * auc_rows[(measure, "sem")][::-1],
            color="#4c72b0")
    ax.set_title(f"{measure} ({better} is better)", fontsize=11)
    ax.set_xlim(0, 1)
fig.tight_layout()
ch.figure(fig, f"Deletion and preservation areas of each method's clean map, {NAT}, {S.main_images} images (mean "
          "and 95% interval). RelEx's advantage on both is built into its objective (text above).")
auc_setting = f"{S.main_images} clean test images, {NAT}, zero substrate, {H} pixels per step"
lambda2_gap = (ablation_values["lambda2 = 0"]["deletion AUC"].mean() - ablation_values[REDUCED_LABEL][
    "deletion AUC"].mean()).item()
ledger.test("A2.5", nan="omit", paper=PAPER,
    claim="RelEx keeps the class with the most salient pixels better than the other maps (preservation AUC).",
    measured=f"preservation AUC of {RELEX_FULL} minus each baseline, per image",
    setting=auc_setting,
    parts={f"vs {b}": (values(NAT, RELEX_FULL, "preservation AUC"), values(NAT, b, "preservation AUC"))
           for b in BASELINES},
    caveats=["By construction: RelEx's keep term maximises f_c(x * m) with masked-out pixels at 0 in normalised "
             "space, the substrate preservation uses; the baselines optimise nothing of the kind."])
ledger.test("A2.6", nan="omit", paper=PAPER,
    claim="Deleting RelEx's most salient pixels removes the class faster than deleting the other maps' (deletion AUC).",
    measured=f"deletion AUC of each baseline minus that of {RELEX_FULL}, per image",
    setting=auc_setting,
    parts={f"vs {b}": (values(NAT, b, "deletion AUC"), values(NAT, RELEX_FULL, "deletion AUC")) for b in BASELINES},
    caveats=["By construction: RelEx's delete term minimises f_c(x * (1 - m)) on the deletion substrate; without it "
             f"(lambda2 = 0) the deletion AUC is {lambda2_gap:+.3f} higher (worse) than the reduced RelEx's on the "
             f"first {n_sweep} images."])
display(Markdown(ledger.line("A2.5") + "  \n" + ledger.line("A2.6")))

# %% [markdown]
# ## An adaptive attack on RelEx itself
#
# The paper's adversary never knows that RelEx will look. Ours does, as the adaptive-attack
# guidelines ask {cite}`tramer2020adaptive`: L-inf sign steps (eps 8/255, steps of eps / 8, no random
# start) that maximise `CE(f(x_adv), c) + CE(f(x_adv * M(x_adv)), c)`, with `M` a RelEx mask:
#
# - **unrolled**: a short RelEx run (a few iterations and copies, fresh noise every step) whose
#   every update is differentiated, for several unroll lengths;
# - **detached** (BPDA {cite}`athalye2018obfuscated`): a longer RelEx recomputed at every step but held
#   constant in the gradient.
#
# Every kept iterate is judged by the real explainer: the reduced RelEx at the authors' 50
# iterations. Full strength is checked with a rule fixed before the run: the strongest attack's
# retrieval must move by at most max(0.05, 2 / images) when its steps double, the longest unroll
# must not beat the second longest by more than that, and the masked probability the attack drove
# down for its own short RelEx (its *surrogate*) must be within 0.1 of the real RelEx's: a
# surrogate that far from the method is beaten without RelEx being attacked. Only then does a
# retrieval that survives count as evidence; the verdict uses RelEx at the authors' settings on the
# strongest attack's images.

# %%
n_attack = S.attack_images
xa, ya = x[:n_attack], y[:n_attack]
checkpoints = sorted({max(1, S.adaptive_steps // 4), max(1, S.adaptive_steps // 2), S.adaptive_steps})
configs = {f"unrolled RelEx {it}x{c}": (dict(iterations=it, samples=c), "unrolled", S.adaptive_steps)
           for it, c in S.adaptive_unroll}
it, c = S.adaptive_detached
configs[f"detached RelEx {it}x{c}"] = (dict(iterations=it, samples=c), "detached", max(1, S.adaptive_steps // 2))
adaptive, rows = {}, []
for label, (options, mode, steps) in configs.items():
    started = time.perf_counter()
    result = masked_retrieval_attack(
        natural, xa, get_explainer("relex", **options), eps=main_eps, steps=steps, alpha=main_eps / 8, mode=mode,
        checkpoints=[s for s in checkpoints if s <= steps] + [steps], generator=ch.generator())
    seconds = time.perf_counter() - started
    for step, iterate in sorted(result.checkpoints.items()):
        mask = relex(natural, iterate, ya, seeds=adv_seeds[:n_attack], **REDUCED)
        hit, p = retrieve(natural, iterate, mask, ya)
        with torch.no_grad():
            fooled = (natural(iterate).argmax(1) != ya).cpu()
        change = (space.denormalize(iterate) - space.denormalize(xa)).abs().flatten(1)
        seen = result.masked_trace[step - 1].neg().exp().mean().item() if step > 0 else float("nan")
        adaptive[label, step] = SimpleNamespace(x_adv=iterate, hit=hit, p=p, fooled=fooled, seen=seen)
        rows.append({"attack": label, "steps": step, "PGD fooled": fooled.float().mean().item(),
                     "retrieval (reduced RelEx)": hit.mean().item(), "masked p": p.mean().item(),
                     "masked p of the surrogate": seen, "mean change (/255)": 255 * change.mean().item(),
                     "attack seconds": seconds})
pgd_hit, pgd_p = retrieve(natural, main[NAT].x_adv[:n_attack], main[NAT].adv[RELEX_REDUCED][1][:n_attack], ya)
rows.append({"attack": "plain PGD (main table)", "steps": S.pgd_steps,
             "PGD fooled": main[NAT].fooled[:n_attack].float().mean().item(),
             "retrieval (reduced RelEx)": pgd_hit.mean().item(), "masked p": pgd_p.mean().item()})
adaptive_table = pd.DataFrame(rows).set_index(["attack", "steps"])
ch.table(adaptive_table, f"The adaptive attacks on the first {n_attack} main images of the {NAT} (eps "
         f"{main_eps * 255:.0f}/255), at the kept iterates: the share of predictions changed, the reduced RelEx's "
         "retrieval and masked probability at those images, and the masked probability of the attack's own short "
         "RelEx at the iterate before the last step.", missing="plain PGD has no surrogate and was timed in the main "
         "table")

# %%
trace = adaptive_table.reset_index()
trace = trace[trace["attack"] != "plain PGD (main table)"]
fig, ax = plt.subplots(figsize=(7, 3.8))
for i, (label, part) in enumerate(trace.groupby("attack", sort=False)):
    colour = f"C{i}"
    ax.plot(part["steps"], part["masked p"], marker="o", color=colour, label=f"{label}: real RelEx")
    ax.plot(part["steps"], part["masked p of the surrogate"], marker="s", ls="--", color=colour,
            label=f"{label}: its surrogate")
ax.set(xlabel="attack steps", ylabel="masked probability f_c", ylim=(-0.03, 1.03))
ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=9, frameon=False)
fig.tight_layout()
ch.figure(fig, "Masked probability of the clean class during each adaptive attack: for the short RelEx inside the "
          "attack (dashed, what the attack drives down) and for the reduced RelEx at 50 iterations that judges it "
          f"(solid). The real RelEx retrieves {span(trace['retrieval (reduced RelEx)'])} of the images at the kept "
          "iterates" + (", so its retrieval would be a flat line" if trace["retrieval (reduced RelEx)"].nunique() == 1
                        else "") + "; the gap between dashed and solid lines is the surrogate "
          "gap of the full-strength rule.")

# %%
tolerance = max(0.05, 2 / n_attack)
final = {label: adaptive[label, steps].hit.mean().item() for label, (_, _, steps) in configs.items()}
# the lowest retrieval; ties broken by the lowest masked probability
strongest = min(final, key=lambda label: (final[label], adaptive[label, configs[label][2]].p.mean().item()))
steps_strongest = configs[strongest][2]
kept_steps = [s for label, s in adaptive if label == strongest and 0 < s <= steps_strongest // 2]
half = max(kept_steps, default=None)
moved_with_steps = adaptive[strongest, half].hit.mean().item() - final[strongest] if half else float("nan")
unrolled = [f"unrolled RelEx {it}x{c}" for it, c in S.adaptive_unroll]
moved_with_unroll = final[unrolled[-2]] - final[unrolled[-1]] if len(unrolled) > 1 else float("nan")
# the attack's own objective against the method it attacks: if it drove its surrogate's masked probability
# down but not the real RelEx's, the surrogate is too far from the method and a plateau proves nothing
surrogate_gap = adaptive[strongest, steps_strongest].p.mean().item() - adaptive[strongest, steps_strongest].seen
failed = []
if not moved_with_steps <= tolerance:
    failed.append(f"its retrieval still fell by {moved_with_steps:.3f} from {half} to {steps_strongest} steps "
                  f"(tolerance {tolerance:.3f})" if moved_with_steps == moved_with_steps else
                  "it ran too few steps to compare half and all of them")
if not moved_with_unroll <= tolerance:
    failed.append(f"the longer unroll {unrolled[-1]} lowered retrieval by {moved_with_unroll:.3f} against "
                  f"{unrolled[-2]} (tolerance {tolerance:.3f})" if moved_with_unroll == moved_with_unroll else
                  "only one unroll length ran")
if not surrogate_gap <= 0.1:
    failed.append(f"it drove its surrogate's masked probability to {adaptive[strongest, steps_strongest].seen:.3f} "
                  f"while the reduced RelEx kept {adaptive[strongest, steps_strongest].p.mean().item():.3f}: a surrogate "
                  "that far from the method is beaten without RelEx being attacked")
strength_text = (f"The strongest attack is {strongest} (retrieval {final[strongest]:.3f}); its retrieval moved by "
                 f"{moved_with_steps:.3f} from {half} to {steps_strongest} steps and by {moved_with_unroll:.3f} from "
                 f"{unrolled[0]} to {unrolled[-1]} (tolerance {tolerance:.3f}), its surrogate gap is "
                 f"{surrogate_gap:.3f} (at most 0.1): " + ("at full strength." if not failed else
                                                          "below full strength, because " + "; ".join(failed) + "."))

strongest_x = adaptive[strongest, steps_strongest].x_adv
authors_mask = ch.store.compute("adaptive-strongest-authors", lambda a, b: relex(
    natural, strongest_x[a:b], ya[a:b], seeds=adv_seeds[a:b], **FULL), n_attack, shard_size=relex_group,
    progress=False, params={"attack": strongest, "steps": steps_strongest, **FULL}).to(run_device)
authors_hit, authors_p = retrieve(natural, strongest_x, authors_mask, ya)
strongest_fooled = adaptive[strongest, steps_strongest].fooled
display(Markdown(f"{strength_text} {RELEX_FULL} at the strongest attack's images retrieves "
                 f"{fooled_only(authors_hit, strongest_fooled).nanmean():.3f} of those the attack fooled "
                 f"({strongest_fooled.float().mean():.0%} of them), masked probability {authors_p.mean():.3f}."))

# %%
adaptive_setting = (f"first {n_attack} main images, {NAT}, eps {main_eps * 255:.0f}/255, strongest of "
                    f"{', '.join(configs)} ({strongest}, {steps_strongest} steps of {main_eps / 8 * 255:.0f}/255), judged "
                    f"by {RELEX_FULL}; images whose prediction the attack changed")
ledger.test("A2.13", nan="omit", paper=PAPER + "; adaptive attack: this book",
    claim="RelEx still retrieves the clean class of most adversarial examples when the attack targets RelEx "
          "itself (not tested in the paper).",
    measured=f"retrieval hit (1/0) of {RELEX_FULL} at the adaptive attack's images, per image",
    setting=adaptive_setting,
    parts={NAT: fooled_only(authors_hit, strongest_fooled)}, threshold=0.5,
    below_strength="; ".join(failed), weakness_favours="holds",  # a failed attack is no evidence of robustness
    caveats=["Read with A2.10: a mask is 3 x 32 x 32 free multipliers in [0, 1], a far larger change of the input "
             "than an 8/255 perturbation, so a 50-iteration mask search that finds some mask keeping the class is "
             "expected to survive such attacks whatever the image contains."])
display(Markdown(ledger.line("A2.13")))

# %% [markdown]
# ## ImageNet: RelEx at the authors' settings on EfficientNet-Lite0
#
# The paper's figure follows one ImageNet image on a natural ResNet-50. Here: ImageNet validation
# images classified correctly by the offline EfficientNet-Lite0 (in its own input scaling, chapter
# 0), attacked with the paper's smallest budget, eps 0.07 with steps of 0.01 in ImageNet-normalised
# units (4.0/255 and 0.58/255 in pixels). RelEx runs at the **authors' settings** (50 iterations x
# 50 copies, lambda1 = 1e-4 as tuned for this image size) on the PGD images and on the clean
# versions of the first ones; one image costs about 225 s on the book's 2-core CPU, so the `book`
# profile explains 16 PGD images (about an hour of its run; the clean versions of the first 2) and
# the `paper` profile (meant for a GPU) 32 of each. Under 30 images the ledger's rule leaves the
# claim undecided (underpowered): at `book` the per-image numbers, beside the paper's one image,
# are the evidence. SmoothGrad and IG run with `imagenet_baselines` samples and steps (the
# authors: 50 and 100).
#
# **Why the settings matter here.** An earlier version of this chapter ran RelEx on ImageNet at 20
# iterations x 5 copies to save time and showed masks that were nearly black and kept little of the
# class, against the paper's 0.999, without a word. The sweep at the end of this section runs RelEx
# at cheaper settings on the first PGD images to show where between that setting and the authors'
# the mask stops collapsing.

# %%
lite = efficientnet_lite0().to(run_device)
val37 = replace(data.load_imagenet("val-37"), input_space=inputs.EFFICIENTNET_LITE)
chosen = correctly_classified(lite, val37, S.imagenet_images, seed=seed, device=run_device,
                              batch_size=max(4, 2 * S.imagenet_images))
xi, yi = chosen.normalized(run_device), chosen.labels.to(run_device)
n_i, n_clean = len(xi), S.imagenet_clean_images
imagenet_std = sum(inputs.IMAGENET.std) / 3
xi_adv = pgd(lite, xi, yi, 0.07 * imagenet_std, steps=S.pgd_steps, alpha=0.01 * imagenet_std * 40 / S.pgd_steps,
             generator=ch.generator())
with torch.no_grad():
    adv_pred = lite(xi_adv).argmax(1)
it, c = S.imagenet_relex
RELEX_IMAGENET = f"RelEx {it}x{c}"
IMAGENET_SEEDS = {"clean": image_seeds(torch.Generator().manual_seed(seed + 2), n_i),
                  "PGD": image_seeds(torch.Generator().manual_seed(seed + 3), n_i)}
IMAGENET_STATES = {"clean": xi, "PGD": xi_adv}


def imagenet_masks(state: str, n: int, iterations: int, copies: int):
    """RelEx masks of the first n images of one state, one image per stored shard (a killed run loses at most one)."""
    options = dict(iterations=iterations, samples=copies)
    xs = IMAGENET_STATES[state]
    with PassCounter(lite) as clock:
        mask = ch.store.compute(f"imagenet-{state}-{iterations}x{copies}", lambda a, b: relex(
            lite, xs[a:b], yi[a:b], seeds=IMAGENET_SEEDS[state][a:b], **options), n, shard_size=1, progress=False,
            params={**options, "seeds": IMAGENET_SEEDS[state][:n]})
    return mask.to(run_device), clock


masks_imagenet = {"PGD": imagenet_masks("PGD", n_i, it, c), "clean": imagenet_masks("clean", n_clean, it, c)}
sg_n, ig_n = S.imagenet_baselines
lite_baselines = {"gradient": BASELINES["gradient"],
                  "SmoothGrad": get_explainer("smoothgrad", samples=sg_n, noise_level=0.1, output="probability"),
                  "IG": get_explainer("integrated_gradients", steps=ig_n, baseline="zero"),
                  "Grad-CAM": get_explainer("gradcam", layer="_bn1")}  # the head conv + BN (its Swish module is shared)
shown_maps, scores = {}, {}
for state, xs in IMAGENET_STATES.items():
    mask, _ = masks_imagenet[state]
    p_relex = retrieve(lite, xs[:len(mask)], mask, yi[:len(mask)])[1]
    shown_maps[state, RELEX_IMAGENET] = postprocess(mask.mean(1), ["divide_by_percentile"])  # display only
    scores[state] = {RELEX_IMAGENET: torch.cat([p_relex.cpu(), torch.full((n_i - len(mask),), float("nan"))])}
    for name, explain in lite_baselines.items():
        generator = torch.Generator(device=run_device).manual_seed(seed if state == "clean" else ADV_NOISE)
        raw = explain(lite, xs, yi, generator=generator).detach()
        if name == "Grad-CAM":
            retrieval_mask = postprocess(raw[:, 0], ["normalize_minmax"])
        else:
            retrieval_mask = postprocess(raw, ["absolute", "channel_sum", "divide_by_percentile"])
        shown_maps[state, name] = retrieval_mask
        scores[state][name] = retrieve(lite, xs, retrieval_mask, yi)[1]
rows = [{"image": f"{i + 1}: {chosen.classes[yi[i]][:18]}", "state": state,
         "prediction": chosen.classes[adv_pred[i] if state == "PGD" else yi[i]][:18],
         **{name: s[i].item() for name, s in scores[state].items()}} for i in range(n_i) for state in IMAGENET_STATES]
imagenet_table = pd.DataFrame(rows).set_index(["image", "state"])
ch.table(imagenet_table, f"EfficientNet-Lite0 on {n_i} ImageNet validation images: masked probability of the clean "
         f"class, f_c(x * mask), per method, clean and under PGD (eps 0.07 normalised, {S.pgd_steps} steps). "
         f"{RELEX_IMAGENET} is RelEx at the settings the profile names (the authors': 50 x 50); SmoothGrad with "
         f"{sg_n} samples, IG with {ig_n} steps.",
         missing=f"{RELEX_IMAGENET} ran on the clean versions of the first {n_clean} images only (about 225 s per "
                 "image on the book's CPU)")

# %%
PAPER_IMAGENET = {  # the paper's figure: natural ResNet-50, one image, eps 0 and 0.07 (normalised)
    ("the paper (ResNet-50, one image)", "clean"): {"RelEx": 0.999, "SmoothGrad": 0.846, "IG": 0.029},
    ("the paper (ResNet-50, one image)", "PGD"): {"RelEx": 0.999, "SmoothGrad": 0.516}}
means = imagenet_table.groupby(level="state", sort=False)[[RELEX_IMAGENET, *lite_baselines]].mean()
comparison = pd.DataFrame([
    *({"source": f"this book (EfficientNet-Lite0, mean of {int(imagenet_table.loc[(slice(None), state), RELEX_IMAGENET].notna().sum())} "
                 "RelEx / " f"{n_i} images)", "state": state,
       "RelEx": means.loc[state, RELEX_IMAGENET], **{b: means.loc[state, b] for b in lite_baselines}}
      for state in ("clean", "PGD")),
    *({"source": source, "state": state, **values_} for (source, state), values_ in PAPER_IMAGENET.items())
]).set_index(["source", "state"])
ch.table(comparison, f"RelEx ({RELEX_IMAGENET} here) and the baselines beside the paper's figure: masked probability "
         "of the clean class on the clean image (eps 0) and under PGD at eps 0.07 (normalised).",
         missing="not in the paper's figure (it gives IG only at eps 0 and 1, 0.029 and 0.002, and shows no gradient "
                 "or Grad-CAM numbers)")

# %%
count = min(n_clean, 2)
columns = {"image": [], RELEX_IMAGENET + " (scaled)": [], **{b: [] for b in lite_baselines}}
titles = []
for i in range(count):
    for state in ("clean", "PGD"):
        columns["image"].append(inputs.EFFICIENTNET_LITE.denormalize(IMAGENET_STATES[state][i:i + 1])[0])
        columns[RELEX_IMAGENET + " (scaled)"].append(shown_maps[state, RELEX_IMAGENET][i])
        for b in lite_baselines:
            columns[b].append(shown_maps[state, b][i])
        titles.append(f"{state}: {chosen.classes[adv_pred[i] if state == 'PGD' else yi[i]][:14]}")
fig = map_grid({k: torch.stack(v) for k, v in columns.items()}, 2 * count)
fig.set_size_inches(1.6 * 2 * count + 1.2, fig.get_size_inches()[1])  # the long row labels: keeps 10-pt text legible
fig.tight_layout()
for ax, title in zip(fig.axes, titles):
    ax.set_title(title, fontsize=10)
relex_mean = {state: masks_imagenet[state][0].mean().item() for state in ("clean", "PGD")}
ch.figure(fig, f"The first {count} ImageNet images, clean and under PGD, and each method's mask (brighter: kept). "
          f"RelEx's mask ({RELEX_IMAGENET}) has a mean of {relex_mean['clean']:.3f} (clean) and {relex_mean['PGD']:.3f} "
          "(PGD)" + (", so on a [0, 1] scale it would look black" if max(relex_mean.values()) < 0.1 else "")
          + "; it is shown divided by its own 99th percentile. The baselines are shown as they mask, divided by their 99th percentile (Grad-CAM: "
          "min-max).")

# %%
n_sw = S.imagenet_sweep_images
sweep_rows = []
for iterations, copies in [*S.imagenet_sweep, S.imagenet_relex]:
    if (iterations, copies) == tuple(S.imagenet_relex):
        mask, clock = masks_imagenet["PGD"][0][:n_sw], masks_imagenet["PGD"][1]
    else:
        mask, clock = imagenet_masks("PGD", n_sw, iterations, copies)
    hit, p = retrieve(lite, xi_adv[:n_sw], mask, yi[:n_sw])
    for i in range(n_sw):
        sweep_rows.append({"setting": f"{iterations} x {copies}", "image": i + 1, "image-passes": 2 * iterations * copies,
                           "masked p": p[i].item(), "retrieved": bool(hit[i]), "mask mean": mask[i].mean().item()})
imagenet_sweep = pd.DataFrame(sweep_rows).sort_values(["image-passes", "image"], kind="stable")
by_setting = imagenet_sweep.groupby("setting", sort=False)["masked p"].min()
holding = [s for s in by_setting.index if (by_setting.loc[s:] > 0.5).all()]  # from here on, every image above 0.5
stops = holding[0] if holding else None
ch.table(imagenet_sweep.set_index(["setting", "image"]), f"RelEx on the first {n_sw} PGD images at cheaper "
         "settings (iterations x copies) up to the profile's own, in the order of their cost.", digits=3,
         formats={"image-passes": "{:,.0f}"})
fig, axes = plt.subplots(1, 2, figsize=(7, 3.2), sharex=True)
for i, part in imagenet_sweep.groupby("image"):
    axes[0].plot(part["image-passes"], part["masked p"], marker="o", label=f"image {i}")
    axes[1].plot(part["image-passes"], part["mask mean"], marker="o", label=f"image {i}")
for ax, label in zip(axes, ["masked probability f_c", "mask mean"]):
    ax.set_xscale("log")
    ax.set(xlabel="image-passes per image", ylabel=label)
axes[0].set_ylim(-0.03, 1.03)
axes[0].legend(fontsize=9)
fig.tight_layout()
ch.figure(fig, "RelEx on EfficientNet-Lite0 at growing settings (iterations x copies, as image-passes): the masked "
          "probability of the clean class under PGD (left) and the mask's mean (right), per image. "
          + (f"From {stops} on every image keeps the class above 0.5." if stops else
             "No setting of the sweep keeps every image's class above 0.5."))
display(Markdown(
    f"**Where the mask stops collapsing.** At {S.imagenet_sweep[0][0]} x {S.imagenet_sweep[0][1]} the masked "
    f"probability of these images is {span(imagenet_sweep[imagenet_sweep['setting'] == by_setting.index[0]]['masked p'])}"
    f" with a mask mean of {imagenet_sweep[imagenet_sweep['setting'] == by_setting.index[0]]['mask mean'].mean():.4f}; "
    + (f"from {stops} ({imagenet_sweep[imagenet_sweep['setting'] == stops]['image-passes'].iloc[0]:,} image-passes per "
       "image) on, every image keeps its class above 0.5. " if stops else
       "no setting of the sweep keeps every image's class above 0.5. ")
    + "A reduced RelEx on ImageNet is therefore not a cheaper copy of the method: below that point it shows a "
      "collapsed mask, and every RelEx number on ImageNet in this chapter names its setting."))

# %%
ledger.test("A2.15", paper=PAPER,
    claim="On ImageNet, RelEx at the authors' settings keeps the clean class of PGD adversarial examples (the "
          "paper's figure: masked probability 0.999 on a natural ResNet-50).",
    measured=f"f_c(x_adv * mask) of {RELEX_IMAGENET} under PGD at eps 0.07 (normalised), per image, against 0.5",
    setting=f"{n_i} ImageNet validation images correct for EfficientNet-Lite0 (not the paper's ResNet-50), PGD "
            f"{S.pgd_steps} steps",
    parts={"EfficientNet-Lite0": torch.tensor(imagenet_table.xs("PGD", level="state")[RELEX_IMAGENET].to_numpy(),
                                              dtype=torch.float64)},
    threshold=0.5,
    caveats=["By construction: the keep term maximises this very quantity on noisy copies of the image; A2.10 asks "
             "on CIFAR-10 whether a mask does so even for a class the image does not show."])
display(Markdown(ledger.line("A2.15")))

# %% [markdown]
# ## Speed
#
# RelEx costs `2 x copies x iterations` model passes (forward + input gradient) per image. The
# library optimises all images of a call together; the authors' code explains one image at a time
# with the copies of one iteration in one batch. Both are timed here, in the same run, on the first
# `loop_images` images at the authors' settings, next to each other, and against the bound: the
# image-passes times the best measured time of a plain forward + input-gradient pass. The CPU may be
# shared: its load average is given. On a GPU, raise `relex_group`.

# %%
n_loop = S.loop_images
load_before = os.getloadavg()
bound = bound_per_pass(natural, x, rows=512 if profile != "smoke" else 64, repeats=3 if profile != "smoke" else 1)
best_batch = min(bound, key=bound.get)
with PassCounter(natural) as batched_clock:
    batched = relex(natural, x[:n_loop], y[:n_loop], seeds=relex_seeds[:n_loop], **FULL)
with PassCounter(natural) as loop_clock:
    looped = torch.cat([relex(natural, x[i:i + 1], y[i:i + 1], seeds=relex_seeds[i:i + 1],
                              batch_size=S.relex_samples, **FULL) for i in range(n_loop)])
gap = (looped - main[NAT].clean[RELEX_FULL][1][:n_loop]).abs()
per_pass = bound[best_batch]
passes_per_image = 2 * S.relex_samples * S.relex_iterations
rows = [
    {"configuration": f"batched, {2 * S.main_images} images in calls of {relex_group} (main table)",
     "images": 2 * S.main_images, "seconds": relex_clock["main"].seconds, "passes": relex_clock["main"].passes},
    {"configuration": f"batched, {n_loop} images", "images": n_loop, "seconds": batched_clock.seconds,
     "passes": batched_clock.passes},
    {"configuration": f"loop, one image per call (batch {S.relex_samples})", "images": n_loop,
     "seconds": loop_clock.seconds, "passes": loop_clock.passes},
    {"configuration": f"bound: {passes_per_image} passes x {per_pass * 1e3:.3f} ms (batch {best_batch})", "images": 1,
     "seconds": passes_per_image * per_pass, "passes": passes_per_image},
    *({"configuration": f"{method}, {model_name}, {int(t['images'])} maps (clean and PGD)", **t} for (method, model_name), t in
      pd.DataFrame(timings).groupby(["method", "model"], sort=False)[["images", "seconds", "passes"]].sum().iterrows()),
    {"configuration": f"{RELEX_IMAGENET}, EfficientNet-Lite0, {n_i} PGD images", "images": n_i,
     "seconds": masks_imagenet["PGD"][1].seconds, "passes": masks_imagenet["PGD"][1].passes},
]
untimed = [r["configuration"] for r in rows if r["passes"] == 0]  # read back from the result store
speed = pd.DataFrame([r for r in rows if r["passes"] > 0]).set_index("configuration")[["images", "seconds", "passes"]]
speed[["images", "passes"]] = speed[["images", "passes"]].astype(int)
speed["s / image"] = speed["seconds"] / speed["images"]
speed["passes / image"] = speed["passes"] / speed["images"]
speed["x bound"] = (speed["s / image"] / (speed["passes / image"] * per_pass)).where(
    ~speed.index.str.contains("EfficientNet"))
ch.table(speed, f"Seconds and model passes per explained image ({torch.get_num_threads()} torch threads, load average "
         f"{load_before[0]:.1f} before and {os.getloadavg()[0]:.1f} after); 'x bound' divides by the best LeNet pass "
         f"time. The one-at-a-time loop and the batched call give masks that differ by at most {gap.max():.1e}.",
         missing="the bound is a LeNet pass time; it does not apply to EfficientNet-Lite0",
         formats={"images": "{:,.0f}", "passes": "{:,.0f}", "passes / image": "{:,.0f}"})
if untimed:
    display(Markdown("Read from the result store of an earlier, interrupted run, so not timed here: "
                     + "; ".join(untimed) + "."))

# %% [markdown]
# ## What this chapter found
#
# Computed from the claims ledger (also written to `book/claims/02_relex.json`). Reading notes:
#
# - Retrieval is RelEx's own training objective: its mask is optimised so that `x * m` keeps the
#   clean class. A2.9 measures how much of the advantage a plain mask optimisation for the class
#   gives without any of the paper's ingredients, and A2.10 whether a mask can make an image
#   "retrieve" a class the model never saw in it. The claims where an advantage is built in say so
#   in their caveats.
# - The adaptive attack's verdict stands only when the attack was shown to be at full strength, or
#   when it succeeded.
# - The eps sweep, the ablations and the attacks use the reduced RelEx (same iterations, fewer
#   copies); its agreement with the authors' settings is measured above. On ImageNet no reduced
#   RelEx is used for a verdict; the sweep there shows why.

# %%
verdicts = {c.id: c.verdict for c in ledger.claims}
held = [i for i, v in verdicts.items() if v == "holds"]
not_held = [i for i, v in verdicts.items() if v == "does not hold"]
open_ = [i for i, v in verdicts.items() if v == "inconclusive"]
relex_pgd = values(NAT, RELEX_FULL, "retrieval, PGD", True).nanmean().item()
best_pgd = max(values(NAT, b, "retrieval, PGD", True).nanmean().item() for b in BASELINES)
best_clean = max(values(NAT, b, "retrieval, clean").mean().item() for b in BASELINES)
pgd_p_imagenet = imagenet_table.xs("PGD", level="state")[RELEX_IMAGENET]
imagenet_setting = "the authors' settings" if tuple(S.imagenet_relex) == (50, 50) else "reduced from the authors' 50 x 50"
ledger.bottom_line(
    f"On the natural LeNet RelEx at the authors' settings retrieves the clean class of {relex_pgd:.0%} of the PGD "
    f"examples against at most {best_pgd:.0%} for a baseline, but the baselines' masks retrieve at most "
    f"{best_clean:.0%} of the *clean* images without any attack; a plain mask optimisation without noise or L1 "
    f"retrieves {ablation_table.loc['optimisation only', 'retrieval (fooled)']:.0%} of the PGD examples (A2.9 "
    f"{verdicts['A2.9']}), and the same optimisation asked for a wrong class 'retrieves' it for "
    f"{wrong_hit[NAT].mean():.0%} of the natural LeNet's clean images (A2.10 {verdicts['A2.10']}). "
    f"Of {len(verdicts)} claims, {len(held)} hold ({', '.join(held) or 'none'}), {len(not_held)} do not "
    f"({', '.join(not_held) or 'none'}) and {len(open_)} are inconclusive ({', '.join(open_) or 'none'}). "
    f"With independent noise for x and x_adv, RelEx's top-{K} stability is {values(NAT, RELEX_FULL, stability).mean():.2f}"
    f" (same noise: {same_gain[RELEX_FULL]:+.2f} more). On ImageNet, {RELEX_IMAGENET} ({imagenet_setting}) keeps "
    f"a masked probability of {span(pgd_p_imagenet)} on {n_i} PGD images (the paper: 0.999); at "
    f"{S.imagenet_sweep[0][0]} x {S.imagenet_sweep[0][1]} the mask collapses "
    f"({span(imagenet_sweep[imagenet_sweep['setting'] == by_setting.index[0]]['masked p'])}). The book added the "
    "ablations, the wrong-class control, the adaptive attack and the ImageNet settings sweep.")
ledger.save()
display(Markdown(ledger.summary(items=False)))
display(ledger.cards())
rerun_box(run, {**MODELS, "EfficientNet-Lite0": lite})
