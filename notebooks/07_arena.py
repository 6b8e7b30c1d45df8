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
# # 7. The arena: every method against every attack, on the same footing
#
# Each of the five papers measures its method its own way. RelEx {cite}`lim2021relex` asks whether
# the masked adversarial image keeps its class; DANCE {cite}`lu2021dance` reports fidelity and a
# sensitivity under the attacks of Ghorbani et al. {cite}`ghorbani2019fragile`; Valle et al.
# {cite}`valle2020assessing` measure the adversarial budget a map guides; the mask search of Thakur
# and Fischmeister {cite}`thakur2020generalizable` is judged by insertion, deletion and boxes on a
# few images; l2 + cosd {cite}`joo2023towards` by how similar a model's gradient maps stay under
# random noise and a frame attack. The chapters reproduced each protocol on its own. Read side by
# side they disagree on what "robust" and "faithful" mean, and the first referee reading of this
# book showed how easily a protocol flatters its own method: a map that nobody attacked, a measure
# the method optimises, a sensitivity that any smoother wins.
#
# This chapter puts every method under **one protocol**: the same CIFAR-10 test images, every
# attack aimed at the map it is scored on, random noise of the same budget beside every stability
# number, and three **controls** ranked on the same axes as the methods: a random map (knows
# neither the image nor the model), an edge map (the Sobel magnitude of the image: knows the image
# only) and a plain blur of the gradient's magnitude (a smoother with nothing learned). A method
# gets credit only for what it does beyond random noise and beyond the controls.
#
# - **Methods**: the gradient, SmoothGrad {cite}`smilkov2017smoothgrad`, Integrated Gradients
#   {cite}`sundararajan2017axiomatic`, Grad-CAM {cite}`selvaraju2017gradcam`, LRP-epsilon
#   {cite}`bach2015pixel`, RISE {cite}`petsiuk2018rise`, RelEx (paper A), DANCE around the
#   gradient (paper B) and the mask search (paper D); paper C's measure is one of the yardsticks.
# - **Models**: the book's CIFAR-10 LeNets (chapters 0 and 6): natural, FGSM-trained, Softplus
#   with cross-entropy, and the Softplus models trained with paper E's l2 + cosd, with cosd only
#   and with the Hessian regulariser (the run box and the table below say which ones a run uses).
# - **Perturbations**: random sign noise (the baseline of every row), PGD
#   {cite}`madry2018towards` on the prediction, Ghorbani's top-k, mass-centre and targeted attacks,
#   Dombrowski's manipulation {cite}`dombrowski2019explanations`, paper E's frame attack, and the
#   attack on paper A's retrieval that chapter 2 wrote.
#
# It ends with the five papers' central claims re-tested under the same rule, and a short guide:
# which method for which need, and what it costs.

# %% tags=["parameters"]
profile: str = "smoke"  # smoke | book | paper
device: str = "auto"  # "auto", "cpu", "cuda" or "cuda:N"
seed: int = 0
images: int | None = None  # [1, 10000] CIFAR-10 test images, each classified correctly by every model of the run
strength_images: int | None = None  # [0, 10000] first images that also get the strength runs (twice the steps, a restart)
models: list[str] | None = None  # the model axis, from natural, fgsm, softplus, l2cosd, cosd, hessian
train_models: bool = False  # train a model missing from the cache (the paper profile's models are not shipped)
rank_rounds: int = 1000  # [10, ...] bootstrap rounds of the rank intervals

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from reliable_saliency.arena import (ATTACKS, CONTROL_NAMES, EXPLAINERS, PROFILES, arena_settings,
                                     controls_at_or_above, estimate, estimate_text, rank_table, run_arena,
                                     strength_table)
from reliable_saliency.arena.harness import load_models
from reliable_saliency.arena.ranking import PRIMARY
from reliable_saliency.arena.readout import (NAMES, control_sentences, fooled, leaders, oriented, pooled, rank_cells,
                                             retrieval_rows, sigma_scores)
from reliable_saliency.arena.storekey import store_key
from reliable_saliency.arena.strength import RULES, full_strength, guard, weak_sentences
from reliable_saliency.chapter import kit
from reliable_saliency.chapter.rerun import rerun_box

# The chapter's sizes are the arena's profiles (reliable_saliency.arena.settings.PROFILES): `book` is 200 images,
# every cell filled, in about 3 hours of the 2-core CPU (the estimate below); `smoke` two images and two models.
SIZES = {name: dict(images=p.images, strength_images=p.strength_images, models=list(p.models))
         for name, p in PROFILES.items()}
ch = kit.setup("07_arena", globals(), SIZES, within={"strength_images": "images"})
S, run_device, run, ledger = ch.S, ch.device, ch.run, ch.ledger
settings = arena_settings(profile, images=S.images, strength_images=S.strength_images, models=tuple(S.models),
                          seed=seed)
MODELS = list(settings.models)
N = NAMES
STABILITY = ("topk_intersection", "spearman", "ssim")
PAPER_A, PAPER_B, PAPER_C = "RelEx (Lim et al. 2021)", "DANCE (Lu et al. 2021)", "Valle et al. 2020 (paper C)"
PAPER_D, PAPER_E = "Thakur & Fischmeister 2020 (paper D)", "Joo et al. 2023 (paper E)"


def names(items) -> str:
    """Arena names as a reader reads them, joined with commas."""
    return ", ".join(N.get(str(i), str(i)) for i in items)


def first(count: int) -> str:
    """'the first image' or 'the first 12 images'."""
    return "the first image" if count == 1 else f"the first {count} images"


