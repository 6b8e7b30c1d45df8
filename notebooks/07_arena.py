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
#   attack on paper A's retrieval that chapter 2 wrote. PGD is aimed at the label, not at any
#   map: it is an untargeted perturbation, ranked on its own and kept out of every pool of aimed
#   attacks.
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
import json
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from reliable_saliency.arena import (ATTACKS, CONTROL_NAMES, EXPLAINERS, PROFILES, arena_settings,
                                     controls_at_or_above, estimate, estimate_text, rank_table, run_arena)
from reliable_saliency.arena.harness import cifar_images, load_models
from reliable_saliency.arena.measures import pixel_map, randomised_copy, sanity
from reliable_saliency.arena.readout import (FLOORS, NAMES, by_construction, control_sentences, floor_caveat, fooled,
                                             leaders, oriented, pooled, rank_cells, retrieval_rows, sigma_scores)
from reliable_saliency.arena.routes import scored_explainer
from reliable_saliency.arena.storekey import store_key
from reliable_saliency.arena.strength import PRIMARY, RULES, full_strength, guard, strength_table, weak_sentences
from reliable_saliency.chapter import kit
from reliable_saliency.chapter.rerun import rerun_box
from reliable_saliency.chapter.shipped_results import SHIPPED_RESULTS
from reliable_saliency.claims import bootstrap_mean
from reliable_saliency.core import workers
from reliable_saliency.evaluation.attribution_robustness import alignment_diagnostics

# The chapter's sizes are the arena's profiles (reliable_saliency.arena.settings.PROFILES): `book` is 200 images,
# every cell filled, in 5.4 hours of the 2-core CPU as measured (the estimate below says 3.2); `smoke` two images
# and two models.
SIZES = {name: dict(images=p.images, strength_images=p.strength_images, models=list(p.models))
         for name, p in PROFILES.items()}
ch = kit.setup("07_arena", globals(), SIZES, within={"strength_images": "images"})
sizes, run_device, run, ledger = ch.S, ch.device, ch.run, ch.ledger
settings = arena_settings(profile, images=sizes.images, strength_images=sizes.strength_images,
                          models=tuple(sizes.models), seed=seed)
MODELS = list(settings.models)
STABILITY = ("topk_intersection", "spearman", "ssim")
PAPER_A, PAPER_B, PAPER_C = "RelEx (Lim et al. 2021)", "DANCE (Lu et al. 2021)", "Valle et al. 2020 (paper C)"
PAPER_D, PAPER_E = "Thakur & Fischmeister 2020 (paper D)", "Joo et al. 2023 (paper E)"


def names(items) -> str:
    """Arena names as a reader reads them, joined with commas."""
    return ", ".join(NAMES.get(str(i), str(i)) for i in items)


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
#   can move it: it is measured at the random noise. PGD aims at the prediction only; its images
#   are the same for every explainer, and it is read as an untargeted perturbation.
# - **Beyond random.** Every stability number is the measure under the attack minus the same
#   measure under random sign noise of the same budget (for Dombrowski's unbounded attack, noise
#   with the attack's own L2 norm per image). Stability is read as the top-k intersection of the
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
    f"**Full strength**, fixed before the run: on {first(settings.strength_images)}, twice the steps (for "
    f"Dombrowski's unbounded attack at half the step size, so the same distance) and a random restart each "
    f"strengthen the attack by at most {RULES['more_effort']:.0%} of its effect beyond random noise (or "
    f"{RULES['floor']:.0%} of the measure's range when that effect is smaller), counting per image only what the "
    f"extra run gained; the second half of its steps added at most {RULES['plateau']:.0%} of its effect; a stand-in "
    f"map ranks the pixels as the scored map does (Spearman at least {RULES['surrogate']:g}); and no image was left "
    "without an attack gradient (checked per image; such an image's attacked values are left out). PGD, aimed at "
    "the label, is judged on the labels it flips."))

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
# The library's arena harness fills one long table: one row per image, explainer,
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
display(Markdown("\n".join(f"- {line}" for line in estimate_text(cost_estimate, settings, NAMES).splitlines())))
arena_store = ch.store.folder.parent / store_key()


def shard_count() -> int:
    return sum(1 for _ in arena_store.rglob("shard-*.pt")) if arena_store.is_dir() else 0


shipped = SHIPPED_RESULTS / "07_arena" / f"{store_key()}.json"
shipped_note = json.loads(shipped.read_text()).get("note", "") if shipped.exists() else ""
shards_before, started = shard_count(), time.perf_counter()
arena = run_arena(settings, root=ch.store.folder.parent, key=store_key(), device=str(run_device),
                  train_models=train_models)
arena_minutes = (time.perf_counter() - started) / 60
computed = shard_count() - shards_before
n_images = int(arena.loc[arena.model != "shapes_cnn", "image"].nunique())
n_shapes = int(arena.loc[arena.model == "shapes_cnn", "image"].nunique())
display(Markdown(
    f"The long table: {len(arena):,} rows; {n_images} CIFAR-10 test images x {arena.explainer.nunique()} explainers x "
    f"{len(MODELS)} models ({names(MODELS)}) x {arena.perturbation.nunique() - 1} perturbations, plus {n_shapes} synthetic "
    f"shapes images for localisation. This execution spent {arena_minutes:.1f} minutes on it and computed "
    f"{computed:,} shards of images with {workers.world_size()} worker{'s' * (workers.world_size() > 1)}; any other "
    "shard was read back from the store, where an earlier execution had left it or the book's shipped results "
    "(`book/results`) had put it (the estimate above is what a whole run would cost at the measured cost of a pass)."
    + (f" How the shipped shards of this key were computed, from their sidecar: {shipped_note}." if shipped_note else
       "")))

# %% [markdown]
# ## How strong were the attacks?
#
# Before any ranking: for every attack aimed at every explainer on every model, the strength runs
# on the first images (twice the steps; a fresh random start where the attack has one), the share
# of its effect the second half of its steps added, how closely a stand-in map follows the scored
# one, the labels kept and the change per pixel. Each attack is read on the measure it aims at:
# the top-k intersection for the top-k attack, the centre shift, the mass in the target region,
# the correlation with the target map, the distance to the frame and the retrieval; PGD, aimed at
# the label, on the labels it flips.
# The first table counts the models on which each cell is at full strength; the second has the
# numbers behind it (the extra effort as a multiple of the tolerance: above 1 means the attack was
# still getting stronger).

# %%
checked = full_strength(strength_table(arena))
attacks_checked = checked[checked.perturbation.astype(str).isin(ATTACKS)].copy()


