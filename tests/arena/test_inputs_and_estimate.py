"""Bad input gets a clear error before anything is computed; the time estimate counts the passes
the explainers really make, and puts the book profile at about three hours."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from arena_toy import toy_settings
from reliable_saliency.arena import EXPLAINERS, arena_settings, run_arena
from reliable_saliency.arena.estimate import clean_map_passes, estimate, estimate_text
from reliable_saliency.core.timing import PassCounter
from reliable_saliency.arena.routes import scored_explainer


@pytest.mark.parametrize("argument, message", [
    (dict(explainers=["gradient", "nope"]), r"unknown explainers \['nope'\]; choose from \['gradient'"),
    (dict(perturbations=["pgd", "fgsm"]), r"unknown perturbations \['fgsm'\]; choose from \['random_sign'"),
    (dict(explainers=[]), "non-empty list of distinct names"),
    (dict(models=["natural", "resnet"]), r"unknown models \['resnet'\]; choose from \['natural'"),
    (dict(models={"bare": nn.Linear(3, 2)}), "must be an nn.Module with an input_space"),
    (dict(data=(torch.zeros(2, 3, 16, 16), torch.zeros(3))), "data must be"),
    (dict(profile="fast"), r"unknown arena profile 'fast'; choose one of \['book', 'paper', 'smoke'\]"),
    (dict(steps=3), r"unknown arena setting\(s\) \['steps'\]"),
    (dict(images=0), "images must be a positive int"),
    (dict(strength_images=9), r"strength_images must lie in \[0, images=4\]"),
])
def test_bad_input_is_refused_clearly(toy, tmp_path, argument, message):
    models, x, y = toy
    call = dict(profile=toy_settings(), root=tmp_path, key="bad", models=models, data=(x, y))
    if "profile" in argument or "images" in argument or "strength_images" in argument or "steps" in argument:
        call["profile"] = argument.pop("profile", "smoke")
        call["images"] = 4
    call.update(argument)
    with pytest.raises(ValueError, match=message):
        run_arena(**call)
    assert not (tmp_path / "bad").exists()  # nothing was computed


@pytest.mark.parametrize("name", EXPLAINERS)
def test_the_estimate_counts_the_passes_of_every_map(toy, name):
    models, x, y = toy
    settings = toy_settings()
    model = models["relu"]
    with PassCounter(model) as counter:
        scored_explainer(name, settings, range(4))(model, x, y)
    expected = clean_map_passes(name, settings, side=16)
    inputs = 4 * sum(expected.values())
    if name == "dance":  # decoys that miss the constraint get up to `repair` more checks
        decoys = 4 * 2 * 9  # stride 8 on 16 px: 3 x 3 positions
        assert inputs <= counter.passes <= inputs + 6 * decoys
    else:  # Grad-CAM and LRP-epsilon look at the model once per call (its layers, its operations)
        assert inputs <= counter.passes <= inputs + (4 if name in ("gradcam", "lrp_epsilon") else 0)


def test_the_book_profile_fits_in_about_three_hours():
    book = arena_settings("book")
    table = estimate(book)
    hours = table["seconds"].sum() / 3600
    assert 2.0 <= hours <= 3.3, hours
    assert book.images >= 200 and set(table["model"]) >= {"natural", "fgsm", "softplus", "l2cosd", "cosd", "hessian"}
    text = estimate_text(table, book)
    assert text.startswith("Arena at profile 'book': 200 images, estimated")
    for axis in ("per explainer:", "per model:", "per part:"):
        assert axis in text
    assert estimate(arena_settings("smoke"))["seconds"].sum() < 60  # the smoke profile on the CPU
    assert not table[(table.explainer == "lrp_epsilon") & (table.model == "softplus")].shape[0]  # refused there