# %% [markdown]
# ## The protocol
#
# - **Aimed, not transferred.** Every attack differentiates the map it is scored on: directly where
#   the map has a gradient, or through a stated stand-in where it does not: a Softplus copy of a
#   ReLU model (a ReLU network has no second derivative), gradient x input for LRP-epsilon (what
#   its epsilon rule equals on a ReLU network), a shorter run of RISE, the mask search and RelEx
#   with the same random draws, and DANCE with its decoys held fixed in the backward pass and
#   solved again along the way (BPDA, {cite}`athalye2018obfuscated`). An attack aimed at one
#   method is never scored on another. The random map does not depend on the image, so no attack
#   can move it: it is measured at the random noise.
# - **Beyond random.** Every stability number is the measure under the attack minus the same
#   measure under random sign noise of the same budget (for Dombrowski's unbounded attack, noise of
#   the attack's own largest change per image). Stability is read as the top-k intersection of the
#   map's most relevant pixels (Ghorbani's k, scaled to 32 x 32), the Spearman correlation of the
#   two maps and their SSIM (paper E's 7 x 7 window); each attack also has its own goal (the
#   centre of mass, the mass in a target region, the correlation with another image's map, the
#   distance to a frame, the retrieval).
# - **Ranks with intervals.** Per model and measure the explainers are ranked by their mean over
#   the images. The images are resampled with replacement (the same resample for every explainer:
#   they saw the same images) and each resample is ranked again; a rank's interval holds the central
#   95% of its ranks, and explainers whose intervals overlap are tied. A table cell reads
#   "mean #rank (interval)".
# - **Full strength first.** An attack that did not reach its goal is no evidence that a map
#   resists it, so every attack's strength is read before any ranking (the rules below); where a
#   claim rests on an attack not shown at full strength, the verdict that the attack's weakness
#   could produce reads inconclusive, with the reason.
# - **Claims under the same rule.** Each of the papers' claims goes through the book's claims
#   ledger with its quantifier (for every model, for every baseline, ...), against the right null:
#   random noise of the same budget, the controls, or a margin the paper's own wording sets.

# %%
display(Markdown(
    f"**Full strength**, fixed before the run: on {first(settings.strength_images)}, twice the steps and "
    f"a random restart each strengthen the attack by at most {RULES['more_effort']:.0%} of its effect beyond random "
    f"noise (or {RULES['floor']:.0%} of the measure's range when that effect is smaller); the second half of its steps "
    f"added at most {RULES['plateau']:.0%} of its effect; a stand-in map ranks the pixels as the scored map does "
    f"(Spearman at least {RULES['surrogate']:g}); and no image was left without an attack gradient."))

# %% [markdown]
# ## The settings
#
# The papers' settings were made for 224 x 224 ImageNet images and a GPU; the arena makes every map
# of every method many times per image and model (clean, under each perturbation, for the wrong
# class, on a randomised model, in the strength runs), so the long methods run short at the `book`
# profile. The table puts this run's settings beside the `paper` profile (the papers'
# own sizes where they state them) and says where each comes from.

# %%
PAPER_SETTINGS = arena_settings("paper")
SETTING_ROWS = [
    ("images", "CIFAR-10 test images", "the papers: 1 to 5,000 ImageNet images"),
    ("strength_images", "images with strength runs", "this book's"),
    ("eps", "budget of every eps-ball attack and of the noise", "Ghorbani et al., Madry et al.: 8/255"),
    ("smoothgrad_samples", "SmoothGrad samples", "paper A's baseline: 50"),
    ("ig_steps", "Integrated Gradients steps", "paper A's baseline: 100"),
    ("rise_masks", "RISE masks", "RISE on ImageNet: 4,000"),
    (("relex_iterations", "relex_samples"), "RelEx iterations x noisy copies", "paper A's code: 50 x 50"),
    (("dance_stride", "dance_steps"), "DANCE patch stride, decoy solver steps",
     "paper B: 3 x 3 patches; stride and solver not stated"),
    ("mask_search_passes", "mask search passes", "paper D's code: 5,000"),
    ("pgd_steps", "PGD steps", "paper A: 40"),
    ("ghorbani_steps", "top-k, mass-centre, targeted: steps", "Ghorbani et al.: 300 (paper A: 100)"),
    ("dombrowski_steps", "Dombrowski's steps", "Dombrowski et al.: 1,500"),
    ("frame_steps", "frame attack steps", "paper E: 100"),
    ("retrieval_steps", "attack on retrieval: steps", "chapter 2 (paper A never attacks RelEx)"),
    ("rise_attack_masks", "RISE's stand-in: masks", "this book's (no paper attacks RISE)"),
    ("mask_search_attack_passes", "mask search's stand-in: passes", "this book's (no paper attacks it)"),
    (("relex_attack_iterations", "relex_attack_samples"), "RelEx's stand-in: iterations x copies", "this book's"),
    ("dance_recompute_every", "DANCE under attack: decoys solved again every", "this book's (steps)"),
    ("sigma_permutations", "paper C's shuffles per image", "paper C: 10"),
    ("auc_steps", "deletion and insertion steps", "paper A: 224 pixels per step on 224 x 224"),
    ("shapes_images", "synthetic shapes images (localisation)", "this book's"),
]


def setting_text(s, field) -> str:
    if isinstance(field, tuple):
        return " x ".join(setting_text(s, f) for f in field) if field[0] != "dance_stride" else \
            ", ".join(setting_text(s, f) for f in field)
    value = getattr(s, field)
    if field == "eps":
        return f"{value * 255:.0f}/255"
    if field == "auc_steps" and value is None:
        return "32 (one row per step)"
    return f"{value:,}"


settings_table = pd.DataFrame([{"setting": what, "this run": setting_text(settings, field),
                                "paper profile": setting_text(PAPER_SETTINGS, field), "where it comes from": source}
                               for field, what, source in SETTING_ROWS]).set_index("setting")
ch.table(settings_table, f"The arena's settings at the `{settings.profile}` profile beside the `paper` profile, and "
                         "where each value comes from (the papers' own values where they state them).")

# %% [markdown]
# ## The run
#
# The library's arena harness (`run_arena`) fills one long table: one row per image, explainer,
# model, perturbation and measure.
# Every explainer x model pair is one step of the chapter's result store, split into shards of
# images: a run that is killed resumes from its finished shards, and `--workers N` shares the
# shards out over processes or GPUs (`./reliable-saliency run 07_arena --profile book --workers 2`).
# The table is stored under a key of the arena's code (a hash of the library modules it imports),
# not of this page's text, so rewording the chapter reads the stored table back instead of
# recomputing it; the settings, the images and each model's weights are in every step's own key.
# The estimate comes first, from the passes each part makes and the measured cost of a pass on the
# book's 2-core CPU.