counts = attacks_checked.assign(full=attacks_checked.status == "full",
                                judged=attacks_checked.status.isin(["full", "weak"]),
                                untouched=attacks_checked.status == "not attacked").groupby(
    ["explainer", "perturbation"], observed=True)[["full", "judged", "untouched"]].sum()
status_grid = pd.Series([f"{int(r.full)} of {int(r.judged)}" if r.judged else
                         ("not attacked" if r.untouched else "refused") for r in counts.itertuples()], index=counts.index)
status_grid = status_grid.unstack("perturbation").reindex(index=list(EXPLAINERS), columns=list(ATTACKS))
ch.table(status_grid.rename(index=NAMES, columns=NAMES).rename_axis(index="explainer", columns=None),
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
detail.index = pd.MultiIndex.from_tuples([(NAMES[e], NAMES[p]) for e, p in detail.index], names=["explainer", "attack"])
detail.columns = ["x2 steps / tolerance", "restart / tolerance", "second half (share)", "stand-in Spearman",
                  "labels kept", "change mean (/255)", "change max (/255)"]
ch.table(detail, "The strength numbers per explainer and attack, the worst over the models (largest extra effort and "
                 "second-half share, smallest stand-in Spearman), the share of labels kept (for PGD, which aims at the "
                 "label, the share it failed to change) and the change per pixel (mean, and the largest anywhere), in "
                 "1/255.", digits=2,
         formats={c: "{:.2f}" for c in ("x2 steps / tolerance", "restart / tolerance", "second half (share)")},
         missing="not applicable: no random start (Dombrowski, frame), no step trace (PGD), no stand-in (the attack "
                 "differentiates the scored map itself), or no strength runs at this profile")
weak_lines = weak_sentences(attacks_checked, NAMES)
n_judged, n_full = len(judged), int((judged.status == "full").sum())
display(Markdown(
    f"**{n_full} of {n_judged}** attack cells (explainer x model x attack) are shown at full strength. "
    + ("The others, per attack (how many cells on which models, the kinds of weakness and the worst cells); their "
       "stability numbers are not evidence of robustness:\n\n" + "\n".join(weak_lines)
       if weak_lines else "Every attacked cell is at full strength.")))

# %% [markdown]
# ## Stability beyond random noise
#
# Per model, each explainer's stability under the attacks aimed at it, beyond the same measure
# under random noise of the same budget, averaged over the attacks per image (0: no worse
# than random noise; negative: the attacks moved the map further than noise does). The random map
# sits at 0 by construction under every attack, since nothing moves it; that is why it is there.
# PGD is not among the pooled attacks: it is aimed at the label, not at the map. The heatmap below
# splits the same numbers by attack (models pooled), PGD in its own column. Where an attack drives
# a map's top-k intersection to 0, this number is floored: "What the attacks leave" below reads it
# as the attacks leave it.

# %%
AIMED = [a for a in ATTACKS if a != "pgd"]  # the attacks aimed at a map (PGD aims at the label)
stability_pool = pooled(arena, AIMED, STABILITY)
stability_ranks = rank_table(stability_pool, column="beyond", rounds=rank_rounds, seed=seed)
REFUSED = "LRP-epsilon has no rule for Softplus models (it refuses them)"
ch.table(rank_cells(stability_ranks, rows=("measure", "explainer"), order=[(m, e) for m in STABILITY for e in EXPLAINERS]),
         "Stability beyond random noise, the attacks aimed at the maps pooled per image (PGD left out): mean, #rank "
         "and its 95% bootstrap interval over images per model (higher is better; rank 1 moved least).",
         missing=REFUSED)
ATTACK_LIST = list(ATTACKS)  # the heatmap's columns: the aimed attacks and PGD

weak_any = attacks_checked.assign(weak=attacks_checked.status == "weak").groupby(
    ["explainer", "perturbation"], observed=True)["weak"].any().unstack("perturbation").reindex(
    index=list(EXPLAINERS), columns=ATTACK_LIST).fillna(False).to_numpy(dtype=bool)
attacked_rows = arena[arena.perturbation.astype(str).isin(ATTACK_LIST) & arena.measure.astype(str).isin(STABILITY)]
cell_means = (attacked_rows.value - attacked_rows.baseline).groupby(
    [attacked_rows.measure.astype(str), attacked_rows.explainer.astype(str), attacked_rows.perturbation.astype(str)]).mean()
limit = max(float(np.nanmax(np.abs(cell_means.to_numpy()))), 1e-6)
fig, axes = plt.subplots(1, 3, figsize=(6.6, 4.6), sharey=True)
for ax, measure in zip(axes, STABILITY):
    grid = cell_means.loc[measure].unstack().reindex(index=list(EXPLAINERS), columns=ATTACK_LIST)
    image = ax.imshow(grid.to_numpy(dtype=float), cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    ys, xs = np.nonzero(weak_any)
    ax.scatter(xs, ys, s=16, facecolors="none", edgecolors="black", linewidths=0.8)
    ax.set_xticks(range(len(ATTACK_LIST)), [NAMES[a] for a in ATTACK_LIST], rotation=90, fontsize=9)
    ax.set_title(NAMES[measure], fontsize=10)
axes[0].set_yticks(range(len(EXPLAINERS)), [NAMES[e] for e in EXPLAINERS], fontsize=9)
bar = fig.colorbar(image, ax=list(axes), shrink=0.8)
bar.set_label("beyond random noise", fontsize=10)
bar.ax.tick_params(labelsize=9)
ch.figure(fig, "Stability beyond random noise per explainer (row) and attack (column), the mean over images and "
               "models (blue: the map moved less than under noise, red: more; LRP-epsilon on the ReLU models only). A "
               "circle marks a cell whose attack is not at full strength on at least one model: its colour is no "
               "evidence of robustness. Where an attack leaves a map's top-k intersection at 0, its top-k cell reads "
               "minus the map's stability under noise, not the attack's effect (next: what the attacks leave).")

goal_ranks = []
for perturbation in AIMED:
    if perturbation == "topk":
        continue  # its goal is the top-k intersection, in the table above
    goal = pooled(arena, [perturbation], [PRIMARY[perturbation]], over_models=True, signed=True, label=perturbation)
    goal_ranks.append(rank_table(goal, column="beyond", rounds=rank_rounds, seed=seed))
goal_ranks = pd.concat(goal_ranks, ignore_index=True)
ch.table(rank_cells(goal_ranks, column="perturbation", order=list(EXPLAINERS)),
         "How far each attack pushed its own goal beyond random noise (column: the attack, read on its goal: centre "
         "shift, target region mass, Pearson with the target map, distance to the frame, retrieval), models pooled per "
         "image, beyond random noise and signed so that higher is better for the explainer (a goal where lower is "
         "better, such as the centre shift, is negated).")

# %% [markdown]
# ### What the attacks leave
#
# "Beyond random noise" is the damage an attack does over noise of the same budget; it is not how
# stable a map is. The top-k intersection cannot fall below 0: once an attack leaves none of a
# map's top pixels in place, the number beyond random noise is minus the map's stability under
# noise, whatever the attack did. A map that noise alone scrambles then looks robust beyond random
# noise, and a map that noise leaves alone looks fragile, though the attack destroyed both (the
# book's rule on floors: read the quantity that is not floored). So the top-k intersection is also
# read as the attacks leave it, with the same under noise beside it; the guide and the trade-off
# below rank robustness on what the attacks leave.

# %%
left_rows = arena[arena.perturbation.astype(str).isin(AIMED) & (arena.measure.astype(str) == "topk_intersection")]
by_explainer = left_rows.groupby(left_rows.explainer.astype(str))
left_ranks = rank_table(pooled(arena, AIMED, ["topk_intersection"], over_models=True, beyond=False,
                               label="what the aimed attacks leave"), rounds=rank_rounds, seed=seed)
left_table = pd.DataFrame({
    "under random noise": by_explainer["baseline"].mean(), "under the aimed attacks": by_explainer["value"].mean(),
    "at 0 under the attacks": by_explainer["value"].apply(
        lambda v: float((v.dropna() <= FLOORS["topk_intersection"]).mean()))})
left_table["beyond random noise"] = left_table["under the aimed attacks"] - left_table["under random noise"]
left_table["as left: #rank (interval)"] = rank_cells(left_ranks, column="measure")["top-k intersection"].rename(
    index={v: k for k, v in NAMES.items()})
left_table = left_table.reindex([e for e in EXPLAINERS if e in left_table.index])
palette = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7]  # tab10 without its grey (the controls')
method_colours = dict(zip([e for e in EXPLAINERS if e not in CONTROL_NAMES], palette))
control_styles = dict(zip(CONTROL_NAMES, (("s", "0.35"), ("^", "0.35"), ("D", "0.35"))))
fig, ax = plt.subplots(figsize=(6.6, 5.2))
for name, row in left_table.iterrows():
    marker, colour = control_styles.get(name, ("o", method_colours.get(name)))
    ax.plot(row["under random noise"], row["under the aimed attacks"], marker=marker, color=colour, linestyle="none",
            markersize=7, label=NAMES[name])
ax.plot([0, 1], [0, 1], color="0.6", linewidth=0.8, linestyle="--")
ax.axhline(0, color="0.6", linewidth=0.8)
ax.set_xlim(-0.02, 1.02)
ax.set_ylim(-0.02, 1.02)
ax.set_xlabel("top-k intersection under random noise")
ax.set_ylabel("top-k intersection under the aimed attacks")
ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, fontsize=9, frameon=False)
fig.tight_layout()
ch.figure(fig, "Each explainer's top-k intersection under random noise (across) and under the attacks aimed at its map "
               "(up), the means over the images, the aimed attacks and the models (PGD left out). The dashed diagonal "
               "is 'no worse than noise': the distance below it is the damage beyond random noise. A point on the "
               "floor (0) lost every top pixel to the attacks, whatever its distance from the diagonal.")
