"""Every attack of the grid is aimed at the explainer it is scored on: a spy around the library's
explainers sees, while each attack runs, create_graph calls of that explainer (or of its stated
surrogate: the same method made shorter, gradient x input for LRP-epsilon, DANCE with held decoys)
and of no other, through a Softplus copy where the model is ReLU and the map needs a second
derivative, and never the map of another explainer (no transfer)."""

from __future__ import annotations

import pytest
from torch import nn

from arena_toy import toy_settings
from reliable_saliency.arena import ATTACKS, cells, routes
from reliable_saliency.arena.measures import randomised_copy
from reliable_saliency.attacks import decoy_attack

S = toy_settings(strength_images=0)  # the main runs only
# explainer -> (what the attack must differentiate, options it must carry)
EXPECTED = {
    "gradient": ("gradient", {}),
    "smoothgrad": ("smoothgrad", {"samples": S.smoothgrad_samples}),  # the scored map itself, same seeds
    "relex": ("relex", {"iterations": S.relex_attack_iterations, "samples": S.relex_attack_samples}),
    "rise": ("rise", {"masks": S.rise_attack_masks}),
    "lrp_epsilon": ("grad_x_input", {}),
    "dance": ("dance", {}),
}
SECOND_ORDER = {"gradient", "smoothgrad", "relex", "lrp_epsilon", "dance"}


@pytest.fixture
def spy(monkeypatch):
    calls, current = [], [None]
    real_get, real_dance, real_run = routes.get_explainer, decoy_attack.dance, cells.run_perturbation

    def spying_get(name, **options):
        inner = real_get(name, **options)

        def explain(model, x, target, *, create_graph=False, generator=None, batch_size=None, **more):
            calls.append((current[0], name, options, create_graph, model))
            return inner(model, x, target, create_graph=create_graph, generator=generator, batch_size=batch_size,
                         **more)

        return explain

    def spying_dance(model, x, target, *, create_graph=False, **options):
        calls.append((current[0], "dance", {}, create_graph, model))
        return real_dance(model, x, target, create_graph=create_graph, **options)

    def tracking(perturbation, *args, **kwargs):
        current[0] = perturbation
        calls.append((perturbation, "(attack run)", {}, False, None))
        try:
            return real_run(perturbation, *args, **kwargs)
        finally:
            current[0] = None

    monkeypatch.setattr(routes, "get_explainer", spying_get)
    monkeypatch.setattr(decoy_attack, "dance", spying_dance)  # the BPDA explainer's DANCE
    monkeypatch.setattr(cells, "run_perturbation", tracking)
    return calls


@pytest.mark.parametrize("model_name", ["relu", "soft"])
def test_each_attack_differentiates_the_scored_explainer(toy, spy, model_name):
    models, x, y = toy
    model = models[model_name]
    shared = cells.Shared(**cells.shared_shard(model, x[:2], y[:2], [0, 1], S))
    names = [n for n in EXPECTED if not (n == "lrp_epsilon" and model_name == "soft")]  # LRP refuses Softplus
    for name in names:
        spy.clear()
        cells.pair_shard(name, model, x[:2], y[:2], [0, 1], S, shared, ATTACKS, (x[2:3], y[2:3], 2),
                         randomised_copy(model, S), 4)
        target, options = EXPECTED[name]
        for attack in ATTACKS:
            if attack == "pgd":  # the prediction: aimed at the model, no explainer differentiated
                assert not [c for c in spy if c[0] == "pgd" and c[3]], name
                continue
            graph = [c for c in spy if c[0] == attack and c[3]]
            assert graph, f"{attack} never differentiated a map of {name}"
            others = {c[1] for c in graph if c[1] != target and not (name == "dance" and c[1] == "gradient")}
            assert not others, f"{attack} aimed at {name} differentiated {others}"  # no transfer
            ours = [c for c in graph if c[1] == target]
            assert ours and all(all(c[2].get(k) == v for k, v in options.items()) for c in ours), (name, attack)
            softplus = {any(isinstance(m, nn.Softplus) for m in c[4].modules()) and c[4] is not model for c in ours}
            surrogate_model = model_name == "relu" and name in SECOND_ORDER
            assert softplus == {surrogate_model}, (name, attack, softplus)
            if not surrogate_model:
                assert all(c[4] is model for c in ours), (name, attack)


def test_the_random_map_is_not_attacked_but_its_masks_are(toy, spy):
    models, x, y = toy
    model = models["relu"]
    shared = cells.Shared(**cells.shared_shard(model, x[:2], y[:2], [0, 1], S))
    out = cells.pair_shard("random_map", model, x[:2], y[:2], [0, 1], S, shared, ATTACKS, (x[2:3], y[2:3], 2),
                           randomised_copy(model, S), 4)
    ran = {c[0] for c in spy if c[1] == "(attack run)"}
    assert "masked_retrieval" in ran  # the attack on x * M with M fixed: exact
    for attack in ("topk", "mass_center", "targeted", "dombrowski", "frame"):
        assert attack not in ran  # no attack: measured at the noise of the same budget
        assert (out[f"{attack}|topk_intersection|value"] == 1).all()
    assert routes.route("random_map", "topk", True, S).startswith("not attackable")