# %%
cost_estimate = estimate(settings)
display(Markdown("\n".join(f"- {line}" for line in estimate_text(cost_estimate, settings).splitlines())))
started = time.perf_counter()
T = run_arena(settings, root=ch.store.folder.parent, key=store_key(), device=str(run_device),
              train_models=train_models)
arena_minutes = (time.perf_counter() - started) / 60
n_images = int(T.loc[T.model != "shapes_cnn", "image"].nunique())
n_shapes = int(T.loc[T.model == "shapes_cnn", "image"].nunique())
display(Markdown(
    f"The long table: {len(T):,} rows; {n_images} CIFAR-10 test images x {T.explainer.nunique()} explainers x "
    f"{len(MODELS)} models ({names(MODELS)}) x {T.perturbation.nunique() - 1} perturbations, plus {n_shapes} synthetic "
    f"shapes images for localisation. This run spent {arena_minutes:.1f} minutes on it (shards already in the store "
    "are read back, not recomputed)."))

# %% [markdown]
# ## How strong were the attacks?
#
# Before any ranking: for every attack aimed at every explainer on every model, the strength runs
# on the first images (twice the steps; a fresh random start where the attack has one), the share
# of its effect the second half of its steps added, how closely a stand-in map follows the scored
# one, the labels kept and the change per pixel. Each attack is read on the measure it aims at:
# the top-k intersection for the top-k attack and for PGD, the centre shift, the mass in the
# target region, the correlation with the target map, the distance to the frame and the retrieval.
# The first table counts the models on which each cell is at full strength; the second has the
# numbers behind it (the extra effort as a multiple of the tolerance: above 1 means the attack was
# still getting stronger).

# %%
checked = full_strength(strength_table(T))
attacks_checked = checked[checked.perturbation.astype(str).isin(ATTACKS)].copy()


counts = attacks_checked.assign(full=attacks_checked.status == "full",
                                judged=attacks_checked.status.isin(["full", "weak"]),
                                untouched=attacks_checked.status == "not attacked").groupby(
    ["explainer", "perturbation"], observed=True)[["full", "judged", "untouched"]].sum()
status_grid = pd.Series([f"{int(r.full)} of {int(r.judged)}" if r.judged else
                         ("not attacked" if r.untouched else "refused") for r in counts.itertuples()], index=counts.index)
status_grid = status_grid.unstack("perturbation").reindex(index=list(EXPLAINERS), columns=list(ATTACKS))
ch.table(status_grid.rename(index=N, columns=N).rename_axis(index="explainer", columns=None),
         f"How many of the models it explains each attack (column) reached full strength on, aimed at each explainer "
         f"(row), judged on {first(settings.strength_images)}; 'not attacked': the random map does not depend on the "
         "image.")

judged = attacks_checked[attacks_checked.status.isin(["full", "weak"])]
judged = judged.assign(doubled=judged.doubled_change / judged.tolerance,
                       restart=judged.restart_change / judged.tolerance)
detail = judged.groupby(["explainer", "perturbation"], observed=True).agg(
    doubled=("doubled", "max"), restart=("restart", "max"), plateau=("plateau", "max"),
    stand_in=("surrogate_spearman", "min"), kept=("label_kept", "mean"), change_mean=("delta_mean", "mean"),
    change_max=("delta_max", "max"))
detail[["change_mean", "change_max"]] *= 255
detail = detail.reindex([(e, p) for e in EXPLAINERS for p in ATTACKS if (e, p) in detail.index])
detail.index = pd.MultiIndex.from_tuples([(N[e], N[p]) for e, p in detail.index], names=["explainer", "attack"])
detail.columns = ["x2 steps / tolerance", "restart / tolerance", "second half (share)", "stand-in Spearman",
                  "labels kept", "change mean (/255)", "change max (/255)"]
ch.table(detail, "The strength numbers per explainer and attack, the worst over the models (largest extra effort and "
                 "second-half share, smallest stand-in Spearman), the share of labels kept (for PGD, which aims at the "
                 "label, the share it failed to change) and the change per pixel (mean, and the largest anywhere), in "
                 "1/255.", digits=2,
         formats={c: "{:.2f}" for c in ("x2 steps / tolerance", "restart / tolerance", "second half (share)")},
         missing="not applicable: no random start (Dombrowski, frame), no step trace (PGD), no stand-in (the attack "
                 "differentiates the scored map itself), or no strength runs at this profile")
weak_lines = weak_sentences(attacks_checked, N)
n_judged, n_full = len(judged), int((judged.status == "full").sum())
display(Markdown(
    f"**{n_full} of {n_judged}** attack cells (explainer x model x attack) are shown at full strength. "
    + ("Every other cell is listed here; its stability numbers are not evidence of robustness:\n\n" + "\n".join(weak_lines)
       if weak_lines else "Every attacked cell is at full strength.")))

# %% [markdown]
# ## Stability beyond random noise
#
# Per model, each explainer's stability under the attacks aimed at it, beyond the same measure
# under random noise of the same budget, averaged over the attacks per image (0: no worse
# than random noise; negative: the attacks moved the map further than noise does). The random map
# sits at 0 by construction under every attack but the one on retrieval, since nothing moves it;
# that is why it is there. The heatmap below splits the same numbers by attack (models pooled).

# %%
ATTACK_LIST = list(ATTACKS)
stability_pool = pooled(T, ATTACK_LIST, STABILITY)
stability_ranks = rank_table(stability_pool, column="beyond", rounds=rank_rounds, seed=seed)
REFUSED = "LRP-epsilon has no rule for Softplus models (it refuses them)"
ch.table(rank_cells(stability_ranks, rows=("measure", "explainer"), order=[(m, e) for m in STABILITY for e in EXPLAINERS]),
         "Stability beyond random noise, the attacks pooled per image: mean, #rank and its 95% bootstrap interval over "
         "images per model (higher is better; rank 1 moved least).", missing=REFUSED)