ch.table(left_table.rename(index=NAMES).rename_axis("explainer"),
         "The top-k intersection under random noise and under the attacks aimed at the map (means over the images, "
         "the aimed attacks and the models), the share of attacked cells (image x attack x model) at 0, the "
         "difference (beyond random noise), and the rank on what the attacks leave with its 95% bootstrap interval "
         "over images (LRP-epsilon on the ReLU models only).", digits=2,
         formats={"at 0 under the attacks": "{:.0%}"})

# %% [markdown]
# ## Faithfulness
#
# Deletion AUC (remove the map's most relevant pixels first, the dataset's mean colour in their
# place; lower is better: the class probability falls fast) and insertion AUC (add them to a blank
# image; higher is better) on the clean images {cite}`petsiuk2018rise`.

# %%
none = arena[arena.perturbation.astype(str) == "none"]
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
# tie at the search's resolution) or 0. A shuffled variant survives only while every one of its
# shuffles keeps the label: it flips as soon as any one does, so its budget is the smallest of
# its shuffles'. For a map that knows nothing, and no two budgets equal, chance is 1/(P+1) for
# the first ordering and P/(P+1) for the second (P shuffles). Ties count half, so where budgets
# tie (two budgets that never flip the label within the bracket are equal) chance moves toward
# one half; the random map, which knows nothing, is the chance level measured on the same
# images, and the edge map stands beside it.

# %%
shuffles = settings.sigma_permutations
sigma = sigma_scores(arena)
sigma_ranks = rank_table(sigma, rounds=rank_rounds, seed=seed)
ch.table(rank_cells(sigma_ranks, rows=("measure", "explainer"),
                    order=[(m, e) for m in ("rel_order", "irel_order") for e in EXPLAINERS]),
         f"Paper C's two orderings per model: the share of images ordered (ties count half), #rank and its interval; "
         f"chance without ties {1 / (shuffles + 1):.2f} for Rel < RelShuf and {shuffles / (shuffles + 1):.2f} for Irel > "
         f"IrelShuf ({shuffles} shuffles; ties move it toward 0.5: the random map's row is chance measured).",
         missing=REFUSED)

# %% [markdown]
# ## Retrieval and its wrong-class control
#
# Paper A's retrieval: the model classifies the image masked by the map of it as the image's class.
# Beside it, the **wrong-class control**: the same method asked to explain a wrong class, and
# whether its mask makes the model predict that wrong class (lower is better: a mask should not
# conjure a class the image does not show; a method that optimises its mask for the class it is
# asked about retrieves by construction). Third, retrieval on the images PGD misled, the adversarial
# examples of paper A's claim. Last, for RelEx, its own mask values moved to a random map's or to
# the edge map's pixel order: the same sparsity, other places, so a mask that wins only by keeping
# much of the image wins as much there.

# %%
retrieval = retrieval_rows(arena)
retrieval_ranks = rank_table(retrieval, rounds=rank_rounds, seed=seed)
RETRIEVAL = ("retrieval_clean", "retrieval_wrong_class", "retrieval_pgd_fooled")
ch.table(rank_cells(retrieval_ranks, rows=("measure", "explainer"), order=[(m, e) for m in RETRIEVAL for e in EXPLAINERS]),
         "Retrieval per model: on the clean images, of a wrong class asked for (lower is better), and on the images "
         "PGD misled: the share of images, #rank and its interval.",
         missing=REFUSED + "; or PGD misled no image of that model")
