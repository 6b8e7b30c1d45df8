"""The harness: its table holds every cell, and its numbers are those of the library's measures
called directly on the same images with the same seeds."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from arena_toy import toy_settings
from reliable_saliency.arena import COLUMNS, CONTROL_NAMES, EXPLAINERS, PERTURBATIONS, measures_of
from reliable_saliency.arena.settings import image_seed
from reliable_saliency.attacks import ghorbani_attack, pgd, random_sign_noise
from reliable_saliency.attacks.common import max_normalise
from reliable_saliency.evaluation import deletion_auc, insertion_auc, model_randomisation, randomize_parameters
from reliable_saliency.evaluation import retrieval
from reliable_saliency.evaluation.reliability import adversarial_reliability, reliability_maps
from reliable_saliency.explainers import get_explainer
from reliable_saliency.maps import spearman, ssim, topk_intersection
from reliable_saliency.maps.postprocess import postprocess

S = toy_settings()
K = 5  # Ghorbani's 1000 of 224 x 224 pixels, on 16 x 16


def cell(table, explainer, model, perturbation, measure, column="value"):
    rows = table[(table.explainer == explainer) & (table.model == model) & (table.perturbation == perturbation)
                 & (table.measure == measure)].sort_values("image")
    assert len(rows) == 4, (explainer, model, perturbation, measure)
    return torch.tensor(rows[column].to_numpy(dtype=float))


def close(table_values, direct, atol=1e-6):
    torch.testing.assert_close(table_values, direct.detach().double().cpu(), rtol=0, atol=atol, equal_nan=True)


def pixels(raw):
    return raw.detach().abs().sum(1)


def stability(clean, other):
    return {"topk_intersection": topk_intersection(clean, other, K), "spearman": spearman(clean, other),
            "ssim": ssim(max_normalise(clean), max_normalise(other), window_size=7, data_range=1.0)}


def test_every_cell_is_in_the_table(toy_run):
    table, _ = toy_run
    assert list(table.columns) == COLUMNS
    cifar_like = table[table.model != "shapes_cnn"]
    expected = sum(len(measures_of(p)) for p in ("none", *PERTURBATIONS)) * len(EXPLAINERS) * 2 * 4
    assert len(cifar_like) == expected
    assert set(cifar_like.explainer) == set(EXPLAINERS) and set(cifar_like.model) == {"relu", "soft"}
    assert set(table.perturbation) == {"none", *PERTURBATIONS}
    shapes = table[table.model == "shapes_cnn"]
    assert set(shapes.measure) == {"pointing_game", "box_iou"} and len(shapes) == 2 * len(EXPLAINERS) * 3
    assert set(table.loc[table.control, "explainer"]) == set(CONTROL_NAMES)
    # LRP-epsilon refuses the Softplus model: its rows are there, empty, with the refusal
    refused = table[(table.explainer == "lrp_epsilon") & (table.model == "soft")]
    assert refused["value"].isna().all() and refused["reason"].str.contains("no rule for softplus").all()
    applicable = table[(table.reason == "") & (table.model != "shapes_cnn")]
    # correlations are NaN for a constant map (an all-zero Grad-CAM), sigma* for an undefined variant
    filled = applicable[~applicable.measure.isin(["sigma_rel", "sigma_irel", "spearman", "target_pearson",
                                                  "sanity_spearman"])]
    # an image whose attack had no gradient (checked per image) is left out of that attack's values
    flat = filled["no_gradient"].eq(1)
    assert filled.loc[~flat, "value"].notna().all(), filled[filled["value"].isna()][
        ["explainer", "model", "perturbation", "measure"]].drop_duplicates()
    assert filled.loc[flat, "value"].isna().all() and not filled.loc[flat, "perturbation"].isin(["pgd"]).any()
    # every attack row has its random baseline and its strength read-outs on the strength subset
    attacks = filled[~filled.perturbation.isin(["none", "random_sign"])]
    assert attacks["baseline"].notna().all()
    subset = attacks[(attacks.image < S.strength_images) & ~attacks.aimed.str.startswith("not attackable")]
    assert subset["doubled"].notna().all() and attacks[attacks.image >= S.strength_images]["doubled"].isna().all()
    restartable = subset[subset.perturbation.isin(["pgd", "topk", "mass_center", "targeted", "masked_retrieval"])
                         & (subset.explainer != "random_map")]
    assert restartable["restart"].notna().all()
    bounded = attacks[attacks.perturbation != "dombrowski"]
    assert (bounded["delta_max"] <= S.eps + 1e-6).all() and (attacks["delta_mean"] <= attacks["delta_max"]).all()
    # the random map cannot be attacked; under every perturbation it does not move
    random_rows = applicable[(applicable.explainer == "random_map") & applicable.measure.isin(["topk_intersection",
                                                                                             "spearman", "ssim"])
                             & (applicable.perturbation != "none")]
    assert (random_rows["value"] == 1).all()
    assert random_rows[random_rows.perturbation == "topk"]["aimed"].str.startswith("not attackable").all()


@pytest.mark.parametrize("model_name", ["relu", "soft"])
def test_the_table_equals_the_measures_called_directly(toy, toy_run, model_name):
    table, _ = toy_run
    models, x, y = toy
    model = models[model_name]
    explain = get_explainer("gradient")
    clean = pixels(explain(model, x, y))
    close(cell(table, "gradient", model_name, "none", "deletion_auc"), deletion_auc(model, x, clean, y, steps=8))
    close(cell(table, "gradient", model_name, "none", "insertion_auc"), insertion_auc(model, x, clean, y, steps=8))
    randomised = randomize_parameters(model, torch.Generator().manual_seed(image_seed(0, 0, "randomise")))
    close(cell(table, "gradient", model_name, "none", "sanity_spearman"),
          model_randomisation(explain, model, randomised, x, y))
    r = reliability_maps(explain, model, x, y)
    found = adversarial_reliability(model, x, r, y, permutations=S.sigma_permutations,
                                    iterations=S.sigma_iterations, scan=S.sigma_scan,
                                    seeds=[image_seed(0, i, "shuffle") for i in range(4)]).per_entry
    close(cell(table, "gradient", model_name, "none", "sigma_rel"), found[:, 0])
    close(cell(table, "gradient", model_name, "none", "sigma_rel", "baseline"), found[:, 1])
    mask = postprocess(explain(model, x, y), ["absolute", "channel_sum", "divide_by_percentile"])
    close(cell(table, "gradient", model_name, "none", "retrieval_clean"), retrieval(model, x, mask, y)[0].double())

    # random sign noise and PGD: one image at a time from the image's own seed
    def per_image(attack, stream):
        return torch.cat([attack(x[i:i + 1], y[i:i + 1],
                                 torch.Generator().manual_seed(image_seed(0, i, stream))) for i in range(4)])

    noisy = per_image(lambda xi, yi, g: random_sign_noise(model, xi, eps=S.eps, generator=g)[0], "noise")
    adv = per_image(lambda xi, yi, g: pgd(model, xi, yi, S.eps, steps=S.pgd_steps, generator=g), "pgd")
    for name, value in stability(clean, pixels(explain(model, adv, y))).items():
        close(cell(table, "gradient", model_name, "pgd", name), value)
    for name, value in stability(clean, pixels(explain(model, noisy, y))).items():
        close(cell(table, "gradient", model_name, "pgd", name, "baseline"), value)
        close(cell(table, "gradient", model_name, "random_sign", name), value)
    # Ghorbani's top-k attack aimed at the gradient, shard by shard (a Softplus copy for the ReLU model)
    beta = 10.0 if model_name == "relu" else None
    x_adv = torch.cat([ghorbani_attack(model, x[a:a + 2], explain, objective="topk", eps=S.eps,
                                       alpha=S.ghorbani_alpha(), steps=S.ghorbani_steps, k=K,
                                       surrogate_beta=beta).x_adv for a in (0, 2)])
    raw_adv = explain(model, x_adv, y)
    for name, value in stability(clean, pixels(raw_adv)).items():
        close(cell(table, "gradient", model_name, "topk", name), value)
    hits = retrieval(model, x_adv, postprocess(raw_adv, ["absolute", "channel_sum", "divide_by_percentile"]), y)[0]
    close(cell(table, "gradient", model_name, "topk", "retrieval"), hits.double())
    change = (model.input_space.denormalize(x_adv) - model.input_space.denormalize(x)).abs().flatten(1)
    close(cell(table, "gradient", model_name, "topk", "topk_intersection", "delta_max"), change.amax(1))


def test_monte_carlo_maps_use_the_same_per_image_draws(toy, toy_run):
    """SmoothGrad's table values come from each image's own seed, whatever shard it was in."""
    table, _ = toy_run
    models, x, y = toy
    model = models["soft"]
    seeds = [image_seed(0, i, "map") for i in range(4)]
    explain = get_explainer("smoothgrad", samples=S.smoothgrad_samples, seeds=seeds)
    clean = pixels(explain(model, x, y))
    close(cell(table, "smoothgrad", "soft", "none", "deletion_auc"), deletion_auc(model, x, clean, y, steps=8))
    alone = pixels(get_explainer("smoothgrad", samples=S.smoothgrad_samples, seeds=seeds[3:])(model, x[3:], y[3:]))
    torch.testing.assert_close(alone, clean[3:], rtol=0, atol=1e-6)


def test_the_table_is_read_back_not_recomputed(toy, toy_run, monkeypatch):
    from reliable_saliency.arena import cells, harness

    table, root = toy_run
    models, x, y = toy

    def refuse(*args, **kwargs):
        raise AssertionError("a finished cell was computed again")

    monkeypatch.setattr(harness, "pair_shard", refuse)
    monkeypatch.setattr(harness, "shared_shard", refuse)
    monkeypatch.setattr(cells, "run_perturbation", refuse)
    again = harness.run_arena(S, root=root, key="toy", models=models, data=(x, y))
    pd.testing.assert_frame_equal(again, table)  # the measured seconds too: they were stored


@pytest.mark.parametrize("name, options", [
    ("dance", dict(base="gradient", patch=3, stride=S.dance_stride, steps=S.dance_steps)),
    ("relex", dict(iterations=S.relex_iterations, samples=S.relex_samples)),
    ("mask_search", dict(passes=S.mask_search_passes, grid_size=S.mask_search_grid, normalise=False)),
])
def test_the_papers_methods_are_scored_at_the_profile_settings(toy, toy_run, name, options):
    table, _ = toy_run
    models, x, y = toy
    model = models["relu"]
    if name != "dance":
        options["seeds"] = [image_seed(0, i, "map") for i in range(4)]
    clean = pixels(get_explainer(name, **options)(model, x, y))
    close(cell(table, name, "relu", "none", "deletion_auc"), deletion_auc(model, x, clean, y, steps=8))
    close(cell(table, name, "relu", "none", "insertion_auc"), insertion_auc(model, x, clean, y, steps=8))