weak_any = attacks_checked.assign(weak=attacks_checked.status == "weak").groupby(
    ["explainer", "perturbation"], observed=True)["weak"].any().unstack("perturbation").reindex(
    index=list(EXPLAINERS), columns=ATTACK_LIST).fillna(False).to_numpy(dtype=bool)
attacked_rows = T[T.perturbation.astype(str).isin(ATTACK_LIST) & T.measure.astype(str).isin(STABILITY)]
cell_means = (attacked_rows.value - attacked_rows.baseline).groupby(
    [attacked_rows.measure.astype(str), attacked_rows.explainer.astype(str), attacked_rows.perturbation.astype(str)]).mean()
limit = max(float(np.nanmax(np.abs(cell_means.to_numpy()))), 1e-6)
fig, axes = plt.subplots(1, 3, figsize=(6.6, 4.6), sharey=True)
for ax, measure in zip(axes, STABILITY):
    grid = cell_means.loc[measure].unstack().reindex(index=list(EXPLAINERS), columns=ATTACK_LIST)
    image = ax.imshow(grid.to_numpy(dtype=float), cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    ys, xs = np.nonzero(weak_any)
    ax.scatter(xs, ys, s=16, facecolors="none", edgecolors="black", linewidths=0.8)
    ax.set_xticks(range(len(ATTACK_LIST)), [N[a] for a in ATTACK_LIST], rotation=90, fontsize=9)
    ax.set_title(N[measure], fontsize=10)
axes[0].set_yticks(range(len(EXPLAINERS)), [N[e] for e in EXPLAINERS], fontsize=9)
bar = fig.colorbar(image, ax=list(axes), shrink=0.8)
bar.set_label("beyond random noise", fontsize=10)
bar.ax.tick_params(labelsize=9)
ch.figure(fig, "Stability beyond random noise per explainer (row) and attack (column), the mean over images and "
               "models (blue: the map moved less than under noise, red: more; LRP-epsilon on the ReLU models only). A "
               "circle marks a cell whose attack is not at full strength on at least one model: its colour is no "
               "evidence of robustness.")

goal_ranks = []
for perturbation in ATTACK_LIST:
    if perturbation in ("pgd", "topk"):
        continue  # their goal is the top-k intersection, in the table above
    goal = pooled(T, [perturbation], [PRIMARY[perturbation]], over_models=True, label=perturbation)
    goal_ranks.append(rank_table(goal, column="beyond", rounds=rank_rounds, seed=seed))
goal_ranks = pd.concat(goal_ranks, ignore_index=True)
ch.table(rank_cells(goal_ranks, column="perturbation", order=list(EXPLAINERS)),
         "How far each attack pushed its own goal beyond random noise (column: the attack, read on its goal: centre "
         "shift, target region mass, Pearson with the target map, distance to the frame, retrieval), models pooled per "
         "image, signed so that higher is better for the explainer.")

# %% [markdown]
# ## Faithfulness
#
# Deletion AUC (remove the map's most relevant pixels first, the dataset's mean colour in their
# place; lower is better: the class probability falls fast) and insertion AUC (add them to a blank
# image; higher is better) on the clean images {cite}`petsiuk2018rise`.

# %%
none = T[T.perturbation.astype(str) == "none"]
faith_ranks = rank_table(none[none.measure.astype(str).isin(["deletion_auc", "insertion_auc"])], rounds=rank_rounds,
                         seed=seed)
ch.table(rank_cells(faith_ranks, rows=("measure", "explainer"),
                    order=[(m, e) for m in ("deletion_auc", "insertion_auc") for e in EXPLAINERS]),
         "Deletion AUC (lower is better) and insertion AUC (higher is better) per model: mean, #rank and its 95% interval.",
         missing=REFUSED)

# %% [markdown]
# ## Paper C's measure against its shuffled nulls
#
# Paper C's budget sigma\* is the smallest total change, guided by the map, that flips the label.
# A reliable map flips it with less when the change goes to the pixels it calls relevant than when
# the same values are shuffled to random places (Rel < RelShuf), and needs more when the change goes
# to the pixels it calls irrelevant (Irel > IrelShuf). Per image a score of 1 (ordered), 0.5 (a
# tie at the search's resolution) or 0. A shuffled variant flips only when all its shuffles do,
# so it is the earliest of them: for a map that knows nothing, chance is 1/(P+1) for the first
# ordering and P/(P+1) for the second (P shuffles, ties aside), and the random and edge maps
# stand on the same axis.

# %%
P = settings.sigma_permutations
sigma = sigma_scores(T)
sigma_ranks = rank_table(sigma, rounds=rank_rounds, seed=seed)
ch.table(rank_cells(sigma_ranks, rows=("measure", "explainer"),
                    order=[(m, e) for m in ("rel_order", "irel_order") for e in EXPLAINERS]),
         f"Paper C's two orderings per model: the share of images ordered (ties count half), #rank and its interval; "
         f"chance {1 / (P + 1):.2f} for Rel < RelShuf and {P / (P + 1):.2f} for Irel > IrelShuf ({P} shuffles).",
         missing=REFUSED)

# %% [markdown]
# ## Retrieval and its wrong-class control
#
# Paper A's retrieval: the model classifies the image masked by the map of it as the image's class.
# Beside it, the **wrong-class control**: the same method asked to explain a wrong class, and
# whether its mask makes the model predict that wrong class (lower is better: a mask should not
# conjure a class the image does not show; a method that optimises its mask for the class it is
# asked about retrieves by construction). Third, retrieval on the images PGD misled, the adversarial
# examples of paper A's claim.

# %%
retrieval = retrieval_rows(T)
retrieval_ranks = rank_table(retrieval, rounds=rank_rounds, seed=seed)
RETRIEVAL = ("retrieval_clean", "retrieval_wrong_class", "retrieval_pgd_fooled")
ch.table(rank_cells(retrieval_ranks, rows=("measure", "explainer"), order=[(m, e) for m in RETRIEVAL for e in EXPLAINERS]),
         "Retrieval per model: on the clean images, of a wrong class asked for (lower is better), and on the images "
         "PGD misled: the share of images, #rank and its interval.",
         missing=REFUSED + "; or PGD misled no image of that model")
pgd_misled = {m: int(fooled(T, m).sum()) for m in MODELS}
display(Markdown("PGD misled " + ", ".join(f"{v} of {n_images} images on the {N[m]} model" for m, v in pgd_misled.items())
                 + "."))

# %% [markdown]
# ## Localisation on synthetic shapes
#
# No CIFAR-10 model has pixels known to be relevant, so localisation is measured where the answer
# is known: the library's synthetic shapes (a square, disk, triangle or cross, the class, pasted at
# a random place on a textured canvas whose texture carries no class information, its box known)
# and a small three-layer CNN the arena trains on a separate draw of them, as in chapter 5. The
# pointing game asks whether the map's maximum falls inside the box; the box IoU compares the box
# around the pixels above half the map's maximum (after the mask search's normalisation) with the
# true box.

# %%
shapes = T[T.model.astype(str) == "shapes_cnn"]
local_ranks = rank_table(shapes, rounds=rank_rounds, seed=seed)
ch.table(rank_cells(local_ranks, column="measure", order=list(EXPLAINERS)),
         f"Localisation on {n_shapes} synthetic shapes images the shapes CNN classifies correctly: pointing game and box "
         "IoU (higher is better), mean, #rank and its interval.")

# %% [markdown]
# ## The sanity check
#
# Adebayo et al.'s model randomisation {cite}`adebayo2018sanity`: the Spearman correlation between
# a method's map on the trained model and on the same model with every parameter re-initialised. A
# map that explains the model should change (lower is better); the edge and random maps ignore the
# model and score 1 by construction.

# %%
sanity_ranks = rank_table(none[none.measure.astype(str) == "sanity_spearman"], rounds=rank_rounds, seed=seed)
ch.table(rank_cells(sanity_ranks, order=list(EXPLAINERS)),
         "Spearman between the map of the trained and of the randomised model per model (lower is better): mean, #rank "
         "and its interval.", missing=REFUSED)

# %% [markdown]
# ## Cost
#
# Model passes per image of one clean map (counted by a hook on the model) and its seconds in this
# run (a shared CPU is noisy; the book's page {doc}`What each method costs <../costs>` times every
# method against the cost of its passes alone and beside other libraries, at 32 and 224 pixels).

# %%
cost_rows = none[none.measure.astype(str).isin(["passes", "seconds"])]
cost = cost_rows.groupby([cost_rows.explainer.astype(str), cost_rows.measure.astype(str)])["value"].mean().unstack()
cost = cost.reindex(list(EXPLAINERS))
cost["passes, x the gradient"] = cost["passes"] / cost.loc["gradient", "passes"]
cost = cost[["passes", "passes, x the gradient", "seconds"]].rename(index=N).rename_axis("explainer")
cost.columns = ["passes per image", "passes, x the gradient", "seconds per image (this run)"]
ch.table(cost, f"The cost of one clean map per image at the `{settings.profile}` profile, the mean over the models.",
         formats={"passes per image": "{:,.0f}", "passes, x the gradient": "{:,.0f}"})
cost_ranks = rank_table(none[none.measure.astype(str).isin(["passes", "seconds"])], rounds=rank_rounds, seed=seed)

# %% [markdown]
# ## The trade-off
#
# Robustness beyond random noise against faithfulness and against cost, one point per explainer,
# the controls on the same axes. Robustness is the top-k intersection beyond random noise averaged
# over the attacks and the models per image, faithfulness the deletion AUC averaged over the
# models (both with 95% bootstrap intervals over images).

# %%
robust = rank_table(pooled(T, ATTACK_LIST, ["topk_intersection"], over_models=True), column="beyond",
                    rounds=rank_rounds, seed=seed).set_index("explainer")
deletion = rank_table(pooled(T, ["none"], ["deletion_auc"], over_models=True, beyond=False, label="none"),
                      rounds=rank_rounds, seed=seed).set_index("explainer")
seconds = cost_rows[cost_rows.measure.astype(str) == "seconds"].groupby(cost_rows.explainer.astype(str))["value"].mean()
fig, axes = plt.subplots(2, 1, figsize=(6.6, 8.8), sharex=True)
palette = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7]  # tab10 without its grey (the controls')
method_colours = dict(zip([e for e in EXPLAINERS if e not in CONTROL_NAMES], palette))
control_styles = dict(zip(CONTROL_NAMES, (("s", "0.35"), ("^", "0.35"), ("D", "0.35"))))
for name in EXPLAINERS:
    if name not in robust.index or name not in deletion.index:
        continue
    r, d = robust.loc[name], deletion.loc[name]
    marker, colour = control_styles.get(name, ("o", method_colours.get(name)))
    style = dict(marker=marker, color=colour, linestyle="none", markersize=7, elinewidth=1)
    xerr = [[r["mean"] - r["mean_low"]], [r["mean_high"] - r["mean"]]]
    axes[0].errorbar(r["mean"], d["mean"], xerr=xerr, yerr=[[d["mean"] - d["mean_low"]], [d["mean_high"] - d["mean"]]],
                     label=N[name], **style)
    axes[1].errorbar(r["mean"], seconds[name], xerr=xerr, **style)
