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
# # 1. Fragile explanations
#
# The five papers start from the same observation: a saliency map can change a lot while the
# input, and the prediction, barely change. This chapter reproduces the two findings they cite on
# the book's own CIFAR-10 models:
#
# - **Ghorbani et al.** {cite}`ghorbani2019fragile`: small sign-gradient perturbations (eps = 8/255),
#   accepted only while the predicted label stays the same, move the top of the map (top-k
#   attack) or its centre of mass, far more than random noise of the same size.
# - **Dombrowski et al.** {cite}`dombrowski2019explanations`: the map of one image can be pulled
#   towards the map of *another* image, with a Softplus surrogate whose beta is annealed from 10
#   to 100.
#
# It then asks what the two remedies the papers mention change: replacing ReLU by Softplus(beta)
# (Dombrowski's beta-smoothing) and adversarial training.

# %% tags=["parameters"]
profile = "smoke"  # smoke | book | paper
device = "auto"  # auto | cpu | cuda
seed = 0
attack_images = None  # correctly classified test images attacked (None: eval_images / 5 of the profile)
mc_attack_images = None  # images for the costlier SmoothGrad / IG attacks (None: attack_images / 4)
attack_steps = None  # Ghorbani iterations (None: from the profile)
mc_samples = None  # SmoothGrad samples for the maps that are *measured* (None: from the profile)
ig_steps = None  # IG steps for the maps that are measured (None: from the profile)
attack_samples = 4  # SmoothGrad samples / IG steps inside the attack's gradient (cheaper surrogate)
eps = 8 / 255  # L-inf budget in pixel units
surrogate_beta = 10.0  # Softplus beta of the surrogate used to attack ReLU models
manipulation_steps = None  # Dombrowski Adam steps (None: 5 x attack_steps)
manipulation_pairs = 8  # (image, target image) pairs for the Dombrowski manipulation
softplus_betas = [3.0, 10.0]  # beta-smoothed copies of the natural model compared in the last section

# %%
import time

import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import Markdown, display

from reliable_saliency import data, maps
from reliable_saliency.attacks import dombrowski_attack, ghorbani_attack
from reliable_saliency.chapter.figures import map_grid, top_pixels, use_book_style
from reliable_saliency.chapter.rerun import rerun_box
from reliable_saliency.chapter.selection import correctly_classified
from reliable_saliency.claims import Ledger
from reliable_saliency.core import experiment
from reliable_saliency.explainers import get_explainer
from reliable_saliency.maps.postprocess import postprocess
from reliable_saliency.models import to_softplus
from reliable_saliency.training import evaluate, zoo