pgd_misled = {m: int(fooled(arena, m).sum()) for m in MODELS}
display(Markdown("PGD misled " + ", ".join(f"{v} of {n_images} images on the {NAMES[m]} model" for m, v in pgd_misled.items())
                 + "."))


def rate(explainer, model, measure, column="value") -> float:
    """The share of images (NaN left out) of one retrieval cell on the clean images."""
    rows = arena[(arena.explainer.astype(str) == explainer) & (arena.model.astype(str) == model)
                 & (arena.perturbation.astype(str) == "none") & (arena.measure.astype(str) == measure)]
    return float(rows[column].mean())


# a mask wins by where it keeps the image, not by how much: RelEx's own masks, moved to a random map's
# and to the edge map's pixel order (the same values, so the same sparsity)
matched_rows = pd.DataFrame([{
    "model": NAMES[m], "mask": what,
    "clean class retrieved": rate("relex", m, measure), "wrong class asked for, retrieved": rate("relex", m, measure,
                                                                                                  "baseline")}
    for m in MODELS for what, measure in (("RelEx's own", "retrieval_clean"),
                                          ("RelEx's values, a random map's pixel order", "retrieval_random_matched"),
                                          ("RelEx's values, the edge map's pixel order", "retrieval_edge_matched"))])
ch.table(matched_rows.set_index(["model", "mask"]),
         "RelEx's retrieval on the clean images against its own masks at matched sparsity: the same mask values placed "
         "in a random map's or the edge map's pixel order. The share of images whose masked image the model gives the "
         "clean class, and the share where the mask asked for a wrong class makes it predict that class.", digits=2)

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
shapes = arena[arena.model.astype(str) == "shapes_cnn"]
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
# The methods that draw random numbers (SmoothGrad's noise, RISE's masks, RelEx's noisy copies,
# the mask search's chains) draw the same numbers for the trained and for the randomised model. A
# map that is largely the pattern of its draws keeps that pattern on both models and so correlates
# with itself whatever the model. The check is read again on the first model with other draws for
# the randomised model, and beside it the trained model's maps under the two draws: how far such a
# method agrees with itself, the most the check can show for it.

# %%
DRAWN = [e for e in ("smoothgrad", "rise", "relex", "mask_search") if e in EXPLAINERS]


def draws_check(model_name: str) -> pd.DataFrame:
    """Per image, for each explainer in DRAWN on ``model_name``: the sanity Spearman with the same draws (the
    table's), with other draws for the randomised model, and between the trained model's maps under the two."""
    other = arena_settings(settings, seed=settings.seed + 1)
    models = load_models(MODELS, settings, device=run_device)
    x, y = cifar_images(models, settings, run_device)  # the arena's images: correct for every model of the run
    model = models[model_name]
    randomised = randomised_copy(model, settings)
    rows = []
    for name in DRAWN:
        for start in range(0, len(x), settings.shard_size):  # the store's shards, so each image gets its own draws
            index = list(range(start, min(start + settings.shard_size, len(x))))
            xb, yb = x[index], y[index]
            mine, theirs = scored_explainer(name, settings, index), scored_explainer(name, other, index)
            clean = pixel_map(mine(model, xb, yb))
            rows.append(pd.DataFrame({  # the arena's own check (measures.sanity), with the draws and model varied
                "explainer": name, "image": index,
                **{col: sanity(explain, against, xb, yb, clean).double().cpu().numpy() for col, explain, against in (
                    ("same", mine, randomised), ("other", theirs, randomised), ("itself", theirs, model))}}))
    return pd.concat(rows, ignore_index=True)


start_draws = time.perf_counter()
draws = draws_check(MODELS[0])
stored = none[(none.measure.astype(str) == "sanity_spearman") & (none.model.astype(str) == MODELS[0])]
stored = stored.set_index([stored.explainer.astype(str), "image"])["value"]
gap = float(np.nanmax(np.abs(draws.set_index(["explainer", "image"])["same"] - stored.reindex(
    pd.MultiIndex.from_frame(draws[["explainer", "image"]]))))) if len(draws) else float("nan")
boot = {(e, col): bootstrap_mean(draws.loc[draws.explainer == e, col].to_numpy(), seed=seed, nan="omit")
        for e in DRAWN for col in ("same", "other", "itself")}
COLUMNS = {"same": "same draws (the table above)", "other": "other draws for the randomised model",
           "itself": "the trained model under the two draws"}
draws_table = pd.DataFrame({COLUMNS[col]: {NAMES[e]: f"{boot[e, col].mean:.2f} ({boot[e, col].low:.2f} to "
                                                     f"{boot[e, col].high:.2f})" for e in DRAWN} for col in COLUMNS})
ch.table(draws_table.rename_axis("explainer"),
         f"The sanity check's Spearman on the {NAMES[MODELS[0]]} model for the methods that draw random numbers: "
         f"with the draws shared by both models, with other draws for the randomised model, and the trained model's "
         f"maps under the two draws; mean and 95% bootstrap interval over the {draws.image.nunique()} "
         "images.")
inflated = [e for e in DRAWN if boot[e, "other"].high < boot[e, "same"].low]
display(Markdown(
    "Recomputed here, the shared-draws column matches the stored table "
    + ("exactly" if gap == 0 else f"to within {gap:.1g} per image")
    + f" ({time.perf_counter() - start_draws:.0f} s for these maps). "
    + (f"For {names(inflated)}, the draws shared by the two models raise the check's number (other draws: "
       + ", ".join(f"{NAMES[e]} {boot[e, 'other'].mean:.2f} against {boot[e, 'same'].mean:.2f}" for e in inflated)
       + "): in the table above, part of their place is their draws', not their dependence on the model."
       if inflated else "No method's number is raised by the draws shared between the two models (every interval with other draws "
       "reaches the one with shared draws).")))

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
cost = cost[["passes", "passes, x the gradient", "seconds"]].rename(index=NAMES).rename_axis("explainer")
cost.columns = ["passes per image", "passes, x the gradient", "seconds per image (this run)"]
ch.table(cost, f"The cost of one clean map per image at the `{settings.profile}` profile, the mean over the models.",
         formats={"passes per image": "{:,.0f}", "passes, x the gradient": "{:,.0f}"})
cost_ranks = rank_table(none[none.measure.astype(str).isin(["passes", "seconds"])], rounds=rank_rounds, seed=seed)

# %% [markdown]
# ## The trade-off
#
# Robustness against faithfulness and against cost, one point per explainer, the controls on the
# same axes. Robustness is the top-k intersection the attacks aimed at the maps leave (PGD left
# out), averaged over the attacks and the models per image: not the damage beyond random noise,
# which an attack that reaches the floor turns into minus the map's stability under noise (above).
# Faithfulness is the deletion AUC averaged over the models; both with 95% bootstrap intervals over
# images.