axes[0].set_ylabel("deletion AUC (lower is better)")
axes[0].invert_yaxis()
axes[1].set_ylabel("seconds per image (log)")
axes[1].set_yscale("log")
axes[1].set_xlabel("top-k intersection beyond random noise\n(higher is better)")
fig.legend(*axes[0].get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=9,
           frameon=False)
fig.tight_layout()
ch.figure(fig, "Each explainer's robustness beyond random noise against its faithfulness (upper; deletion AUC, the axis "
               "turned so that up is better) and its cost (lower; seconds per image in this run, log scale); 95% "
               "bootstrap intervals over images. Coloured circles: the methods; grey square, triangle and diamond: the "
               "controls. Robustness counts every attack, including those not at full strength (the circles of the "
               "heatmap); LRP-epsilon on the ReLU models only, the models it explains.")

# %% [markdown]
# ## Where a control ranks at or above a method
#
# Every case where a control is not clearly below a method (its rank interval reaches or passes the
# method's), in every ranking above and in every attack x model cell behind the pooled ones. A
# control that ranks at or above a method says that, on that yardstick, the method shows nothing a
# map without knowledge does not. Nothing is left out.

# %%
per_attack = rank_table(T[T.perturbation.astype(str).isin(ATTACK_LIST)], column="beyond", rounds=rank_rounds, seed=seed)
ALL_RANKS = pd.concat([per_attack, stability_ranks, goal_ranks, faith_ranks, sigma_ranks, retrieval_ranks, local_ranks,
                       sanity_ranks, cost_ranks], ignore_index=True)