settings = experiment.resolve_profile(profile, attack_steps=attack_steps, mc_samples=mc_samples, ig_steps=ig_steps)
n_attacked = attack_images or max(8, settings.eval_images // 5)
n_mc_attacked = mc_attack_images or max(4, n_attacked // 4)
n_manipulation_steps = manipulation_steps or 5 * settings.attack_steps
run_device = experiment.pick_device(device)
experiment.seed_everything(seed)
use_book_style()
cifar_test = data.load_cifar10("test")
run = experiment.start_run("01_fragile_explanations", settings, run_device, cifar_test.source, seed)
ledger = Ledger(run)
display(Markdown(f"**Run:** {run.line()}"))

natural = zoo.load_model("lenet_natural", settings.name, device=run_device, progress=False)
robust = zoo.load_model("lenet_fgsm", settings.name, device=run_device, progress=False)
smoothed = {beta: to_softplus(natural, beta) for beta in softplus_betas}

# One set of images for every model compared in this chapter: correctly classified by all of them.
images = correctly_classified([natural, robust, *smoothed.values()], cifar_test, n_attacked, seed=seed,
                              device=run_device)
x = images.normalized(run_device)
labels = images.labels.to(run_device)
k = max(1, round(0.02 * x.shape[-1] * x.shape[-2]))  # 2% of the pixels, as 1000 of 224 x 224
print(f"{len(images)} test images classified correctly by all {2 + len(smoothed)} models; top-k with k = {k} of "
      f"{x.shape[-1] * x.shape[-2]} pixels; eps = {eps * 255:.0f}/255; {settings.attack_steps} attack steps")

# %% [markdown]
# ## Ghorbani's attacks on three explainers
#
# Maps are the channel sum of the absolute explainer output, normalised to sum 1. The attack
# differentiates a cheaper version of the explainer (`attack_samples` noise samples or IG steps)
# through a Softplus(beta = `surrogate_beta`) copy of the ReLU network; every *reported* map is
# recomputed on the real network with the full explainer (`mc_samples` samples, `ig_steps` steps).
# The *random* objective takes sign steps of Gaussian noise with the same budget: it is the
# baseline every attack must beat. The perturbation actually used is reported beside each attack.

# %%
def explainer(name: str, samples: int):
    options = {"gradient": {}, "smoothgrad": {"samples": samples}, "integrated_gradients": {"steps": samples}}[name]
    return get_explainer(name, **options)


measured = {"gradient": explainer("gradient", 1), "smoothgrad": explainer("smoothgrad", settings.mc_samples),
            "integrated_gradients": explainer("integrated_gradients", settings.ig_steps)}
cheap = {name: explainer(name, attack_samples) for name in measured}


def saliency(explain, model, inputs, target) -> torch.Tensor:
    raw = explain(model, inputs, target, generator=torch.Generator(device=run_device).manual_seed(seed))
    return postprocess(raw.detach(), ["absolute", "channel_sum", "normalize_sum"])


def attack(model, name, objective, xs, explain, beta):
    """Ghorbani attack; returns the real model's measured map at x_adv and the pixel change."""
    result = ghorbani_attack(model, xs, explain, objective=objective, eps=eps, alpha=0.5 / 255,
                             steps=settings.attack_steps, k=k, surrogate_beta=beta,
                             generator=torch.Generator(device=run_device).manual_seed(seed))
    change = (model.input_space.denormalize(result.x_adv) - model.input_space.denormalize(xs)).abs()
    return result, change


plan = {  # explainer -> (objectives, images): the Monte-Carlo explainers cost attack_samples x more per step
    "gradient": (["random", "topk", "mass_center"], n_attacked),
    "smoothgrad": (["random", "topk"], n_mc_attacked),
    "integrated_gradients": (["random", "topk"], n_mc_attacked),
}
rows, examples, per_image = [], {}, {}
for name, (objectives, count) in plan.items():
    xs, ys = x[:count], labels[:count]
    clean_map = saliency(measured[name], natural, xs, ys)
    for objective in objectives:
        started = time.perf_counter()
        result, change = attack(natural, name, objective, xs, cheap[name], surrogate_beta)
        adv_map = saliency(measured[name], natural, result.x_adv, ys)
        examples[name, objective] = (result.x_adv, clean_map, adv_map)
        per_image[name, objective] = {"topk": maps.topk_intersection(clean_map, adv_map, k),
                                      "shift": maps.center_of_mass_shift(clean_map, adv_map)}
        rows.append({"explainer": name, "objective": objective,
                     f"top-{k} intersection": per_image[name, objective]["topk"].mean().item(),
                     "Spearman": maps.spearman(clean_map, adv_map).mean().item(),
                     "centre shift (px)": per_image[name, objective]["shift"].mean().item(),
                     "label kept": result.label_kept.float().mean().item(),
                     "max change (/255)": 255 * change.amax().item(),
                     "mean change (/255)": 255 * change.mean().item(),
                     "images": len(xs), "seconds": time.perf_counter() - started})
ghorbani_table = pd.DataFrame(rows).set_index(["explainer", "objective"])
ghorbani_table.style.format(precision=3)

# %% [markdown]
# The claim holds on a model when the targeted objectives leave less of the map in place than
# random noise with the same budget, with every label kept: the effect per image is the top-k
# intersection after random noise minus after the attack (a centre shift for the mass-centre
# attack), and the verdict needs its whole 95% bootstrap interval above zero.

# %%
attack_setting = (f"eps {eps * 255:.0f}/255, {settings.attack_steps} steps of 0.5/255, labels kept "
                  f"{ghorbani_table['label kept'].min():.0%}, surrogate Softplus beta {surrogate_beta:g}, "
                  f"{attack_samples} samples/steps inside the attack")
ledger.test(
    "F1.1", paper="Ghorbani et al. 2019",
    claim="The top-k attack removes more of the map's top pixels than random noise of the same budget.",
    measured=f"top-{k} intersection after random noise minus after the top-k attack, per image",
    setting=attack_setting,
    parts={f"{name} ({plan[name][1]} images)": (per_image[name, "random"]["topk"], per_image[name, "topk"]["topk"])
           for name in plan})
ledger.test(
    "F1.2", paper="Ghorbani et al. 2019",
    claim="The mass-centre attack moves the map's centre further than random noise of the same budget.",
    measured="centre-of-mass shift (pixels) after the attack minus after random noise, per image",
    setting=attack_setting,
    parts={f"gradient ({n_attacked} images)": (per_image["gradient", "mass_center"]["shift"],
                                               per_image["gradient", "random"]["shift"])})
ledger.table()

# %%
def show_attack(name: str, objective: str, count: int):
    x_adv, clean_map, adv_map = examples[name, objective]
    space = natural.input_space
    fig = map_grid({"image": space.denormalize(x[:count]), "clean map": clean_map[:count],
                    f"{objective} attack": space.denormalize(x_adv[:count]), "attacked map": adv_map[:count]},
                   count, title=f"{name}: {objective} attack, eps {eps * 255:.0f}/255, labels kept "
                                f"(outlined: the clean map's top-{k} pixels)",
                   marks={"clean map": top_pixels(clean_map[:count], k), "attacked map": top_pixels(clean_map[:count], k)})
    plt.show()


show_attack("gradient", "topk", settings.figure_images)
show_attack("gradient", "mass_center", settings.figure_images)
show_attack("smoothgrad", "topk", min(settings.figure_images, n_mc_attacked))

# %% [markdown]
# ## Dombrowski's targeted manipulation
#
# Each image's gradient map is pulled towards the gradient map of another test image, with Adam
# on the input (lr 2e-4 in normalised units), the Softplus beta annealed from 10 to 100, and the
# map term's weight rescaled from the paper's 224 x 224 maps to 32 x 32 (both terms use means over
# pixels / classes, as the reference code does; the class term is *not* rescaled for 10 classes,
# and the chapter runs `manipulation_steps` steps, fewer than the paper's 1,500). There is no eps
# ball: the attack is judged by how close the map gets to the target and how little the image and
# the output change.

# %%
pairs = min(manipulation_pairs, len(x) // 2)
source, target_images = x[:pairs], x[pairs:2 * pairs]
gradient_explainer = get_explainer("gradient")
target_map = saliency(gradient_explainer, natural, target_images, labels[pairs:2 * pairs])
pixels = x.shape[-1] * x.shape[-2]
started = time.perf_counter()
manipulated = dombrowski_attack(natural, source, target_map, gradient_explainer, steps=n_manipulation_steps,
                                map_weight=1e11 * (pixels / 224 ** 2) ** 2)
seconds = time.perf_counter() - started
before = saliency(gradient_explainer, natural, source, labels[:pairs])
after = saliency(gradient_explainer, natural, manipulated.x_adv, labels[:pairs])
change = (natural.input_space.denormalize(manipulated.x_adv) - natural.input_space.denormalize(source)).abs()
comparisons = {"to target, before": (before, target_map), "to target, after": (after, target_map),
               "to own clean map, after": (after, before)}
manipulation_table = pd.DataFrame({
    column: {"MSE x 1e6": 1e6 * maps.mse(a, b).mean().item(),
             "SSIM": maps.ssim(a, b, data_range=None).mean().item(),
             "Pearson": maps.pearson(a, b).mean().item()}
    for column, (a, b) in comparisons.items()})
print(f"[{settings.name} profile] {pairs} pairs, {n_manipulation_steps} Adam steps, {seconds:.0f} s; labels kept "
      f"{manipulated.label_kept.float().mean():.0%}; input change: max {255 * change.max():.1f}/255, "
      f"mean {255 * change.mean():.2f}/255 per pixel")
manipulation_table.style.format(precision=3)

# %%
pearson_target_before = maps.pearson(before, target_map)
pearson_target_after = maps.pearson(after, target_map)
pearson_own_after = maps.pearson(after, before)
manipulation_setting = (f"{pairs} pairs, {n_manipulation_steps} Adam steps (paper: 1,500), labels kept "
                        f"{manipulated.label_kept.float().mean():.0%}, max change {255 * change.max():.1f}/255")
ledger.test(
    "F1.3", paper="Dombrowski et al. 2019",
    claim="The manipulation moves the map towards another image's map.",
    measured="Pearson correlation with the target map, after minus before, per pair",
    setting=manipulation_setting, parts={"gradient": (pearson_target_after, pearson_target_before)})
closer = ledger.test(
    "F1.4", paper="Dombrowski et al. 2019",
    claim="The manipulated map resembles the target map more than its own clean map.",
    measured="Pearson with the target map minus Pearson with the own clean map, after, per pair",
    setting=manipulation_setting, parts={"gradient": (pearson_target_after, pearson_own_after)})
if closer.verdict != "holds" and n_manipulation_steps < 1500:
    # a manipulation below the paper's settings that fails is no evidence against the paper
    ledger.claims.remove(closer)
    part = closer.evidence["parts"][0]
    ledger.record(
        "F1.4", paper="Dombrowski et al. 2019", claim=closer.claim, verdict="inconclusive",
        measured=closer.evidence["measured"], setting=manipulation_setting,
        reason=f"not reached with {n_manipulation_steps} of the paper's 1,500 steps and unscaled class term: "
               "the attack was not at full strength",
        numbers={"effect": part["mean"], "CI low": part["low"], "CI high": part["high"], "pairs": part["n"]})
ledger.table()

# %%
count = min(pairs, settings.figure_images)
space = natural.input_space
map_grid({"image": space.denormalize(source[:count]), "its map": before[:count], "target map": target_map[:count],
          "manipulated": space.denormalize(manipulated.x_adv[:count]), "its map after": after[:count]},
         count, title=f"Dombrowski manipulation, {n_manipulation_steps} steps")
plt.show()

# %% [markdown]
# ## Do Softplus smoothing and adversarial training make maps less fragile?
#
# The same top-k attack and the same random baseline on gradient maps, on the same images,
# against: the natural ReLU model (through the Softplus surrogate), copies of it with every ReLU
# replaced by Softplus(beta) for small beta (attacked and judged directly: they *are* smooth
# models, with their own accuracy), and the FGSM adversarially trained model (through the
# surrogate). A defence makes maps less fragile when the attack's damage beyond its own random
# baseline (top-k intersection after random noise minus after the attack) is smaller than on the
# natural model, image by image.

# %%
accuracy_images = cifar_test.sample(1000, seed=seed + 1)
candidates = {"natural (ReLU)": (natural, surrogate_beta)}
candidates.update({f"natural, Softplus beta={beta:g}": (model, None) for beta, model in smoothed.items()})
candidates["FGSM adversarially trained (ReLU)"] = (robust, surrogate_beta)
damage, rows = {}, []
for label, (model, beta) in candidates.items():
    if model is natural:  # attacked above with the same settings on the same images
        after_attack = {objective: per_image["gradient", objective]["topk"] for objective in ["random", "topk"]}
        change = ghorbani_table.loc[("gradient", "topk"), "max change (/255)"] / 255
    else:
        clean_map = saliency(gradient_explainer, model, x, labels)
        after_attack = {}
        for objective in ["random", "topk"]:
            result, change = attack(model, "gradient", objective, x, gradient_explainer, beta)
            adv_map = saliency(gradient_explainer, model, result.x_adv, labels)
            after_attack[objective] = maps.topk_intersection(clean_map, adv_map, k)
        change = change.amax().item()
    damage[label] = after_attack["random"] - after_attack["topk"]
    rows.append({"model": label, "test accuracy (1,000)": evaluate(model, accuracy_images, device=run_device),
                 f"top-{k} after random": after_attack["random"].mean().item(),
                 f"top-{k} after topk": after_attack["topk"].mean().item(),
                 "damage beyond random": damage[label].mean().item(),
                 "max change (/255)": 255 * change, "images": len(x)})
defence_table = pd.DataFrame(rows).set_index("model")
defence_table.style.format(precision=3)

# %%
ax = defence_table[[f"top-{k} after random", f"top-{k} after topk"]].plot.barh(figsize=(8, 3.5))
ax.set_xlabel(f"top-{k} intersection with the clean gradient map (higher = less fragile)")
ax.set_xlim(0, 1)
plt.tight_layout()
plt.show()

defence_setting = f"{len(x)} images correct for every model, eps {eps * 255:.0f}/255, {settings.attack_steps} steps"
natural_damage = damage["natural (ReLU)"]
ledger.test(
    "F1.5", paper="Dombrowski et al. 2019 (beta-smoothing)",
    claim="Replacing ReLU by Softplus with a small beta makes gradient maps less fragile.",
    measured="attack damage beyond random noise, natural minus smoothed, per image (same images)",
    setting=defence_setting + "; accuracy: " + ", ".join(
        f"{label} {defence_table.loc[label, 'test accuracy (1,000)']:.1%}" for label in candidates),
    parts={label: (natural_damage, damage[label]) for label in candidates if "Softplus" in label})
ledger.test(
    "F1.6", paper="paper E's baselines (adversarial training)",
    claim="Adversarial training (FGSM with random start) makes gradient maps less fragile.",
    measured="attack damage beyond random noise, natural minus adversarially trained, per image (same images)",
    setting=defence_setting, parts={"lenet_fgsm": (natural_damage, damage["FGSM adversarially trained (ReLU)"])})
ledger.table()

# %% [markdown]
# ## What this chapter found
#
# Computed from the claims ledger (also written to `book/claims/01_fragile_explanations.json`).
# Two caveats when reading it:
#
# - Maps are compared with *their own* clean map, so a model whose maps are diffuse can score a
#   high top-k intersection because its top pixels are stable noise; the damage is therefore
#   measured beyond each model's own random baseline.
# - The Softplus copies change the model (their accuracy is in the table), not only its
#   explanations; the comparison is between different functions, as in Dombrowski et al.

# %%
ledger.save()
display(Markdown(ledger.summary()))
rerun_box(run, {"lenet_natural": natural, "lenet_fgsm": robust})