# %%
robust = left_ranks.set_index("explainer")
deletion = rank_table(pooled(arena, ["none"], ["deletion_auc"], over_models=True, beyond=False, label="none"),
                      rounds=rank_rounds, seed=seed).set_index("explainer")
seconds = cost_rows[cost_rows.measure.astype(str) == "seconds"].groupby(cost_rows.explainer.astype(str))["value"].mean()
fig, axes = plt.subplots(2, 1, figsize=(6.6, 8.8), sharex=True)
for name in EXPLAINERS:
    if name not in robust.index or name not in deletion.index:
        continue
    r, d = robust.loc[name], deletion.loc[name]
    marker, colour = control_styles.get(name, ("o", method_colours.get(name)))
    style = dict(marker=marker, color=colour, linestyle="none", markersize=7, elinewidth=1)
    xerr = [[r["mean"] - r["mean_low"]], [r["mean_high"] - r["mean"]]]
    axes[0].errorbar(r["mean"], d["mean"], xerr=xerr, yerr=[[d["mean"] - d["mean_low"]], [d["mean_high"] - d["mean"]]],
                     label=NAMES[name], **style)
    axes[1].errorbar(r["mean"], seconds[name], xerr=xerr, **style)
axes[0].set_ylabel("deletion AUC (lower is better)")
axes[0].invert_yaxis()
axes[1].set_ylabel("seconds per image (log)")
axes[1].set_yscale("log")
axes[1].set_xlabel("top-k intersection the aimed attacks leave\n(higher is better)")
fig.legend(*axes[0].get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=9,
           frameon=False)
fig.tight_layout()
ch.figure(fig, "Each explainer's robustness (the top-k intersection the aimed attacks leave) against its faithfulness (upper; deletion AUC, the axis "
               "turned so that up is better) and its cost (lower; seconds per image in this run, log scale); 95% "
               "bootstrap intervals over images. Coloured circles: the methods; grey square, triangle and diamond: the "
               "controls. Robustness counts every attack aimed at the maps (PGD left out), including those not at full strength (the circles of the "
               "heatmap); LRP-epsilon on the ReLU models only, the models it explains.")

# %% [markdown]
# ## Where a control ranks at or above a method
#
# Every case where a control is not clearly below a method (its rank interval reaches or passes the
# method's), in every ranking above and in every attack x model cell behind the pooled ones. A
# control that ranks at or above a method says that, on that yardstick, the method shows nothing a
# map without knowledge does not. Nothing is left out.

# %%
attacked = arena[arena.perturbation.astype(str).isin(ATTACK_LIST)
                  & (arena.measure.astype(str) != "prediction_kept")]  # the label PGD leaves is the same for all
per_attack = rank_table(attacked, column="beyond", rounds=rank_rounds, seed=seed)
# cost is left out: the controls are free by construction, so they always rank at or above a method there
ALL_RANKS = pd.concat([per_attack, stability_ranks, goal_ranks, left_ranks, faith_ranks, sigma_ranks, retrieval_ranks, local_ranks,
                       sanity_ranks], ignore_index=True)
RANKING = ["model", "perturbation", "measure", "column"]
every_case = controls_at_or_above(ALL_RANKS)
built = by_construction(every_case)
cases, built_cases = every_case[~built], every_case[built]
groups = ALL_RANKS.groupby(RANKING, observed=True).ngroups
n_case_groups = cases.groupby(RANKING, observed=True).ngroups if len(cases) else 0
n_built_groups = built_cases.groupby(RANKING, observed=True).ngroups if len(built_cases) else 0
display(Markdown(
    (f"Of {groups} rankings (cost left out: the controls cost nothing), {n_case_groups} have a control at or above "
     f"at least one method where the control's place is not fixed by how it is built ({len(cases)} control-method "
     f"pairs, {int((cases.relation == 'above').sum())} of them clearly above):\n\n"
     + "\n".join(control_sentences(cases, NAMES, ALL_RANKS))
     if len(cases) else f"In none of the {groups} rankings (cost left out) does a control rank at or above a method "
                        "other than by construction.")
    + f"\n\nBy construction, and counted apart: in {n_built_groups} rankings a control sits at or above a method because "
      "of how it is built: the random map beyond random noise on the similarities and the attacks' goals (0: nothing "
      "moves it) and the random and edge maps in the sanity check (1: they ignore the model); "
      f"{len(built_cases)} control-method pairs."))

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
WHAT = {field: what for field, what, _ in SETTING_ROWS if isinstance(field, str)}
WHAT.update(relex_iterations="RelEx iterations", relex_samples="RelEx noisy copies", dance_steps="DANCE solver steps")


def reduced(*fields) -> str:
    """The settings among ``fields`` where this run differs from the paper profile, in words ('' if none)."""
    said = [f"{WHAT[f]} {setting_text(settings, f)} (paper profile {setting_text(PAPER_SETTINGS, f)})"
            for f in fields if getattr(settings, f) != getattr(PAPER_SETTINGS, f)]
    return "; reduced from the paper profile: " + ", ".join(said) if said else ""


def weakened(baselines: dict) -> list[str]:
    """A caveat where a claim is judged against baselines run shorter than the paper's (``baselines``:
    field -> method), since a shortened baseline favours the method it is compared with."""
    short = [f"{method} with {setting_text(settings, f)} {WHAT[f].split(' ')[-1].lower()} (paper profile "
             f"{setting_text(PAPER_SETTINGS, f)})" for f, method in baselines.items()
             if getattr(settings, f) < getattr(PAPER_SETTINGS, f)]
    if not short:
        return []
    return [f"Weakened baselines: at this profile {' and '.join(short)} run shorter than the paper's, which favours "
            "the method compared with them; a verdict against them is not one against the paper's baselines."]


def missing_models(claim_id, paper, claim, needed):
    """A claim whose models are not in this run: inconclusive, said so."""
    lacking = [m for m in needed if m not in MODELS]
    ledger.record(claim_id, paper=paper, claim=claim, verdict="inconclusive", qualifier="not measured at this profile",
                  measured="nothing: the model axis of this run lacks the " + names(lacking) + " model" + "s" * (
                      len(lacking) > 1),
                  reason=f"the run's models are {names(MODELS)}; a rerun whose model axis includes {names(lacking)} "
                         "measures it", setting=setting)


def wrong_class(explainer, model) -> np.ndarray:
    """Per image, whether the explainer's mask asked for a wrong class made the model predict it (clean images)."""
    rows = arena[(arena.explainer.astype(str) == explainer) & (arena.model.astype(str) == model)
                 & (arena.perturbation.astype(str) == "none") & (arena.measure.astype(str) == "retrieval_clean")]
    return rows.sort_values("image")["baseline"].to_numpy(dtype=float)