cases = controls_at_or_above(ALL_RANKS)
groups = ALL_RANKS.groupby(["model", "perturbation", "measure", "column"], observed=True).ngroups
display(Markdown(
    f"Of {groups} rankings, {cases.groupby(['model', 'perturbation', 'measure', 'column'], observed=True).ngroups} have "
    f"a control at or above at least one method ({len(cases)} control-method pairs, "
    f"{int((cases.relation == 'above').sum())} of them clearly above):\n\n"
    + "\n".join(control_sentences(cases, N, ALL_RANKS))
    if len(cases) else f"In none of the {groups} rankings does a control rank at or above a method."))

# %% [markdown]
# ## The five papers' claims, measured the same way
#
# Each claim is phrased as its paper states it and tested per image against the null that fits
# it: random noise of the same budget and the controls for stability, the wrong-class control for
# retrieval, the random and edge maps for paper C's measure, a margin for "at least as", a declared
# minimal effect for "much". Every part must hold for a claim that says "better than every
# baseline" (a quantifier of *all*). Where an attack behind a comparison is not at full strength,
# the verdict that its weakness could produce reads *inconclusive* with the reason.

# %%
A_MODELS = [m for m in ("natural", "fgsm") if m in MODELS]  # paper A: naturally and adversarially trained models
setting = (f"{settings.profile} profile: {n_images} CIFAR-10 test images correct for every model ({names(MODELS)}), "
           f"eps {settings.eps * 255:.0f}/255; strength runs on the first {settings.strength_images}; attacks aimed at "
           f"each map (stand-ins as stated above)")


def missing_models(claim_id, paper, claim, needed):
    """A claim whose models are not in this run: inconclusive, said so."""
    ledger.record(claim_id, paper=paper, claim=claim, verdict="inconclusive", qualifier="not measured at this profile",
                  measured="nothing: the model axis of this run lacks " + names(needed),
                  reason=f"the run's models are {names(MODELS)}; rerun with -p models including {', '.join(needed)}",
                  setting=setting)


claim = ("[claim 3] RelEx's maps retrieve the original classes of adversarial examples, crafted against a naturally "
         "and an adversarially trained model, better than previous methods (the gradient, SmoothGrad, Integrated "
         "Gradients and Grad-CAM).")
if A_MODELS:
    ledger.test("A7.1", paper=PAPER_A, claim=claim, nan="omit",
                measured="per image PGD misled: 1 if the model classifies the attacked image masked by the method's map "
                         "of it as the clean class, else 0; RelEx minus the other method",
                setting=setting + f"; PGD {settings.pgd_steps} steps (aimed at the prediction: the same images for "
                                  "every method)",
                parts={f"vs {N[o]} on {N[m]} ({pgd_misled[m]} misled)":
                       (oriented(T, "relex", m, "pgd", "retrieval", beyond=False, images=fooled(T, m)),
                        oriented(T, o, m, "pgd", "retrieval", beyond=False, images=fooled(T, m)))
                       for m in A_MODELS for o in ("gradient", "smoothgrad", "integrated_gradients", "gradcam")},
                caveats=["By construction in part: RelEx optimises its mask to keep the class it is asked about, the "
                         "other methods do not (A7.2 measures how much of its retrieval that explains)."])
else:
    missing_models("A7.1", PAPER_A, claim, ["natural", "fgsm"])
ledger.test("A7.2", paper=PAPER_A, nan="omit",
            claim="[claim 4] RelEx's retrieval comes from features relevant to the image: on clean images its mask "
                  "retrieves the class it explains more often than its mask asked for a wrong class makes the model "
                  "predict that wrong class.",
            measured="per image: retrieval of the clean class minus retrieval of the wrong class (label + 1) asked for",
            setting=setting, parts={f"on {N[m]}": oriented(T, "relex", m, "none", "retrieval_clean") for m in MODELS})
a_cells = [(p, meas) for p in ("pgd", "topk", "dombrowski") for meas in ("topk_intersection", "spearman")]
claim = ("[claims 1-2, as this book reads them] RelEx's maps, smoothed over the input's neighbourhood, are more "
         "stable than the gradient's and SmoothGrad's under the same attacks (PGD, Ghorbani's top-k, Dombrowski's), "
         "beyond random noise of the same budget.")
if A_MODELS:
    ledger.test("A7.3", paper=PAPER_A, claim=claim, nan="omit",
                measured="per image: the map's top-k intersection (or Spearman) with its clean map under the attack "
                         "aimed at it, minus the same under random noise; RelEx minus the other method",
                setting=setting, parts={
                    f"{N[p]}, {N[meas]}, vs {N[o]} on {N[m]}": (oriented(T, "relex", m, p, meas), oriented(T, o, m, p, meas))
                    for m in A_MODELS for o in ("gradient", "smoothgrad") for p, meas in a_cells},
                **guard(checked, [("relex", m, p) for m in A_MODELS for p, _ in a_cells],
                        [(o, m, p) for m in A_MODELS for o in ("gradient", "smoothgrad") for p, _ in a_cells], N))
else:
    missing_models("A7.3", PAPER_A, claim, ["natural", "fgsm"])
for claim_id in ("A7.1", "A7.2", "A7.3"):
    display(Markdown(ledger.line(claim_id)))

