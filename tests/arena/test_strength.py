"""The full-strength rules on rows whose answer is known, their statuses on the toy arena, and what
a weak attack does to a verdict through the ledger: a weak attack on the map a claim says resists
turns "holds" into "inconclusive", on the other map "does not hold", on both any verdict."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from reliable_saliency.arena.strength import (RULES, full_strength, guard, strength_table, weak_cells, weak_sentences,
                                              weak_text)

NAN = math.nan


def row(**given) -> dict:
    """One strength row of an attack on the top-k intersection: value 0.4 against 0.9 under noise
    (effect 0.5, tolerance 0.05), levelled off unless told otherwise."""
    base = {"explainer": "gradient", "model": "natural", "perturbation": "topk", "measure": "topk_intersection",
            "value": 0.4, "random": 0.9, "doubled_change": 0.0, "restart_change": 0.0, "plateau": 0.0,
            "surrogate_spearman": NAN, "no_gradient": 0.0, "aimed": "direct", "reason": ""}
    return {**base, **given}


def check(*rows) -> pd.DataFrame:
    return full_strength(pd.DataFrame(list(rows)))


def test_an_attack_that_levelled_off_is_at_full_strength():
    out = check(row(), row(doubled_change=0.049, restart_change=-0.3, plateau=0.1))
    assert list(out["status"]) == ["full", "full"]
    assert out["effect"].tolist() == pytest.approx([0.5, 0.5])
    assert out["tolerance"].tolist() == pytest.approx([0.05, 0.05])
    assert (out["why"] == "").all() and (out["kinds"] == "").all()


@pytest.mark.parametrize("given, kind, words", [
    (dict(doubled_change=0.06), "doubled", "twice the steps strengthened it by 0.06 (tolerance 0.05)"),
    (dict(restart_change=0.2), "restart", "a random restart strengthened it by 0.2"),
    (dict(plateau=0.3), "plateau", "the second half of its steps added 30% of its effect"),
    (dict(surrogate_spearman=0.45), "surrogate", "Spearman 0.45 only (below 0.8)"),
    (dict(no_gradient=0.25), "no_gradient", "no attack gradient on 25% of the images"),
    (dict(doubled_change=NAN, restart_change=NAN), "no_strength", "no strength runs"),
])
def test_each_rule_makes_an_attack_weak(given, kind, words):
    out = check(row(**given)).iloc[0]
    assert out["status"] == "weak" and out["kinds"] == kind and words in out["why"]


def test_the_tolerance_has_a_floor_in_the_measures_own_range():
    # an attack that did nothing beyond noise: 1% of the range, not 10% of nothing
    tiny = check(row(value=0.9, doubled_change=0.009), row(value=0.9, doubled_change=0.011))
    assert list(tiny["status"]) == ["full", "weak"]
    # the centre shift is in pixels (lower is better for the map): the floor is 1% of 32 px
    shift = check(row(perturbation="mass_center", measure="center_shift", value=1.0, random=1.0, doubled_change=0.3),
                  row(perturbation="mass_center", measure="center_shift", value=6.0, random=1.0, doubled_change=0.45))
    assert shift["tolerance"].tolist() == pytest.approx([0.32, 0.5]) and list(shift["status"]) == ["full", "full"]
    assert shift["effect"].iloc[1] == pytest.approx(5.0)  # the map moved 5 px more than under noise


def test_rows_that_are_not_judged_get_their_own_status():
    out = check(row(perturbation="random_sign"), row(reason="lrp_epsilon refuses this model: ..."),
                row(aimed="not attackable: the map does not depend on the image"))
    assert list(out["status"]) == ["baseline", "refused", "not attacked"]
    with pytest.raises(ValueError, match="unknown strength rule"):
        full_strength(pd.DataFrame([row()]), rules={"steps": 3})
    assert check(row(surrogate_spearman=0.7)).iloc[0]["status"] == "weak"
    looser = full_strength(pd.DataFrame([row(surrogate_spearman=0.7)]), rules={"surrogate": 0.6})
    assert looser.iloc[0]["status"] == "full"
    assert RULES == {"more_effort": 0.10, "floor": 0.01, "plateau": 0.10, "surrogate": 0.8}


def test_guard_names_the_side_a_weak_attack_favours():
    checked = check(row(explainer="relex", surrogate_spearman=0.3), row(explainer="gradient"),
                    row(explainer="smoothgrad", doubled_change=1.0))
    mine, theirs, ok = ("relex", "natural", "topk"), ("smoothgrad", "natural", "topk"), ("gradient", "natural", "topk")
    assert guard(checked, [ok], [ok]) == {}
    claimed = guard(checked, [mine], [ok])
    assert claimed["weakness_favours"] == "holds" and "relex: 1 cell (topk on natural)" in claimed["below_strength"]
    other = guard(checked, [ok], [theirs], {"smoothgrad": "SmoothGrad", "topk": "top-k"})
    assert other["weakness_favours"] == "does not hold"
    assert other["below_strength"].startswith("SmoothGrad: 1 cell (top-k")
    both = guard(checked, [mine], [theirs])
    assert set(both) == {"precondition_failed"} and "both sides" in both["precondition_failed"]
    assert guard(checked, [("relex", "fgsm", "topk")], [ok]) == {}  # a cell the run does not have is ignored
    assert len(weak_cells(checked, [mine, theirs, ok])) == 2


def test_the_words_count_cells_and_kinds():
    checked = check(row(explainer="rise", surrogate_spearman=0.3), row(explainer="rise", model="fgsm",
                                                                        surrogate_spearman=0.5, plateau=0.5),
                    row(explainer="rise", perturbation="frame", surrogate_spearman=0.5))
    text = weak_text(checked)
    assert text.startswith("rise: 3 cells (topk on natural, fgsm; frame on natural): ")
    assert "Spearman 0.30 to 0.50 with the scored map (below 0.8) in 3 of them" in text
    assert "still added to its effect in 1 of them" in text
    lines = weak_sentences(checked, {"rise": "RISE", "topk": "top-k"})
    assert len(lines) == 2  # one line per attack, however many cells
    assert lines[0].startswith("- **top-k**: 2 cells not at full strength (natural 1, fgsm 1); ")
    assert "Worst: RISE on natural (" in lines[0]  # the lower stand-in Spearman first among equal extra effort
    assert lines[1].startswith("- **frame**: 1 cell not at full strength (natural 1)")


def test_the_weak_lines_grow_with_the_attacks_not_with_the_cells():
    rows = [row(explainer=f"e{i}", model=f"m{j}", perturbation=p, doubled_change=0.06 + 0.01 * i)
            for i in range(12) for j in range(6) for p in ("topk", "frame")]
    lines = weak_sentences(check(*rows))
    assert len(lines) == 2 and all(line.count(" on m") == 3 for line in lines)  # the three worst cells
    assert lines[0].startswith("- **topk**: 72 cells") and "Worst: e11 on" in lines[0]


def test_on_the_toy_arena_every_row_gets_a_status(toy_run):
    table, _ = toy_run
    out = full_strength(strength_table(table))
    status = out.set_index(["explainer", "model", "perturbation"])["status"]
    assert (out.loc[out.perturbation == "random_sign", "status"] == "baseline").all()
    assert status[("random_map", "relu", "topk")] == "not attacked"
    assert status[("random_map", "relu", "masked_retrieval")] in ("full", "weak")  # its masks are attacked
    assert status[("lrp_epsilon", "soft", "topk")] == "refused"
    judged = out[out.status.isin(["full", "weak"])]
    assert len(judged) and (judged["why"].ne("") == (judged["status"] == "weak")).all()
    assert np.isfinite(judged["tolerance"]).all()


def test_a_weak_attack_turns_only_the_verdict_it_favours_into_inconclusive():
    from reliable_saliency.claims import Ledger
    from reliable_saliency.core.experiment import resolve_profile, start_run

    ledger = Ledger(start_run("test", resolve_profile("smoke"), "cpu", "toy", 0))
    checked = check(row(explainer="relex", surrogate_spearman=0.3), row(explainer="gradient"))
    better = np.linspace(0.1, 0.3, 40)
    args = dict(paper="p", claim="relex resists better", measured="m")
    cell_r, cell_g = ("relex", "natural", "topk"), ("gradient", "natural", "topk")
    held = ledger.test("X.1", parts={"a": (better, np.zeros(40))}, **args, **guard(checked, [cell_r], [cell_g]))
    assert held.verdict == "inconclusive" and "attack below full strength" in held.qualifier
    against = ledger.test("X.2", parts={"a": (np.zeros(40), better)}, **args, **guard(checked, [cell_r], [cell_g]))
    assert against.verdict == "does not hold"  # a weak attack on relex cannot explain relex losing
    mirrored = ledger.test("X.3", parts={"a": (np.zeros(40), better)}, **args, **guard(checked, [cell_g], [cell_r]))
    assert mirrored.verdict == "inconclusive"  # the weak attack is on the other side now