a_scope = "" if len(A_MODELS) == 2 else (
    f"; on the {names(A_MODELS)} model only: the {names([m for m in ('natural', 'fgsm') if m not in A_MODELS])} "
    "model is not in this run, so the claim is tested on one of its two models")
A_BASELINES = ("gradient", "smoothgrad", "integrated_gradients", "gradcam")
claim = ("[claim 3] RelEx's maps retrieve the original classes of adversarial examples, crafted against a naturally "
         "and an adversarially trained model, better than previous methods (the gradient, SmoothGrad, Integrated "
         "Gradients and Grad-CAM).")
if A_MODELS:
    misled = {m: fooled(arena, m) for m in A_MODELS}

    def beyond_wrong(explainer, m):
        """Retrieval at the image PGD misled minus the method's own wrong-class retrieval on it."""
        return (oriented(arena, explainer, m, "pgd", "retrieval", beyond=False, images=misled[m])
                - wrong_class(explainer, m))

    ledger.test("A7.1", paper=PAPER_A, claim=claim, nan="omit",
                measured="per image PGD misled: 1 if the model classifies the attacked image masked by the method's map "
                         "of it as the clean class, else 0, minus the same method's wrong-class control on that image "
                         "(1 if its mask asked for a wrong class made the model predict that class: what a mask "
                         "retrieves because it is asked to); RelEx minus the other method",
                setting=setting + f"; PGD {settings.pgd_steps} steps (aimed at the prediction: the same images for "
                                  "every method)" + a_scope + reduced("relex_iterations", "relex_samples",
                                                                      "smoothgrad_samples", "ig_steps", "pgd_steps"),
                parts={f"vs {NAMES[o]} on {NAMES[m]} ({pgd_misled[m]} misled)": (beyond_wrong("relex", m),
                                                                               beyond_wrong(o, m))
                       for m in A_MODELS for o in A_BASELINES},
                caveats=["By construction in part: every map is asked about the clean label, which retrieval then "
                         "scores, and RelEx optimises its mask to keep the class it is asked about, the other methods "
                         "do not; each method's wrong-class retrieval is subtracted per image for that reason (A7.2 "
                         "tests whether RelEx's masks keep more than a mask of the same sparsity placed at random)."]
                + weakened({"smoothgrad_samples": "SmoothGrad", "ig_steps": "Integrated Gradients"}))
else:
    missing_models("A7.1", PAPER_A, claim, ["natural", "fgsm"])
ledger.test("A7.2", paper=PAPER_A, nan="omit",
            claim="[claim 4] RelEx's retrieval comes from features relevant to the image: on clean images its mask "
                  "retrieves the class it explains, beyond what its mask asked for a wrong class makes the model "
                  "predict, more than the same mask values placed at random (a random map's pixel order) or along the "
                  "image's edges (the edge map's order) do.",
            measured="per image: retrieval of the clean class minus retrieval of the wrong class (label + 1) asked for, "
                     "with RelEx's masks, minus the same with RelEx's mask values moved to the control's pixel order "
                     "(the same values, so the same sparsity)",
            setting=setting + reduced("relex_iterations", "relex_samples"),
            parts={f"vs {what} on {NAMES[m]}": (oriented(arena, "relex", m, "none", "retrieval_clean"),
                                                oriented(arena, "relex", m, "none", measure))
                   for m in MODELS for what, measure in (("a random pixel order", "retrieval_random_matched"),
                                                         ("the edge map's pixel order", "retrieval_edge_matched"))})
a_cells = [(p, meas) for p in ("topk", "dombrowski") for meas in ("topk_intersection", "spearman")]
claim = ("[claims 1-2, as this book reads them] RelEx's maps, smoothed over the input's neighbourhood, are more "
         "stable than the gradient's and SmoothGrad's under the same attacks aimed at the maps (Ghorbani's top-k, "
         "Dombrowski's), beyond random noise of the same budget.")
if A_MODELS:
    ledger.test("A7.3", paper=PAPER_A, claim=claim, nan="omit",
                measured="per image: the map's top-k intersection (or Spearman) with its clean map under the attack "
                         "aimed at it, minus the same under random noise; RelEx minus the other method",
                setting=setting + a_scope + reduced("relex_iterations", "relex_samples", "smoothgrad_samples",
                                                    "ghorbani_steps", "dombrowski_steps"),
                parts={f"{NAMES[p]}, {NAMES[meas]}, vs {NAMES[o]} on {NAMES[m]}": (oriented(arena, "relex", m, p, meas),
                                                                                   oriented(arena, o, m, p, meas))
                       for m in A_MODELS for o in ("gradient", "smoothgrad") for p, meas in a_cells},
                caveats=["PGD, which paper A uses, is aimed at the label and at no map: it is an untargeted "
                         "perturbation here, in the tables but not in this claim."]
                + weakened({"smoothgrad_samples": "SmoothGrad"})
                + floor_caveat(arena, [(e, m, p, meas) for m in A_MODELS for e in ("relex", "gradient", "smoothgrad")
                                       for p, meas in a_cells], NAMES),
                **guard(checked, [("relex", m, p) for m in A_MODELS for p, _ in a_cells],
                        [(o, m, p) for m in A_MODELS for o in ("gradient", "smoothgrad") for p, _ in a_cells], NAMES))
else:
    missing_models("A7.3", PAPER_A, claim, ["natural", "fgsm"])
for claim_id in ("A7.1", "A7.2", "A7.3"):
    display(Markdown(ledger.line(claim_id)))

# %%
B_ATTACKS = ("topk", "mass_center", "targeted")  # the three Ghorbani attacks of paper B


def patch_positions(s) -> int:
    """DANCE's 3 x 3 patch positions on a 32 x 32 image at the stride of settings ``s`` (the last one flush)."""
    starts = list(range(0, 32 - 3 + 1, s.dance_stride))
    return (len(starts) + (starts[-1] != 32 - 3)) ** 2


def dance_text(s) -> str:
    positions = patch_positions(s)
    return (f"3 x 3 patches at stride {s.dance_stride} ({positions} positions"
            + (", the four corners" if positions == 4 else "") + f"), {s.dance_steps} decoy solver steps")


dance_setting = f"; DANCE: {dance_text(settings)}" + (
    f" (paper profile: {dance_text(PAPER_SETTINGS)})" if dance_text(settings) != dance_text(PAPER_SETTINGS) else "")