# %%
B_ATTACKS = ("topk", "mass_center", "targeted")  # the three Ghorbani attacks of paper B
ledger.test("B7.1", paper=PAPER_B, nan="omit",
            claim="[claims 3-4] DANCE lowers the gradient's sensitivity under the three Ghorbani attacks: DANCE(gradient) "
                  "moves less than the gradient and than a plain blur of the gradient's magnitude, each attacked through "
                  "its own map, beyond random noise of the same budget.",
            measured="per image: the attack's own goal (top-k intersection, centre shift, target region mass) under the "
                     "attack minus under random noise, signed so that higher is better; DANCE minus the other map",
            setting=setting + f"; DANCE attacked by BPDA, decoys solved again every {settings.dance_recompute_every} steps",
            parts={f"{N[p]} vs {N[o]} on {N[m]}": (oriented(T, "dance", m, p, PRIMARY[p]), oriented(T, o, m, p, PRIMARY[p]))
                   for m in MODELS for p in B_ATTACKS for o in ("gradient", "smoothed_gradient")},
            caveats=["The blurred |gradient| is this book's control: a smooth map moves little whatever it shows, so "
                     "DANCE must beat a plain smoother as well as its base."],
            **guard(checked, [("dance", m, p) for m in MODELS for p in B_ATTACKS],
                    [(o, m, p) for m in MODELS for p in B_ATTACKS for o in ("gradient", "smoothed_gradient")], N))
display(Markdown(ledger.line("B7.1")))

# %%
C_METHODS = ("gradient", "smoothgrad", "lrp_epsilon", "gradcam")  # the arena's methods among the paper's six
c_parts = {}
for m in MODELS:
    for method in C_METHODS:
        if T[(T.explainer == method) & (T.model == m) & (T.measure == "sigma_rel")].value.notna().any():
            for control in ("random_map", "edge_map"):
                c_parts[f"{N[method]} vs {N[control]} on {N[m]}"] = (
                    oriented(sigma, method, m, "none", "rel_order", beyond=False),
                    oriented(sigma, control, m, "none", "rel_order", beyond=False))
ledger.test("C7.1", paper=PAPER_C, nan="omit",
            claim="[claim 1] The measure is objective: the maps of the methods the paper compares (of its six, the "
                  "gradient, SmoothGrad, LRP-epsilon and Grad-CAM) order Rel < RelShuf more often than maps that know "
                  "nothing about the model (a random map, the Sobel edge map).",
            measured="per image: 1 if sigma*_Rel < sigma*_RelShuf, 0.5 for a tie, 0 otherwise; the method minus the "
                     "control", setting=setting + f"; {P} shuffles, {settings.sigma_scan} scan points and "
                                              f"{settings.sigma_iterations} halvings per budget",
            parts=c_parts)
display(Markdown(ledger.line("C7.1")))

# %%
MARGIN = 0.02  # paper D's figures: the mask search and RISE differ by 0.001 to 0.034 AUC per image (2 images)
ledger.test("D7.1", paper=PAPER_D, nan="omit", threshold=-MARGIN,
            claim="[claim 2, the authors' README] The mask search is at least as faithful as RISE, the method whose "
                  "masks it walks, at the same number of model passes: its deletion AUC is not higher and its insertion "
                  f"AUC not lower than RISE's, within {MARGIN:g}.",
            measured=f"per image: RISE's deletion AUC minus the mask search's (insertion: the mask search's minus "
                     f"RISE's); needs the interval above -{MARGIN:g}, within the differences between the two in the "
                     "authors' own figures (0.001 to 0.034 on the two images where both are shown)",
            setting=setting + f"; both {settings.mask_search_passes:,} passes per image ({settings.mask_search_grid} and "
                              f"{settings.rise_grid} cells per side)",
            parts={f"{N[meas]} on {N[m]}": (oriented(T, "mask_search", m, "none", meas, beyond=False),
                                           oriented(T, "rise", m, "none", meas, beyond=False))
                   for m in MODELS for meas in ("deletion_auc", "insertion_auc")})
ledger.test("D7.2", paper=PAPER_D, nan="omit",
            claim="[claim 2] The mask search localises relevant pixels better than existing saliency methods (of the "
                  "authors' baselines, RISE and Grad-CAM).",
            measured="per synthetic image: pointing game (1/0) or box IoU of the mask search minus the other method",
            setting=f"{settings.profile} profile: {n_shapes} synthetic shapes images, the shapes CNN the arena trains",
            parts={f"{N[meas]} vs {N[o]}": (oriented(T, "mask_search", "shapes_cnn", "none", meas, beyond=False),
                                          oriented(T, o, "shapes_cnn", "none", meas, beyond=False))
                   for o in ("rise", "gradcam") for meas in ("pointing_game", "box_iou")})
display(Markdown(ledger.line("D7.1") + "  \n" + ledger.line("D7.2")))

# %%
E_OTHERS = [m for m in ("softplus", "natural") if m in MODELS]  # cross-entropy models: the same LeNet, Softplus or ReLU
MUCH = dict(min_effect=0.05, min_effect_reason="'much more robust': at least a twentieth of the similarities' range "
                                               "[-1, 1], as chapter 6, fixed before the run")
claim_e1 = ("[claim 3] Training with l2 + cosd gives much more robust interpretations: the gradient maps of the l2 + "
            "cosd model stay much more similar under random noise than those of the cross-entropy models.")
claim_e2 = ("[claim 3] Training with l2 + cosd gives much more robust interpretations: under the top-k and frame "
            "attacks aimed at each model's gradient map, the l2 + cosd model's maps move much less beyond random noise "
            "than the cross-entropy models'.")