ledger.test("B7.1", paper=PAPER_B, nan="omit",
            claim="[claims 3-4] DANCE lowers the gradient's sensitivity under the three Ghorbani attacks: DANCE(gradient) "
                  "moves less than the gradient and than a plain blur of the gradient's magnitude, each attacked through "
                  "its own map, beyond random noise of the same budget.",
            measured="per image: the attack's own goal (top-k intersection, centre shift, target region mass) under the "
                     "attack minus under random noise, signed so that higher is better; DANCE minus the other map",
            setting=setting + dance_setting + f"; DANCE attacked by BPDA, decoys solved again every "
                                              f"{settings.dance_recompute_every} steps" + reduced("ghorbani_steps"),
            parts={f"{NAMES[p]} vs {NAMES[o]} on {NAMES[m]}": (oriented(arena, "dance", m, p, PRIMARY[p]),
                                                              oriented(arena, o, m, p, PRIMARY[p]))
                   for m in MODELS for p in B_ATTACKS for o in ("gradient", "smoothed_gradient")},
            caveats=["The blurred |gradient| is this book's control: a smooth map moves little whatever it shows, so "
                     "DANCE must beat a plain smoother as well as its base."]
            + ([f"DANCE runs on {patch_positions(settings)} patch positions here against "
                f"{patch_positions(PAPER_SETTINGS)} at the paper profile: fewer decoys, a weaker smoothing of the "
                "gradient, which works against DANCE."] if patch_positions(settings) < patch_positions(PAPER_SETTINGS)
               else [])
            + floor_caveat(arena, [(e, m, p, PRIMARY[p]) for m in MODELS for e in ("dance", "gradient", "smoothed_gradient")
                                   for p in B_ATTACKS], NAMES),
            **guard(checked, [("dance", m, p) for m in MODELS for p in B_ATTACKS],
                    [(o, m, p) for m in MODELS for p in B_ATTACKS for o in ("gradient", "smoothed_gradient")], NAMES))
display(Markdown(ledger.line("B7.1")))

# %%
C_METHODS = ("gradient", "smoothgrad", "lrp_epsilon", "gradcam")  # the arena's methods among the paper's six
c_parts = {}
for m in MODELS:
    for method in C_METHODS:
        if arena[(arena.explainer == method) & (arena.model == m) & (arena.measure == "sigma_rel")].value.notna().any():
            for control in ("random_map", "edge_map"):
                c_parts[f"{NAMES[method]} vs {NAMES[control]} on {NAMES[m]}"] = (
                    oriented(sigma, method, m, "none", "rel_order", beyond=False),
                    oriented(sigma, control, m, "none", "rel_order", beyond=False))
ledger.test("C7.1", paper=PAPER_C, nan="omit",
            claim="[claim 1] The measure is objective: the maps of the methods the paper compares (of its six, the "
                  "gradient, SmoothGrad, LRP-epsilon and Grad-CAM) order Rel < RelShuf more often than maps that know "
                  "nothing about the model (a random map, the Sobel edge map).",
            measured="per image: 1 if sigma*_Rel < sigma*_RelShuf, 0.5 for a tie, 0 otherwise; the method minus the "
                     "control", setting=setting + f"; {shuffles} shuffles, {settings.sigma_scan} scan points and "
                                              f"{settings.sigma_iterations} halvings per budget",
            parts=c_parts)
display(Markdown(ledger.line("C7.1")))

# %%
MARGIN = 0.02  # paper D's figures: the mask search and RISE differ by 0.001 to 0.034 AUC per image (2 images)
same_passes = settings.mask_search_passes == settings.rise_masks  # RISE makes one model pass per mask
ledger.test("D7.1", paper=PAPER_D, nan="omit", threshold=-MARGIN,
            claim="[claim 2, the authors' README] The mask search is at least as faithful as RISE, the method whose "
                  "masks it walks, at the same number of model passes: its deletion AUC is not higher and its insertion "
                  f"AUC not lower than RISE's, within {MARGIN:g}.",
            caveats=[] if same_passes else [
                f"Not the same number of passes at this profile: the mask search makes {settings.mask_search_passes:,} "
                f"model passes per image, RISE {settings.rise_masks:,} (one per mask)."],
            measured=f"per image: RISE's deletion AUC minus the mask search's (insertion: the mask search's minus "
                     f"RISE's); needs the interval above -{MARGIN:g}, within the differences between the two in the "
                     "authors' own figures (0.001 to 0.034 on the two images where both are shown)",
            setting=setting + (f"; both {settings.mask_search_passes:,} passes per image" if same_passes else
                               f"; the mask search {settings.mask_search_passes:,} passes per image, RISE "
                               f"{settings.rise_masks:,} masks (one pass each)")
            + f" ({settings.mask_search_grid} and {settings.rise_grid} cells per side)"
            + reduced("mask_search_passes", "rise_masks"),
            parts={f"{NAMES[meas]} on {NAMES[m]}": (oriented(arena, "mask_search", m, "none", meas, beyond=False),
                                           oriented(arena, "rise", m, "none", meas, beyond=False))
                   for m in MODELS for meas in ("deletion_auc", "insertion_auc")})
ledger.test("D7.2", paper=PAPER_D, nan="omit",
            claim="[claim 2] The mask search localises relevant pixels better than existing saliency methods (of the "
                  "authors' baselines, RISE and Grad-CAM).",
            measured="per synthetic image: pointing game (1/0) or box IoU of the mask search minus the other method",
            setting=f"{settings.profile} profile: {n_shapes} synthetic shapes images, the shapes CNN the arena trains",
            parts={f"{NAMES[meas]} vs {NAMES[o]}": (oriented(arena, "mask_search", "shapes_cnn", "none", meas, beyond=False),
                                          oriented(arena, o, "shapes_cnn", "none", meas, beyond=False))
                   for o in ("rise", "gradcam") for meas in ("pointing_game", "box_iou")})
display(Markdown(ledger.line("D7.1") + "  \n" + ledger.line("D7.2")))

# %%
E_OTHERS = [m for m in ("softplus", "natural") if m in MODELS]  # cross-entropy models: the same LeNet, Softplus or ReLU
MUCH = dict(min_effect=0.05, min_effect_reason="'much more robust': at least 0.05 on every similarity, a twentieth of the "
                                               "top-k intersection's range [0, 1] and a fortieth of Spearman's and SSIM's "
                                               "[-1, 1]; chapter 6's size, fixed before the run")
ACT_DRAWS, ACT_RATIO = 10, 0.9  # chapter 6's test: the targeted quantity's median at most 90% of the CE model's