if "l2cosd" in MODELS and E_OTHERS:
    ledger.test("E7.1", paper=PAPER_E, nan="omit", **MUCH, claim=claim_e1,
                measured="per image: the similarity (top-k intersection, Spearman, SSIM) of the gradient map under random "
                         "sign noise to the clean map; l2 + cosd minus the other model",
                setting=setting, parts={f"{N[meas]} vs {N[o]}": (
                    oriented(T, "gradient", "l2cosd", "random_sign", meas, beyond=False),
                    oriented(T, "gradient", o, "random_sign", meas, beyond=False)) for o in E_OTHERS for meas in STABILITY},
                caveats=["Chapter 6 checks that the regularisers acted on these models (the quantity each targets); "
                         "the arena compares the models as trained."])
    e_cells = [("topk", "topk_intersection"), ("topk", "ssim"), ("frame", "topk_intersection"), ("frame", "ssim")]
    ledger.test("E7.2", paper=PAPER_E, nan="omit", **MUCH, claim=claim_e2,
                measured="per image: the similarity under the attack minus under random noise of the same budget; "
                         "l2 + cosd minus the other model",
                setting=setting, parts={f"{N[p]}, {N[meas]} vs {N[o]}": (oriented(T, "gradient", "l2cosd", p, meas),
                                                                        oriented(T, "gradient", o, p, meas))
                                        for o in E_OTHERS for p, meas in e_cells},
                **guard(checked, [("gradient", "l2cosd", p) for p, _ in e_cells],
                        [("gradient", o, p) for o in E_OTHERS for p, _ in e_cells], N))
else:
    missing_models("E7.1", PAPER_E, claim_e1, ["l2cosd", "softplus"])
    missing_models("E7.2", PAPER_E, claim_e2, ["l2cosd", "softplus"])
display(Markdown(ledger.line("E7.1") + "  \n" + ledger.line("E7.2")))

# %% [markdown]
# ## A guide: which method for which need
#
# Computed from the rankings above (leaders: the method ranked first and every method whose rank
# interval reaches it; controls that reach it are named, since then the yardstick cannot tell that
# method from a map without knowledge). The costs are this profile's passes per image; the page
# {doc}`What each method costs <../costs>` has them at the papers' settings and in seconds.

# %%
def lead(ranks, **where) -> tuple[list[str], list[str]]:
    part = ranks
    for key, value in where.items():
        part = part[part[key].astype(str) == value]
    return leaders(part)


passes = cost["passes per image"]
weak_explainers = sorted(set(attacks_checked.loc[attacks_checked.status == "weak", "explainer"].astype(str)))
# the rankings pooled over models, among the explainers that explain every model (the same models in every mean)
robust_all = rank_table(pooled(T, ATTACK_LIST, ["topk_intersection"], over_models=True, complete=True),
                        column="beyond", rounds=rank_rounds, seed=seed)
deletion_all = rank_table(pooled(T, ["none"], ["deletion_auc"], over_models=True, beyond=False, complete=True,
                                 label="none"), rounds=rank_rounds, seed=seed)
partial = [e for e in EXPLAINERS if e in robust.index and e not in set(robust_all.explainer)]
needs = [
    ("Maps that survive attacks (top-k intersection beyond random noise, every attack and model)", lead(robust_all)),
    ("Maps the model's output follows (deletion AUC, models pooled)", lead(deletion_all)),
    ("Maps that point at the object (pointing game on the synthetic shapes)", lead(local_ranks, measure="pointing_game")),
    (f"Maps that depend on the model (the sanity check, {N[MODELS[0]]} model)",
     lead(sanity_ranks, model=MODELS[0]) if len(sanity_ranks) else ([], [])),
]
guide = []
for need, (best, tied_controls) in needs:
    line = f"- **{need}**: " + (", ".join(f"{N[b]} ({passes[N[b]]:,.0f} pass{'es' * (round(passes[N[b]]) != 1)} per "
                                         "image)" for b in best) or "no method")
    if tied_controls:
        line += (f"; but the {names(tied_controls)} {'reaches' if len(tied_controls) == 1 else 'reach'} the same rank, so "
                 "this yardstick alone does not tell them from a map without knowledge")
    shaky = [b for b in best if b in weak_explainers] if need.startswith("Maps that survive") else []
    if shaky:
        line += f"; the attacks on {names(shaky)} are not all at full strength, so their place is not evidence"
    guide.append(line + ".")
if partial:
    guide.append(f"\n{names(partial)} {'explains' if len(partial) == 1 else 'explain'} only some of the models, so "
                 f"{'it is' if len(partial) == 1 else 'they are'} left out of the two rankings pooled over models "
                 "(the rankings per model are in the tables above).")
display(Markdown("\n".join(guide)))

# %% [markdown]
# **What the arena cannot say.** It measures LeNets on 32 x 32 CIFAR-10 images, not ImageNet
# models; at the `book` profile the long methods and the attacks run far shorter than in the
# papers (the settings table), and an attack that is not at full strength leaves its cells without
# evidence either way. Localisation is measured on a synthetic task with one small CNN. Every
# yardstick here is a proxy: none asks a person whether a map helps, and a map can rank first on
# one yardstick by being useless on another (the random map is perfectly stable). The rankings are
# over these images and models; the intervals say how sure they are of that, not of other models.

# %% [markdown]
# ## What this chapter found
#
# Computed from the claims ledger (also written to `book/claims/07_arena.json`).

# %%
verdict_of = {c.id: c.verdict for c in ledger.claims}
said = ", ".join(f"{i} {v}" for i, v in verdict_of.items())
held = [i for i, v in verdict_of.items() if v == "holds"]
ledger.bottom_line(
    f"Measured the same way (the same {n_images} images, every attack aimed at the map it scores, random noise of the "
    f"same budget beside every stability number and three controls on the same axes), {len(held)} of the "
    f"{len(verdict_of)} claims re-tested here held ({', '.join(held) or 'none'}): {said}. {n_full} of {n_judged} attack "
    f"cells were shown at full strength; where an attack was not ({names(weak_explainers) or 'none'}), a claim it "
    f"would favour reads inconclusive. A control ranks at or above some method in "
    f"{cases.groupby(['model', 'perturbation', 'measure', 'column'], observed=True).ngroups if len(cases) else 0} of "
    f"{groups} rankings; every case is listed on the page.")
ledger.save()
display(Markdown(ledger.summary(items=False)))
display(ledger.cards())
rerun_box(run, load_models(MODELS, settings))