def l2cosd_acted() -> tuple[str, str]:
    """Chapter 6's check that the l2 + cosd regulariser acted, on this run's images: the median cosd of the
    gradient under Gaussian neighbours (what it targets) against the Softplus cross-entropy model's. Returns
    (the reason the comparison is void, or '', and the numbers in words)."""
    if "softplus" not in MODELS:
        return ("whether the l2 + cosd regulariser acted is not checked: it needs the Softplus cross-entropy model, "
                "which this run lacks"), "not checked (no Softplus cross-entropy model in the run)"
    models = load_models(MODELS, settings, device=run_device)
    x, y = cifar_images(models, settings, run_device)
    cosd = {m: float(alignment_diagnostics(models[m], x, y, eps=4 / 255, draws=ACT_DRAWS, noise="gaussian",
                                           generator=ch.generator(), batch_size=50)["cosd"].median())
            for m in ("l2cosd", "softplus")}
    ratio = cosd["l2cosd"] / cosd["softplus"]
    words = (f"the l2 + cosd model's median cosd under Gaussian neighbours (eps 4/255, {ACT_DRAWS} draws per image) is "
             f"{ratio:.0%} of the Softplus cross-entropy model's (acting: at most {ACT_RATIO:.0%}, chapter 6's test)")
    return ("" if ratio <= ACT_RATIO else "regulariser did not act: " + words), words


claim_e1 = ("[claim 3] Training with l2 + cosd gives much more robust interpretations: the gradient maps of the l2 + "
            "cosd model stay much more similar under random noise than those of the cross-entropy models.")
claim_e2 = ("[claim 3] Training with l2 + cosd gives much more robust interpretations: under the top-k and frame "
            "attacks aimed at each model's gradient map, the l2 + cosd model's maps move much less beyond random noise "
            "than the cross-entropy models'.")
if "l2cosd" in MODELS and E_OTHERS:
    idle, acted_words = l2cosd_acted()
    display(Markdown(f"Did the regulariser act? {acted_words[0].upper() + acted_words[1:]}."))
    ledger.test("E7.1", paper=PAPER_E, nan="omit", **MUCH, claim=claim_e1,
                measured="per image: the similarity (top-k intersection, Spearman, SSIM) of the gradient map under random "
                         "sign noise to the clean map; l2 + cosd minus the other model",
                setting=setting, parts={f"{NAMES[meas]} vs {NAMES[o]}": (
                    oriented(arena, "gradient", "l2cosd", "random_sign", meas, beyond=False),
                    oriented(arena, "gradient", o, "random_sign", meas, beyond=False)) for o in E_OTHERS for meas in STABILITY},
                caveats=[f"The regulariser's check: {acted_words}."], precondition_failed=idle)
    e_cells = [("topk", "topk_intersection"), ("topk", "ssim"), ("frame", "topk_intersection"), ("frame", "ssim")]
    e_guard = guard(checked, [("gradient", "l2cosd", p) for p, _ in e_cells],
                    [("gradient", o, p) for o in E_OTHERS for p, _ in e_cells], NAMES)
    void = "; ".join(r for r in (idle, e_guard.pop("precondition_failed", "")) if r)
    ledger.test("E7.2", paper=PAPER_E, nan="omit", **MUCH, claim=claim_e2,
                measured="per image: the similarity under the attack minus under random noise of the same budget; "
                         "l2 + cosd minus the other model",
                setting=setting + reduced("ghorbani_steps", "frame_steps"),
                parts={f"{NAMES[p]}, {NAMES[meas]} vs {NAMES[o]}": (oriented(arena, "gradient", "l2cosd", p, meas),
                                                                   oriented(arena, "gradient", o, p, meas))
                       for o in E_OTHERS for p, meas in e_cells},
                caveats=[f"The regulariser's check: {acted_words}."]
                + floor_caveat(arena, [("gradient", m, p, meas) for m in ("l2cosd", *E_OTHERS) for p, meas in e_cells],
                               NAMES), precondition_failed=void, **e_guard)
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
robust_all = rank_table(pooled(arena, AIMED, ["topk_intersection"], over_models=True, beyond=False, complete=True,
                               label="what the aimed attacks leave"), rounds=rank_rounds, seed=seed)
deletion_all = rank_table(pooled(arena, ["none"], ["deletion_auc"], over_models=True, beyond=False, complete=True,
                                 label="none"), rounds=rank_rounds, seed=seed)
partial = [e for e in EXPLAINERS if e in robust.index and e not in set(robust_all.explainer)]
needs = [
    ("Maps that survive attacks (the top-k intersection the attacks aimed at the map leave, every model)",
     lead(robust_all)),
    ("Maps the model's output follows (deletion AUC, models pooled)", lead(deletion_all)),
    ("Maps that point at the object (pointing game on the synthetic shapes)", lead(local_ranks, measure="pointing_game")),
    (f"Maps that depend on the model (the sanity check, {NAMES[MODELS[0]]} model)",
     lead(sanity_ranks, model=MODELS[0]) if len(sanity_ranks) else ([], [])),
]
guide = []
for need, (best, tied_controls) in needs:
    line = f"- **{need}**: " + (", ".join(f"{NAMES[b]} ({passes[NAMES[b]]:,.0f} pass{'es' * (round(passes[NAMES[b]]) != 1)} per "
                                         "image)" for b in best) or "no method")
    if tied_controls:
        line += (f"; but the {names(tied_controls)} {'ranks' if len(tied_controls) == 1 else 'rank'} as high or higher, "
                 "so this yardstick alone does not tell them from a map without knowledge"
                 + (" (the random map by construction: nothing moves it)" if "random_map" in tied_controls
                    and need.startswith("Maps that survive") else ""))
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
# Computed from the claims ledger (also saved with the book's other verdicts).

# %%
verdict_of = {c.id: c.verdict for c in ledger.claims}
said = ", ".join(f"{i} {v}" for i, v in verdict_of.items())
held = [i for i, v in verdict_of.items() if v == "holds"]
ledger.bottom_line(
    f"Measured the same way (the same {n_images} images, every attack on a map aimed at the map it scores, random noise of the "
    f"same budget beside every stability number and three controls on the same axes), {len(held)} of the "
    f"{len(verdict_of)} claims re-tested here held ({', '.join(held) or 'none'}): {said}. {n_full} of {n_judged} attack "
    f"cells were shown at full strength; where an attack was not ({names(weak_explainers) or 'none'}), a claim it "
    f"would favour reads inconclusive. A control ranks at or above some method in {n_case_groups} of {groups} "
    f"rankings (cost left out) where its place is not fixed by how it is built, and by construction in "
    f"{n_built_groups} (counted apart); every case is listed on the page.")
ledger.save()
display(Markdown(ledger.summary(items=False)))
display(ledger.cards())
rerun_box(run, load_models(MODELS, settings))
